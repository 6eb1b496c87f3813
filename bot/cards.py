"""What a job card shows, computed once for Slack and the console alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aws.groundtruth import JobInfo, LabelCounters
from bot.render import elapsed_text, progress_bar


@dataclass(frozen=True)
class JobCard:
    job_name: str
    status: str
    counters: LabelCounters
    project: str | None = None
    owner: str | None = None
    created: datetime | None = None
    failure_reason: str | None = None
    now: datetime | None = None

    @classmethod
    def from_job(
        cls, job: JobInfo, *, project: str | None = None, owner: str | None = None
    ) -> JobCard:
        return cls(
            job_name=job.name,
            status=job.status,
            counters=job.counters,
            project=project,
            owner=owner,
            created=job.created,
            failure_reason=job.failure_reason,
        )

    @property
    def active(self) -> bool:
        return self.status not in ("Completed", "Failed", "Stopped")

    @property
    def progress(self) -> str:
        return progress_bar(self.counters)

    @property
    def elapsed(self) -> str:
        return elapsed_text(self.created, self.now)

    @property
    def eta(self) -> str:
        """Time left at the labeling rate so far; honest about not knowing yet."""
        if not self.active:
            return "-"
        done = self.counters.total_labeled + self.counters.failed
        left = self.counters.unlabeled
        if self.created is None or done == 0:
            return "unknown until the first objects are labeled"
        created = self.created if self.created.tzinfo else self.created.replace(tzinfo=UTC)
        seconds = ((self.now or datetime.now(UTC)) - created).total_seconds()
        if seconds <= 0:
            return "unknown"
        remaining = left * seconds / done
        if remaining < 60:
            return "under a minute"
        minutes = int(remaining // 60)
        return (
            f"about {minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"about {minutes}m"
        )

    def text(self) -> str:
        lines = [f"{self.job_name}: {self.status}", self.progress]
        if self.counters.failed:
            lines.append(f"failed objects: {self.counters.failed}")
        lines.append(f"elapsed {self.elapsed}; time left: {self.eta}")
        if self.failure_reason:
            lines.append(f"failure: {self.failure_reason}")
        return "\n".join(lines)

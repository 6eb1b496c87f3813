"""Text shared by the console and Slack: escaping, progress bars, job and plan summaries."""

from __future__ import annotations

from datetime import UTC, datetime

from aws.groundtruth import JobInfo, LabelCounters


def escape_mrkdwn(text: str) -> str:
    """The one escaping function for Slack mrkdwn: user text must never become a link or mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def progress_bar(counters: LabelCounters, width: int = 20, total: int | None = None) -> str:
    total = total or counters.total
    done = counters.total_labeled + counters.failed
    if total <= 0:
        return "[" + "-" * width + "] waiting for the first objects"
    filled = min(width, round(width * done / total))
    pct = 100 * done // total
    return f"[{'#' * filled}{'-' * (width - filled)}] {pct}% ({counters.total_labeled}/{total} labeled)"


def elapsed_text(start: datetime | None, now: datetime | None = None) -> str:
    if start is None:
        return "-"
    now = now or datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    seconds = max(0, int((now - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def job_line(job: JobInfo) -> str:
    counters = job.counters
    extra = f", {counters.failed} failed" if counters.failed else ""
    return f"{job.name}  {job.status}  {progress_bar(counters, width=10)}{extra}"


def job_text(job: JobInfo) -> str:
    lines = [
        f"Job {job.name}: {job.status}",
        f"Progress: {progress_bar(job.counters)}",
    ]
    if job.counters.failed:
        lines.append(f"Failed objects: {job.counters.failed}")
    if job.created:
        lines.append(f"Running for: {elapsed_text(job.created)}")
    if job.failure_reason:
        lines.append(f"Failure reason: {job.failure_reason}")
    if job.output_dataset_uri:
        lines.append(f"Output manifest: {job.output_dataset_uri}")
    return "\n".join(lines)

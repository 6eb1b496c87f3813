"""Follow-up rounds merged into their parent job: each frame's consensus uses every answer.

A follow-up job (`relabel`, or the automatic rounds of bot/jobs/relabel.py) asks more workers about
some frames of its parent. Its answers are read once, in full, and kept by `source-ref` (a
follow-up has at most as many frames as its parent, a few numbers per click); the parent's
output is then streamed as usual and each of its frames gets the follow-ups' answers appended
as more workers. Frames keep the parent's line numbers, so COCO ids still lead back to the
parent's manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from bot.results.consensus import FloatArray
from bot.results.reader import (
    MAX_WORKERS_PER_LINE,
    Fetch,
    FrameBatch,
    Problem,
    ProblemSink,
    ReadReport,
    read_batches,
)
from bot.results.spec import LabelSpec


@dataclass(frozen=True)
class RoundSource:
    """One follow-up job's output manifest, and how to read the files it points at."""

    job_name: str
    lines: Iterable[str] | Iterable[bytes]
    fetch: Fetch


@dataclass
class _Answers:
    workers: list[str]
    seconds: list[float | None]
    coords: list[FloatArray]  # one (S, 2) array per worker
    width: float | None
    height: float | None
    rounds: int = 1


@dataclass
class FollowUps:
    """The answers of every follow-up round, by frame."""

    spec: LabelSpec
    by_ref: dict[str, _Answers] = field(default_factory=dict)
    jobs: list[tuple[str, int]] = field(default_factory=list)  # (job, frames answered)
    used: set[str] = field(default_factory=set)
    dropped: int = 0

    def read(
        self, source: RoundSource, sink: ProblemSink, label_attribute: str | None = None
    ) -> None:
        """Read one follow-up's output; its problems go to `sink`, naming the job."""

        def named(problem: Problem) -> None:
            sink(Problem(problem.line, f"in {source.job_name}: {problem.reason}", problem.worker))

        report = ReadReport(sink=named)
        for batch in read_batches(
            source.lines,
            self.spec,
            fetch=source.fetch,
            report=report,
            label_attribute=label_attribute,
        ):
            for b, ref in enumerate(batch.source_refs):
                n = len(batch.workers[b])
                answers = self.by_ref.get(ref)
                if answers is None:
                    self.by_ref[ref] = _Answers(
                        list(batch.workers[b]),
                        list(batch.seconds[b]),
                        list(batch.coords[b, :n]),
                        batch.widths[b],
                        batch.heights[b],
                    )
                    continue
                answers.workers += batch.workers[b]
                answers.seconds += batch.seconds[b]
                answers.coords += list(batch.coords[b, :n])
                answers.rounds += 1
        self.jobs.append((source.job_name, report.frames))

    def widen(self, batch: FrameBatch, sink: ProblemSink) -> FrameBatch:
        """The batch with each frame's follow-up answers appended as more workers."""
        hits = [b for b, ref in enumerate(batch.source_refs) if ref in self.by_ref]
        if not hits:
            return batch
        workers = [list(names) for names in batch.workers]
        seconds = [list(spent) for spent in batch.seconds]
        widths, heights = list(batch.widths), list(batch.heights)
        rounds = list(batch.rounds or [1] * len(batch))
        extra: dict[int, list[FloatArray]] = {}
        for b in hits:
            ref = batch.source_refs[b]
            answers = self.by_ref[ref]
            self.used.add(ref)
            room = max(MAX_WORKERS_PER_LINE - len(workers[b]), 0)
            if len(answers.workers) > room:
                self.dropped += len(answers.workers) - room
                sink(
                    Problem(
                        batch.lines[b],
                        f"{len(workers[b]) + len(answers.workers)} answers in all rounds; "
                        f"gtbot uses at most {MAX_WORKERS_PER_LINE} a frame, so the last "
                        f"{len(answers.workers) - room} were left out",
                    )
                )
            workers[b] += answers.workers[:room]
            seconds[b] += answers.seconds[:room]
            extra[b] = answers.coords[:room]
            rounds[b] += answers.rounds
            if widths[b] is None or heights[b] is None:
                widths[b], heights[b] = answers.width, answers.height
        width = max(map(len, workers))
        own = batch.coords.shape[1]
        coords = np.full((len(batch), width, self.spec.n_slots, 2), np.nan)
        coords[:, :own] = batch.coords
        for b, points in extra.items():
            start = len(batch.workers[b])
            if points:
                coords[b, start : start + len(points)] = np.stack(points)
        return FrameBatch(
            list(batch.lines),
            list(batch.source_refs),
            widths,
            heights,
            workers,
            seconds,
            coords,
            rounds=rounds,
        )

    def unmatched(self) -> list[str]:
        """Frames the follow-ups answered that the parent's output does not have."""
        return [ref for ref in self.by_ref if ref not in self.used]

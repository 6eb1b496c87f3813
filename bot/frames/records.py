"""Public records of a frames run: progress ticks, problems, written frames, summaries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DUPLICATE_THRESHOLD = 0.5
"""Mean absolute difference in grey levels (0-255) between 64x64 thumbnails below which a frame
counts as a near-duplicate. Codec and sensor noise averages out to ~0.1-0.2 at that size, while a
mouse moving in a typical arena view changes the mean by roughly 0.5-3, so 0.5 drops still scenes
and keeps posture changes; raise it to thin out slow-moving footage more aggressively."""


@dataclass(frozen=True)
class FramesProgress:
    """One progress tick; `done`/`total` count frames written in this run."""

    done: int
    total: int
    video: str


@dataclass(frozen=True)
class FramesProblem:
    """A video that could not be (fully) used; the rest of the run went on without it."""

    video: str
    reason: str

    def __str__(self) -> str:
        return f"{self.video}: {self.reason}"


@dataclass(frozen=True)
class ExtractedFrame:
    """One written frame, as recorded in frames.csv (`file` is relative to raw-images/)."""

    video: str
    frame: int
    timestamp_s: float
    file: str


@dataclass(frozen=True)
class VideoSummary:
    """What one video contributed in this run."""

    video: str
    frames_in_video: int
    existing: int
    wanted: int
    added: int
    duplicates_skipped: int


@dataclass(frozen=True)
class FramesResult:
    """Outcome of `extract_frames`; `total` counts traced frames now in raw-images/."""

    project_dir: Path
    output_dir: Path
    csv_path: Path
    requested: int
    existing: int
    added: tuple[ExtractedFrame, ...]
    videos: tuple[VideoSummary, ...]
    problems: tuple[FramesProblem, ...]
    elapsed_s: float

    @property
    def total(self) -> int:
        return self.existing + len(self.added)

    @property
    def shortfall(self) -> int:
        return max(0, self.requested - self.total)

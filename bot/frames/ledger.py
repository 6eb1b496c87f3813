"""frames.csv, the ledger that traces every kept frame, so that a re-run only tops the set up."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import ConfigError
from bot.frames.records import ExtractedFrame

FRAMES_CSV = "frames.csv"
CSV_COLUMNS: tuple[str, ...] = ("video", "frame", "timestamp_s", "file")
FRAME_DIGITS = 6


@dataclass
class Ledger:
    """frames.csv as read: which (video, frame) rows exist and whether their file is still there."""

    rows: set[tuple[str, int]] = field(default_factory=set)
    present: dict[str, dict[int, str]] = field(default_factory=dict)
    rejected: dict[str, set[int]] = field(default_factory=dict)

    @property
    def total_present(self) -> int:
        return sum(len(v) for v in self.present.values())


def read_ledger(csv_path: Path, out_dir: Path) -> Ledger:
    ledger = Ledger()
    if not csv_path.exists():
        return ledger
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return ledger
        missing = [c for c in CSV_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise ConfigError(
                f"{csv_path} is not a frames ledger: it lacks column(s) {', '.join(missing)} "
                f"(expected {','.join(CSV_COLUMNS)}). Move it aside and run frames again."
            )
        for line, row in enumerate(reader, start=2):
            try:
                video, frame, name = row["video"], int(row["frame"]), row["file"]
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{csv_path} line {line}: cannot read the row ({exc}). Fix or delete that "
                    "line and run frames again."
                ) from exc
            if (video, frame) in ledger.rows:
                continue
            ledger.rows.add((video, frame))
            if (out_dir / name).is_file():
                ledger.present.setdefault(video, {})[frame] = str(out_dir / name)
            else:
                ledger.rejected.setdefault(video, set()).add(frame)
    return ledger


def append_ledger(csv_path: Path, frames: Sequence[ExtractedFrame], ledger: Ledger) -> None:
    """Append new rows as soon as a video finishes, so an interrupted run loses no tracing."""
    fresh = [f for f in frames if (f.video, f.frame) not in ledger.rows]
    if not fresh:
        return
    new_file = not csv_path.exists() or csv_path.stat().st_size == 0
    with csv_path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(CSV_COLUMNS)
        for f in fresh:
            writer.writerow([f.video, f.frame, f"{f.timestamp_s:.4f}", f.file])
            ledger.rows.add((f.video, f.frame))


def frame_file_name(prefix: str, frame: int) -> str:
    """`<video-stem>_f<frame>.jpg`, frame zero-based and zero-padded to six digits."""
    return f"{prefix}_f{frame:0{FRAME_DIGITS}d}.jpg"

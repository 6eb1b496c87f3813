"""Sample annotation frames from experiment videos (step 1 of the MARS recipe).

Frames are spread over the videos in proportion to their length and evenly within each video,
near-duplicates (a still arena, a sleeping animal) are skipped so they do not crowd the set, and
every kept frame is traced in `annotation-data/frames.csv` so that a re-run only tops the set up.

Videos are read with PyAV (FFmpeg in-process); Norpix `.seq` files (StreamPix, MARS's capture
format) are read by a small reader here because FFmpeg has no demuxer for them. Each video (or each
stretch of about 1500 frames of a long one) is one task in a process pool: decoding is CPU-bound
and the tasks are independent, so the pool uses every core while each worker seeks to the
keyframe before a target and decodes forward only from there.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import functools
import io
import math
import multiprocessing
import os
import queue
import random
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import av.container
import av.error
import av.video.stream
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bot.errors import ConfigError, NotFoundError, UsageError

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".seq")
"""Extensions looked for (case-insensitive) under the videos folder, recursively."""

DEFAULT_DUPLICATE_THRESHOLD = 0.5
"""Mean absolute difference in grey levels (0-255) between 64x64 thumbnails below which a frame
counts as a near-duplicate. Codec and sensor noise averages out to ~0.1-0.2 at that size, while a
mouse moving in a typical arena view changes the mean by roughly 0.5-3, so 0.5 drops still scenes
and keeps posture changes; raise it to thin out slow-moving footage more aggressively."""

FRAMES_CSV = "frames.csv"
CSV_COLUMNS: tuple[str, ...] = ("video", "frame", "timestamp_s", "file")
FRAME_DIGITS = 6

_THUMB = 64
_TRIES_PER_SEGMENT = 4
_ALTERNATE_OFFSETS: tuple[float, ...] = (0.2, 0.8, 0.35, 0.65, 0.05, 0.95)
_MAX_ROUNDS = 3
_CHUNK_FRAMES = 1500
_SEQUENTIAL_FORMATS = {"mpeg", "mpegts", "mpegvideo", "h264", "hevc", "m4v"}
_SEQ_MAGIC = 0xFEED
_SEQ_RAW_FORMATS = {100: "L", 200: "BGR"}
_SEQ_JPEG_FORMATS = {102, 201}


# --------------------------------------------------------------------------------------------
# Public results


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


# --------------------------------------------------------------------------------------------
# Entry point


def extract_frames(
    project_dir: Path,
    *,
    count: int,
    source_dir: Path | None = None,
    seed: int = 0,
    quality: int = 90,
    workers: int | None = None,
    progress: Callable[[FramesProgress], None] | None = None,
    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
) -> FramesResult:
    """Top the project's raw-images/ up to `count` frames sampled from its videos.

    Frames already traced in frames.csv (and still on disk) count towards `count`; frames traced
    there whose file was deleted are treated as rejected and never picked again. The same inputs
    and `seed` give the same frames whatever the number of workers.
    """
    started = time.monotonic()
    project_dir = Path(project_dir)
    _check_arguments(project_dir, count, quality, workers, duplicate_threshold)
    data_dir = project_dir / "annotation-data"
    videos_dir = Path(source_dir) if source_dir is not None else data_dir / "videos"
    out_dir = data_dir / "raw-images"
    csv_path = data_dir / FRAMES_CSV

    videos = find_videos(videos_dir)
    ledger = _read_ledger(csv_path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    problems: list[FramesProblem] = []
    entries: list[_VideoEntry] = []
    prefixes = _file_prefixes(videos, videos_dir)
    for path in videos:
        key = _video_key(path, project_dir)
        if any(e.key == key for e in entries):
            continue  # a symlink to a video already listed
        try:
            frames_in_video = _probe_frame_count(path)
        except _VideoUnreadable as exc:
            problems.append(FramesProblem(key, str(exc)))
            continue
        if frames_in_video < 1:
            problems.append(FramesProblem(key, "contains no video frames"))
            continue
        kept = ledger.present.get(key, {})
        entries.append(
            _VideoEntry(
                path=path,
                key=key,
                prefix=prefixes[path],
                frames=frames_in_video,
                kept=dict(kept),
                rejected=frozenset(ledger.rejected.get(key, ())),
            )
        )

    existing_total = ledger.total_present
    need = count - existing_total
    added: list[ExtractedFrame] = []
    stats = {e.key: _VideoStats(existing=len(e.kept)) for e in entries}
    if need > 0 and entries:
        by_key = {e.key: e for e in entries}
        plan = _allocate_missing(entries, count, existing_total)
        reporter = _Reporter(progress, sum(plan.values()))
        cores = workers or os.cpu_count() or 1
        exhausted: set[str] = set()

        def finished(task: _VideoTask, outcome: _VideoOutcome) -> None:
            entry, stat = by_key[task.key], stats[task.key]
            stat.wanted += task.want
            stat.added += len(outcome.added)
            stat.duplicates += outcome.duplicates
            if outcome.frames_in_video is not None:
                entry.frames = min(entry.frames, outcome.frames_in_video)
            for frame in outcome.added:
                entry.kept[frame.frame] = str(out_dir / frame.file)
            _append_ledger(csv_path, outcome.added, ledger)
            added.extend(outcome.added)
            if outcome.problem is not None:
                problems.append(FramesProblem(task.key, outcome.problem))
            if len(outcome.added) < task.want or outcome.problem is not None:
                exhausted.add(task.key)

        for _round in range(_MAX_ROUNDS):
            wanted = [e for e in entries if plan.get(e.key, 0) > 0]
            if not wanted:
                break
            tasks = [
                task
                for e in wanted
                for task in _chunk_tasks(
                    e, plan[e.key], str(out_dir), quality, duplicate_threshold, seed
                )
            ]
            before_round = len(added)
            _run_tasks(tasks, min(cores, len(tasks)), reporter, finished)
            fresh = {(f.video, f.frame) for f in added[before_round:]}
            dropped = _drop_boundary_duplicates(tasks, by_key, fresh, stats, duplicate_threshold)
            added[:] = [f for f in added if (f.video, f.frame) not in dropped]
            reporter.done -= len(dropped)
            for video, frame in dropped:
                # Its frames.csv row stays and, with the file gone, marks it as rejected.
                by_key[video].kept.pop(frame, None)
                by_key[video].rejected = by_key[video].rejected | {frame}
            short = need - len(added)
            if short <= 0:
                break
            plan = _redistribute(entries, exhausted, short)
            reporter.extend(sum(plan.values()))
        reporter.finish()

    summaries = tuple(
        VideoSummary(
            video=e.key,
            frames_in_video=e.frames,
            existing=stats[e.key].existing,
            wanted=stats[e.key].wanted,
            added=stats[e.key].added,
            duplicates_skipped=stats[e.key].duplicates,
        )
        for e in entries
    )
    return FramesResult(
        project_dir=project_dir,
        output_dir=out_dir,
        csv_path=csv_path,
        requested=count,
        existing=existing_total,
        added=tuple(added),
        videos=summaries,
        problems=tuple(problems),
        elapsed_s=time.monotonic() - started,
    )


def format_frames_result(result: FramesResult) -> str:
    """Plain text for the console and for a Slack message (the caller escapes for mrkdwn)."""
    lines: list[str] = []
    name = result.project_dir.name
    if not result.added and result.existing >= result.requested:
        lines.append(
            f"{name}: already has {result.existing} traced frames (asked for "
            f"{result.requested}); nothing to add."
        )
    else:
        lines.append(
            f"{name}: added {len(result.added)} frames in {result.elapsed_s:.1f} s; "
            f"{result.total} of {result.requested} now in {result.output_dir}."
        )
    for video in result.videos:
        if video.wanted or video.added:
            dup = f", {video.duplicates_skipped} near-duplicates skipped"
            lines.append(
                f"  {video.video}: +{video.added} (had {video.existing}, "
                f"{video.frames_in_video} frames in video{dup if video.duplicates_skipped else ''})"
            )
    if result.shortfall and not result.problems:
        lines.append(
            f"Short by {result.shortfall}: the videos have too few distinct frames. Add videos or "
            "lower the duplicate threshold."
        )
    elif result.shortfall:
        lines.append(f"Short by {result.shortfall}.")
    if result.problems:
        lines.append(f"{len(result.problems)} video(s) could not be fully used:")
        lines.extend(f"  {p}" for p in result.problems)
    lines.append(f"Frames are traced in {result.csv_path}.")
    return "\n".join(lines)


def find_videos(videos_dir: Path) -> list[Path]:
    """Every supported video under `videos_dir`, sorted so that runs are reproducible."""
    if not videos_dir.is_dir():
        raise NotFoundError(
            f"No videos folder at {videos_dir}. Put the experiment videos there "
            f"({', '.join(VIDEO_EXTENSIONS)}) or pass another folder with --from DIR."
        )
    found = sorted(
        p
        for p in videos_dir.rglob("*")
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )
    if not found:
        raise NotFoundError(
            f"No videos found under {videos_dir} (searched recursively for "
            f"{', '.join(VIDEO_EXTENSIONS)}). Copy the videos there or pass --from DIR."
        )
    return found


# --------------------------------------------------------------------------------------------
# Validation, ledger (frames.csv), allocation


def _check_arguments(
    project_dir: Path, count: int, quality: int, workers: int | None, threshold: float
) -> None:
    if not project_dir.is_dir():
        raise NotFoundError(
            f"Project folder {project_dir} does not exist. Create it with `init <project>` "
            "or check the name and GTBOT_PROJECTS_DIR."
        )
    if not (project_dir / "project-config.yml").is_file():
        raise NotFoundError(
            f"{project_dir} is not a project: it has no project-config.yml. "
            "Create the project with `init <project>` first."
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(f"--count must be a whole number of frames, 1 or more (got {count!r}).")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise UsageError(f"--quality must be a JPEG quality from 1 to 100 (got {quality!r}).")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be 1 or more (got {workers!r}).")
    if not threshold >= 0:
        raise UsageError(f"The duplicate threshold must be 0 or more (got {threshold!r}).")


@dataclass
class _Ledger:
    """frames.csv as read: which (video, frame) rows exist and whether their file is still there."""

    rows: set[tuple[str, int]] = field(default_factory=set)
    present: dict[str, dict[int, str]] = field(default_factory=dict)
    rejected: dict[str, set[int]] = field(default_factory=dict)

    @property
    def total_present(self) -> int:
        return sum(len(v) for v in self.present.values())


def _read_ledger(csv_path: Path, out_dir: Path) -> _Ledger:
    ledger = _Ledger()
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


def _append_ledger(csv_path: Path, frames: Sequence[ExtractedFrame], ledger: _Ledger) -> None:
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


@dataclass
class _VideoEntry:
    path: Path
    key: str
    prefix: str
    frames: int
    kept: dict[int, str]
    rejected: frozenset[int]


@dataclass
class _VideoStats:
    existing: int
    wanted: int = 0
    added: int = 0
    duplicates: int = 0


def _video_key(path: Path, project_dir: Path) -> str:
    """How frames.csv names a video: relative to the project when inside it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _file_prefixes(videos: Sequence[Path], videos_dir: Path) -> dict[Path, str]:
    """Video stem, or the relative path flattened when two videos share a stem."""
    stems: dict[str, int] = {}
    for p in videos:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    prefixes: dict[Path, str] = {}
    for p in videos:
        if stems[p.stem] == 1:
            prefixes[p] = p.stem
        else:
            rel = p.relative_to(videos_dir)
            prefixes[p] = "_".join(rel.parts).replace(".", "_")
    return prefixes


def frame_file_name(prefix: str, frame: int) -> str:
    """`<video-stem>_f<frame>.jpg`, frame zero-based and zero-padded to six digits."""
    return f"{prefix}_f{frame:0{FRAME_DIGITS}d}.jpg"


def _apportion(weights: Sequence[float], total: int, caps: Sequence[int]) -> list[int]:
    """Largest-remainder split of `total` by weight, never above a cap (water-filling).

    When only zero-weight slots have room left, they share what remains equally, so a total
    that fits under the caps is always handed out in full.
    """
    n = len(weights)
    out = [0] * n
    remaining = min(total, sum(max(0, c) for c in caps))
    while remaining > 0:
        open_idx = [i for i in range(n) if out[i] < caps[i] and weights[i] > 0]
        eff = {i: float(weights[i]) for i in open_idx}
        if not open_idx:
            open_idx = [i for i in range(n) if out[i] < caps[i]]
            eff = {i: 1.0 for i in open_idx}
            if not open_idx:
                break
        wsum = sum(eff.values())
        shares = {i: remaining * eff[i] / wsum for i in open_idx}
        left = remaining
        for i in open_idx:
            step = min(math.floor(shares[i]), caps[i] - out[i])
            out[i] += step
            left -= step
        for i in sorted(open_idx, key=lambda i: (-(shares[i] - math.floor(shares[i])), i)):
            if left == 0:
                break
            if out[i] < caps[i]:
                out[i] += 1
                left -= 1
        remaining = left
    return out


def _allocate_missing(
    entries: Sequence[_VideoEntry], count: int, existing_total: int
) -> dict[str, int]:
    """Per-video frames to add so that the whole set approaches `count` proportionally.

    Each video's fair share of the frames attributable to the current videos is compared with
    what it already has; the missing frames go to the videos furthest below their share.
    """
    existing_here = sum(len(e.kept) for e in entries)
    from_other = existing_total - existing_here
    fair = _apportion(
        [float(e.frames) for e in entries],
        max(0, count - from_other),
        [e.frames for e in entries],
    )
    deficits = [max(0, f - len(e.kept)) for f, e in zip(fair, entries, strict=True)]
    need = count - existing_total
    room = [max(0, e.frames - len(e.kept) - len(e.rejected)) for e in entries]
    shares = _apportion(
        [float(d) for d in deficits], need, [min(r, d) for r, d in zip(room, deficits, strict=True)]
    )
    if sum(shares) < need:
        extra = _apportion(
            [float(e.frames) for e in entries],
            need - sum(shares),
            [r - s for r, s in zip(room, shares, strict=True)],
        )
        shares = [s + x for s, x in zip(shares, extra, strict=True)]
    return {e.key: s for e, s in zip(entries, shares, strict=True)}


def _redistribute(
    entries: Sequence[_VideoEntry], exhausted: set[str], short: int
) -> dict[str, int]:
    """Hand a shortfall (static or broken videos) to videos that still gave all they were asked."""
    open_entries = [e for e in entries if e.key not in exhausted]
    caps = [max(0, e.frames - len(e.kept) - len(e.rejected)) for e in open_entries]
    shares = _apportion([float(e.frames) for e in open_entries], short, caps)
    return {e.key: s for e, s in zip(open_entries, shares, strict=True) if s > 0}


# --------------------------------------------------------------------------------------------
# Running tasks and reporting progress


class _Reporter:
    """Throttles callbacks so a Slack message is not edited for every single frame."""

    def __init__(self, callback: Callable[[FramesProgress], None] | None, total: int) -> None:
        self._callback = callback
        self.total = total
        self.done = 0
        self._last = 0.0
        self._video = ""

    def extend(self, more: int) -> None:
        self.total = max(self.total, self.done + more)

    def tick(self, video: str, frames: int) -> None:
        self.done += frames
        self._video = video
        now = time.monotonic()
        if self._callback is not None and (now - self._last >= 0.2 or frames == 0):
            self._last = now
            self._callback(FramesProgress(min(self.done, self.total), self.total, video))

    def finish(self) -> None:
        """Close the bar at what was done, even when static videos left the set short."""
        if self._callback is not None and self.total:
            self._callback(FramesProgress(self.done, self.done, self._video))


@dataclass(frozen=True)
class _VideoTask:
    path: str
    key: str
    prefix: str
    frames: int
    want: int
    kept: tuple[tuple[int, str], ...]
    rejected: tuple[int, ...]
    out_dir: str
    quality: int
    threshold: float
    seed: int
    first: int
    last: int


@dataclass(frozen=True)
class _VideoOutcome:
    frames_in_video: int | None  # set when the video turned out shorter than probed
    added: tuple[ExtractedFrame, ...]
    duplicates: int
    problem: str | None


_progress_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _worker_entry(task: _VideoTask) -> _VideoOutcome:
    def tick(frames: int) -> None:
        if _progress_queue is not None:
            _progress_queue.put((task.key, frames))

    tick(0)
    return _process_video(task, tick)


def _chunk_tasks(
    entry: _VideoEntry, want: int, out_dir: str, quality: int, threshold: float, seed: int
) -> list[_VideoTask]:
    """One task per stretch of about `_CHUNK_FRAMES` frames, so one long video keeps every
    core busy; the split depends only on the video, never on the number of workers, so that
    results do not either."""
    parts = max(1, min(want, entry.frames // _CHUNK_FRAMES))
    bounds = _segments(entry.frames, parts)
    room = [
        max(1, hi - lo - sum(1 for f in (*entry.kept, *entry.rejected) if lo <= f < hi))
        for lo, hi in bounds
    ]
    wants = _apportion([float(hi - lo) for lo, hi in bounds], want, room)
    return [
        _VideoTask(
            path=str(entry.path),
            key=entry.key,
            prefix=entry.prefix,
            frames=hi - lo,
            want=w,
            kept=tuple(sorted((f, p) for f, p in entry.kept.items() if lo <= f < hi)),
            rejected=tuple(sorted(f for f in entry.rejected if lo <= f < hi)),
            out_dir=out_dir,
            quality=quality,
            threshold=threshold,
            seed=seed,
            first=lo,
            last=hi,
        )
        for (lo, hi), w in zip(bounds, wants, strict=True)
        if w > 0
    ]


def _drop_boundary_duplicates(
    tasks: Sequence[_VideoTask],
    by_key: dict[str, _VideoEntry],
    fresh: set[tuple[str, int]],
    stats: dict[str, _VideoStats],
    threshold: float,
) -> set[tuple[str, int]]:
    """Chunks of one video are sampled apart, so the first frame a chunk kept was never compared
    with the last kept frame before the chunk; do that now and drop near-duplicates (the next
    round tops the count up elsewhere). `fresh` holds the frames added by this round."""
    dropped: set[tuple[str, int]] = set()
    if threshold <= 0:
        return dropped
    for task in sorted(tasks, key=lambda t: (t.key, t.first)):
        if task.first == 0:
            continue
        entry = by_key[task.key]
        mine = sorted(
            f for f in entry.kept if task.first <= f < task.last and (task.key, f) in fresh
        )
        for frame in mine:
            before = [g for g in entry.kept if g < frame and (task.key, g) not in dropped]
            if not before:
                break
            try:
                diff = np.mean(
                    np.abs(
                        _thumb_from_file(Path(entry.kept[max(before)]))
                        - _thumb_from_file(Path(entry.kept[frame]))
                    )
                )
            except OSError:
                break
            if float(diff) >= threshold:
                break
            Path(entry.kept[frame]).unlink(missing_ok=True)
            dropped.add((task.key, frame))
            stats[task.key].added -= 1
            stats[task.key].duplicates += 1
    return dropped


def _run_tasks(
    tasks: Sequence[_VideoTask],
    pool_size: int,
    reporter: _Reporter,
    finished: Callable[[_VideoTask, _VideoOutcome], None],
) -> None:
    """Run every task, handing each outcome to `finished` as soon as its video is done, so
    frames.csv traces what was written even if the run is interrupted later."""
    # Longest videos first so one long video does not start last and hold the run up.
    ordered = sorted(tasks, key=lambda t: (-t.frames, t.key))
    if pool_size <= 1 or len(ordered) == 1:
        for task in ordered:
            reporter.tick(task.key, 0)
            finished(task, _process_video(task, functools.partial(reporter.tick, task.key)))
        return

    # spawn, not fork: the bot runs Slack and scheduler threads, and forking a threaded process
    # can deadlock the child on a lock held by another thread.
    ctx = multiprocessing.get_context("spawn")
    progress_queue = ctx.Queue()
    with ProcessPoolExecutor(
        max_workers=pool_size,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(progress_queue,),
    ) as pool:
        futures: dict[Future[_VideoOutcome], _VideoTask] = {
            pool.submit(_worker_entry, t): t for t in ordered
        }
        pending: set[Future[_VideoOutcome]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(progress_queue, reporter)
            for fut in sorted(done, key=lambda f: futures[f].key):
                task = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # a crashed worker must not sink the other videos
                    outcome = _VideoOutcome(
                        None, (), 0, f"failed while extracting ({type(exc).__name__}: {exc})"
                    )
                finished(task, outcome)
        _drain(progress_queue, reporter)


def _drain(progress_queue: Any, reporter: _Reporter) -> None:
    while True:
        try:
            key, frames = progress_queue.get_nowait()
        except queue.Empty:
            return
        reporter.tick(key, frames)


# --------------------------------------------------------------------------------------------
# Per-video sampling (runs in a worker)


class _Decoded(Protocol):
    index: int
    timestamp_s: float

    def thumb(self) -> NDArray[np.float32]: ...

    def image(self) -> Image.Image: ...


class _Reader(Protocol):
    frame_count: int
    declared_count: bool

    def read(self, index: int) -> _Decoded | None: ...

    def close(self) -> None: ...


class _VideoUnreadable(Exception):
    """The file cannot be opened or parsed as a video."""


def _process_video(task: _VideoTask, tick: Callable[[int], None]) -> _VideoOutcome:
    try:
        reader = _open_reader(Path(task.path))
    except _VideoUnreadable as exc:
        return _VideoOutcome(None, (), 0, str(exc))
    try:
        return _sample_video(task, reader, tick)
    finally:
        reader.close()


def _sample_video(task: _VideoTask, reader: _Reader, tick: Callable[[int], None]) -> _VideoOutcome:
    start = task.first
    frames = min(task.last, reader.frame_count)
    kept: dict[int, NDArray[np.float32]] = {}
    for index, path in task.kept:
        # An unreadable earlier frame still counts; it just cannot be compared with.
        with contextlib.suppress(OSError):
            kept[index] = _thumb_from_file(Path(path))
    tried: set[int] = set(task.rejected) | {index for index, _ in task.kept}
    added: list[ExtractedFrame] = []
    duplicates = 0
    problem: str | None = None
    end = frames  # first index known not to exist
    still: list[tuple[int, int]] = []

    def is_still(index: int) -> bool:
        return any(lo <= index <= hi for lo, hi in still)

    def attempt(index: int) -> bool | None:
        """True if kept, False if skipped, None if past the end of the readable video."""
        nonlocal duplicates, end, problem
        tried.add(index)
        try:
            decoded = reader.read(index)
        except (av.error.FFmpegError, OSError, ValueError, struct.error) as exc:
            problem = f"decoding failed near frame {index} ({_short(exc)}); kept what was read"
            end = min(end, index)
            return None
        if decoded is None:
            end = min(end, index)
            return None
        if decoded.index in kept or decoded.index in task.rejected:
            return False
        thumb = decoded.thumb()
        twin = _duplicate_of(thumb, decoded.index, kept, task.threshold)
        if twin is not None:
            duplicates += 1
            # Both ends look alike, so the stretch between them is taken as still: no more
            # decodes are spent inside it.
            still.append((min(twin, decoded.index), max(twin, decoded.index)))
            return False
        name = frame_file_name(task.prefix, decoded.index)
        target = Path(task.out_dir) / name
        tmp = target.with_name(f".{name}.part")
        decoded.image().save(tmp, format="JPEG", quality=task.quality)
        os.replace(tmp, target)
        kept[decoded.index] = thumb
        tried.add(decoded.index)
        added.append(ExtractedFrame(task.key, decoded.index, round(decoded.timestamp_s, 4), name))
        tick(1)
        return True

    total = min(frames - start, len(kept) + task.want)
    segments = [(start + lo, start + hi) for lo, hi in _segments(frames - start, total)]
    rng = random.Random(f"{task.seed}:{task.key}:{start}:{total}")
    jitter = [rng.uniform(-0.25, 0.25) for _ in segments]
    occupied = {_segment_of(i, segments) for i in kept}
    free = [s for s in range(len(segments)) if s not in occupied]
    if len(free) > task.want:
        step = len(free) / task.want
        free = [free[int(j * step + step / 2)] for j in range(task.want)]

    for s in free:
        if len(added) >= task.want or problem is not None:
            break
        lo, hi = segments[s]
        if lo >= end:
            break
        options = [_position(lo, hi, 0.5 + jitter[s])]
        options += [_position(lo, hi, f) for f in _ALTERNATE_OFFSETS]
        attempts = 0
        for index in dict.fromkeys(options):
            if attempts >= _TRIES_PER_SEGMENT or index >= end:
                break
            if index in tried or is_still(index):
                continue
            attempts += 1
            outcome = attempt(index)
            if outcome is None or outcome:
                break

    # Fill pass: static stretches left segments empty; try the positions furthest from any kept
    # frame, within a bounded budget of decodes so a wholly static video ends quickly.
    budget = 3 * (task.want - len(added)) + 8
    pool = sorted(
        {
            _position(lo, hi, f)
            for lo, hi in segments
            for f in (0.5, *_ALTERNATE_OFFSETS, 0.0, 0.5 + 0.5 / _TRIES_PER_SEGMENT)
        }
        - tried
    )
    while len(added) < task.want and budget > 0 and problem is None:
        pool = [i for i in pool if i < end and i not in tried and not is_still(i)]
        if not pool:
            break
        anchors = sorted(kept)
        index = max(pool, key=lambda i: (_gap(i, anchors, start, end), -i))
        budget -= 1
        attempt(index)

    if problem is None and end < frames and reader.declared_count:
        problem = (
            f"ends at frame {end} although its header declares {reader.frame_count} frames "
            "(truncated or damaged?); kept what was readable"
        )
    return _VideoOutcome(end if end < frames else None, tuple(added), duplicates, problem)


def _segments(frames: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, frames))
    bounds = [(i * frames) // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def _segment_of(index: int, segments: Sequence[tuple[int, int]]) -> int:
    for s, (lo, hi) in enumerate(segments):
        if lo <= index < hi:
            return s
    return len(segments) - 1


def _position(lo: int, hi: int, fraction: float) -> int:
    return max(lo, min(hi - 1, lo + int((hi - lo) * fraction)))


def _gap(index: int, anchors: Sequence[int], start: int, end: int) -> int:
    """Distance to the nearest kept frame; a video edge counts as a kept frame twice as far."""
    k = bisect.bisect_left(anchors, index)
    before = index - anchors[k - 1] if k > 0 else 2 * (index - start + 1)
    after = anchors[k] - index if k < len(anchors) else 2 * (end - index)
    return min(before, after)


def _duplicate_of(
    thumb: NDArray[np.float32], index: int, kept: dict[int, NDArray[np.float32]], threshold: float
) -> int | None:
    """The kept frame this one nearly repeats, if any.

    Compared with the nearest kept frame on each side: the last kept one in time, and the next
    one when frames are added between earlier picks (re-runs, fill pass).
    """
    if not kept or threshold <= 0:
        return None
    before = [i for i in kept if i < index]
    after = [i for i in kept if i > index]
    for n in ([max(before)] if before else []) + ([min(after)] if after else []):
        if float(np.mean(np.abs(thumb - kept[n]))) < threshold:
            return n
    return None


def _thumb_from_file(path: Path) -> NDArray[np.float32]:
    with Image.open(path) as im:
        im.draft("L", (_THUMB * 2, _THUMB * 2))
        return _thumb_from_image(im)


def _thumb_from_image(im: Image.Image) -> NDArray[np.float32]:
    small = im.convert("L").resize((_THUMB, _THUMB), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Readers


def _probe_frame_count(path: Path) -> int:
    reader = _open_reader(path)
    try:
        return reader.frame_count
    finally:
        reader.close()


def _open_reader(path: Path) -> _Reader:
    if path.suffix.lower() == ".seq":
        return _SeqReader(path)
    return _AvReader(path)


@dataclass
class _AvDecoded:
    index: int
    timestamp_s: float
    frame: av.VideoFrame

    def thumb(self) -> NDArray[np.float32]:
        small = self.frame.reformat(
            width=_THUMB, height=_THUMB, format="gray", interpolation="AREA"
        )
        return small.to_ndarray().astype(np.float32)

    def image(self) -> Image.Image:
        # to_ndarray + fromarray is several times faster than VideoFrame.to_image at 1080p.
        return Image.fromarray(self.frame.to_ndarray(format="rgb24"), "RGB")


class _AvReader:
    """Random access by frame number over FFmpeg: seek to the keyframe at or before the target,
    then decode forward; close targets are reached by decoding on instead of seeking again.

    MPEG program/transport streams and raw elementary streams carry timestamps on only some
    packets, so after a seek FFmpeg's guessed timestamps can be a frame off; those are read
    front to back and frames are numbered by counting, which is exact.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._container = self._open()
        try:
            stream = self._container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise _VideoUnreadable("has no frame rate (cannot map frame numbers to times)")
            self._rate = Fraction(rate)
            if stream.time_base is None:
                raise _VideoUnreadable("has no time base")
            self._tb = Fraction(stream.time_base)
            scale = self._tb * self._rate
            self._scale_num, self._scale_den = scale.numerator, scale.denominator
            self._start = stream.start_time or 0
            formats = set(self._container.format.name.split(","))
            self._sequential = bool(formats & _SEQUENTIAL_FORMATS)
            self.declared_count = bool(stream.frames) and not self._sequential
            if self.declared_count:
                self.frame_count = int(stream.frames)
            else:
                self.frame_count = self._estimate_count()
        except _VideoUnreadable:
            self._container.close()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._container.close()
            raise _VideoUnreadable(f"cannot be read as a video ({_short(exc)})") from exc
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next_index: int | None = None
        self._gop = 0

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(str(self._path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise _VideoUnreadable(f"cannot be opened as a video ({_short(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise _VideoUnreadable("has no video stream")
        # No codec threads: frame threading refills its pipeline after every seek, which costs
        # more than it gains here; the process pool (and video chunks) use the cores instead.
        return container

    @property
    def _stream(self) -> av.video.stream.VideoStream:
        return self._container.streams.video[0]

    def _estimate_count(self) -> int:
        """Frame count when the header has none: container duration (Matroska, WebM) or, for
        streams without a trustworthy duration, one demux pass (no decoding)."""
        stream = self._stream
        if not self._sequential:
            if stream.duration:
                seconds = Fraction(stream.duration) * self._tb
                return max(1, round(seconds * self._rate))
            if self._container.duration:
                seconds = Fraction(self._container.duration, av.time_base)
                return max(1, round(seconds * self._rate))
        counted = sum(1 for p in self._container.demux(stream) if p.size)
        self._container.close()
        self._container = self._open()
        return counted

    def _index_of(self, frame: av.VideoFrame) -> int:
        if self._sequential:
            return self._next_index or 0
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return self._next_index or 0
        # Integer round-half-up of (pts - start) * time_base * rate: exact, and cheap enough to
        # run for every frame decoded on the way to a target.
        num = (pts - self._start) * self._scale_num
        return (2 * num + self._scale_den) // (2 * self._scale_den)

    def _seek(self, index: int) -> None:
        if self._sequential:
            self._container.close()
            self._container = self._open()
            self._decoder = self._container.decode(self._stream)
            self._next_index = 0
            return
        pts = self._start + int(Fraction(index) / self._rate / self._tb)
        self._container.seek(max(pts, self._start), stream=self._stream, backward=True)
        self._decoder = self._container.decode(self._stream)
        self._next_index = None

    def read(self, index: int) -> _AvDecoded | None:
        ahead = None if self._next_index is None else index - self._next_index
        if self._sequential:
            sought = self._decoder is None or ahead is None or ahead < 0
        else:
            sought = self._decoder is None or ahead is None or ahead < 0 or ahead > self._gop
        if sought:
            self._seek(index)
        for retry in range(4):
            assert self._decoder is not None
            decoded_here = 0
            for frame in self._decoder:
                current = self._index_of(frame)
                decoded_here += 1
                self._next_index = current + 1
                if current < index:
                    continue
                if sought and decoded_here == 1 and current > index > 0 and retry < 3:
                    break  # the seek landed past the target: the container's index is coarse
                if sought:
                    self._gop = max(self._gop, decoded_here)
                if frame.pts is not None and not self._sequential:
                    seconds = float((frame.pts - self._start) * self._tb)
                else:
                    seconds = float(current / self._rate)
                return _AvDecoded(current, max(0.0, seconds), frame)
            else:
                self._decoder = None
                self._next_index = None
                return None
            self._seek(max(0, index - max(16, self._gop) * 2**retry))
        return None

    def close(self) -> None:
        self._container.close()


@dataclass
class _SeqDecoded:
    index: int
    timestamp_s: float
    data: bytes
    mode: str
    size: tuple[int, int]

    def _open(self, draft: bool) -> Image.Image:
        if self.mode == "JPEG":
            im = Image.open(io.BytesIO(self.data))
            if draft:
                im.draft("L", (_THUMB * 2, _THUMB * 2))
            im.load()
            return im
        if self.mode == "BGR":
            arr = np.frombuffer(self.data, np.uint8).reshape(self.size[1], self.size[0], 3)
            return Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1]), "RGB")
        return Image.frombytes("L", self.size, self.data)

    def thumb(self) -> NDArray[np.float32]:
        return _thumb_from_image(self._open(draft=True))

    def image(self) -> Image.Image:
        return self._open(draft=False)


class _SeqReader:
    """Norpix StreamPix `.seq`: a header (1024 bytes, 8192 from version 5) then frames.

    Raw frames (8-bit mono, 24-bit BGR) sit at fixed offsets `true_image_size` apart. JPEG frames
    (as MARS records them) are `uint32 size` + JPEG bytes (`size` counts its own 4 bytes) followed
    by an 8-byte timestamp; each offset is checked against the JPEG start marker, and a small
    forward search absorbs padding some StreamPix versions add, so a damaged index stops cleanly.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._fh = path.open("rb")
        except OSError as exc:
            raise _VideoUnreadable(f"cannot be read ({_short(exc)})") from exc
        try:
            self._parse_header(path)
        except (struct.error, OSError) as exc:
            self._fh.close()
            raise _VideoUnreadable(f"has a damaged Norpix .seq header ({_short(exc)})") from exc
        except _VideoUnreadable:
            self._fh.close()
            raise

    def _parse_header(self, path: Path) -> None:
        head = self._fh.read(1024)
        if len(head) < 620:
            raise _VideoUnreadable("is too short to be a Norpix .seq file")
        (magic,) = struct.unpack_from("<I", head, 0)
        if magic != _SEQ_MAGIC:
            raise _VideoUnreadable("is not a Norpix .seq file (bad magic number)")
        version, header_size = struct.unpack_from("<ii", head, 28)
        width, height, bit_depth, _real, image_bytes, image_format, allocated = struct.unpack_from(
            "<7I", head, 548
        )
        _origin, true_size = struct.unpack_from("<II", head, 576)
        (fps,) = struct.unpack_from("<d", head, 584)
        if header_size <= 0:
            header_size = 8192 if version >= 5 else 1024
        self._size = (int(width), int(height))
        self._fps = fps if math.isfinite(fps) and fps > 0 else 0.0
        self._ts_len = 8 if version >= 5 else 6
        self._file_size = path.stat().st_size
        self.declared_count = allocated > 0
        if image_format in _SEQ_RAW_FORMATS:
            self._mode = _SEQ_RAW_FORMATS[image_format]
            depth = 8 if self._mode == "L" else 24
            if bit_depth != depth or image_bytes != width * height * depth // 8:
                raise _VideoUnreadable(
                    f"uses {bit_depth}-bit raw frames; only 8-bit mono and 24-bit BGR raw "
                    "frames are supported (export the sequence as JPEG .seq or .avi in StreamPix)"
                )
            self._image_bytes = int(image_bytes)
            self._block = int(true_size) or int(image_bytes) + self._ts_len
            self._offsets: list[int] = []
            readable = max(0, (self._file_size - header_size) // self._block)
            self._base = header_size
            self.frame_count = min(int(allocated), readable) if allocated else readable
        elif image_format in _SEQ_JPEG_FORMATS:
            self._mode = "JPEG"
            self._base = header_size
            self._offsets = self._index_jpeg(header_size, int(allocated))
            self.frame_count = len(self._offsets)
        else:
            raise _VideoUnreadable(
                f"uses Norpix image format {image_format}, which is not supported (raw 8-bit "
                "mono/24-bit BGR and JPEG are); export it as .avi from StreamPix"
            )
        if self.frame_count == 0:
            raise _VideoUnreadable("contains no readable frames")

    def _index_jpeg(self, offset: int, allocated: int) -> list[int]:
        offsets: list[int] = []
        limit = allocated if allocated > 0 else 1 << 62
        while len(offsets) < limit and offset + 8 <= self._file_size:
            self._fh.seek(offset)
            head = self._fh.read(6)
            if len(head) < 6 or head[4:6] != b"\xff\xd8":
                found = self._resync(offset)
                if found is None:
                    break
                offset = found
                continue
            (size,) = struct.unpack_from("<I", head, 0)
            if size < 8 or offset + size > self._file_size:
                break
            offsets.append(offset)
            offset += size + self._ts_len
        return offsets

    def _resync(self, offset: int) -> int | None:
        """Look a little ahead for `size` + JPEG start marker (padding between frames)."""
        self._fh.seek(offset)
        window = self._fh.read(1024)
        at = window.find(b"\xff\xd8\xff", 4)
        if at < 4:
            return None
        return offset + at - 4

    def read(self, index: int) -> _SeqDecoded | None:
        if index < 0 or index >= self.frame_count:
            return None
        if self._mode == "JPEG":
            start = self._offsets[index]
            self._fh.seek(start)
            (size,) = struct.unpack("<I", self._fh.read(4))
            data = self._fh.read(size - 4)
            stamp = self._fh.read(self._ts_len)
        else:
            start = self._base + index * self._block
            self._fh.seek(start)
            data = self._fh.read(self._image_bytes)
            stamp = self._fh.read(self._ts_len)
            if len(data) < self._image_bytes:
                return None
        seconds = index / self._fps if self._fps else _seq_stamp(stamp) - self._first_stamp()
        return _SeqDecoded(index, seconds, data, self._mode, self._size)

    def _first_stamp(self) -> float:
        if self._mode == "JPEG":
            self._fh.seek(self._offsets[0])
            (size,) = struct.unpack("<I", self._fh.read(4))
            self._fh.seek(self._offsets[0] + size)
        else:
            self._fh.seek(self._base + self._image_bytes)
        return _seq_stamp(self._fh.read(self._ts_len))

    def close(self) -> None:
        self._fh.close()


def _seq_stamp(raw: bytes) -> float:
    if len(raw) >= 8:
        secs, ms, us = struct.unpack("<IHH", raw[:8])
        return secs + ms / 1e3 + us / 1e6
    if len(raw) >= 6:
        secs, ms = struct.unpack("<IH", raw[:6])
        return secs + ms / 1e3
    return 0.0


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_DUPLICATE_THRESHOLD",
    "ExtractedFrame",
    "FRAMES_CSV",
    "FramesProblem",
    "FramesProgress",
    "FramesResult",
    "VIDEO_EXTENSIONS",
    "VideoSummary",
    "extract_frames",
    "find_videos",
    "format_frames_result",
    "frame_file_name",
]

"""Per-video sampling (runs in a worker): evenly spread picks, near-duplicates skipped, fill pass."""

from __future__ import annotations

import bisect
import contextlib
import os
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import av.error
import av.video.stream
import numpy as np
from numpy.typing import NDArray

from bot.frames.decoding import VideoReader, VideoUnreadable, short_error, thumb_from_file
from bot.frames.ledger import frame_file_name
from bot.frames.records import ExtractedFrame
from bot.frames.videos import open_reader

_TRIES_PER_SEGMENT = 4
_ALTERNATE_OFFSETS: tuple[float, ...] = (0.2, 0.8, 0.35, 0.65, 0.05, 0.95)


@dataclass(frozen=True)
class VideoTask:
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
class VideoOutcome:
    frames_in_video: int | None  # set when the video turned out shorter than probed
    added: tuple[ExtractedFrame, ...]
    duplicates: int
    problem: str | None


def process_video(task: VideoTask, tick: Callable[[int], None]) -> VideoOutcome:
    try:
        reader = open_reader(Path(task.path))
    except VideoUnreadable as exc:
        return VideoOutcome(None, (), 0, str(exc))
    try:
        return _sample_video(task, reader, tick)
    finally:
        reader.close()


def _sample_video(
    task: VideoTask, reader: VideoReader, tick: Callable[[int], None]
) -> VideoOutcome:
    start = task.first
    frames = min(task.last, reader.frame_count)
    kept: dict[int, NDArray[np.float32]] = {}
    for index, path in task.kept:
        # An unreadable earlier frame still counts; it just cannot be compared with.
        with contextlib.suppress(OSError):
            kept[index] = thumb_from_file(Path(path))
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
            problem = f"decoding failed near frame {index} ({short_error(exc)}); kept what was read"
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
    segments = [(start + lo, start + hi) for lo, hi in split_evenly(frames - start, total)]
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
    return VideoOutcome(end if end < frames else None, tuple(added), duplicates, problem)


def split_evenly(frames: int, parts: int) -> list[tuple[int, int]]:
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

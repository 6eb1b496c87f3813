"""Running per-video tasks in a process pool (one task per stretch of a long video) and
reporting their progress."""

from __future__ import annotations

import functools
import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from bot.frames.allocation import VideoEntry, VideoStats, apportion
from bot.frames.decoding import thumb_from_file
from bot.frames.records import FramesProgress
from bot.frames.sampling import VideoOutcome, VideoTask, process_video, split_evenly

_CHUNK_FRAMES = 1500


class ProgressReporter:
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


_progress_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _worker_entry(task: VideoTask) -> VideoOutcome:
    def tick(frames: int) -> None:
        if _progress_queue is not None:
            _progress_queue.put((task.key, frames))

    tick(0)
    return process_video(task, tick)


def chunk_tasks(
    entry: VideoEntry, want: int, out_dir: str, quality: int, threshold: float, seed: int
) -> list[VideoTask]:
    """One task per stretch of about `_CHUNK_FRAMES` frames, so one long video keeps every
    core busy; the split depends only on the video, never on the number of workers, so that
    results do not either."""
    parts = max(1, min(want, entry.frames // _CHUNK_FRAMES))
    bounds = split_evenly(entry.frames, parts)
    room = [
        max(1, hi - lo - sum(1 for f in (*entry.kept, *entry.rejected) if lo <= f < hi))
        for lo, hi in bounds
    ]
    wants = apportion([float(hi - lo) for lo, hi in bounds], want, room)
    return [
        VideoTask(
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


def drop_boundary_duplicates(
    tasks: Sequence[VideoTask],
    by_key: dict[str, VideoEntry],
    fresh: set[tuple[str, int]],
    stats: dict[str, VideoStats],
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
                        thumb_from_file(Path(entry.kept[max(before)]))
                        - thumb_from_file(Path(entry.kept[frame]))
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


def run_tasks(
    tasks: Sequence[VideoTask],
    pool_size: int,
    reporter: ProgressReporter,
    finished: Callable[[VideoTask, VideoOutcome], None],
) -> None:
    """Run every task, handing each outcome to `finished` as soon as its video is done, so
    frames.csv traces what was written even if the run is interrupted later."""
    # Longest videos first so one long video does not start last and hold the run up.
    ordered = sorted(tasks, key=lambda t: (-t.frames, t.key))
    if pool_size <= 1 or len(ordered) == 1:
        for task in ordered:
            reporter.tick(task.key, 0)
            finished(task, process_video(task, functools.partial(reporter.tick, task.key)))
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
        futures: dict[Future[VideoOutcome], VideoTask] = {
            pool.submit(_worker_entry, t): t for t in ordered
        }
        pending: set[Future[VideoOutcome]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(progress_queue, reporter)
            for fut in sorted(done, key=lambda f: futures[f].key):
                task = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # a crashed worker must not sink the other videos
                    outcome = VideoOutcome(
                        None, (), 0, f"failed while extracting ({type(exc).__name__}: {exc})"
                    )
                finished(task, outcome)
        _drain(progress_queue, reporter)


def _drain(progress_queue: Any, reporter: ProgressReporter) -> None:
    while True:
        try:
            key, frames = progress_queue.get_nowait()
        except queue.Empty:
            return
        reporter.tick(key, frames)

"""The entry point: `extract_frames` tops a project's raw-images/ up, and its plain-text report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from bot.errors import NotFoundError, UsageError
from bot.frames.allocation import (
    VideoEntry,
    VideoStats,
    allocate_missing,
    file_prefixes,
    redistribute,
    video_key,
)
from bot.frames.decoding import VideoUnreadable
from bot.frames.ledger import FRAMES_CSV, append_ledger, read_ledger
from bot.frames.records import (
    DEFAULT_DUPLICATE_THRESHOLD,
    ExtractedFrame,
    FramesProblem,
    FramesProgress,
    FramesResult,
    VideoSummary,
)
from bot.frames.sampling import VideoOutcome, VideoTask
from bot.frames.videos import find_videos, probe_frame_count
from bot.frames.worker_pool import (
    ProgressReporter,
    chunk_tasks,
    drop_boundary_duplicates,
    run_tasks,
)
from bot.project import require_config_file

_MAX_ROUNDS = 3


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
    ledger = read_ledger(csv_path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    problems: list[FramesProblem] = []
    entries: list[VideoEntry] = []
    prefixes = file_prefixes(videos, videos_dir)
    for path in videos:
        key = video_key(path, project_dir)
        if any(e.key == key for e in entries):
            continue  # a symlink to a video already listed
        try:
            frames_in_video = probe_frame_count(path)
        except VideoUnreadable as exc:
            problems.append(FramesProblem(key, str(exc)))
            continue
        if frames_in_video < 1:
            problems.append(FramesProblem(key, "contains no video frames"))
            continue
        kept = ledger.present.get(key, {})
        entries.append(
            VideoEntry(
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
    stats = {e.key: VideoStats(existing=len(e.kept)) for e in entries}
    if need > 0 and entries:
        by_key = {e.key: e for e in entries}
        plan = allocate_missing(entries, count, existing_total)
        reporter = ProgressReporter(progress, sum(plan.values()))
        cores = workers or os.cpu_count() or 1
        exhausted: set[str] = set()

        def finished(task: VideoTask, outcome: VideoOutcome) -> None:
            entry, stat = by_key[task.key], stats[task.key]
            stat.wanted += task.want
            stat.added += len(outcome.added)
            stat.duplicates += outcome.duplicates
            if outcome.frames_in_video is not None:
                entry.frames = min(entry.frames, outcome.frames_in_video)
            for frame in outcome.added:
                entry.kept[frame.frame] = str(out_dir / frame.file)
            append_ledger(csv_path, outcome.added, ledger)
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
                for task in chunk_tasks(
                    e, plan[e.key], str(out_dir), quality, duplicate_threshold, seed
                )
            ]
            before_round = len(added)
            run_tasks(tasks, min(cores, len(tasks)), reporter, finished)
            fresh = {(f.video, f.frame) for f in added[before_round:]}
            dropped = drop_boundary_duplicates(tasks, by_key, fresh, stats, duplicate_threshold)
            added[:] = [f for f in added if (f.video, f.frame) not in dropped]
            reporter.done -= len(dropped)
            for video, frame in dropped:
                # Its frames.csv row stays and, with the file gone, marks it as rejected.
                by_key[video].kept.pop(frame, None)
                by_key[video].rejected = by_key[video].rejected | {frame}
            short = need - len(added)
            if short <= 0:
                break
            plan = redistribute(entries, exhausted, short)
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


def _check_arguments(
    project_dir: Path, count: int, quality: int, workers: int | None, threshold: float
) -> None:
    if not project_dir.is_dir():
        raise NotFoundError(
            f"Project folder {project_dir} does not exist. Create it with `init <project>` "
            "or check the name and GTBOT_PROJECTS_DIR."
        )
    require_config_file(project_dir, project_dir.name)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(f"--count must be a whole number of frames, 1 or more (got {count!r}).")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise UsageError(f"--quality must be a JPEG quality from 1 to 100 (got {quality!r}).")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be 1 or more (got {workers!r}).")
    if not threshold >= 0:
        raise UsageError(f"The duplicate threshold must be 0 or more (got {threshold!r}).")

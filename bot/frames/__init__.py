"""Sample annotation frames from experiment videos (step 1 of the MARS recipe).

Frames are spread over the videos in proportion to their length and evenly within each video,
near-duplicates (a still arena, a sleeping animal) are skipped so they do not crowd the set, and
every kept frame is traced in `annotation-data/frames.csv` so that a re-run only tops the set up.

Videos are read with PyAV (FFmpeg in-process); Norpix `.seq` files (StreamPix, MARS's capture
format) are read by a small reader here because FFmpeg has no demuxer for them. Each video (or each
stretch of about 1500 frames of a long one) is one task in a process pool: decoding is CPU-bound
and the tasks are independent, so the pool uses every core while each worker seeks to the
keyframe before a target and decodes forward only from there.

The package holds one module per concern: `extraction` (the entry point and its report), `records`
(the public results), `ledger` (frames.csv), `allocation` (frames per video), `worker_pool` (the
process pool and progress), `sampling` (per-video picks and near-duplicates), `videos` (finding
and opening videos), `decoding` (what readers hand back), `pyav_video` and `norpix_seq` (readers).
"""

from bot.frames.extraction import extract_frames, format_frames_result
from bot.frames.ledger import CSV_COLUMNS, FRAMES_CSV, frame_file_name
from bot.frames.records import (
    DEFAULT_DUPLICATE_THRESHOLD,
    ExtractedFrame,
    FramesProblem,
    FramesProgress,
    FramesResult,
    VideoSummary,
)
from bot.frames.videos import VIDEO_EXTENSIONS, find_videos

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

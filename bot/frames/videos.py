"""Finding the experiment videos and opening each with the reader its format needs."""

from __future__ import annotations

from pathlib import Path

from bot.errors import NotFoundError
from bot.frames.decoding import VideoReader
from bot.frames.norpix_seq import NorpixSeqReader
from bot.frames.pyav_video import PyAvReader

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".seq")
"""Extensions looked for (case-insensitive) under the videos folder, recursively."""


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


def probe_frame_count(path: Path) -> int:
    reader = open_reader(path)
    try:
        return reader.frame_count
    finally:
        reader.close()


def open_reader(path: Path) -> VideoReader:
    if path.suffix.lower() == ".seq":
        return NorpixSeqReader(path)
    return PyAvReader(path)

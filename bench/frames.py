"""Benchmark `bot.frames.extract_frames` on a 5-minute 1080p video.

Usage: .venv/bin/python bench/frames.py [--count 100 200] [--workers N] [--cache DIR]

The video (1920x1080, 30 fps, 9000 frames, H.264 with x264's default keyframe interval of 250,
textured background scrolling under a moving blob so that frames differ) is encoded once into the
cache directory; encoding takes a couple of minutes. Each run extracts into a fresh temporary
project. As a reference it also times a full sequential decode of the file, which is what an
`ffmpeg -vf select=...` pass over the same selection has to do; `ffmpeg` itself is timed over the
same frame numbers when it is on PATH (one `-ss` input seek per frame, like a shell script would).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.frames import extract_frames  # noqa: E402

WIDTH, HEIGHT, FPS, SECONDS = 1920, 1080, 30, 300


def make_video(path: Path) -> Path:
    """Encode the benchmark clip once; a finished file is reused (written under a temp name)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.mp4")
    rng = np.random.default_rng(0)
    small = rng.integers(30, 200, size=(HEIGHT // 8 + 1, WIDTH // 8 + 1), dtype=np.uint8)
    texture = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[:HEIGHT, :WIDTH]
    texture = np.concatenate([texture, texture[:, ::-1]], axis=1)
    chroma = np.full((HEIGHT // 2, WIDTH), 128, np.uint8)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    started = time.monotonic()
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(FPS * SECONDS):
            shift = (i * 4) % WIDTH
            luma = texture[:, shift : shift + WIDTH].copy()
            cx = int(WIDTH / 2 + 600 * np.sin(i / 50))
            cy = int(HEIGHT / 2 + 300 * np.cos(i / 70))
            y0, y1, x0, x1 = max(0, cy - 90), cy + 90, max(0, cx - 160), cx + 160
            blob = (yy[y0:y1, x0:x1] - cy) ** 2 / 8100 + (xx[y0:y1, x0:x1] - cx) ** 2 / 25600 < 1
            luma[y0:y1, x0:x1][blob] = 20
            frame = av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(partial, path)
    print(f"encoded {path} in {time.monotonic() - started:.0f} s", flush=True)
    return path


def full_decode_fps(path: Path) -> float:
    started = time.monotonic()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = sum(1 for _ in container.decode(stream))
    return frames / (time.monotonic() - started)


def run_gtbot(video: Path, count: int, workers: int) -> tuple[float, list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "bench"
        (project / "annotation-data").mkdir(parents=True)
        (project / "project-config.yml").write_text("species: mouse\n")
        started = time.monotonic()
        result = extract_frames(
            project, count=count, source_dir=video.parent, workers=workers, seed=1
        )
        elapsed = time.monotonic() - started
        if result.problems or len(result.added) != count:
            raise SystemExit(f"unexpected result: {result}")
        return elapsed, sorted(f.frame for f in result.added)


def run_ffmpeg(video: Path, frames: list[int]) -> float | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        for n in frames:
            subprocess.run(
                [ffmpeg, "-v", "error", "-ss", f"{n / FPS:.4f}", "-i", str(video),
                 "-frames:v", "1", "-q:v", "3", f"{tmp}/f{n:06d}.jpg"],
                check=True,
            )  # fmt: skip
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "gtbot-bench-frames"
    )
    args = parser.parse_args()

    video = make_video(args.cache / "videos" / "arena-1080p-5min.mp4")
    print(f"machine: {os.cpu_count()} cores; video: {video} ({video.stat().st_size >> 20} MiB)")
    decode = full_decode_fps(video)
    print(f"full sequential decode (PyAV, all cores): {decode:.0f} frames/s "
          f"-> select-filter pass over the whole file takes {FPS * SECONDS / decode:.1f} s")  # fmt: skip
    for count in args.count:
        elapsed, frames = run_gtbot(video, count, args.workers)
        line = (
            f"gtbot extract_frames count={count}: {elapsed:.2f} s, {count / elapsed:.1f} frames/s"
        )
        ff = run_ffmpeg(video, frames)
        if ff is None:
            line += "; ffmpeg not installed, no comparison"
        else:
            line += f"; ffmpeg -ss per frame: {count / ff:.1f} frames/s (ratio {ff / elapsed:.2f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()

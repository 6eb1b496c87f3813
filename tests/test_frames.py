"""Frames from videos: sampling, duplicates, re-runs and broken input, on tiny generated videos.

Every generated frame carries its own frame number as a row of black/white blocks, so a test can
check that the JPEG written for `..._f000042.jpg` really is frame 42 (exact seeking).
"""

from __future__ import annotations

import csv
import re
import struct
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from bot.errors import NotFoundError, UsageError
from bot.frames import (
    CSV_COLUMNS,
    FramesProgress,
    extract_frames,
    format_frames_result,
)
from bot.frames.allocation import apportion

W, H = 96, 64
BITS = 12
NAME = re.compile(r"^(?P<stem>.+)_f(?P<frame>\d{6})\.jpg$")

Painter = Callable[[int], NDArray[np.uint8]]


def moving(index: int) -> NDArray[np.uint8]:
    """Frame number in the top row of 8x8 blocks, a square moving across the rest."""
    img = np.full((H, W, 3), 40, np.uint8)
    for bit in range(BITS):
        if index >> bit & 1:
            img[0:8, bit * 8 : bit * 8 + 8] = 255
    x = (index * 3) % (W - 16)
    y = 16 + (index * 2) % (H - 32)
    img[y : y + 16, x : x + 16] = (220, 60, 60)
    return img


def still_after(moving_frames: int) -> Painter:
    """Moving for the first frames, then a still arena (nothing changes, no frame number)."""
    still = moving(0)
    still[0:8] = 40

    def paint(index: int) -> NDArray[np.uint8]:
        return moving(index) if index < moving_frames else still

    return paint


def write_video(path: Path, frames: int, paint: Painter = moving, codec: str = "libx264") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.gop_size = 12
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "bf": "2"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(paint(i), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decode_number(path: Path) -> int:
    arr = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return sum(1 << b for b in range(BITS) if arr[2:6, b * 8 + 2 : b * 8 + 6].mean() > 128)


def make_project(root: Path, name: str = "mice") -> Path:
    project = root / name
    (project / "annotation-data" / "videos").mkdir(parents=True)
    (project / "project-config.yml").write_text("species: mouse\n")
    return project


def videos(project: Path) -> Path:
    return project / "annotation-data" / "videos"


def images(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "annotation-data" / "raw-images").glob("*.jpg"))


def csv_rows(project: Path) -> list[dict[str, str]]:
    with (project / "annotation-data" / "frames.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Encode each clip once per module; tests copy them into their own projects."""
    root = tmp_path_factory.mktemp("clips")
    return {
        "long": write_video(root / "long.mp4", 200),
        "short": write_video(root / "short.mp4", 50),
        "mid": write_video(root / "mid.mp4", 120),
        "still": write_video(root / "still.mp4", 200, still_after(40)),
        "avi": write_video(root / "clip.avi", 60, codec="mpeg4"),
        "mkv": write_video(root / "clip.mkv", 60),
        "mpg": write_video(root / "clip.mpg", 60, codec="mpeg2video"),
    }


def add(project: Path, clip: Path, name: str | None = None) -> Path:
    target = videos(project) / (name or clip.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(clip.read_bytes())
    return target


def frame_numbers(names: list[str], stem: str) -> list[int]:
    return sorted(int(m["frame"]) for n in names if (m := NAME.match(n)) and m["stem"] == stem)


def test_count_names_csv_and_exact_frames(tmp_path: Path, clips: dict[str, Path]) -> None:
    project = make_project(tmp_path)
    add(project, clips["mid"])
    result = extract_frames(project, count=10, workers=1)

    names = images(project)
    assert len(names) == 10 and len(result.added) == 10 and not result.problems
    assert all(NAME.match(n) for n in names)
    numbers = frame_numbers(names, "mid")
    # Evenly spread: one frame in each twelfth of the 120-frame video.
    assert [n // 12 for n in numbers] == list(range(10))
    for name in names:
        assert decode_number(project / "annotation-data" / "raw-images" / name) == int(
            NAME.match(name)["frame"]  # type: ignore[index]
        )
    rows = csv_rows(project)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sorted(r["file"] for r in rows) == names
    assert {r["video"] for r in rows} == {"annotation-data/videos/mid.mp4"}
    for r in rows:
        assert float(r["timestamp_s"]) == pytest.approx(int(r["frame"]) / 25, abs=1e-3)


def test_frames_spread_in_proportion_to_length(tmp_path: Path, clips: dict[str, Path]) -> None:
    project = make_project(tmp_path)
    add(project, clips["long"])
    add(project, clips["short"])
    result = extract_frames(project, count=10, workers=1)
    names = images(project)
    assert len(frame_numbers(names, "long")) == 8
    assert len(frame_numbers(names, "short")) == 2
    assert {v.video.rsplit("/", 1)[-1]: v.frames_in_video for v in result.videos} == {
        "long.mp4": 200,
        "short.mp4": 50,
    }


def test_still_stretch_yields_few_frames_and_count_is_still_reached(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    project = make_project(tmp_path)
    add(project, clips["still"])
    result = extract_frames(project, count=20, workers=1)
    numbers = frame_numbers(images(project), "still")
    assert len(numbers) == 20
    assert sum(1 for n in numbers if n >= 40) <= 1
    assert result.videos[0].duplicates_skipped > 0


def test_duplicate_threshold_zero_keeps_still_frames(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    project = make_project(tmp_path)
    add(project, clips["still"])
    extract_frames(project, count=10, workers=1, duplicate_threshold=0)
    numbers = frame_numbers(images(project), "still")
    assert len(numbers) == 10 and sum(1 for n in numbers if n >= 40) == 8


def test_same_seed_same_frames_other_seed_other_frames(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    picks = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        project = make_project(tmp_path, name)
        add(project, clips["long"])
        add(project, clips["short"])
        extract_frames(project, count=12, seed=seed, workers=1)
        picks.append(images(project))
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_rerun_adds_only_what_is_missing(tmp_path: Path, clips: dict[str, Path]) -> None:
    project = make_project(tmp_path)
    add(project, clips["long"])
    add(project, clips["short"])
    first = extract_frames(project, count=6, workers=1)
    assert len(first.added) == 6

    again = extract_frames(project, count=6, workers=1)
    assert again.added == () and again.existing == 6
    assert "nothing to add" in format_frames_result(again)

    more = extract_frames(project, count=10, workers=1)
    assert len(more.added) == 4 and more.total == 10
    assert len(images(project)) == 10
    rows = csv_rows(project)
    assert len(rows) == 10 == len({(r["video"], r["frame"]) for r in rows})

    # A frame deleted by hand was rejected: it is replaced, never picked again.
    deleted = images(project)[0]
    (project / "annotation-data" / "raw-images" / deleted).unlink()
    refill = extract_frames(project, count=10, workers=1)
    assert len(refill.added) == 1 and refill.added[0].file != deleted
    assert len(images(project)) == 10
    assert len(csv_rows(project)) == 11


def test_broken_video_is_reported_and_the_rest_goes_on(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    project = make_project(tmp_path)
    add(project, clips["mid"])
    data = clips["long"].read_bytes()
    (videos(project) / "broken.mp4").write_bytes(data[: len(data) // 2])
    (videos(project) / "garbage.avi").write_bytes(b"not a video at all" * 100)
    result = extract_frames(project, count=8, workers=1)
    assert len(result.added) == 8
    assert {p.video.rsplit("/", 1)[-1] for p in result.problems} == {"broken.mp4", "garbage.avi"}
    text = format_frames_result(result)
    assert "broken.mp4" in text and "garbage.avi" in text


def test_other_containers_and_nested_folders(tmp_path: Path, clips: dict[str, Path]) -> None:
    project = make_project(tmp_path)
    add(project, clips["avi"], "day1/clip.avi")
    add(project, clips["mkv"], "day2/clip.mkv")
    add(project, clips["mpg"], "day3/clip.mpg")
    result = extract_frames(project, count=9, workers=1)
    assert not result.problems and len(result.added) == 9
    assert [v.frames_in_video for v in result.videos] == [60, 60, 60]
    names = images(project)
    # The videos share the stem "clip": their relative paths tell the files apart.
    stems = {NAME.match(n)["stem"] for n in names}  # type: ignore[index]
    assert stems == {"day1_clip_avi", "day2_clip_mkv", "day3_clip_mpg"}
    for name in names:
        assert decode_number(project / "annotation-data" / "raw-images" / name) == int(
            NAME.match(name)["frame"]  # type: ignore[index]
        )


def test_worker_pool_matches_single_process_and_reports_progress(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    ticks: list[FramesProgress] = []
    picks = []
    for name, workers in (("one", 1), ("two", 2)):
        project = make_project(tmp_path, name)
        add(project, clips["long"])
        add(project, clips["mid"])
        add(project, clips["short"], "sub/short.mp4")
        result = extract_frames(project, count=15, workers=workers, progress=ticks.append)
        assert len(result.added) == 15
        picks.append(images(project))
        assert ticks[-1].done == ticks[-1].total == 15
        assert {t.video.rsplit("/", 1)[-1] for t in ticks} <= {"long.mp4", "mid.mp4", "short.mp4"}
        assert all(0 <= t.done <= t.total for t in ticks)
        ticks.clear()
    assert picks[0] == picks[1]


def test_source_dir_outside_the_project(tmp_path: Path, clips: dict[str, Path]) -> None:
    project = make_project(tmp_path)
    elsewhere = tmp_path / "lab-share"
    write_path = elsewhere / "mid.mp4"
    elsewhere.mkdir()
    write_path.write_bytes(clips["mid"].read_bytes())
    result = extract_frames(project, count=3, source_dir=elsewhere, workers=1)
    assert len(result.added) == 3
    assert csv_rows(project)[0]["video"] == write_path.resolve().as_posix()


def write_seq(path: Path, frames: list[NDArray[np.uint8]], *, jpeg: bool) -> Path:
    """A Norpix .seq as StreamPix writes it (version 3 header, 1024 bytes)."""
    h, w = frames[0].shape[:2]
    header = bytearray(1024)
    struct.pack_into("<I", header, 0, 0xFEED)
    header[4:28] = "Norpix seq\n".encode("utf-16-le")[:24].ljust(24, b"\0")
    struct.pack_into("<ii", header, 28, 3, 1024)
    image_format = 102 if jpeg else 100
    struct.pack_into("<7I", header, 548, w, h, 8, 8, w * h, image_format, len(frames))
    struct.pack_into("<II", header, 576, 0, w * h + 6 if not jpeg else 0)
    struct.pack_into("<d", header, 584, 30.0)
    body = bytearray()
    for i, img in enumerate(frames):
        grey = np.asarray(Image.fromarray(img).convert("L"))
        stamp = struct.pack("<IH", 1_700_000_000 + i // 30, (i % 30) * 33)
        if jpeg:
            buf = BytesIO()
            Image.fromarray(grey).save(buf, format="JPEG", quality=95)
            data = buf.getvalue()
            body += struct.pack("<I", len(data) + 4) + data + stamp + b"\0\0"
        else:
            body += grey.tobytes() + stamp
    path.write_bytes(bytes(header) + bytes(body))
    return path


@pytest.mark.parametrize("jpeg", [True, False])
def test_norpix_seq(tmp_path: Path, jpeg: bool) -> None:
    project = make_project(tmp_path)
    write_seq(videos(project) / "cam.seq", [moving(i) for i in range(90)], jpeg=jpeg)
    result = extract_frames(project, count=9, workers=1)
    assert not result.problems and len(result.added) == 9
    names = images(project)
    assert [n // 10 for n in frame_numbers(names, "cam")] == list(range(9))
    for name in names:
        assert decode_number(project / "annotation-data" / "raw-images" / name) == int(
            NAME.match(name)["frame"]  # type: ignore[index]
        )
    assert float(csv_rows(project)[1]["timestamp_s"]) > 0


def test_unsupported_seq_format_is_a_problem_not_a_crash(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    project = make_project(tmp_path)
    add(project, clips["short"])
    seq = write_seq(videos(project) / "bayer.seq", [moving(i) for i in range(5)], jpeg=False)
    raw = bytearray(seq.read_bytes())
    struct.pack_into("<I", raw, 568, 101)
    seq.write_bytes(bytes(raw))
    result = extract_frames(project, count=2, workers=1)
    assert len(result.added) == 2
    assert [p.video.rsplit("/", 1)[-1] for p in result.problems] == ["bayer.seq"]
    assert "not supported" in result.problems[0].reason


def test_bad_input_raises_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        extract_frames(tmp_path / "nope", count=5)
    project = make_project(tmp_path)
    with pytest.raises(UsageError, match="--count"):
        extract_frames(project, count=0)
    with pytest.raises(UsageError, match="--quality"):
        extract_frames(project, count=1, quality=0)
    (videos(project) / "notes.txt").write_text("no videos here")
    with pytest.raises(NotFoundError) as info:
        extract_frames(project, count=5)
    message = info.value.user_message
    assert str(videos(project)) in message and ".mp4" in message and ".seq" in message
    with pytest.raises(NotFoundError, match="no project-config.yml"):
        (tmp_path / "bare").mkdir()
        extract_frames(tmp_path / "bare", count=5)


def test_a_mars_project_folder_is_a_project_for_frames_too(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    """The same config names as every other command (bot.project), MARS's spelling included."""
    project = tmp_path / "mars"
    (project / "annotation-data" / "videos").mkdir(parents=True)
    (project / "project_config.yaml").write_text("species: mouse\n")
    add(project, clips["short"])
    assert extract_frames(project, count=3, workers=1).total == 3


def test_long_videos_are_split_into_chunks_without_duplicates_at_the_cuts(
    tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.frames.worker_pool

    monkeypatch.setattr(bot.frames.worker_pool, "_CHUNK_FRAMES", 40)
    project = make_project(tmp_path)
    add(project, clips["still"])
    add(project, clips["long"])
    result = extract_frames(project, count=30, workers=1)
    names = images(project)
    assert len(names) == 30 and result.total == 30
    still = frame_numbers(names, "still")
    # The still stretch (frames 40-199) spans four chunk cuts; at most one frame survives.
    assert sum(1 for n in still if n >= 40) <= 1
    rows = csv_rows(project)
    assert {r["file"] for r in rows} >= set(names)


def test_apportion_never_gives_a_video_more_frames_than_it_has() -> None:
    """Three equal videos share 5 frames, the first has 1: the remainders go to the others.
    A remainder handed to a full video would ask it for a frame it does not have."""
    assert apportion([1.0, 1.0, 1.0], 5, [1, 5, 5]) == [1, 2, 2]
    assert apportion([5.0, 1.0], 4, [2, 9]) == [2, 2]
    assert apportion([0.0, 0.0, 3.0], 7, [2, 2, 2]) == [2, 2, 2]  # more asked than there is
    rng = np.random.default_rng(3)
    for _ in range(400):
        n = int(rng.integers(1, 6))
        weights = [float(w) for w in rng.integers(0, 4, n)]
        caps = [int(c) for c in rng.integers(0, 6, n)]
        total = int(rng.integers(0, 25))
        out = apportion(weights, total, caps)
        assert all(0 <= o <= c for o, c in zip(out, caps, strict=True)), (weights, caps, total)
        assert sum(out) == min(total, sum(caps)), (weights, caps, total, out)

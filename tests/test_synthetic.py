"""Synthetic frames: truth travels inside each JPEG, matches truth.json, and is anatomical."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import ConfigError
from bot.synthetic import MARS_KEYPOINTS, draw_frames, read_truth


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return draw_frames(root / "raw-images", 6, seed=7)


def _points(frame: Path) -> dict[str, tuple[float, float]]:
    truth = read_truth(frame)
    assert truth is not None
    return {item["label"]: (item["x"], item["y"]) for item in truth["keypoints"]}


def test_frames_are_jpegs_with_truth_comment_matching_truth_json(frames: list[Path]) -> None:
    assert [frame.name for frame in frames] == [f"frame_{i:06d}.jpg" for i in range(6)]
    truth_file = json.loads((frames[0].parent.parent / "truth.json").read_text())
    assert truth_file["keypoints"] == list(MARS_KEYPOINTS)
    assert truth_file["animals"] == ["black", "white"]
    assert truth_file["species"] == "mouse"
    for frame in frames:
        with Image.open(frame) as image:
            assert image.format == "JPEG"
            assert image.size == (1024, 570)
        embedded = read_truth(frame)
        assert embedded is not None
        assert (embedded["width"], embedded["height"]) == (1024, 570)
        labels = [item["label"] for item in embedded["keypoints"]]
        assert labels == [f"{a} mouse {k}" for a in ("black", "white") for k in MARS_KEYPOINTS]
        assert ["black mouse right ear", "black mouse left ear"] in embedded["pairs"]
        assert ["white mouse right rear knee", "white mouse left rear knee"] in embedded["pairs"]
        by_label = _points(frame)
        for animal in ("black", "white"):
            expected = truth_file["truth"][frame.name][animal]
            got = [list(by_label[f"{animal} mouse {k}"]) for k in MARS_KEYPOINTS]
            assert got == expected
        for x, y in by_label.values():
            assert 0 <= x < 1024 and 0 <= y < 570


def test_poses_are_anatomically_plausible(frames: list[Path]) -> None:
    for frame in frames:
        points = _points(frame)
        for animal in ("black", "white"):
            p = {k: points[f"{animal} mouse {k}"] for k in MARS_KEYPOINTS}
            nose, tail = p["nose"], p["base of tail"]
            length = math.dist(nose, tail)
            assert 80 < length < 140
            # Along the body: nose, ears, neck, knees, tail base, in that order.
            hx, hy = (nose[0] - tail[0]) / length, (nose[1] - tail[1]) / length

            def along(
                pt: tuple[float, float],
                tail: tuple[float, float] = tail,
                hx: float = hx,
                hy: float = hy,
            ) -> float:
                return (pt[0] - tail[0]) * hx + (pt[1] - tail[1]) * hy

            assert along(p["nose"]) > along(p["right ear"]) > along(p["top of neck"])
            assert along(p["top of neck"]) > along(p["right rear knee"]) > along(tail)
            # Top-down camera, y down: the animal's right is the heading turned by +90 degrees.
            rx, ry = -hy, hx
            for right, left in (("right ear", "left ear"), ("right rear knee", "left rear knee")):
                dx, dy = p[right][0] - p[left][0], p[right][1] - p[left][1]
                assert dx * rx + dy * ry > 10


def test_drawn_animals_sit_where_the_truth_says(frames: list[Path]) -> None:
    for frame in frames:
        points = _points(frame)
        with Image.open(frame) as image:
            grey = image.convert("L")
            for animal, check in (("black", lambda v: v < 90), ("white", lambda v: v > 190)):
                neck = points[f"{animal} mouse top of neck"]
                tail = points[f"{animal} mouse base of tail"]
                body = ((neck[0] + tail[0]) / 2, (neck[1] + tail[1]) / 2)
                value = grey.getpixel((round(body[0]), round(body[1])))
                assert isinstance(value, int)
                assert check(value), (frame.name, animal, value)


def test_same_seed_same_frames_other_seed_other_poses(tmp_path: Path) -> None:
    a = draw_frames(tmp_path / "a" / "img", 2, seed=3)
    b = draw_frames(tmp_path / "b" / "img", 2, seed=3)
    c = draw_frames(tmp_path / "c" / "img", 2, seed=4)
    assert [read_truth(p) for p in a] == [read_truth(p) for p in b]
    assert read_truth(a[0]) != read_truth(c[0])


def test_custom_species_animals_keypoints_and_truth_path(tmp_path: Path) -> None:
    keypoints = [
        "nose",
        "left front paw",
        "right front paw",
        "tip of tail",
        "left whisker pad",
        "right whisker pad",
    ]
    pairs = [("right front paw", "left front paw"), ("right whisker pad", "left whisker pad")]
    truth_path = tmp_path / "elsewhere" / "t.json"
    paths = draw_frames(
        tmp_path / "img",
        1,
        species="rat",
        animals=("brown", "grey", "white"),
        keypoints=keypoints,
        pairs=pairs,
        width=800,
        height=600,
        seed=2,
        truth_path=truth_path,
    )
    truth = read_truth(paths[0])
    assert truth is not None
    labels = {item["label"] for item in truth["keypoints"]}
    assert labels == {f"{a} rat {k}" for a in ("brown", "grey", "white") for k in keypoints}
    assert json.loads(truth_path.read_text())["truth"]["frame_000000.jpg"].keys() == {
        "brown",
        "grey",
        "white",
    }
    points = _points(paths[0])
    for animal in ("brown", "grey", "white"):
        nose = points[f"{animal} rat nose"]
        right = points[f"{animal} rat right whisker pad"]
        left = points[f"{animal} rat left whisker pad"]
        tail = points[f"{animal} rat tip of tail"]
        hx, hy = nose[0] - tail[0], nose[1] - tail[1]
        # Unknown keypoints still get a side: 'right' lies right of the heading (y is down).
        assert (right[0] - left[0]) * -hy + (right[1] - left[1]) * hx > 0
        assert math.dist(right, left) > 10


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Pair"):
        draw_frames(tmp_path / "img", 1, pairs=[("right ear", "left paw")])
    with pytest.raises(ConfigError):
        draw_frames(tmp_path / "img", -1)
    assert draw_frames(tmp_path / "none", 0) == []


def test_frames_without_truth_read_as_none(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 64)).save(plain, "JPEG")
    assert read_truth(plain) is None

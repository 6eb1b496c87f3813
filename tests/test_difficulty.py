"""Frames are not all equally hard: huddled animals hide keypoints, and emulated workers are less
sure there, while the crowd as a whole stays as noisy as shared/DESIGN.md's public crowd."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
from PIL import Image

from aws.emulator.jobs import DataObject
from aws.emulator.knobs import EmulatorSettings
from aws.emulator.workforce import FrameTruth, answer_keypoints, make_team, parse_frame_truth
from bot.errors import ConfigError
from bot.synthetic import draw_frames, read_truth

PUBLIC_CROWD = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return draw_frames(tmp_path_factory.mktemp("hard") / "raw-images", 24, seed=3)


def _truth(path: Path) -> tuple[FrameTruth, int, int]:
    with Image.open(path) as image:
        found = parse_frame_truth(image.info.get("comment"))
        width, height = image.size
    assert found is not None
    return found, width, height


def _object(found: FrameTruth, width: int, height: int) -> DataObject:
    return DataObject(
        0,
        {},
        "",
        width=width,
        height=height,
        truth=found.points,
        truth_pairs=found.pairs,
        truth_occluded=found.occluded,
        truth_animals=found.animals,
        huddled=found.huddled,
    )


def test_some_frames_are_huddled_and_hide_keypoints_under_the_top_animal(
    frames: list[Path],
) -> None:
    truths = [_truth(p)[0] for p in frames]
    huddled = [t for t in truths if t.huddled]
    assert 2 <= len(huddled) <= 12  # a quarter of 24, give or take
    assert any(t.occluded for t in huddled)
    assert not any(t.occluded for t in truths if not t.huddled)
    document = json.loads((frames[0].parent.parent / "truth.json").read_text())
    keypoints = document["keypoints"]
    for path, found in zip(frames, truths, strict=True):
        listed = {
            f"{animal} mouse {keypoints[k]}"
            for animal, hidden in document["occluded"][path.name].items()
            for k in hidden
        }
        assert listed == set(found.occluded)
        with Image.open(path) as image:
            grey = image.convert("L")
            for label in found.occluded:
                # Only the black mouse can be under the white one (drawn last): the pixel at a
                # hidden black keypoint shows white fur (or its pink ears).
                assert label.startswith("black ")
                x, y = found.points[label]
                value = grey.getpixel((round(x), round(y)))
                assert isinstance(value, int) and value > 150, (path.name, label, value)


def test_frames_that_are_not_huddled_do_not_depend_on_the_share(tmp_path: Path) -> None:
    some = draw_frames(tmp_path / "a" / "img", 8, seed=4)
    none = draw_frames(tmp_path / "b" / "img", 8, seed=4, huddle_fraction=0.0)
    for a, b in zip(some, none, strict=True):
        truth_a, truth_b = read_truth(a), read_truth(b)
        assert truth_a is not None and truth_b is not None
        assert truth_b["huddled"] is False
        if not truth_a["huddled"]:
            assert truth_a == truth_b
            assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ConfigError, match="huddle_fraction"):
        draw_frames(tmp_path / "c", 1, huddle_fraction=1.5)


def _errors(
    frames: list[Path], settings: EmulatorSettings, rounds: int = 6
) -> dict[str, list[float]]:
    """Each click's distance to the truth, by the kind of keypoint it was for."""
    team = make_team(7, PUBLIC_CROWD)
    rng = random.Random(5)
    out: dict[str, list[float]] = {"easy": [], "huddled": [], "occluded": []}
    for path in frames:
        found, width, height = _truth(path)
        obj = _object(found, width, height)
        for worker in rng.sample(team, rounds):
            for point in answer_keypoints(worker, obj, list(found.points), settings, rng):
                label = point["label"]
                tx, ty = found.points[label]
                kind = (
                    "occluded"
                    if label in found.occluded
                    else "huddled"
                    if found.huddled
                    else "easy"
                )
                out[kind].append(math.hypot(point["x"] - tx, point["y"] - ty))
    return out


def test_workers_miss_more_where_the_frame_is_hard(frames: list[Path]) -> None:
    hard = _errors(frames, EmulatorSettings())
    easy, huddled, occluded = (statistics.median(hard[k]) for k in ("easy", "huddled", "occluded"))
    assert huddled > 1.15 * easy and occluded > 2 * easy, (easy, huddled, occluded)
    far = {k: sum(e > 40 for e in v) / len(v) for k, v in hard.items()}
    assert far["huddled"] > far["easy"], far
    # difficulty 0: every frame alike.
    alike = _errors(frames, EmulatorSettings(difficulty=0.0))
    medians = [statistics.median(alike[k]) for k in ("easy", "huddled", "occluded")]
    assert max(medians) < 1.3 * min(medians), medians


def test_the_mix_is_as_noisy_as_the_public_crowd(frames: list[Path]) -> None:
    """shared/DESIGN.md's public crowd (1250 px frames, 6 workers): a click's median distance
    to the per-keypoint median 16-22 px, 90th percentile 70-80 px, 13-17 % over 60 px, about
    20 % of left/right pairs swapped; hard frames included."""
    team = make_team(7, PUBLIC_CROWD)
    rng = random.Random(1)
    settings = EmulatorSettings()
    distances: list[float] = []
    swapped = pairs = 0
    for path in frames * 3:
        found, width, height = _truth(path)
        obj = _object(found, width, height)
        answers = [
            {
                p["label"]: (p["x"], p["y"])
                for p in answer_keypoints(w, obj, list(found.points), settings, rng)
            }
            for w in rng.sample(team, 6)
        ]
        for label in found.points:
            points = [a[label] for a in answers if label in a]
            centre = (
                statistics.median(x for x, _ in points),
                statistics.median(y for _, y in points),
            )
            distances += [math.dist(p, centre) * 1250 / width for p in points]
        for answer in answers:
            for left, right in found.pairs:
                if left in answer and right in answer:
                    pairs += 1
                    truth = found.points
                    crossed = math.dist(answer[left], truth[right]) + math.dist(
                        answer[right], truth[left]
                    )
                    swapped += crossed < math.dist(answer[left], truth[left]) + math.dist(
                        answer[right], truth[right]
                    )
    distances.sort()
    assert 15 < statistics.median(distances) < 23
    assert 62 < distances[int(0.9 * len(distances))] < 88
    assert 0.11 < sum(d > 60 for d in distances) / len(distances) < 0.19
    assert 0.14 < swapped / pairs < 0.28

"""The batch (orjson, numpy-checked) reading path against the careful per-point one, and the
bulk export helpers against the per-value Python they replace."""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import yaml

from bot.results import LabelSpec
from bot.results.exports import py_round
from bot.results.reader import ReadReport, _Reader, file_name, read_batches

SAMPLES = Path(__file__).parent / "samples"
RECIPE = SAMPLES / "output-recipe.manifest"


def no_fetch(uri: str) -> bytes:
    raise FileNotFoundError(uri)


@pytest.fixture(scope="module")
def spec() -> LabelSpec:
    return LabelSpec.from_mapping(yaml.safe_load((SAMPLES / "project-config.yml").read_text()))


def _edit(line: str, worker: int, change) -> str:  # type: ignore[no-untyped-def]
    record = json.loads(line)
    item = record["annotatedResult"]["annotationsFromAllWorkers"][worker]
    content = json.loads(item["annotationData"]["content"])
    change(content["annotatedResult"])
    item["annotationData"]["content"] = json.dumps(content)
    return json.dumps(record)


def _quirky_lines() -> list[str]:
    lines = RECIPE.read_text().splitlines()
    base = lines[0]

    def point(i: int, **values: object):  # type: ignore[no-untyped-def]
        def change(result: dict) -> None:  # type: ignore[type-arg]
            result["keypoints"][i].update(values)

        return change

    def drop_size(result: dict) -> None:  # type: ignore[type-arg]
        del result["inputImageProperties"]

    def other_size(result: dict) -> None:  # type: ignore[type-arg]
        result["inputImageProperties"] = {"width": 2000, "height": 1000}

    def size(**values: object):  # type: ignore[no-untyped-def]
        def change(result: dict) -> None:  # type: ignore[type-arg]
            result["inputImageProperties"].update(values)

        return change

    def replace(key: str, value: object):  # type: ignore[no-untyped-def]
        def change(result: dict) -> None:  # type: ignore[type-arg]
            result[key] = value

        return change

    def duplicate(result: dict) -> None:  # type: ignore[type-arg]
        result["keypoints"].append(dict(result["keypoints"][0]))

    return [
        *lines,
        _edit(base, 1, point(0, x=True)),  # a bool is not a number: reported by both paths
        _edit(base, 1, point(0, x=12, y=40)),  # integers
        _edit(base, 2, point(3, label="  Black Mouse NOSE ")),  # loose spelling
        _edit(base, 0, duplicate),
        _edit(base, 4, point(2, x="12")),
        _edit(base, 3, point(1, x=10**400)),  # beyond floats: reported, not a crash
        _edit(base, 3, point(1, y=2**60)),
        # The image is 1024x570: its edges are in, a hair beyond them is out, on every side.
        _edit(base, 1, point(4, x=1024, y=570)),
        _edit(base, 1, point(4, x=0, y=0)),
        _edit(base, 1, point(5, y=570.5)),
        _edit(base, 2, point(5, x=1024.5)),
        _edit(base, 3, point(5, y=-0.5)),
        _edit(base, 4, point(5, x=-0.5)),
        _edit(base, 0, drop_size),
        _edit(base, 2, other_size),
        # Shapes the fast path must leave to the careful one, whatever decodes the JSON.
        _edit(base, 1, size(width=True, height=True)),
        _edit(base, 1, size(width="1920")),
        _edit(base, 2, point(0, label=5)),
        _edit(base, 2, point(0, y=None)),
        _edit(base, 3, replace("keypoints", {"label": "x"})),
        _edit(base, 3, replace("inputImageProperties", [1920, 1080])),
        _edit(base, 4, lambda result: result["keypoints"].append([1, 2])),
        _edit(base, 4, lambda result: result["keypoints"][0].pop("x")),
        json.dumps({**json.loads(base), "source-ref": "s3://x/\ud800.jpg"}),
        "",
        "   ",
    ]


def test_batch_path_matches_careful_path(spec: LabelSpec) -> None:
    lines = _quirky_lines()
    careful_report = ReadReport()
    careful = _Reader(spec, no_fetch, careful_report, None)
    expected = []
    for number, line in enumerate(lines, start=1):
        frame = careful.read_line(number, line)
        if frame is not None:
            expected.append(frame)
    for batch_lines in (1, 4, 1024):
        report = ReadReport()
        batches = read_batches(lines, spec, fetch=no_fetch, report=report, batch_lines=batch_lines)
        frames = [batch[b] for batch in batches for b in range(len(batch))]
        assert report.problems == careful_report.problems
        assert report.frames_skipped == careful_report.frames_skipped
        assert len(frames) == len(expected)
        for got, want in zip(frames, expected, strict=True):
            assert (got.line, got.source_ref, got.width, got.height) == (
                want.line,
                want.source_ref,
                want.width,
                want.height,
            )
            assert got.workers == want.workers and got.seconds == want.seconds
            np.testing.assert_array_equal(np.array(got.coords), np.array(want.coords, float))
    reasons = [p.reason for p in careful_report.problems]
    assert "worker 4: 'black mouse right ear' is outside the image" in reasons
    assert any("not valid Unicode" in r for r in reasons)
    assert any("placed twice" in r for r in reasons)
    outside = [r for r in reasons if "(1024.5, " in r or ", 570.5)" in r or "-0.5" in r]
    assert len(outside) == 4, reasons


def test_py_round_is_pythons_round() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [
            rng.uniform(0, 1100, 20_000),
            np.round(rng.uniform(0, 1100, 20_000), 3) + 0.005,  # halves, inexact in binary
            np.arange(0, 2, 0.0005),
            [0.125, 2.675, 1.005, -0.0, np.nan, np.inf, 1e20],
        ]
    )
    for digits in (2, 5):
        got = py_round(values, digits)
        for value, rounded in zip(values.tolist(), got.tolist(), strict=True):
            want = round(value, digits)
            assert rounded == want or (math.isnan(want) and math.isnan(rounded)), value


@pytest.mark.parametrize(
    "ref",
    [
        "s3://b/images/frame_1.jpg",
        "s3://b/images/frame_1.jpg?versionId=3",
        "s3://b/images/",
        "s3://b/images/.",
        "frame.jpg",
        "/",
        "s3://b/a//b.png",
    ],
)
def test_file_name_matches_purepath(ref: str) -> None:
    assert file_name(ref) == (PurePosixPath(ref.split("?", 1)[0]).name or ref)

"""The manifest reader driven by the lines a job's output may hold: every hostile worker answer
is left out with its exact message, line and worker, every usable point lands at its exact
coordinates, and the fast path (whole batches) and the careful one (line by line) give the
same result, while ordinary lines never need the careful one."""

from __future__ import annotations

import json
import math
import os
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.results import LabelSpec
from bot.results.reader import (
    MAX_LINE_BYTES,
    MAX_RESPONSE_BYTES,
    FrameBatch,
    Problem,
    ReadReport,
    _Reader,
    _segments,
    file_name,
    local_worker_response_fetch,
    read_batches,
    read_chunk,
    read_manifest,
)

# Two mice, two keypoints each: four slots a worker, labels "black mouse nose" and so on.
SPEC = LabelSpec("mouse", ("black", "white"), ("nose", "tail"), ())
# One unnamed mouse placed twice a frame: the careful path's slots per placement.
TWICE = LabelSpec("mouse", (), ("nose", "tail"), (), num_obj=2)
NOSE, TAIL, WNOSE, WTAIL = SPEC.labels
N = None  # an unplaced coordinate
REF = "s3://lab/frames/f1.jpg"
RESPONSES = "s3://lab/out/job/annotations/worker-response/iteration-1/0/2026.json"

Line = str | bytes
Frames = list[tuple[Any, ...]]


def kp(label: object, x: object, y: object) -> dict[str, object]:
    return {"label": label, "x": x, "y": y}


def answer(*points: object, size: tuple[object, object] | None = (640, 480)) -> dict[str, Any]:
    """One worker's answer as the MARS template writes it."""
    result: dict[str, Any] = {"keypoints": list(points)}
    if size is not None:
        result["inputImageProperties"] = {"width": size[0], "height": size[1]}
    return {"annotatedResult": result}


def worker(name: object, content: object, seconds: object = None) -> dict[str, Any]:
    """One entry of `annotationsFromAllWorkers`; a dict content is sent as JSON text."""
    text = json.dumps(content) if isinstance(content, dict) else content
    item: dict[str, Any] = {"workerId": name, "annotationData": {"content": text}}
    if seconds is not None:
        item["timeSpentInSeconds"] = seconds
    return item


def line(
    *items: object, ref: object = REF, metadata: dict[str, Any] | None = None, **extra: Any
) -> str:
    """A line of a recipe job's output manifest (consolidated answers)."""
    record = {
        "source-ref": ref,
        "annotatedResult": {"annotationsFromAllWorkers": list(items)},
        "annotatedResult-metadata": {"type": "groundtruth/custom", "job-name": "job-a"}
        | (metadata or {}),
        **extra,
    }
    return json.dumps(record)


A = answer(kp(NOSE, 10, 20), kp(WTAIL, 30.5, 40))
B = answer(kp(NOSE, 11, 21))
A_AT = [10, 20, N, N, N, N, 30.5, 40]
B_AT = [11, 21, N, N, N, N, N, N]
GOOD = line(worker("a", A, 12.5), worker("b", B))


def frame(
    workers: list[str],
    coords: list[float | None],
    size: tuple[float, float] | None = (640.0, 480.0),
    seconds: list[float | None] | None = None,
    ref: str = REF,
) -> tuple[Any, ...]:
    width, height = size if size is not None else (None, None)
    return (ref, width, height, workers, seconds or [None] * len(workers), coords)


GOOD_FRAME = frame(["a", "b"], A_AT + B_AT, seconds=[12.5, None])


def no_fetch(uri: str) -> bytes:
    raise FileNotFoundError(f"no {uri}")


def _frames(frames: Iterable[Any]) -> Frames:
    return [
        (
            f.line,
            f.source_ref,
            f.width,
            f.height,
            f.workers,
            f.seconds,
            [None if math.isnan(c) else c for c in f.coords],
        )
        for f in frames
    ]


def read(
    lines: list[Line], spec: LabelSpec = SPEC, batch_lines: int = 512, **kw: Any
) -> tuple[ReadReport, Frames]:
    report = ReadReport(limit=None)
    kw.setdefault("fetch", no_fetch)
    batches = list(read_batches(lines, spec, report=report, batch_lines=batch_lines, **kw))
    frames = _frames(batch[b] for batch in batches for b in range(len(batch)))
    assert report.frames == len(frames)
    return report, frames


def careful(lines: list[Line], spec: LabelSpec = SPEC, **kw: Any) -> tuple[ReadReport, Frames]:
    """The reference: every line read the careful way."""
    report = ReadReport(limit=None)
    reader = _Reader(spec, kw.get("fetch", no_fetch), report, kw.get("label_attribute"))
    frames = [reader.read_line(n, raw) for n, raw in enumerate(lines, start=1)]
    return report, _frames(f for f in frames if f is not None)


def problems(report: ReadReport) -> list[tuple[int, str, str | None]]:
    return [(p.line, p.reason, p.worker) for p in report.problems]


def expect(
    lines: list[Line],
    want_problems: list[tuple[int, str, str | None]],
    want_frames: Frames,
    spec: LabelSpec = SPEC,
    skipped: int | None = None,
    **kw: Any,
) -> ReadReport:
    """The same problems and frames whichever path reads the lines and however they are cut."""
    ways = {
        "one batch": read(lines, spec, **kw),
        "line by line": read(lines, spec, batch_lines=1, **kw),
        "careful": careful(lines, spec, **kw),
    }
    for how, (report, frames) in ways.items():
        assert problems(report) == want_problems, how
        assert report.problem_count == len(want_problems), how
        assert frames == want_frames, how
        if skipped is not None:
            assert report.frames_skipped == skipped, how
    return ways["one batch"][0]


# -- one hostile thing on a line between two good ones -----------------------------------------

_33 = [worker(f"w{i}", B) for i in range(33)]
_TOO_MANY = (
    "33 worker answers on one line; Ground Truth sends an object to at most 9 workers, and "
    "gtbot reads at most 32"
)
_NOT_JSON = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
_NO_SIZE = "is not a size from 1 to 100,000 px; the answer is skipped"
_LONG = NOSE + " " * 984  # a label of 1,000 characters, shown cut to 200

# (id, the line, its problems as (reason, worker), its frame or None if skipped)
LINES: list[tuple[str, Line, list[tuple[str, str | None]], tuple[Any, ...] | None]] = [
    ("not JSON", "{", [(f"line is not valid JSON ({_NOT_JSON})", N)], N),
    ("not an object", "[1, 2]", [("line is not a JSON object", N)], N),
    ("empty source-ref", line(worker("a", A), ref=""), [("no `source-ref` on this line", N)], N),
    ("number source-ref", line(worker("a", A), ref=5), [("no `source-ref` on this line", N)], N),
    (
        "lone surrogate",
        line(worker("a", A), ref="s3://lab/\ud800.jpg"),
        [("`source-ref` is not valid Unicode text", N)],
        N,
    ),
    (
        "a source-ref beyond ASCII",
        line(worker("a", A), ref="s3://lab/Mäuse/ß-1.jpg"),
        [],
        frame(["a"], A_AT, ref="s3://lab/Mäuse/ß-1.jpg"),
    ),
    (
        "metadata not an object",
        line(worker("a", A), **{"annotatedResult-metadata": 5}),
        [],
        frame(["a"], A_AT),
    ),
    (
        "answers under a -metadata key are not read",
        json.dumps({"source-ref": REF, "x-metadata": {"annotationsFromAllWorkers": [worker("a", A)]},
                    "x-metadata-metadata": {}}),
        [("no worker answers: neither consolidated annotations nor a `worker-response-ref`", N)],
        N,
    ),  # fmt: skip
    ("not UTF-8", GOOD.encode().replace(b"f1", b"\xff1"), [("line is not UTF-8 text", N)], N),
    (
        "failed object",
        line(worker("a", A), metadata={"failure-reason": "ClientError: task expired"}),
        [("Ground Truth marked this object failed: ClientError: task expired", N)],
        N,
    ),
    (
        "failed object, record key, long reason",
        line(worker("a", A), **{"annotatedResult-failure-reason": "x" * 300}),
        [("Ground Truth marked this object failed: " + "x" * 200, N)],
        N,
    ),
    ("empty failure reason", line(worker("a", A), metadata={"failure-reason": ""}), [], frame(["a"], A_AT)),
    (
        "answers a number",
        line(**{"annotatedResult": {"annotationsFromAllWorkers": 5}}),
        [("`annotationsFromAllWorkers` is not a list", N)],
        N,
    ),
    (
        "answers not a list",
        json.dumps({"source-ref": REF, "annotatedResult": {"annotationsFromAllWorkers": {}},
                    "annotatedResult-metadata": {}}),
        [("`annotationsFromAllWorkers` is not a list", N)],
        N,
    ),  # fmt: skip
    ("33 workers", line(*_33), [(_TOO_MANY, N)], N),
    ("32 workers", line(*_33[:32]), [], frame([f"w{i}" for i in range(32)], B_AT * 32)),
    ("no workers", line(), [("no usable worker answer on this line", N)], N),
    (
        "answer not an object",
        line(5, worker("b", B)),
        [("worker 1: answer is not an object", N)],
        frame(["b"], B_AT),
    ),
    (
        "no annotationData",
        line({"workerId": "a", "timeSpentInSeconds": 3}, worker("b", B)),
        [("worker 1: answer has no keypoints", "a")],
        frame(["b"], B_AT),
    ),
    (
        "null content, empty s3Uri",
        line(worker("a", None), {"workerId": "z", "annotationData": {"s3Uri": ""}}, worker("b", B)),
        [("worker 1: answer has no keypoints", "a"), ("worker 2: answer has no keypoints", "z")],
        frame(["b"], B_AT),
    ),
    (
        "input manifest line",
        json.dumps({"source-ref": REF}),
        [("only a `source-ref`, no labels: this is a line of an input manifest, not of a job's "
          "output manifest", N)],
        N,
    ),  # fmt: skip
    (
        "metadata only",
        json.dumps({"source-ref": REF, "annotatedResult-metadata": {"job-name": "j"}}),
        [("no worker answers: neither consolidated annotations nor a `worker-response-ref`", N)],
        N,
    ),
    (
        "attribute not an object",
        json.dumps({"source-ref": REF, "annotatedResult": 5}),
        [("no worker answers: neither consolidated annotations nor a `worker-response-ref`", N)],
        N,
    ),
    (
        "content not JSON",
        line(worker("a", "{"), worker("b", B)),
        [(f"worker 1: answer is not valid JSON ({_NOT_JSON})", "a")],
        frame(["b"], B_AT),
    ),
    (
        "no keypoints",
        line(worker("a", {"other": 1}), worker("b", B)),
        [("worker 1: answer has no keypoints", "a")],
        frame(["b"], B_AT),
    ),
    (
        "keypoints empty",
        line(worker("a", answer()), worker("b", B)),
        [("worker 1: placed no keypoints", "a")],
        frame(["b"], B_AT),
    ),
    (
        "keypoints not a list, or empty",
        line(worker("a", {"keypoints": {}}), worker("b", answer()), worker("c", B)),
        [("worker 1: placed no keypoints", "a"), ("worker 2: placed no keypoints", "b")],
        frame(["c"], B_AT),
    ),
    (
        "33 keypoints",
        line(worker("a", answer(*[kp(NOSE, 1, 1)] * 33)), worker("b", B)),
        [("worker 1: 33 keypoints; this project asks for 4, so the answer is skipped", "a")],
        frame(["b"], B_AT),
    ),
    (
        "1,000 keypoints",
        line(worker("a", answer(*[kp(NOSE, 1, 1)] * 1000)), worker("b", B)),
        [("worker 1: 1,000 keypoints; this project asks for 4, so the answer is skipped", "a")],
        frame(["b"], B_AT),
    ),
    (
        "32 keypoints, 31 of other labels",
        line(worker("a", answer(kp(NOSE, 1, 2), *[kp(f"cat {i}", 1, 1) for i in range(31)]))),
        [("worker 1: 31 keypoints with labels this project does not have ('cat 0', 'cat 1', "
          "'cat 2', 'cat 3', 'cat 4', ...)", "a")],
        frame(["a"], [1, 2, N, N, N, N, N, N]),
    ),  # fmt: skip
    *(
        (
            f"size {w}x{h}",
            # Both at (0, 0), in any image, with the same size: only the size's check can
            # refuse the line.
            line(*(worker(name, answer(kp(NOSE, 0, 0), size=(w, h))) for name in "ab")),
            [
                (f"worker 1: image size {text} {_NO_SIZE}", "a"),
                (f"worker 2: image size {text} {_NO_SIZE}", "b"),
                ("no usable worker answer on this line", N),
            ],
            N,
        )
        for w, h, text in [
            (0, 480, "0x480"),
            (640, 0, "640x0"),
            (-1, 480, "-1x480"),
            (100_000.5, 480, "100000.5x480"),
            (640, 100_001, "640x100001"),
            ("640", 480, "640x480"),
            (True, 480, "Truex480"),
            (640, None, "640xNone"),
            (None, 480, "Nonex480"),
            (int("9" * 30), 480, "9" * 20 + "x480"),
            (640, -int("9" * 30), "640x-" + "9" * 19),
        ]
    ),
    (
        "size 1x1, points on its edges",
        line(worker("a", answer(kp(NOSE, 0, 0), kp(TAIL, 1, 1), size=(1, 1)))),
        [],
        frame(["a"], [0, 0, 1, 1, N, N, N, N], size=(1.0, 1.0)),
    ),
    (
        "size 100,000 px",
        line(worker("a", answer(kp(NOSE, 100_000, 100_000), size=(100_000, 100_000)))),
        [],
        frame(["a"], [100_000, 100_000, N, N, N, N, N, N], size=(100_000.0, 100_000.0)),
    ),
    (
        "no size: checked against 100,000 px",
        line(worker("a", answer(kp(NOSE, 99_999, 5), kp(TAIL, 100_001, 5), size=None))),
        [("worker 1: 'black mouse tail' at (100001, 5) is outside the image", "a")],
        frame(["a"], [99_999, 5, N, N, N, N, N, N], size=None),
    ),
    (
        "empty size",
        line(worker("a", {"annotatedResult": {"keypoints": [kp(NOSE, 5, 6)], "inputImageProperties": {}}})),
        [],
        frame(["a"], [5, 6, N, N, N, N, N, N], size=None),
    ),
    (
        "sizes differ: checked against the first",
        line(worker("a", A), worker("b", answer(kp(NOSE, 700, 21), size=(2000, 1000))), worker("c", B)),
        [
            ("worker 2: image size 2000x1000 differs from 640x480; checked against the first", "b"),
            ("worker 2: 'black mouse nose' at (700, 21) is outside the image", "b"),
            ("worker 2: no usable keypoint", "b"),
        ],
        frame(["a", "c"], A_AT + B_AT),
    ),
    (
        "the first size given is the frame's",
        line(worker("a", answer(kp(NOSE, 700, 20), size=None)), worker("b", B)),
        [],
        frame(["a", "b"], [700, 20, N, N, N, N, N, N] + B_AT),
    ),
    (
        "keypoint not an object",
        line(worker("a", answer(5, kp(NOSE, 1, 2)))),
        [("worker 1: keypoint entry is not an object", "a")],
        frame(["a"], [1, 2, N, N, N, N, N, N]),
    ),
    *(
        (
            f"the only point unusable: {why}",
            line(worker("a", answer(point)), worker("b", B)),
            [(f"worker 1: {why}", "a"), ("worker 1: no usable keypoint", "a")],
            frame(["b"], B_AT),
        )
        for point, why in [
            (5, "keypoint entry is not an object"),
            (kp(None, 1, 1), "keypoint without a text label"),
            (kp(NOSE, "1", 1), "'black mouse nose' has a non-numeric coordinate"),
            (kp(NOSE, math.nan, 1), "'black mouse nose' has a non-finite coordinate (nan, 1)"),
            (kp(NOSE, 10**400, 1), "'black mouse nose' is outside the image"),
            (kp(NOSE, 1, 481), "'black mouse nose' at (1, 481) is outside the image"),
        ]
    ),
    (
        "label not text",
        line(worker("a", answer(kp(5, 1, 1), kp(TAIL, 1, 2)))),
        [("worker 1: keypoint without a text label", "a")],
        frame(["a"], [N, N, 1, 2, N, N, N, N]),
    ),
    (
        "one unknown label, after a placed point",
        line(worker("a", answer(kp(NOSE, 1, 2), kp("cat nose", 3, 4)))),
        [("worker 1: 1 keypoint with labels this project does not have ('cat nose')", "a")],
        frame(["a"], [1, 2, N, N, N, N, N, N]),
    ),
    (
        "one unknown label twice, five others",
        line(
            worker("a", answer(*(kp(t, 1, 1) for t in ["c", "c", "d", "e", "f", "g"]))),
            worker("b", answer(kp(NOSE, 1, 2), *(kp(t, 1, 1) for t in "pqrstu"))),
        ),
        [
            ("worker 1: 6 keypoints with labels this project does not have ('c', 'd', 'e', 'f', "
             "'g')", "a"),
            ("worker 1: no usable keypoint", "a"),
            ("worker 2: 6 keypoints with labels this project does not have ('p', 'q', 'r', 's', "
             "'t', ...)", "b"),
        ],
        frame(["b"], [1, 2, N, N, N, N, N, N]),
    ),  # fmt: skip
    (
        "long unknown label shown cut to 80",
        line(worker("a", answer(kp("c" * 300, 1, 1), kp(NOSE, 1, 2)))),
        [(f"worker 1: 1 keypoint with labels this project does not have ({'c' * 80!r})", "a")],
        frame(["a"], [1, 2, N, N, N, N, N, N]),
    ),
    (
        "long label read and shown cut to 200",
        line(worker("a", answer(kp(_LONG, 700, 1), kp(_LONG[:200] + "X", 5, 6)))),
        [(f"worker 1: {_LONG[:200]!r} at (700, 1) is outside the image", "a")],
        frame(["a"], [5, 6, N, N, N, N, N, N]),
    ),
    (
        "loose spelling, and twice in another",
        line(worker("a", answer(kp(NOSE, 1, 2), kp("  Black Mouse TAIL ", 3, 4), kp("black  mouse nose", 5, 6)))),
        [("worker 1: 'black  mouse nose' placed twice; the first is kept", "a")],
        frame(["a"], [1, 2, 3, 4, N, N, N, N]),
    ),
    (
        "placed twice: the first is kept",
        line(worker("a", answer(kp(NOSE, 1, 2), kp(NOSE, 3, 4), kp(WNOSE, 5, 6)))),
        [("worker 1: 'black mouse nose' placed twice; the first is kept", "a")],
        frame(["a"], [1, 2, N, N, 5, 6, N, N]),
    ),
    (
        "careful points only",
        line(worker("a", answer(kp("Black Mouse Nose", 1, 2), kp("White Mouse Nose", 3, 4)))),
        [],
        frame(["a"], [1, 2, N, N, 3, 4, N, N]),
    ),
    *(
        (
            f"not a number: {x!r}, {y!r}",
            line(worker("a", answer(kp(NOSE, x, y), kp(TAIL, 1, 2)))),
            [("worker 1: 'black mouse nose' has a non-numeric coordinate", "a")],
            frame(["a"], [N, N, 1, 2, N, N, N, N]),
        )
        for x, y in [("12", 1), (1, None), (True, 1), (1, False), ([1], 1)]
    ),
    (
        "y missing",
        line(worker("a", answer({"label": NOSE, "x": 1}, kp(TAIL, 1, 2)))),
        [("worker 1: 'black mouse nose' has a non-numeric coordinate", "a")],
        frame(["a"], [N, N, 1, 2, N, N, N, N]),
    ),
    *(
        (
            f"not finite: {x}, {y}",
            line(worker("a", answer(kp(NOSE, x, y), kp(TAIL, 1, 2)))),
            [(f"worker 1: 'black mouse nose' has a non-finite coordinate ({text})", "a")],
            frame(["a"], [N, N, 1, 2, N, N, N, N]),
        )
        for x, y, text in [
            (math.nan, 2, "nan, 2"),
            (1, math.inf, "1, inf"),
            (-math.inf, 2.5, "-inf, 2.5"),
        ]
    ),
    *(
        (
            f"beyond floats: {x > 1e300}, {y > 1e300}",
            line(worker("a", answer(kp(NOSE, x, y), kp(TAIL, 1, 2)))),
            [("worker 1: 'black mouse nose' is outside the image", "a")],
            frame(["a"], [N, N, 1, 2, N, N, N, N]),
        )
        for x, y in [(10**400, 2), (1, 10**400), (2.5, 10**400)]
    ),
    *(
        (
            f"outside at {x}, {y}",
            line(worker("a", answer(kp(NOSE, x, y), kp(TAIL, 1, 2)))),
            [(f"worker 1: 'black mouse nose' at ({text}) is outside the image", "a")],
            frame(["a"], [N, N, 1, 2, N, N, N, N]),
        )
        for x, y, text in [
            (-0.5, 2, "-0.5, 2"),
            (640.5, 2, "640.5, 2"),
            (1, -0.5, "1, -0.5"),
            (1, 480.5, "1, 480.5"),
            (1, 2**60, "1, 1.15292e+18"),
        ]
    ),
    (
        "the image's edges are in",
        line(worker("a", answer(kp(NOSE, 0, 0), kp(TAIL, 640, 480), kp(WNOSE, 0, 480), kp(WTAIL, 640, 0)))),
        [],
        frame(["a"], [0, 0, 640, 480, 0, 480, 640, 0]),
    ),
    (
        "every worker unusable",
        line(worker("a", answer(kp(NOSE, -1, 1)))),
        [
            ("worker 1: 'black mouse nose' at (-1, 1) is outside the image", "a"),
            ("worker 1: no usable keypoint", "a"),
            ("no usable worker answer on this line", N),
        ],
        N,
    ),
    (
        "time spent, believed from 0 s to a day",
        line(*(worker(f"w{i}", B, s) for i, s in enumerate([0, 86_400, 86_400.5, -0.5, True, "1", 1e308]))),
        [],
        frame([f"w{i}" for i in range(7)], B_AT * 7, seconds=[0.0, 86_400.0, N, N, N, N, N]),
    ),
    (
        "worker ids that are not text",
        line(worker(5, B), {"annotationData": {"content": json.dumps(B)}}, worker("c", B)),
        [],
        frame(["worker-1", "worker-2", "c"], B_AT * 3),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "hostile, reasons, middle", [case[1:] for case in LINES], ids=[case[0] for case in LINES]
)
def test_each_hostile_line_is_explained_and_costs_nothing_else(
    hostile: Line, reasons: list[tuple[str, str | None]], middle: tuple[Any, ...] | None
) -> None:
    lines: list[Line] = [GOOD, hostile, GOOD]
    want = [(1, *GOOD_FRAME)]
    if middle is not None:
        want.append((2, *middle))
    want.append((3, *GOOD_FRAME))
    skipped = 1 if middle is None else 0
    report = expect(lines, [(2, r, w) for r, w in reasons], want, skipped=skipped)
    assert report.lines == 3
    for width in (f[2] for f in want):
        assert width is None or type(width) is float


def test_lines_are_read_a_batch_at_a_time() -> None:
    batches = read_batches(
        iter([GOOD] * 5), SPEC, fetch=no_fetch, report=ReadReport(), batch_lines=2
    )
    assert [b.lines for b in batches] == [[1, 2], [3, 4], [5]]


def test_blank_lines_are_neither_frames_nor_problems() -> None:
    report = expect(
        [GOOD, "", "   ", "\t", GOOD], [], [(1, *GOOD_FRAME), (5, *GOOD_FRAME)], skipped=0
    )
    assert report.lines == 5


def test_a_line_is_read_up_to_its_byte_limit() -> None:
    at_limit = GOOD + " " * (MAX_LINE_BYTES - len(GOOD))
    over = at_limit + " "
    expect(
        [at_limit, over, at_limit.encode(), over.encode()],
        [
            (2, "line is 2,097,153 bytes long; at most 2,097,152 are read", N),
            (4, "line is 2,097,153 bytes long; at most 2,097,152 are read", N),
        ],
        [(1, *GOOD_FRAME), (3, *GOOD_FRAME)],
        skipped=2,
    )


def test_lines_come_as_text_bytes_or_memory_views_numbered_from_the_chunks_first() -> None:
    report = ReadReport(limit=None)
    raw = [memoryview(GOOD.encode()), memoryview(b"\xff"), GOOD.encode(), GOOD]
    batches = read_chunk(raw, 7, SPEC, fetch=no_fetch, report=report)
    assert _frames(b[i] for b in batches for i in range(len(b))) == [
        (7, *GOOD_FRAME),
        (9, *GOOD_FRAME),
        (10, *GOOD_FRAME),
    ]
    assert problems(report) == [(8, "line is not UTF-8 text", N)]
    assert (report.lines, report.frames, report.frames_skipped) == (10, 3, 1)
    assert (report.job_name, report.input_lines) == ("job-a", 0)


def test_an_input_manifest_line_is_counted_as_one() -> None:
    report = expect([json.dumps({"source-ref": REF})] * 2, [
        (n, "only a `source-ref`, no labels: this is a line of an input manifest, not of a "
            "job's output manifest", N) for n in (1, 2)], [], skipped=2)  # fmt: skip
    assert report.input_lines == 2


# -- two objects of a kind: the careful path's slots ------------------------------------------


def test_each_placement_of_a_label_takes_the_next_slot_up_to_num_obj() -> None:
    points = [kp("mouse tail", 1, 2), kp("tail", 3, 4), kp("mouse tail", 5, 6), kp("nose", 7, 8)]
    edges = [kp("nose", 0, 0), kp("nose", 640, 480), kp("tail", 0, 480), kp("tail", 640, 0)]
    outside = [kp("nose", x, y) for x, y in [(-0.5, 1), (640.5, 1), (1, -0.5), (1, 480.5)]]
    lines = [
        line(worker("a", answer(*points)), worker("b", answer(kp("mouse nose", 9, 9)))),
        line(worker("c", answer(kp("tail", 1, 1), kp("tail", 2, 2), kp("nose", 3, 3)))),
        line(
            worker("d", answer(*edges, kp("cat", 1, 1))),
            worker("e", answer(*outside, kp("tail", 1, 1))),
        ),
        line(worker("f", answer(kp("mouse tail", 5, 6))), worker("g", answer(kp("nose", 7, 8)))),
    ]
    expect(
        lines,
        [(1, "worker 1: 'mouse tail' placed more than 2 times", "a"),
         (3, "worker 1: 1 keypoint with labels this project does not have ('cat')", "d")]
        + [(3, f"worker 2: 'nose' at ({at}) is outside the image", "e")
           for at in ("-0.5, 1", "640.5, 1", "1, -0.5", "1, 480.5")],
        [
            (1, *frame(["a", "b"], [7, 8, N, N, 1, 2, 3, 4] + [9, 9, N, N, N, N, N, N])),
            (2, *frame(["c"], [3, 3, N, N, 1, 1, 2, 2])),
            (3, *frame(["d", "e"], [0, 0, 640, 480, 0, 480, 640, 0] + [N, N, N, N, 1, 1, N, N])),
            (4, *frame(["f", "g"], [N, N, N, N, 5, 6, N, N] + [7, 8, N, N, N, N, N, N])),
        ],
        spec=TWICE,
    )  # fmt: skip


def test_a_label_map_spelling_is_read_as_mapped_before_any_loose_match() -> None:
    spec = LabelSpec(
        "mouse", ("black", "white"), ("nose", "tail"), (), num_obj=2,
        label_map=(("Nose", "black mouse nose"), ("nose", "white mouse nose")),
    )  # fmt: skip
    points = [kp("Nose", 1, 1), kp("nose", 2, 2), kp("NOSE", 3, 3)]
    at = [1, 1, N, N, N, N, N, N, 2, 2, 3, 3, N, N, N, N]
    expect([line(worker("a", answer(*points)))], [], [(1, *frame(["a"], at))], spec=spec)


# -- worker answers in worker-response files (no consolidation Lambda) -------------------------


def _responses_line(ref: str = RESPONSES, job: str = "job-r") -> str:
    metadata = {"job-name": job, "worker-response-ref": ref}
    return json.dumps({"source-ref": REF, "annotatedResult-metadata": metadata})


def _fetch(files: dict[str, object]) -> Callable[[str], bytes]:
    def fetch(uri: str) -> bytes:
        body = files[uri]
        if isinstance(body, Exception):
            raise body
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    return fetch


def test_worker_response_files_give_each_worker_by_identity() -> None:
    answers = [
        {"workerId": "w1", "answerContent": A, "timeSpentInSeconds": 7,
         "workerMetadata": {"identityData": {"sub": "sub-1"}}},
        {"workerId": "w2", "answerContent": json.dumps(B), "timeSpentInSeconds": 1e9},
        {"answerContent": B},
        {"workerId": "", "workerMetadata": {"identityData": {"sub": ""}}, "answerContent": B},
        {"workerId": "w5", "workerMetadata": {"identityData": "x"}, "answerContent": B},
        {"workerId": 6, "workerMetadata": "x", "answerContent": B},
        7,
        {"workerId": "w8", "answerContent": None},
        {"workerId": "w9", "workerMetadata": {"identityData": {"sub": 9}}, "answerContent": B},
    ]  # fmt: skip
    fetch = _fetch({RESPONSES: {"answers": answers}})
    report = expect(
        [_responses_line()],
        [(1, "worker 7: answer is not an object", N), (1, "worker 8: answer has no keypoints", "w8")],
        [(1, *frame(["sub-1", "w2", "worker-3", "worker-4", "w5", "worker-6", "w9"],
                    A_AT + B_AT * 6, seconds=[7.0, N, N, N, N, N, N]))],
        fetch=fetch,
    )  # fmt: skip
    assert report.job_name == "job-r"


@pytest.mark.parametrize(
    "body, reason",
    [
        (FileNotFoundError(), f"cannot read worker responses {RESPONSES}: FileNotFoundError"),
        (
            PermissionError("d" * 2000),
            f"cannot read worker responses {RESPONSES}: {'d' * 997}...",
        ),
        (b"{", f"worker responses {RESPONSES} are not valid JSON ({_NOT_JSON})"),
        (b"[]", f"worker responses {RESPONSES} have no `answers` list"),
        ({"answers": {}}, f"worker responses {RESPONSES} have no `answers` list"),
        ({"answers": [{"answerContent": B}] * 33}, _TOO_MANY),
        ({"answers": []}, "no usable worker answer on this line"),
    ],
)
def test_unusable_worker_response_files_are_explained(body: object, reason: str) -> None:
    expect([_responses_line(), GOOD], [(1, reason, N)], [(2, *GOOD_FRAME)],
           fetch=_fetch({RESPONSES: body}), skipped=1)  # fmt: skip


def test_a_worker_response_file_holds_up_to_32_answers() -> None:
    fetch = _fetch({RESPONSES: {"answers": [{"answerContent": B}] * 32}})
    workers = [f"worker-{i}" for i in range(1, 33)]
    expect([_responses_line()], [], [(1, *frame(workers, B_AT * 32))], fetch=fetch)


def test_a_long_worker_response_uri_is_cut_in_the_message() -> None:
    uri = "s3://lab/" + "u" * 400
    expect(
        [_responses_line(uri)],
        [(1, f"cannot read worker responses {uri[:300]}: no {uri}", N)],
        [],
        fetch=no_fetch,
    )
    expect(
        [_responses_line("")],
        [(1, "no worker answers: neither consolidated annotations nor a `worker-response-ref`", N)],
        [],
    )


def test_answers_kept_in_s3_are_fetched_one_by_one() -> None:
    long_uri = "s3://lab/answers/" + "a" * 300
    items = [
        {"workerId": "a", "annotationData": {"s3Uri": "s3://lab/answers/a.json"}},
        {"workerId": "b", "annotationData": {"s3uri": "s3://lab/answers/b.json"}},
        {"workerId": "c", "annotationData": {"s3Uri": long_uri}},
        {"workerId": "d", "annotationData": {"s3Uri": "s3://lab/answers/d.json"}},
        {"workerId": "e", "annotationData": {"content": json.dumps(B), "s3Uri": "s3://nowhere"}},
        {"workerId": "f", "annotationData": {"s3Uri": "s3://lab/answers/f.json"}},
    ]
    fetch = _fetch({
        "s3://lab/answers/a.json": A,
        "s3://lab/answers/b.json": B,
        long_uri: OSError("e" * 300),
        "s3://lab/answers/d.json": OSError(""),
        "s3://lab/answers/f.json": OSError("f" * 120),  # as long as a message may be
    })  # fmt: skip
    expect(
        [line(*items)],
        [
            (1, f"worker 3: cannot read its answer {long_uri[:200]}: {'e' * 117}...", "c"),
            (1, "worker 4: cannot read its answer s3://lab/answers/d.json: OSError", "d"),
            (1, f"worker 6: cannot read its answer s3://lab/answers/f.json: {'f' * 120}", "f"),
        ],
        [(1, *frame(["a", "b", "e"], A_AT + B_AT + B_AT))],
        fetch=fetch,
    )


# -- where the answers sit on the line ----------------------------------------------------------


def _keypoints_at(content: dict[str, Any]) -> str:
    return line(worker("a", content))


@pytest.mark.parametrize(
    "content",
    [
        {"zzz": {"keypoints": [kp(TAIL, 9, 9)]}, "annotatedResult": A["annotatedResult"]},
        {"annotatedResult": {"no": 1}, **A["annotatedResult"]},
        {"annotatedResult": 5, "myTool": A["annotatedResult"]},
        {"other": [1], "myTool": A["annotatedResult"]},
    ],
    ids=["the recipe's name first", "at the top", "under another name", "skipping non-objects"],
)
def test_the_keypoints_are_found_under_any_name(content: dict[str, Any]) -> None:
    expect([_keypoints_at(content)], [], [(1, *frame(["a"], A_AT))])


def test_a_named_label_attribute_is_read_whatever_else_the_line_holds() -> None:
    record = json.loads(line(worker("a", answer(kp("cat", 1, 1)))))
    record["myjob"] = {"annotationsFromAllWorkers": [worker("m", A)]}
    record["myjob-metadata"] = {"job-name": "job-m"}
    lines = [json.dumps(record)]
    report = expect(lines, [], [(1, *frame(["m"], A_AT))], label_attribute="myjob")
    assert report.job_name == "job-m"
    frames = list(
        read_manifest(lines, SPEC, fetch=no_fetch, report=ReadReport(), label_attribute="myjob")
    )
    assert _frames(frames) == [(1, *frame(["m"], A_AT))]
    # Without the name, a job's own attribute is found by its `-metadata` twin.
    del record["annotatedResult"], record["annotatedResult-metadata"]
    report = expect([json.dumps(record)], [], [(1, *frame(["m"], A_AT))])
    assert report.job_name == "job-m"


@pytest.mark.parametrize(
    "metadata, name",
    [
        ([{}, {"job_name": "alt"}, {"job-name": "main"}], "alt"),
        ([{"job-name": ""}, {"job-name": 5, "job_name": "x"}], "x"),
        ([{"job-name": "", "job_name": "y"}], "y"),
        ([{"job-name": "j" * 300}], "j" * 200),
        ([{"job-name": None}], None),
    ],
)
def test_the_job_name_is_the_first_lines_whichever_path_reads_it(
    metadata: list[dict[str, Any]], name: str | None
) -> None:
    lines = []
    for meta in metadata:
        record = json.loads(GOOD)
        record["annotatedResult-metadata"] = meta
        lines.append(json.dumps(record))
    for with_careful in (False, True):
        # A careful line first makes the fast lines' batch assemble line by line.
        batch = [
            line(worker("a", answer(kp(NOSE, -1, 1))), metadata={"job-name": None})
        ] * with_careful
        for report, _ in (
            read(batch + lines),
            read(batch + lines, batch_lines=1),
            careful(batch + lines),
        ):
            assert report.job_name == name


# -- how much a line may list ------------------------------------------------------------------


def test_a_line_lists_at_most_100_problems_and_counts_the_rest() -> None:
    bad = answer(5, 5, 5)  # three problems and "no usable keypoint" per worker
    hostile = line(*(worker(f"w{i}", bad) for i in range(32)))
    seen: list[Problem] = []
    report = ReadReport(limit=None, sink=seen.append)
    list(read_batches([hostile, hostile, GOOD], SPEC, fetch=no_fetch, report=report))
    listed = problems(report)
    assert len(listed) == 2 * 101 and report.problem_count == 2 * 129
    for at, number in ((0, 1), (101, 2)):
        assert listed[at : at + 4] == [
            (number, "worker 1: keypoint entry is not an object", "w0")
        ] * 3 + [(number, "worker 1: no usable keypoint", "w0")]
        assert listed[at + 99] == (number, "worker 25: no usable keypoint", "w24")
        assert listed[at + 100] == (number, "more problems on this line are counted, not listed", N)
    assert seen == report.problems
    just_over = line(*(worker(f"w{i}", bad) for i in range(25)))  # 100 + "no usable worker"
    report = read([just_over])[0]
    assert report.problem_count == 101 and len(report.problems) == 101
    assert problems(report)[-1] == (1, "more problems on this line are counted, not listed", N)
    capped = ReadReport(limit=5, sink=(sunk := []).append)
    list(read_batches([hostile, GOOD], SPEC, fetch=no_fetch, report=capped))
    assert capped.problems == report.problems[:5] and sunk == report.problems[:101]
    assert capped.problem_count == 129 and capped.problems[0].text() == (
        "line 1: worker 1: keypoint entry is not an object"
    )


def test_unknown_labels_are_counted_up_to_100_kinds() -> None:
    report = ReadReport()
    for i in range(100):
        report.count_unknown(f"label {i}" + "x" * 100)
    report.count_unknown("label 0" + "x" * 200, 3)
    report.count_unknown("another")
    report.count_unknown("yet another", 2)
    assert len(report.unknown_labels) == 101
    assert report.unknown_labels["label 0" + "x" * 73] == 4
    assert report.unknown_labels["label 1" + "x" * 73] == 1
    assert report.unknown_labels["(other labels)"] == 3
    lines = [line(worker("a", answer(kp("cat", 1, 1), kp("cat", 1, 1), kp(NOSE, 1, 1))))] * 2
    report = read(lines)[0]
    assert report.unknown_labels == {"cat": 4}


def test_a_later_chunks_report_folds_into_the_earlier() -> None:
    first, later = ReadReport(limit=3), ReadReport(limit=None)
    list(
        read_batches(
            [GOOD, "{", json.dumps({"source-ref": REF})], SPEC, fetch=no_fetch, report=first
        )
    )
    first.job_name = None
    read_chunk([line(worker("a", answer(kp("cat", 1, 1), kp("cat", 1, 1))), metadata={"job-name": "job-b"}),
                "[]", "[]", json.dumps({"source-ref": REF}), GOOD], 4, SPEC, fetch=no_fetch,
               report=later)  # fmt: skip
    first.count_unknown("dog", 2)
    first.merge(later)
    assert problems(first) == [
        (2, f"line is not valid JSON ({_NOT_JSON})", N),
        (3, "only a `source-ref`, no labels: this is a line of an input manifest, not of a job's "
            "output manifest", N),
        (4, "worker 1: 2 keypoints with labels this project does not have ('cat')", "a"),
    ]  # fmt: skip
    assert (first.problem_count, first.frames, first.frames_skipped) == (2 + 6, 2, 2 + 4)
    assert (first.lines, first.input_lines, first.job_name) == (8, 2, "job-b")
    assert first.unknown_labels == {"dog": 2, "cat": 2}
    later.merge(first)
    assert later.lines == 8 and later.job_name == "job-b"


# -- batches: fast lines, careful lines and wide lines together ----------------------------------


def test_wide_lines_get_batches_of_their_own_with_careful_lines_in_each() -> None:
    wide = line(*(worker(f"w{i}", B) for i in range(20)))
    wide_careful = line(
        *(worker(f"w{i}", B) for i in range(19)), worker("x", answer(kp(NOSE, 1e4, 1)))
    )
    slow = line(worker("a", answer(kp("Black Mouse Nose", 3, 4))), worker("b", B))
    lines = [GOOD, slow, wide, wide_careful, wide, slow, GOOD]
    report = ReadReport(limit=None)
    batches = list(read_batches(lines, SPEC, fetch=no_fetch, report=report))
    assert [b.coords.shape for b in batches] == [(2, 2, 4, 2), (3, 20, 4, 2), (2, 2, 4, 2)]
    assert [b.lines for b in batches] == [[1, 2], [3, 4, 5], [6, 7]]
    slow_frame = frame(["a", "b"], [3, 4, N, N, N, N, N, N] + B_AT)
    wide_workers = [f"w{i}" for i in range(20)]
    assert _frames(b[i] for b in batches for i in range(len(b))) == [
        (1, *GOOD_FRAME),
        (2, *slow_frame),
        (3, *frame(wide_workers, B_AT * 20)),
        (4, *frame(wide_workers[:19], B_AT * 19)),
        (5, *frame(wide_workers, B_AT * 20)),
        (6, *slow_frame),
        (7, *GOOD_FRAME),
    ]
    assert problems(report) == [(4, "worker 20: 'black mouse nose' at (10000, 1) is outside the image", "x"),
                                (4, "worker 20: no usable keypoint", "x")]  # fmt: skip
    # Narrow lines around them pad to their own widest line with unplaced workers.
    assert (
        np.isnan(batches[1].coords[1, 19]).all() and not np.isnan(batches[1].coords[0, 19, 0]).any()
    )
    # Two runs are two batches too.
    shapes = [
        b.coords.shape
        for b in read_batches([GOOD, GOOD, wide], SPEC, fetch=no_fetch, report=ReadReport())
    ]
    assert shapes == [(2, 2, 4, 2), (1, 20, 4, 2)]
    sizes = batches[0].image_sizes()
    assert sizes.dtype == np.float64 and sizes.tolist() == [[640.0, 480.0]] * 2


@pytest.mark.parametrize(
    "counts, segments",
    [
        ([], []),
        ([5] * 10, [(0, 10)]),
        ([1, 1, 9], [(0, 3)]),
        ([1, 1, 10], [(0, 2), (2, 3)]),
        ([5, 5, 10], [(0, 3)]),
        ([5, 5, 11], [(0, 2), (2, 3)]),
        ([1, 1, 1, 20, 20], [(0, 3), (3, 5)]),
        ([1, 20, 20, 1], [(0, 4)]),
        ([20, 1, 1, 1, 20, 20, 1], [(0, 1), (1, 4), (4, 6), (6, 7)]),
        ([1, 1, 1, 9, 20], [(0, 4), (4, 5)]),
        ([9, 1, 1, 1, 20], [(0, 4), (4, 5)]),
    ],
)
def test_a_batch_is_cut_where_lines_have_more_than_twice_the_usual_workers(
    counts: list[int], segments: list[tuple[int, int]]
) -> None:
    assert _segments(counts) == segments


def test_a_frame_without_a_size_has_nan_for_it_and_names_its_image() -> None:
    lines = [
        line(worker("a", answer(kp(NOSE, 1, 2), size=None)), ref="s3://lab/a/x.png?versionId=3"),
        GOOD,
    ]
    (batch,) = read_batches(lines, SPEC, fetch=no_fetch, report=ReadReport())
    sizes = batch.image_sizes()
    assert np.isnan(sizes[0]).all() and sizes[1].tolist() == [640.0, 480.0]
    assert batch.file_names() == ["x.png", "f1.jpg"] and batch.file_names() is batch.file_names()
    assert file_name("s3://lab/a/y.png?versionId=3?x") == "y.png"  # the first "?" starts a query
    empty = FrameBatch([], [], [], [], [], [], np.empty((0, 0, 4, 2)))
    assert empty.image_sizes().shape == (0, 2) and len(empty) == 0


# -- ordinary lines take the fast path -------------------------------------------------------------


@pytest.fixture
def careful_lines(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[int]]:
    """The lines a chunk sends to the careful path (a spy on `_Reader.read_line`)."""
    seen: list[int] = []
    read_line = _Reader.read_line

    def spy(self: _Reader, number: int, raw: str | bytes | memoryview) -> Any:
        seen.append(number)
        return read_line(self, number, raw)

    monkeypatch.setattr(_Reader, "read_line", spy)

    def careful_lines(lines: list[Line], label_attribute: str | None = None) -> list[int]:
        seen.clear()
        report = ReadReport(limit=None)
        read_chunk(lines, 1, SPEC, fetch=no_fetch, report=report, label_attribute=label_attribute)
        return list(seen)

    return careful_lines


def test_ordinary_lines_of_a_chunk_never_need_the_careful_path(
    careful_lines: Callable[..., list[int]],
) -> None:
    """Results do not depend on the path (above); this is the speed: a line of the recipe, at
    any of its edges, is read in bulk."""
    edges = line(
        worker("a", answer(kp(NOSE, 0, 0), kp(TAIL, 640, 480), kp(WNOSE, 0, 480))), worker("b", B)
    )
    ordinary = [
        GOOD,
        GOOD + " " * (MAX_LINE_BYTES - len(GOOD)),
        line(*_33[:32]),
        edges,
        line(worker("a", answer(kp(NOSE, 1, 1), size=(1, 1)))),
        line(worker("a", answer(kp(NOSE, 1, 1), size=(100_000, 100_000)))),
        line(*(worker(f"w{i}", B, s) for i, s in enumerate([0, 86_400, 1e9, True]))),
        line(worker(5, B), {"annotationData": {"content": json.dumps(B)}}),
        line(worker("a", A), metadata={"job-name": 5, "job_name": "x" * 300}),
        line(worker("a", {**A, "extra": {"keypoints": 1}})),
        GOOD.encode(),
    ]
    assert careful_lines(ordinary) == []
    assert careful_lines([*ordinary, "{", *ordinary]) == [len(ordinary) + 1]
    # Lines the batch check refuses go alone, not the batch with them.
    twice = line(worker("a", answer(kp(NOSE, 1, 2), kp(NOSE, 1, 2))), worker("b", B))
    outside = line(worker("a", answer(kp(NOSE, 1, 481))), worker("b", B))
    assert careful_lines([*ordinary, twice, *ordinary, outside]) == [12, 24]
    record = json.loads(GOOD)
    record["myjob"] = record.pop("annotatedResult")
    record["myjob-metadata"] = record.pop("annotatedResult-metadata")
    assert careful_lines([json.dumps(record)], label_attribute="myjob") == []
    assert careful_lines([json.dumps(record)]) == [1]  # found by the careful path only


def test_the_careful_path_explains_only_the_points_that_need_it() -> None:
    """A line read carefully (here for worker 2's spelling) still places well-formed points
    without the point-by-point checks."""
    reader = _Reader(SPEC, no_fetch, ReadReport(), None)
    slow_point = reader._slow_point
    explained: list[object] = []

    def spy(*args: Any) -> int:
        explained.append(args[3])
        return slow_point(*args)

    reader._slow_point = spy  # type: ignore[method-assign]
    edges = [kp(NOSE, 0, 0), kp(TAIL, 640, 480), kp(WNOSE, 0.5, 479.5), kp(WTAIL, 12, 1)]
    odd = [kp("Black Mouse Nose", 1, 2), kp(NOSE, 3, 4), kp(TAIL, True, 1), kp(WNOSE, 1, 480.5)]
    got = reader.read_line(1, line(worker("a", answer(*edges)), worker("b", answer(*odd))))
    assert explained == odd
    assert got is not None and got.workers == ["a", "b"]


def test_unusual_lines_of_a_chunk_are_left_to_the_careful_path(
    careful_lines: Callable[..., list[int]],
) -> None:
    """The other half: a line the fast path took wrongly would lose its problems."""
    unusual = [case[1] for case in LINES if case[0] not in ("32 workers", "time spent, believed from 0 s to a day", "worker ids that are not text", "the image's edges are in", "size 1x1, points on its edges", "size 100,000 px", "a source-ref beyond ASCII")]  # fmt: skip
    assert careful_lines(unusual) == list(range(1, len(unusual) + 1))


# -- worker-response files on disk -------------------------------------------------------------------


def test_local_worker_responses_are_found_beside_the_manifest_or_in_the_sync_layout(
    tmp_path: Path,
) -> None:
    flat = tmp_path / "flat"
    (flat / "worker-response" / "iteration-1").mkdir(parents=True)
    (flat / "worker-response" / "iteration-1" / "0.json").write_bytes(b'{"answers": []}')
    fetch = local_worker_response_fetch(flat / "output.manifest")
    assert fetch("s3://b/job/annotations/worker-response/iteration-1/0.json") == b'{"answers": []}'
    assert fetch("/worker-response/iteration-1/0.json") == b'{"answers": []}'
    # The first `/worker-response/` of the URI starts the local path.
    nested = flat / "worker-response" / "a" / "worker-response"
    nested.mkdir(parents=True)
    (flat / "worker-response" / "a" / "worker-response" / "1.json").write_bytes(b"first")
    (flat / "worker-response" / "1.json").write_bytes(b"last")
    assert fetch("s3://b/worker-response/a/worker-response/1.json") == b"first"

    job = tmp_path / "job"
    (job / "manifests" / "output").mkdir(parents=True)
    (job / "annotations" / "worker-response").mkdir(parents=True)
    (job / "annotations" / "worker-response" / "2.json").write_bytes(b"synced")
    fetch = local_worker_response_fetch(job / "manifests" / "output" / "output.manifest")
    assert fetch("s3://b/worker-response/2.json") == b"synced"
    with pytest.raises(FileNotFoundError) as missing:
        fetch("s3://b/worker-response/3.json")
    here, synced = job / "manifests" / "output", job / "annotations"
    assert str(missing.value) == (
        f"no local copy (looked at {here}/worker-response/3.json or "
        f"{synced}/worker-response/3.json)"
    )
    nowhere = "no local copy (looked at nowhere (the URI has no worker-response/))"
    for uri in ("s3://b/other/3.json", "s3://b/worker-response/../../../secret.json"):
        with pytest.raises(FileNotFoundError) as missing:
            fetch(uri)
        assert str(missing.value) == nowhere
    (job / "secret.json").write_text("{}")
    with pytest.raises(FileNotFoundError):
        fetch("s3://b/worker-response/../../secret.json")


def test_missing_local_responses_fall_back_to_s3_and_say_where_gtbot_looked(tmp_path: Path) -> None:
    def s3(uri: str) -> bytes:
        if uri.endswith("ok.json"):
            return b"from s3"
        raise ConnectionError("s" * 400)

    fetch = local_worker_response_fetch(tmp_path / "output.manifest", fallback=s3)
    assert fetch("s3://b/worker-response/ok.json") == b"from s3"
    with pytest.raises(FileNotFoundError) as failed:
        fetch("s3://b/worker-response/gone.json")
    assert str(failed.value) == (
        f"no local copy (looked at {tmp_path}/worker-response/gone.json) and S3 said: "
        + "s" * 297
        + "..."
    )
    assert isinstance(failed.value.__cause__, ConnectionError)


def test_links_and_sizes_of_local_responses_are_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "worker-response"
    folder.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"secret")
    (folder / "link.json").symlink_to(outside)
    (folder / "dangling.json").symlink_to(tmp_path / "gone.json")
    (folder / "dir.json").mkdir()
    fetch = local_worker_response_fetch(tmp_path / "output.manifest")
    with pytest.raises(PermissionError) as refused:
        fetch("s3://b/worker-response/link.json")
    assert str(refused.value) == (
        f"{folder}/link.json is a link to {outside}, outside {folder}; not read"
    )
    for name in ("dangling.json", "dir.json"):
        with pytest.raises(FileNotFoundError, match=r"^no local copy \(looked at "):
            fetch(f"s3://b/worker-response/{name}")
    exact = os.urandom(64) * (MAX_RESPONSE_BYTES // 64)
    (folder / "exact.json").write_bytes(exact)
    assert fetch("s3://b/worker-response/exact.json") == exact
    with open(folder / "huge.json", "wb") as handle:
        handle.truncate(64 * MAX_RESPONSE_BYTES)  # sparse: costs no disk
    tracemalloc.start()
    with pytest.raises(OSError) as large:
        fetch("s3://b/worker-response/huge.json")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(large.value) == f"{folder}/huge.json is larger than 8,388,608 bytes; not read"
    assert peak < 2 * MAX_RESPONSE_BYTES  # read up to the bound, not the whole file
    (folder / "over.json").write_bytes(exact + b" ")
    with pytest.raises(OSError, match="larger than 8,388,608 bytes"):
        fetch("s3://b/worker-response/over.json")

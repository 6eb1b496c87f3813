"""Stream a Ground Truth `output.manifest` into per-frame worker coordinates.

Worker answers are untrusted input: they are parsed with `json.loads` only, every coordinate is
checked, and anything wrong becomes a (line, reason) problem instead of an exception, so one bad
line or one careless worker never costs the rest of a job. Memory is constant in the number of
frames: one line and its worker answers are held at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bot.results.spec import LabelSpec, normalise_label

Fetch = Callable[[str], bytes]

DEFAULT_LABEL_ATTRIBUTE = "annotatedResult"
# Coordinates are checked against the image with this bound when no worker reported the image
# size; large enough for any real frame, small enough to reject Infinity.
_UNKNOWN_SIZE = 1e30
_NAN = math.nan


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the manifest that was left out; `line` is 1-based, as editors count."""

    line: int
    reason: str


@dataclass
class ReadReport:
    """Counts and problems of one read; problems are kept up to `limit` so a hostile manifest
    cannot grow memory, while `problem_count` still counts them all."""

    limit: int = 1000
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    lines: int = 0
    frames: int = 0
    frames_skipped: int = 0
    job_name: str | None = None

    def add(self, line: int, reason: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self.limit:
            self.problems.append(Problem(line, reason))

    def skip(self, line: int, reason: str) -> None:
        self.frames_skipped += 1
        self.add(line, reason)


@dataclass(slots=True)
class Frame:
    """One image with every usable worker answer.

    `coords` is flat, worker-major: worker w, slot s, axis a lives at
    `(w * spec.n_slots + s) * 2 + a`; NaN means the worker did not place that point (missing is
    never zero). A flat list keeps the per-point cost to a list store; arrays are built per batch.
    """

    line: int
    source_ref: str
    width: float | None
    height: float | None
    workers: list[str]
    seconds: list[float | None]
    coords: list[float]


def read_manifest(
    lines: Iterable[str | bytes],
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None = None,
) -> Iterator[Frame]:
    """Yield one `Frame` per usable manifest line, recording every problem in `report`."""
    reader = _Reader(spec, fetch, report, label_attribute)
    for number, raw in enumerate(lines, start=1):
        report.lines = number
        frame = reader.read_line(number, raw)
        if frame is not None:
            report.frames += 1
            yield frame


def local_worker_response_fetch(manifest_path: Path, fallback: Fetch | None = None) -> Fetch:
    """Serve `worker-response-ref` URIs from a downloaded copy of the job's output.

    A job folder copied next to its manifest keeps the layout below `worker-response/`, so the
    S3 key's suffix from there on names the local file; anything else (or a missing file) goes
    to `fallback`, e.g. S3.
    """
    base = manifest_path.resolve().parent

    def fetch(uri: str) -> bytes:
        marker = "/worker-response/"
        at = uri.find(marker)
        if at >= 0:
            parts = PurePosixPath(uri[at + 1 :]).parts
            if ".." not in parts:
                candidate = base.joinpath(*parts)
                if candidate.is_file():
                    return candidate.read_bytes()
        if fallback is None:
            raise FileNotFoundError(f"no local copy of {uri} under {base}")
        return fallback(uri)

    return fetch


class _Reader:
    def __init__(
        self, spec: LabelSpec, fetch: Fetch, report: ReadReport, label_attribute: str | None
    ) -> None:
        self.spec = spec
        self.fetch = fetch
        self.report = report
        self.label_attribute = label_attribute
        self.index = spec.label_index
        self.loose_index = spec.normalised_label_index
        self.slot_values = spec.n_slots * 2
        self.nan_block = [_NAN] * self.slot_values

    # -- one manifest line -------------------------------------------------------------------
    def read_line(self, number: int, raw: str | bytes) -> Frame | None:
        report = self.report
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                report.skip(number, "line is not UTF-8 text")
                return None
        if not raw.strip():
            return None
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            report.skip(number, f"line is not valid JSON ({_short(exc)})")
            return None
        if not isinstance(record, dict):
            report.skip(number, "line is not a JSON object")
            return None
        source_ref = record.get("source-ref")
        if not isinstance(source_ref, str) or not source_ref:
            report.skip(number, "no `source-ref` on this line")
            return None
        attribute = self._attribute(record)
        metadata = record.get(f"{attribute}-metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        if report.job_name is None and isinstance(metadata.get("job-name"), str):
            report.job_name = metadata["job-name"]
        failure = _failure(record, metadata)
        if failure is not None:
            report.skip(number, f"Ground Truth marked this object failed: {failure}")
            return None
        answers = self._answers(number, record.get(attribute), metadata)
        if answers is None:
            return None
        frame = Frame(number, source_ref, None, None, [], [], [])
        for position, (worker, seconds, content) in enumerate(answers, start=1):
            self._add_worker(frame, position, worker, seconds, content)
        if not frame.workers:
            report.skip(number, "no usable worker answer on this line")
            return None
        return frame

    def _attribute(self, record: dict[str, Any]) -> str:
        if self.label_attribute is not None:
            return self.label_attribute
        if f"{DEFAULT_LABEL_ATTRIBUTE}-metadata" in record:
            return DEFAULT_LABEL_ATTRIBUTE
        for key in record:
            if (
                isinstance(key, str)
                and not key.endswith("-metadata")
                and f"{key}-metadata" in record
            ):
                return key
        return DEFAULT_LABEL_ATTRIBUTE

    def _answers(
        self, number: int, result: object, metadata: dict[str, Any]
    ) -> list[tuple[str, float | None, object]] | None:
        """(worker id, seconds spent, content) for each worker, from either manifest form."""
        report = self.report
        if isinstance(result, dict) and "annotationsFromAllWorkers" in result:
            workers = result["annotationsFromAllWorkers"]
            if not isinstance(workers, list):
                report.skip(number, "`annotationsFromAllWorkers` is not a list")
                return None
            out: list[tuple[str, float | None, object]] = []
            for position, item in enumerate(workers, start=1):
                if not isinstance(item, dict):
                    report.add(number, f"worker {position}: answer is not an object")
                    continue
                data = item.get("annotationData")
                content = data.get("content") if isinstance(data, dict) else None
                worker = item.get("workerId")
                out.append(
                    (
                        worker if isinstance(worker, str) else f"worker-{position}",
                        _seconds(item.get("timeSpentInSeconds")),
                        content,
                    )
                )
            return out
        ref = metadata.get("worker-response-ref")
        if not isinstance(ref, str) or not ref:
            report.skip(
                number,
                "no worker answers: neither consolidated annotations nor a `worker-response-ref`",
            )
            return None
        try:
            body = self.fetch(ref)
        except Exception as exc:  # the caller's fetch may fail in any way; the line is lost only
            report.skip(number, f"cannot read worker responses {ref}: {_short(exc)}")
            return None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            report.skip(number, f"worker responses {ref} are not valid JSON ({_short(exc)})")
            return None
        raw_answers = document.get("answers") if isinstance(document, dict) else None
        if not isinstance(raw_answers, list):
            report.skip(number, f"worker responses {ref} have no `answers` list")
            return None
        out = []
        for position, answer in enumerate(raw_answers, start=1):
            if not isinstance(answer, dict):
                report.add(number, f"worker {position}: answer is not an object")
                continue
            out.append(
                (
                    _worker_identity(answer, position),
                    _seconds(answer.get("timeSpentInSeconds")),
                    answer.get("answerContent"),
                )
            )
        return out

    # -- one worker --------------------------------------------------------------------------
    def _add_worker(
        self, frame: Frame, position: int, worker: str, seconds: float | None, content: object
    ) -> None:
        report = self.report
        number = frame.line
        if isinstance(content, str | bytes):
            try:
                content = json.loads(content)
            except (ValueError, RecursionError) as exc:
                report.add(number, f"worker {position}: answer is not valid JSON ({_short(exc)})")
                return
        result = _keypoint_result(content)
        if result is None:
            report.add(number, f"worker {position}: answer has no keypoints")
            return
        keypoints = result["keypoints"]
        if not isinstance(keypoints, list) or not keypoints:
            report.add(number, f"worker {position}: placed no keypoints")
            return
        width, height = _image_size(result.get("inputImageProperties"))
        if width is not None and height is not None:
            if frame.width is None or frame.height is None:
                frame.width, frame.height = width, height
            elif (width, height) != (frame.width, frame.height):
                report.add(
                    number,
                    f"worker {position}: image size {width:g}x{height:g} differs from "
                    f"{frame.width:g}x{frame.height:g}; checked against the first",
                )
        w = frame.width if frame.width is not None else _UNKNOWN_SIZE
        h = frame.height if frame.height is not None else _UNKNOWN_SIZE
        coords = frame.coords
        base = len(coords)
        coords.extend(self.nan_block)
        placed = 0
        if self.spec.num_obj == 1:
            index = self.index
            for point in keypoints:
                # Fast path for well-formed points; anything unusual is explained by the slow one.
                try:
                    j = base + 2 * index[point["label"]]
                    x = point["x"]
                    y = point["y"]
                    if 0.0 <= x <= w and 0.0 <= y <= h and coords[j] != coords[j]:
                        coords[j] = x
                        coords[j + 1] = y
                        placed += 1
                        continue
                except (KeyError, TypeError):
                    pass
                placed += self._slow_point(number, position, point, coords, base, w, h, None)
        else:
            counts: dict[int, int] = {}
            for point in keypoints:
                placed += self._slow_point(number, position, point, coords, base, w, h, counts)
        if placed == 0:
            del coords[base:]
            report.add(number, f"worker {position}: no usable keypoint")
            return
        frame.workers.append(worker)
        frame.seconds.append(seconds)

    def _slow_point(
        self,
        number: int,
        position: int,
        point: object,
        coords: list[float],
        base: int,
        w: float,
        h: float,
        counts: dict[int, int] | None,
    ) -> int:
        """Place one point the careful way, or report why not; returns 1 if placed."""
        report = self.report
        where = f"worker {position}"
        if not isinstance(point, dict):
            report.add(number, f"{where}: keypoint entry is not an object")
            return 0
        label = point.get("label")
        if not isinstance(label, str):
            report.add(number, f"{where}: keypoint without a text label")
            return 0
        idx = self.index.get(label)
        if idx is None:
            idx = self.loose_index.get(normalise_label(label))
        if idx is None:
            report.add(number, f"{where}: unknown label {label[:80]!r}")
            return 0
        x, y = point.get("x"), point.get("y")
        for value in (x, y):
            if isinstance(value, bool) or not isinstance(value, int | float):
                report.add(number, f"{where}: {label!r} has a non-numeric coordinate")
                return 0
        assert isinstance(x, int | float) and isinstance(y, int | float)
        if not (math.isfinite(x) and math.isfinite(y)):
            report.add(number, f"{where}: {label!r} has a non-finite coordinate ({x}, {y})")
            return 0
        if not (0.0 <= x <= w and 0.0 <= y <= h):
            report.add(number, f"{where}: {label!r} at ({x:g}, {y:g}) is outside the image")
            return 0
        num_obj = self.spec.num_obj
        if counts is None:
            slot = idx
        else:
            used = counts.get(idx, 0)
            if used >= num_obj:
                report.add(number, f"{where}: {label!r} placed more than {num_obj} times")
                return 0
            counts[idx] = used + 1
            slot = idx * num_obj + used
        j = base + 2 * slot
        if coords[j] == coords[j]:
            report.add(number, f"{where}: {label!r} placed twice; the first is kept")
            return 0
        coords[j] = float(x)
        coords[j + 1] = float(y)
        return 1


def _keypoint_result(content: object) -> dict[str, Any] | None:
    """The `{"keypoints": [...], "inputImageProperties": ...}` part of one worker's answer.

    It sits under the name of the template's `<crowd-keypoint>` element, `annotatedResult` in
    the MARS template; other names are accepted by shape.
    """
    if not isinstance(content, dict):
        return None
    preferred = content.get(DEFAULT_LABEL_ATTRIBUTE)
    if isinstance(preferred, dict) and "keypoints" in preferred:
        return preferred
    if "keypoints" in content:
        return content
    for value in content.values():
        if isinstance(value, dict) and "keypoints" in value:
            return value
    return None


def _image_size(properties: object) -> tuple[float | None, float | None]:
    if not isinstance(properties, dict):
        return None, None
    width, height = properties.get("width"), properties.get("height")
    if (
        isinstance(width, int | float)
        and isinstance(height, int | float)
        and not isinstance(width, bool)
        and not isinstance(height, bool)
        and math.isfinite(width)
        and math.isfinite(height)
        and width > 0
        and height > 0
    ):
        return float(width), float(height)
    return None, None


def _worker_identity(answer: dict[str, Any], position: int) -> str:
    """The Cognito `sub` when present: private-team `workerId`s in worker-response files can be
    truncated to the same prefix for everyone, which would merge distinct people."""
    metadata = answer.get("workerMetadata")
    identity = metadata.get("identityData") if isinstance(metadata, dict) else None
    sub = identity.get("sub") if isinstance(identity, dict) else None
    if isinstance(sub, str) and sub:
        return sub
    worker = answer.get("workerId")
    return worker if isinstance(worker, str) and worker else f"worker-{position}"


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) if value >= 0 else None
    return None


def _failure(record: dict[str, Any], metadata: dict[str, Any]) -> str | None:
    for source in (metadata, record):
        for key, value in source.items():
            if isinstance(key, str) and key.endswith("failure-reason") and value:
                return str(value)[:200]
    return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."

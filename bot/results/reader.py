"""Stream a Ground Truth `output.manifest` into batches of per-frame worker coordinates.

Worker answers are untrusted input: they are parsed as JSON only (never evaluated), every
coordinate is checked, and anything wrong becomes a (line, reason) problem instead of an
exception, so one bad line or one careless worker never costs the rest of a job. Memory is
constant in the number of frames: one batch of lines is held at a time.

Two paths read a line. The fast one (orjson, and points checked for a whole batch at once with
numpy) only accepts lines where nothing at all is unusual and never reports anything; every
other line, and every line whose points fail the batch check, is re-read by the careful one
(stdlib `json`, point by point), which is the reference behaviour and writes every problem. So
reports and results do not depend on which path read a line, and lines keep their order.
"""

from __future__ import annotations

import functools
import json
import math
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from operator import attrgetter, methodcaller
from pathlib import Path, PurePosixPath
from typing import Any, Union

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from bot.results.spec import LabelSpec, normalise_label

Fetch = Callable[[str], bytes]

DEFAULT_LABEL_ATTRIBUTE = "annotatedResult"
# Bounds on what a worker answer may claim. Anything outside is skipped with a reason, so no
# number a worker writes can overflow an export or make a batch huge.
# Sides of an image, px: far beyond any camera frame; coordinates are checked against the
# reported size, or against this when no worker reported one.
MAX_IMAGE_SIDE = 100_000.0
# Worker answers on one manifest line. Ground Truth sends an object to at most 9 workers
# (NumberOfHumanWorkersPerDataObject is 1..9 in the SageMaker API model); a merge of jobs may
# hold more, so the bound is generous, but a batch's arrays are as wide as its widest line.
MAX_WORKERS_PER_LINE = 32
# One manifest line, bytes: a real one (9 workers x 200 labels) is far below this.
MAX_LINE_BYTES = 2 << 20
# One worker-response file read from disk, bytes.
MAX_RESPONSE_BYTES = 8 << 20
# Problems listed per manifest line; further ones are counted, not listed.
MAX_PROBLEMS_PER_LINE = 100
# Distinct unknown labels counted for the summary; the rest are counted together.
MAX_LABELS_COUNTED = 100
# A task's time, seconds, beyond which `timeSpentInSeconds` is not believed (tasks are
# limited to 8 hours, TaskTimeLimitInSeconds <= 28800).
MAX_SECONDS = 86_400.0
_UNKNOWN_SIZE = MAX_IMAGE_SIDE
_NAN = math.nan
_INF = math.inf
_DEFAULT_METADATA = f"{DEFAULT_LABEL_ATTRIBUTE}-metadata"
# Lines per batch unless the caller says otherwise (see `bot.results.consolidation.BATCH_FRAMES`).
DEFAULT_BATCH_LINES = 512

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# Per fast-read point: its line among the fast-read ones, worker position, slot, x, y.
_Points = tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray]
_slot_of = attrgetter("slot")
# An answer whose content could not be fetched (already reported).
_LOST = object()
_is_failure_key = methodcaller("endswith", "failure-reason")
_x_of = attrgetter("x")
_y_of = attrgetter("y")


class _ImageSize(msgspec.Struct, gc=False):
    width: float
    height: float


@functools.lru_cache(maxsize=16)
def _content_decoder(labels: tuple[tuple[str, int], ...]) -> msgspec.json.Decoder[Any]:
    """The recipe's worker answer as the fast path decodes it, for one project's labels.

    msgspec builds typed records straight from the text (faster than dicts; a number field is
    never a bool or a string), skips fields nobody reads, and rejects anything else, which the
    careful path then reads and explains. Each label is its own record type, tagged by the
    `label` field, so msgspec matches the label in C and the record carries its slot: no label
    string is made or hashed per point, and a label not spelled exactly as configured is
    rejected. Records are not garbage-collected: they hold no cycles, and a job makes millions.
    `labels` pairs every exact label text read (short forms and `label_map` entries included)
    with its slot.
    """
    points = tuple(
        msgspec.defstruct(
            f"_Point{slot}",
            [("x", float), ("y", float)],
            tag=label,
            tag_field="label",
            gc=False,
            namespace={"slot": labels[slot][1]},
        )
        for slot, (label, _) in enumerate(labels)
    )
    answer = msgspec.defstruct(
        "_Answer",
        [("inputImageProperties", _ImageSize), ("keypoints", list[Union[points]])],  # type: ignore[valid-type]  # noqa: UP007
        gc=False,
    )
    content = msgspec.defstruct("_Content", [("annotatedResult", answer)], gc=False)
    return msgspec.json.Decoder(content)


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the manifest that was left out; `line` is 1-based, as editors count, and
    `worker` the worker's id when the problem is one worker's answer."""

    line: int
    reason: str
    worker: str | None = None

    def text(self) -> str:
        return f"line {self.line}: {self.reason}"


ProblemSink = Callable[[Problem], None]


@dataclass
class ReadReport:
    """Counts and problems of one read. Problems are kept up to `limit` (None: all, for one
    chunk, whose lines bound them) so a hostile manifest cannot grow memory, while
    `problem_count` counts them all and `sink`, if set, receives every one in line order
    (`problems.csv`). A line lists at most `MAX_PROBLEMS_PER_LINE`."""

    limit: int | None = 1000
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    lines: int = 0
    frames: int = 0
    frames_skipped: int = 0
    job_name: str | None = None
    # Lines that hold a `source-ref` and nothing a labeling job adds: an input manifest's.
    input_lines: int = 0
    # Worker labels the project does not know, with how often they were placed.
    unknown_labels: dict[str, int] = field(default_factory=dict)
    sink: ProblemSink | None = None
    _line: int = 0
    _line_problems: int = 0

    def add(self, line: int, reason: str, worker: str | None = None) -> None:
        self.problem_count += 1
        if line != self._line:
            self._line, self._line_problems = line, 0
        self._line_problems += 1
        if self._line_problems > MAX_PROBLEMS_PER_LINE:
            if self._line_problems == MAX_PROBLEMS_PER_LINE + 1:
                self._keep(Problem(line, "more problems on this line are counted, not listed"))
            return
        self._keep(Problem(line, reason, worker))

    def _keep(self, problem: Problem) -> None:
        if self.limit is None or len(self.problems) < self.limit:
            self.problems.append(problem)
        if self.sink is not None:
            self.sink(problem)

    def skip(self, line: int, reason: str) -> None:
        self.frames_skipped += 1
        self.add(line, reason)

    def count_unknown(self, label: str, times: int = 1) -> None:
        key = label[:80]
        if key not in self.unknown_labels and len(self.unknown_labels) >= MAX_LABELS_COUNTED:
            key = "(other labels)"
        self.unknown_labels[key] = self.unknown_labels.get(key, 0) + times

    def merge(self, other: ReadReport) -> None:
        """Fold in the report of the lines that follow this one's (a later chunk)."""
        for problem in other.problems:
            self._keep(problem)
        self.problem_count += other.problem_count
        self.frames += other.frames
        self.frames_skipped += other.frames_skipped
        self.lines = max(self.lines, other.lines)
        self.input_lines += other.input_lines
        if self.job_name is None:
            self.job_name = other.job_name
        for label, times in other.unknown_labels.items():
            self.count_unknown(label, times)


@dataclass(slots=True)
class Frame:
    """One image with every usable worker answer.

    `coords` is flat, worker-major: worker w, slot s, axis a lives at
    `(w * spec.n_slots + s) * 2 + a`; NaN means the worker did not place that point (missing is
    never zero).
    """

    line: int
    source_ref: str
    width: float | None
    height: float | None
    workers: list[str]
    seconds: list[float | None]
    coords: list[float]


@dataclass(slots=True)
class FrameBatch:
    """Consecutive usable frames of the manifest, their worker points as one array.

    `coords` is (frames, workers, slots, 2); frames with fewer workers than the widest are
    padded with all-NaN workers, which the NaN-aware consensus ignores like unplaced points.
    """

    lines: list[int]
    source_refs: list[str]
    widths: list[float | None]
    heights: list[float | None]
    workers: list[list[str]]
    seconds: list[list[float | None]]
    coords: FloatArray
    _file_names: list[str] | None = None
    # How many labeling jobs answered each frame: 1 unless follow-up rounds were merged in
    # (bot/results/rounds.py); None means 1 for every frame.
    rounds: list[int] | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def file_names(self) -> list[str]:
        """Each frame's image name (`file_name`), computed once for every export that writes
        it."""
        if self._file_names is None:
            self._file_names = list(map(file_name, self.source_refs))
        return self._file_names

    def image_sizes(self) -> FloatArray:
        """(B, 2) width and height of each frame's image, NaN where no worker reported it."""
        return np.array(
            [
                (_NAN, _NAN) if w is None or h is None else (w, h)
                for w, h in zip(self.widths, self.heights, strict=True)
            ],
            dtype=np.float64,
        ).reshape(-1, 2)

    def __getitem__(self, b: int) -> Frame:
        n = len(self.workers[b])
        return Frame(
            self.lines[b],
            self.source_refs[b],
            self.widths[b],
            self.heights[b],
            self.workers[b],
            self.seconds[b],
            self.coords[b, :n].ravel().tolist(),
        )


def file_name(source_ref: str) -> str:
    """The image's base name: MARS keeps frames flat in `annotation-data/raw-images/`."""
    path = source_ref.split("?", 1)[0]
    last = path.rpartition("/")[2]
    if last and last != ".":
        return last  # what PurePosixPath(...).name gives, at a tenth of the cost
    return PurePosixPath(path).name or source_ref


def read_manifest(
    lines: Iterable[str | bytes],
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None = None,
) -> Iterator[Frame]:
    """Yield one `Frame` per usable manifest line, recording every problem in `report`."""
    for batch in read_batches(
        lines, spec, fetch=fetch, report=report, label_attribute=label_attribute
    ):
        for b in range(len(batch)):
            yield batch[b]


def read_batches(
    lines: Iterable[str | bytes],
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None = None,
    batch_lines: int = DEFAULT_BATCH_LINES,
) -> Iterator[FrameBatch]:
    """Yield the usable frames of every `batch_lines` manifest lines, in manifest order,
    recording every problem in `report`; a batch may be short or, if all its lines were
    unusable, skipped. Each batch is a `read_chunk`, which is what lets two processes share
    the batches of a file (`bot.results.parallel`)."""
    remaining = iter(lines)
    first_line = 1
    while chunk := list(islice(remaining, batch_lines)):
        yield from read_chunk(
            chunk, first_line, spec, fetch=fetch, report=report, label_attribute=label_attribute
        )
        first_line += len(chunk)


def read_chunk(
    lines: Iterable[str | bytes] | Iterable[memoryview],
    first_line: int,
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None = None,
) -> list[FrameBatch]:
    """The usable frames of consecutive manifest lines numbered from `first_line`: one batch,
    none if no line was usable, or several in line order when a few lines have far more
    workers than the rest (`_segments`). No state crosses a chunk, so a manifest cut at batch
    boundaries can be read in any order, by several processes, and merged back in line
    order."""
    reader = _Reader(spec, fetch, report, label_attribute)
    pending = _Pending(spec.num_obj == 1)
    for number, raw in enumerate(lines, start=first_line):
        report.lines = number
        pending.add(reader, number, raw)
    return pending.flush(reader)


def local_worker_response_fetch(manifest_path: Path, fallback: Fetch | None = None) -> Fetch:
    """Serve `worker-response-ref` URIs from a downloaded copy of the job's output.

    The S3 key's suffix from `worker-response/` on names the local file, looked for in two
    places: beside the manifest (`<dir>/output.manifest` with `<dir>/worker-response/...`), and,
    when the manifest sits where `aws s3 sync` of the job's output puts it
    (`<job>/manifests/output/output.manifest`), in `<job>/annotations/worker-response/...`
    (AWS developer guide, "Labeling job output data": the `annotations` and `manifests`
    folders of a job). Anything not found locally goes to `fallback` (S3), and a failure says
    where gtbot looked. A file is read only if it really lies inside its `worker-response`
    folder: a symbolic link leading out of it is refused, so a crafted manifest or folder
    cannot make gtbot read other files.
    """
    manifest = Path(os.path.abspath(manifest_path))
    roots = [manifest.parent]
    if manifest.parts[-3:-1] == ("manifests", "output"):
        roots.append(manifest.parent.parent.parent / "annotations")

    def fetch(uri: str) -> bytes:
        marker = "/worker-response/"
        at = uri.find(marker)
        looked: list[str] = []
        if at >= 0:
            parts = PurePosixPath(uri[at + 1 :]).parts
            if ".." not in parts:  # PurePosixPath drops empty parts ("a//b" is "a/b")
                for root in roots:
                    candidate = root.joinpath(*parts)
                    looked.append(str(candidate))
                    data = _read_inside(root / "worker-response", candidate)
                    if data is not None:
                        return data
        where = " or ".join(looked) if looked else "nowhere (the URI has no worker-response/)"
        if fallback is None:
            raise FileNotFoundError(f"no local copy (looked at {where})")
        try:
            return fallback(uri)
        except Exception as exc:
            raise FileNotFoundError(
                f"no local copy (looked at {where}) and S3 said: {_short(exc, 300)}"
            ) from exc

    return fetch


def _read_inside(folder: Path, candidate: Path) -> bytes | None:
    """The file's bytes if it exists and lies inside `folder` once links are followed; None if
    absent; an error if it leads outside or is too large to be a worker-response file."""
    try:
        real = candidate.resolve(strict=True)
        inside = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(inside):
        raise PermissionError(f"{candidate} is a link to {real}, outside {inside}; not read")
    if not real.is_file():
        return None
    with open(real, "rb") as handle:
        data = handle.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        raise OSError(f"{candidate} is larger than {MAX_RESPONSE_BYTES:,} bytes; not read")
    return data


class _Pending:
    """The lines of one batch: fast-read ones as flat point lists, the rest kept raw for the
    careful path. Nothing is reported until `flush`, which handles every line in order."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self._clear()

    def _clear(self) -> None:
        # Per line: the raw text, and its index among fast-read lines or -1.
        self.entries: list[tuple[int, str | bytes | memoryview, int]] = []
        self.refs: list[str] = []
        self.widths: list[float] = []
        self.heights: list[float] = []
        self.workers: list[list[str]] = []
        self.seconds: list[list[float | None]] = []
        # Per fast-read line, its metadata: the job's name is read from the first that has one.
        self.metadata: list[dict[str, Any]] = []
        # Per fast-read worker: points given. Per point of fast-read workers, in order: slot,
        # x, y. Typed arrays, not lists: each value is unboxed as it is read (its Python
        # object freed while still in cache) and numpy takes the lot without a copy.
        self.counts = array("q")
        self.slots = array("q")
        self.xs = array("d")
        self.ys = array("d")

    def add(self, reader: _Reader, number: int, raw: str | bytes | memoryview) -> None:
        fast = self.fast and self._read_fast(reader, raw)
        self.entries.append((number, raw, len(self.refs) - 1 if fast else -1))

    def _read_fast(self, reader: _Reader, raw: str | bytes | memoryview) -> bool:
        """Take the line if it is an ordinary recipe line (consolidated answers, every worker
        reporting the same image size); False, with nothing kept, on anything unusual, which
        the careful path will then explain. Whole-line comprehensions and C-level `map`s
        instead of a loop per worker and point: this runs for every line of a job."""
        if len(raw) > MAX_LINE_BYTES:
            return False
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if type(record) is not dict:
            return False
        source_ref = record.get("source-ref")
        if type(source_ref) is not str or not source_ref:
            return False
        attribute = reader.label_attribute
        if attribute is None:
            if _DEFAULT_METADATA not in record:
                return False
            attribute = DEFAULT_LABEL_ATTRIBUTE
        metadata = record.get(f"{attribute}-metadata")
        if type(metadata) is not dict:
            return False
        if any(map(_is_failure_key, chain(metadata, record))):
            return False
        result = record.get(attribute)
        if type(result) is not dict:
            return False
        items = result.get("annotationsFromAllWorkers")
        if type(items) is not list or not items or len(items) > MAX_WORKERS_PER_LINE:
            return False
        decode = reader.decode_content
        try:
            # Anything not shaped like the recipe raises here (TypeError, KeyError, and
            # msgspec's errors for bad JSON, a missing field or a value of the wrong type).
            answers = [decode(item["annotationData"]["content"]).annotatedResult for item in items]
        except (msgspec.MsgspecError, KeyError, TypeError):
            return False
        keypoints = [answer.keypoints for answer in answers]
        sizes = {(p.width, p.height) for p in [answer.inputImageProperties for answer in answers]}
        if len(sizes) != 1:
            return False
        counts = list(map(len, keypoints))
        if 0 in counts or max(counts) > reader.max_points:
            return False
        ((width, height),) = sizes
        if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
            return False
        workers = [item.get("workerId") for item in items]
        if set(map(type, workers)) != {str}:
            workers = [
                worker if type(worker) is str else f"worker-{position}"
                for position, worker in enumerate(workers, start=1)
            ]
        seconds = [item.get("timeSpentInSeconds") for item in items]
        if seconds.count(None) != len(seconds):
            seconds = [_seconds(spent) for spent in seconds]
        points = list(chain.from_iterable(keypoints))
        # fromlist(list(map(...))): a C loop over a list beats extend() over an iterator.
        self.slots.fromlist(list(map(_slot_of, points)))
        self.xs.fromlist(list(map(_x_of, points)))
        self.ys.fromlist(list(map(_y_of, points)))
        self.counts.fromlist(counts)
        self.refs.append(source_ref)
        self.widths.append(float(width))
        self.heights.append(float(height))
        self.workers.append(workers)  # type: ignore[arg-type]
        self.seconds.append(seconds)  # type: ignore[arg-type]
        self.metadata.append(metadata)
        return True

    def flush(self, reader: _Reader) -> list[FrameBatch]:
        """Check every fast-read point at once, send failing lines to the careful path, and
        assemble the batch in line order."""
        spec = reader.spec
        report = reader.report
        n_slots = spec.n_slots
        entries = self.entries
        accepted, points = self._check(reader)
        n_fast = len(self.refs)
        if n_fast == len(entries) and all(accepted):
            # The usual batch: every line fast-read and accepted, already in line order.
            lines = [number for number, _, _ in entries]
            refs: list[str] = self.refs
            widths: list[float | None] = self.widths  # type: ignore[assignment]
            heights: list[float | None] = self.heights  # type: ignore[assignment]
            workers: list[list[str]] = self.workers
            seconds: list[list[float | None]] = self.seconds
            careful: list[tuple[int, list[float]]] = []
            frame_of_line = np.arange(n_fast, dtype=np.int64)
            if report.job_name is None:
                report.job_name = next(filter(None, map(job_name_of, self.metadata)), None)
        else:
            lines, refs, widths, heights, workers, seconds = [], [], [], [], [], []
            careful = []  # (frame position, flat coords)
            frame_of_line = np.full(n_fast, -1, dtype=np.int64)
            for number, raw, fast in entries:
                if fast >= 0 and accepted[fast]:
                    frame_of_line[fast] = len(lines)
                    if report.job_name is None:
                        report.job_name = job_name_of(self.metadata[fast])
                    lines.append(number)
                    refs.append(self.refs[fast])
                    widths.append(self.widths[fast])
                    heights.append(self.heights[fast])
                    workers.append(self.workers[fast])
                    seconds.append(self.seconds[fast])
                    continue
                frame = reader.read_line(number, raw)
                if frame is None:
                    continue
                careful.append((len(lines), frame.coords))
                lines.append(number)
                refs.append(frame.source_ref)
                widths.append(frame.width)
                heights.append(frame.height)
                workers.append(frame.workers)
                seconds.append(frame.seconds)
        report.frames += len(lines)
        self._clear()
        counts = list(map(len, workers))
        segments = _segments(counts)
        if len(segments) > 1:
            return [
                FrameBatch(
                    lines[start:end],
                    refs[start:end],
                    widths[start:end],
                    heights[start:end],
                    workers[start:end],
                    seconds[start:end],
                    _coords(counts, start, end, n_slots, careful, frame_of_line, points),
                )
                for start, end in segments
            ]
        width = max(counts, default=0)
        coords = np.full((len(lines), width, n_slots, 2), np.nan, dtype=np.float64)
        for b, flat in careful:
            coords[b, : len(workers[b])] = np.array(flat, dtype=np.float64).reshape(-1, n_slots, 2)
        if points is not None:
            line_of_point, worker_of_point, slot, x, y = points
            frame_of_point = frame_of_line[line_of_point]
            # Scatter through flat positions: one index computation serves both axes.
            at = ((frame_of_point * width + worker_of_point) * n_slots + slot) * 2
            keep = frame_of_point >= 0
            if not keep.all():
                at, x, y = at[keep], x[keep], y[keep]
            flat_coords = coords.reshape(-1)
            flat_coords[at] = x
            flat_coords[at + 1] = y
        if not lines:
            return []
        return [FrameBatch(lines, refs, widths, heights, workers, seconds, coords)]

    def _check(self, reader: _Reader) -> tuple[list[bool], _Points | None]:
        """Which fast-read lines have every point usable: a known label (exact spelling), a
        coordinate in the image (msgspec already made it a float, never a bool), and no label
        twice for one worker; and per point its (fast line, worker position, slot, x, y) for
        the assembly."""
        n_lines = len(self.refs)
        if n_lines == 0:
            return [], None
        n_slots = reader.spec.n_slots
        counts = np.frombuffer(self.counts, dtype=np.int64)
        n_workers = len(counts)
        per_line = np.fromiter(map(len, self.workers), dtype=np.int64, count=n_lines)
        line_of_worker = np.repeat(np.arange(n_lines), per_line)
        first_worker = np.cumsum(per_line) - per_line
        position = np.arange(n_workers) - first_worker[line_of_worker]
        worker = np.repeat(np.arange(n_workers), counts)
        slot = np.frombuffer(self.slots, dtype=np.int64)
        x = np.frombuffer(self.xs, dtype=np.float64)
        y = np.frombuffer(self.ys, dtype=np.float64)
        line_of_point = line_of_worker[worker]
        # Widths and heights are at most MAX_IMAGE_SIDE, far below 2**53: every point kept is
        # a float the careful path would read the same, never a rounded huge integer.
        ok = (
            (x >= 0.0)
            & (x <= np.array(self.widths)[line_of_point])
            & (y >= 0.0)
            & (y <= np.array(self.heights)[line_of_point])
        )
        placed = np.bincount((worker * n_slots + slot)[ok], minlength=n_workers * n_slots)
        bad_worker = (placed.reshape(n_workers, n_slots) > 1).any(axis=1)
        bad_worker |= np.bincount(worker[~ok], minlength=n_workers) > 0
        bad_line = np.bincount(line_of_worker[bad_worker], minlength=n_lines) > 0
        points = (line_of_point, position[worker], slot, x, y)
        return (~bad_line).tolist(), points


def _segments(counts: list[int]) -> list[tuple[int, int]]:
    """Frame ranges of a batch to compute apart so that its arrays grow with the usual lines,
    not the widest: a batch's arrays are as wide as its widest frame, so lines with more than
    twice the usual workers (and more than 9, Ground Truth's most) go in runs of their own."""
    if not counts:
        return []
    limit = max(2 * sorted(counts)[len(counts) // 2], 9)
    if max(counts) <= limit:
        return [(0, len(counts))]
    out: list[tuple[int, int]] = []
    start = 0
    for b in range(1, len(counts) + 1):
        if b == len(counts) or (counts[b] > limit) != (counts[start] > limit):
            out.append((start, b))
            start = b
    return out


def _coords(
    counts: list[int],
    start: int,
    end: int,
    n_slots: int,
    careful: list[tuple[int, list[float]]],
    frame_of_line: IntArray,
    points: _Points | None,
) -> FloatArray:
    """The (frames, workers, slots, 2) array of frames start..end of a batch, as wide as its
    own widest frame: careful-path frames copied, fast-path points scattered."""
    width = max(counts[start:end])
    coords = np.full((end - start, width, n_slots, 2), np.nan, dtype=np.float64)
    for b, flat in careful:
        if start <= b < end:
            coords[b - start, : counts[b]] = np.array(flat, dtype=np.float64).reshape(
                -1, n_slots, 2
            )
    if points is not None:
        line_of_point, worker_of_point, slot, x, y = points
        frame = frame_of_line[line_of_point]
        keep = (frame >= start) & (frame < end)
        at = (((frame[keep] - start) * width + worker_of_point[keep]) * n_slots + slot[keep]) * 2
        flat_coords = coords.reshape(-1)
        flat_coords[at] = x[keep]
        flat_coords[at + 1] = y[keep]
    return coords


class _Reader:
    def __init__(
        self, spec: LabelSpec, fetch: Fetch, report: ReadReport, label_attribute: str | None
    ) -> None:
        self.spec = spec
        self.fetch = fetch
        self.report = report
        self.label_attribute = label_attribute
        self.index = spec.label_index
        self.decode_content = _content_decoder(tuple(spec.label_index.items())).decode
        # Points one answer may hold: the template asks for each slot once; beyond a few times
        # that, the answer is not a keypoint answer of this project.
        self.max_points = 4 * spec.n_slots + 16
        self.loose_index = spec.normalised_label_index
        self.slot_values = spec.n_slots * 2
        self.nan_block = [_NAN] * self.slot_values

    # -- one manifest line -------------------------------------------------------------------
    def read_line(self, number: int, raw: str | bytes | memoryview) -> Frame | None:
        report = self.report
        if isinstance(raw, memoryview):
            raw = raw.tobytes()
        if len(raw) > MAX_LINE_BYTES:
            report.skip(
                number, f"line is {len(raw):,} bytes long; at most {MAX_LINE_BYTES:,} are read"
            )
            return None
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
        if not _is_unicode(source_ref):
            # A lone surrogate escape ("\\ud800") cannot be written to a UTF-8 export.
            report.skip(number, "`source-ref` is not valid Unicode text")
            return None
        attribute = self._attribute(record)
        metadata = record.get(f"{attribute}-metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        if report.job_name is None:
            report.job_name = job_name_of(metadata)
        failure = _failure(record, metadata)
        if failure is not None:
            report.skip(number, f"Ground Truth marked this object failed: {failure}")
            return None
        answers = self._answers(number, record, attribute, metadata)
        if answers is None:
            return None
        frame = Frame(number, source_ref, None, None, [], [], [])
        for position, worker, seconds, content in answers:
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
        self, number: int, record: dict[str, Any], attribute: str, metadata: dict[str, Any]
    ) -> list[tuple[int, str, float | None, object]] | None:
        """(position, worker id, seconds spent, content) for each worker, from either manifest
        form; the position is the answer's place on the line (1-based), also when an entry
        before it was not an answer, so a message names the answer a user finds there."""
        report = self.report
        result = record.get(attribute)
        if isinstance(result, dict) and "annotationsFromAllWorkers" in result:
            workers = result["annotationsFromAllWorkers"]
            if not isinstance(workers, list):
                report.skip(number, "`annotationsFromAllWorkers` is not a list")
                return None
            if len(workers) > MAX_WORKERS_PER_LINE:
                report.skip(number, _too_many_workers(len(workers)))
                return None
            out: list[tuple[int, str, float | None, object]] = []
            for position, item in enumerate(workers, start=1):
                if not isinstance(item, dict):
                    report.add(number, f"worker {position}: answer is not an object")
                    continue
                worker = item.get("workerId")
                worker = worker if isinstance(worker, str) else f"worker-{position}"
                content = self._annotation_data(number, position, worker, item)
                out.append((position, worker, _seconds(item.get("timeSpentInSeconds")), content))
            return out
        ref = metadata.get("worker-response-ref")
        if not isinstance(ref, str) or not ref:
            if not any(isinstance(k, str) and k.endswith("-metadata") for k in record) and (
                attribute not in record
            ):
                report.input_lines += 1
                report.skip(
                    number,
                    "only a `source-ref`, no labels: this is a line of an input manifest, "
                    "not of a job's output manifest",
                )
                return None
            report.skip(
                number,
                "no worker answers: neither consolidated annotations nor a `worker-response-ref`",
            )
            return None
        try:
            body = self.fetch(ref)
        except Exception as exc:  # the caller's fetch may fail in any way; the line is lost only
            # Long enough to say every place gtbot looked (`local_worker_response_fetch`).
            report.skip(number, f"cannot read worker responses {ref[:300]}: {_short(exc, 1000)}")
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
        if len(raw_answers) > MAX_WORKERS_PER_LINE:
            report.skip(number, _too_many_workers(len(raw_answers)))
            return None
        out = []
        for position, answer in enumerate(raw_answers, start=1):
            if not isinstance(answer, dict):
                report.add(number, f"worker {position}: answer is not an object")
                continue
            out.append(
                (
                    position,
                    _worker_identity(answer, position),
                    _seconds(answer.get("timeSpentInSeconds")),
                    answer.get("answerContent"),
                )
            )
        return out

    def _annotation_data(
        self, number: int, position: int, worker: str, item: dict[str, Any]
    ) -> object | None:
        """One consolidated answer's content: `annotationData.content`, or the text at
        `annotationData.s3Uri` (AWS developer guide, "Using pre-annotation and post-annotation
        Lambda functions": `annotationData` holds `content` or `s3Uri`; the recipe Lambda copies
        the annotations into `annotationsFromAllWorkers` as they are)."""
        data = item.get("annotationData")
        if not isinstance(data, dict):
            return None  # reported as an answer without keypoints (`_add_worker`)
        content = data.get("content")
        if content is not None:
            return content
        uri = data.get("s3Uri", data.get("s3uri"))
        if not isinstance(uri, str) or not uri:
            return None
        try:
            return self.fetch(uri)
        except Exception as exc:  # the caller's fetch may fail in any way; one answer is lost
            self.report.add(
                number,
                f"worker {position}: cannot read its answer {uri[:200]}: {_short(exc)}",
                worker,
            )
            return _LOST

    # -- one worker --------------------------------------------------------------------------
    def _add_worker(
        self, frame: Frame, position: int, worker: str, seconds: float | None, content: object
    ) -> None:
        report = self.report
        number = frame.line
        if content is _LOST:
            return
        if isinstance(content, str | bytes):
            try:
                content = json.loads(content)
            except (ValueError, RecursionError) as exc:
                report.add(
                    number, f"worker {position}: answer is not valid JSON ({_short(exc)})", worker
                )
                return
        result = _keypoint_result(content)
        if result is None:
            report.add(number, f"worker {position}: answer has no keypoints", worker)
            return
        keypoints = result["keypoints"]
        if not isinstance(keypoints, list) or not keypoints:
            report.add(number, f"worker {position}: placed no keypoints", worker)
            return
        if len(keypoints) > self.max_points:
            report.add(
                number,
                f"worker {position}: {len(keypoints):,} keypoints; this project asks for "
                f"{self.spec.n_slots}, so the answer is skipped",
                worker,
            )
            return
        properties = result.get("inputImageProperties")
        width, height = _image_size(properties)
        if width is None and _claims_size(properties):
            report.add(
                number,
                f"worker {position}: image size {_size_text(properties)} is not a size "
                f"from 1 to {MAX_IMAGE_SIDE:,.0f} px; the answer is skipped",
                worker,
            )
            return
        if width is not None and height is not None:
            if frame.width is None or frame.height is None:
                frame.width, frame.height = width, height
            elif (width, height) != (frame.width, frame.height):
                report.add(
                    number,
                    f"worker {position}: image size {width:g}x{height:g} differs from "
                    f"{frame.width:g}x{frame.height:g}; checked against the first",
                    worker,
                )
        w = frame.width if frame.width is not None else _UNKNOWN_SIZE
        h = frame.height if frame.height is not None else _UNKNOWN_SIZE
        coords = frame.coords
        base = len(coords)
        coords.extend(self.nan_block)
        placed = 0
        unknown: list[str] = []
        if self.spec.num_obj == 1:
            index = self.index
            for point in keypoints:
                # Fast path for well-formed points; anything unusual is explained by the slow one.
                try:
                    j = base + 2 * index[point["label"]]
                    x = point["x"]
                    y = point["y"]
                    if (
                        0.0 <= x <= w
                        and 0.0 <= y <= h
                        and coords[j] != coords[j]
                        and type(x) is not bool  # true is 1 to Python, not to a worker
                        and type(y) is not bool
                    ):
                        coords[j] = x
                        coords[j + 1] = y
                        placed += 1
                        continue
                except (KeyError, TypeError):
                    pass
                placed += self._slow_point(
                    number, position, worker, point, coords, base, w, h, None, unknown
                )
        else:
            counts: dict[int, int] = {}
            for point in keypoints:
                placed += self._slow_point(
                    number, position, worker, point, coords, base, w, h, counts, unknown
                )
        if unknown:
            # One problem per answer, not per point: a job run with other labels would
            # otherwise list every point of every worker.
            distinct = list(dict.fromkeys(label[:80] for label in unknown))
            shown = ", ".join(map(repr, distinct[:5])) + (", ..." if len(distinct) > 5 else "")
            report.add(
                number,
                f"worker {position}: {len(unknown)} keypoint{'s' if len(unknown) > 1 else ''} "
                f"with labels this project does not have ({shown})",
                worker,
            )
        if placed == 0:
            del coords[base:]
            report.add(number, f"worker {position}: no usable keypoint", worker)
            return
        frame.workers.append(worker)
        frame.seconds.append(seconds)

    def _slow_point(
        self,
        number: int,
        position: int,
        worker: str,
        point: object,
        coords: list[float],
        base: int,
        w: float,
        h: float,
        counts: dict[int, int] | None,
        unknown: list[str],
    ) -> int:
        """Place one point the careful way, or report why not; returns 1 if placed. Unknown
        labels are collected in `unknown` (and counted for the summary) instead."""
        report = self.report
        where = f"worker {position}"
        if not isinstance(point, dict):
            report.add(number, f"{where}: keypoint entry is not an object", worker)
            return 0
        label = point.get("label")
        if not isinstance(label, str):
            report.add(number, f"{where}: keypoint without a text label", worker)
            return 0
        label = label[:200]
        idx = self.index.get(label)
        if idx is None:
            idx = self.loose_index.get(normalise_label(label))
        if idx is None:
            unknown.append(label)
            report.count_unknown(label)
            return 0
        x, y = point.get("x"), point.get("y")
        for value in (x, y):
            if isinstance(value, bool) or not isinstance(value, int | float):
                report.add(number, f"{where}: {label!r} has a non-numeric coordinate", worker)
                return 0
        assert isinstance(x, int | float) and isinstance(y, int | float)
        fx, fy = _as_float(x), _as_float(y)
        if fx is None or fy is None:
            # An integer too large for a float is finite but lies outside any image; NaN and
            # the infinities (Python's json reads them) are not places at all.
            if (fx is None and isinstance(x, int)) or (fy is None and isinstance(y, int)):
                report.add(number, f"{where}: {label!r} is outside the image", worker)
            else:
                report.add(
                    number, f"{where}: {label!r} has a non-finite coordinate ({x}, {y})", worker
                )
            return 0
        if not (0.0 <= x <= w and 0.0 <= y <= h):
            report.add(number, f"{where}: {label!r} at ({x:g}, {y:g}) is outside the image", worker)
            return 0
        num_obj = self.spec.num_obj
        if counts is None:
            slot = idx
        else:
            used = counts.get(idx, 0)
            if used >= num_obj:
                report.add(number, f"{where}: {label!r} placed more than {num_obj} times", worker)
                return 0
            counts[idx] = used + 1
            slot = idx * num_obj + used
        j = base + 2 * slot
        if coords[j] == coords[j]:
            report.add(number, f"{where}: {label!r} placed twice; the first is kept", worker)
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
    width = _as_float(properties.get("width"))
    height = _as_float(properties.get("height"))
    if (
        width is not None
        and height is not None
        and 0 < width <= MAX_IMAGE_SIDE
        and 0 < height <= MAX_IMAGE_SIDE
    ):
        return width, height
    return None, None


def _claims_size(properties: object) -> bool:
    """Whether an answer states an image size at all (one that `_image_size` refused)."""
    return isinstance(properties, dict) and (
        properties.get("width") is not None or properties.get("height") is not None
    )


def _size_text(properties: object) -> str:
    assert isinstance(properties, dict)
    return f"{str(properties.get('width'))[:20]}x{str(properties.get('height'))[:20]}"


def _too_many_workers(count: int) -> str:
    return (
        f"{count:,} worker answers on one line; Ground Truth sends an object to at most 9 "
        f"workers, and gtbot reads at most {MAX_WORKERS_PER_LINE}"
    )


def job_name_of(metadata: dict[str, Any]) -> str | None:
    """The job's name from a line's metadata: `job-name` (AWS developer guide, "Labeling job
    output data") or `job_name` (the same guide's custom-workflow output example, "Using
    pre-annotation and post-annotation Lambda functions")."""
    for key in ("job-name", "job_name"):
        name = metadata.get(key)
        if type(name) is str and name:
            return name[:200]
    return None


def _as_float(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else, including NaN, infinities and
    integers beyond the float range (which `math.isfinite` would raise on)."""
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    seconds = _as_float(value)
    return seconds if seconds is not None and 0 <= seconds <= MAX_SECONDS else None


def _failure(record: dict[str, Any], metadata: dict[str, Any]) -> str | None:
    for source in (metadata, record):
        for key, value in source.items():
            if isinstance(key, str) and key.endswith("failure-reason") and value:
                return str(value)[:200]
    return None


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Training exports of a consolidated job, written batch by batch so memory never holds a job.

- `coco-keypoints.json`: COCO keypoints, one category per animal.
- `keypoints.csv`: one row per frame, animal and keypoint, for spreadsheets and pandas.
- `processed_keypoints.json`: the per-image records MARS's `manifest_to_dict` writes, so MARS's
  own training scripts (tfrecord, priors, evaluation) take gtbot's output unchanged.
- `CollectedData_gtbot.csv`: DeepLabCut's labeled-data table (scorer "gtbot"), in the layout
  DeepLabCut itself writes with pandas: header rows scorer / [individuals /] bodyparts / coords
  (the `individuals` row when there are several animals, DeepLabCut's multi-animal layout), and
  rows indexed `labeled-data, <folder>, <image>`. DeepLabCut reads it back with
  `pd.read_csv(..., header=[0, 1, 2] or [0, 1, 2, 3], index_col=[0, 1, 2])`
  (`deeplabcut.utils.conversioncode.convertcsv2h5`).

Text cells are written so a spreadsheet cannot run them: one that starts with `=`, `+`, `-`, `@`,
a tab or a carriage return gets a leading `'` (OWASP's advice against CSV injection).

Skeleton choice (COCO `skeleton`, 1-based): keypoints in config order form a chain; a member of
a left/right check pair is not chained to its partner but hangs from the nearest unpaired
keypoint before it and the nearest after it. The MARS mouse (nose, ears, neck, knees, tail)
gets nose-ear-neck and neck-knee-tail diamonds, the shape MARS draws; with no pairs it is the
plain chain.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain, cycle, repeat
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

from bot.results.consensus import BatchConsensus, BoolArray, FloatArray, IntArray
from bot.results.reader import FrameBatch
from bot.results.spec import LabelSpec

CSV_COLUMNS = ("frame", "animal", "keypoint", "x", "y", "n_workers", "spread")
FRAME_COLUMNS = ("frame", "image_id", "n_workers", "rounds", "uncertainty", "spread")
# DeepLabCut's scorer (the first header row) and so the file's name, `CollectedData_<scorer>`.
DLC_SCORER = "gtbot"
# MARS pads a bounding box by this share of the image on every side (its `correct_box`).
BOX_MARGIN = 0.04


def skeleton(spec: LabelSpec) -> list[list[int]]:
    """COCO skeleton edges (1-based keypoint indices); see the module docstring."""
    paired = {name for pair in spec.check_pairs for name in pair}
    names = spec.keypoints
    spine = [i for i, name in enumerate(names) if name not in paired]
    edges: list[tuple[int, int]] = []
    for i, name in enumerate(names):
        if name in paired:
            before = [s for s in spine if s < i]
            after = [s for s in spine if s > i]
            if before:
                edges.append((before[-1], i))
            if after:
                edges.append((i, after[0]))
    for a, b in zip(spine, spine[1:], strict=False):
        between = [i for i in range(a + 1, b) if names[i] in paired]
        if not between:
            edges.append((a, b))
    seen: set[tuple[int, int]] = set()
    out = []
    for a, b in sorted(edges, key=lambda e: (min(e), max(e))):
        key = (min(a, b), max(a, b))
        if key not in seen and a != b:
            seen.add(key)
            out.append([key[0] + 1, key[1] + 1])
    return out


def instance_names(spec: LabelSpec) -> list[tuple[int, int, str]]:
    """(animal index, instance, name) for every individual an export describes; instances of
    `num_obj` > 1 are called "<animal>#<n>"."""
    out = []
    for a, animal in enumerate(spec.animal_names):
        for j in range(spec.num_obj):
            out.append((a, j, animal if spec.num_obj == 1 else f"{animal}#{j + 1}"))
    return out


def _json_text(array: npt.NDArray[Any]) -> bytes:
    """orjson's text of a numeric array: numbers in the shortest form that reads back exactly,
    NaN as `null` (callers that need MARS's `NaN` replace it; nothing else says null)."""
    return orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY)


def _rows(text: bytes) -> list[bytes]:
    """The rows of a 2-D array's JSON text without their brackets: `[[1,2],[3,4]]` ->
    `1,2` and `3,4`. Splitting one text per batch costs far less than one dump per row."""
    return text[2:-2].split(b"],[")


def _blocks(text: bytes) -> list[bytes]:
    """The 2-D blocks of a 3-D array's JSON text without their outer brackets:
    `[[[1],[2]],[[3],[4]]]` -> `1],[2` and `3],[4`."""
    return text[3:-3].split(b"]],[[")


def _items(text: bytes) -> list[bytes]:
    """The numbers of a 1-D array's JSON text."""
    return text[1:-1].split(b",")


def _assemble(*columns: bytes | Iterable[bytes]) -> bytes:
    """Records from columns: each column is a constant piece or one piece per record; the
    record is its columns' pieces in order. Joined by C-level iterators, not a Python loop
    per record, which cost as much as encoding the numbers; fewer, longer pieces are cheaper."""
    records = zip(*(repeat(c) if isinstance(c, bytes) else c for c in columns))  # noqa: B905
    return b"".join(map(b"".join, records))


def _string_bodies(values: list[str]) -> list[bytes]:
    """Each string's JSON text without its quotes (callers' constants hold them), from one
    `orjson.dumps` of the list: inside an encoded string a quote is always escaped, so `","`
    only ever separates two of them."""
    return orjson.dumps(values)[2:-2].split(b'","') if values else []


def _cached_texts(
    values: list[float | None], cache: dict[float | None, bytes], encode: Callable[[Any], bytes]
) -> list[bytes]:
    """The text of each value, encoding each distinct value once (image sizes repeat)."""
    for value in set(values) - cache.keys():
        cache[value] = encode(value)
    return list(map(cache.__getitem__, values))


def _pixels(value: float | None) -> bytes:
    return b"0" if value is None else orjson.dumps(int(round(value)))


def py_round(values: FloatArray, digits: int) -> FloatArray:
    """`round(value, digits)` of every element, exactly as Python's correctly rounded `round`.

    `np.round` scales, rounds and divides, which agrees with Python except when the scaled
    value lies within a rounding error of a half; those few elements are rounded by Python.
    """
    out = np.round(values, digits)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values * 10.0**digits
        risky = np.abs(scaled - np.floor(scaled) - 0.5) <= np.abs(scaled) * 1e-15 + 1e-300
    for i in np.flatnonzero(risky):
        out.flat[i] = round(float(values.flat[i]), digits)
    return out


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


class CocoRecords:
    """The COCO image and annotation objects of a batch, each preceded by a comma; an image also
    says how many workers answered it (`n_workers`, a key COCO readers ignore). They depend
    on the batch alone (ids come from manifest line numbers: image id = line, annotation id =
    (line - 1) x individuals + individual + 1), so any process can encode any batch."""

    def __init__(self, spec: LabelSpec) -> None:
        self.spec = spec
        self.instances = instance_names(spec)
        n_kp, n_obj = len(spec.keypoints), spec.num_obj
        # Slots of each instance's keypoints, instances in `instance_names` order.
        self.instance_slots = np.array(
            [[(a * n_kp + k) * n_obj + j for k in range(n_kp)] for a, j, _ in self.instances],
            dtype=np.int64,
        )
        self.categories = np.array([a + 1 for a, _, _ in self.instances], dtype=np.int64)
        self.sizes: dict[float | None, bytes] = {}

    def header(self, job_name: str | None) -> bytes:
        info = {"description": f"gtbot consensus of {job_name or 'a Ground Truth job'}"}
        return b'{"info":' + orjson.dumps(info) + b',"images":['

    def footer(self) -> bytes:
        categories = [
            {
                "id": a + 1,
                "name": animal,
                "supercategory": self.spec.species,
                "keypoints": list(self.spec.keypoints),
                "skeleton": skeleton(self.spec),
            }
            for a, animal in enumerate(self.spec.animal_names)
        ]
        return b'],"categories":' + orjson.dumps(categories) + b"}\n"

    def encode(self, batch: FrameBatch, consensus: BatchConsensus) -> tuple[bytes, bytes]:
        sizes = self.sizes
        image_text = _assemble(
            b',{"id":',
            _items(_json_text(np.array(batch.lines, dtype=np.int64))),
            b',"file_name":"',
            _string_bodies(batch.file_names()),
            b'","coco_url":"',
            _string_bodies(batch.source_refs),
            b'","width":',
            _cached_texts(batch.widths, sizes, _pixels),
            b',"height":',
            _cached_texts(batch.heights, sizes, _pixels),
            b',"n_workers":',
            _items(_json_text(np.array([len(w) for w in batch.workers], dtype=np.int64))),
            b"}",
        )
        # (B, I, K, 2) consensus points of every instance, rounded like the keypoints list.
        points = np.round(consensus.points, 2)[:, self.instance_slots]
        placed = ~np.isnan(points[..., 0])
        exists = placed.any(axis=2)  # an instance nobody placed gets no annotation
        frame_of, instance_of = np.nonzero(exists)
        if not len(frame_of):
            return image_text, b""
        return image_text, self._annotations(
            batch, points[exists], placed[exists], frame_of, instance_of
        )

    def _annotations(
        self,
        batch: FrameBatch,
        points: FloatArray,
        placed: BoolArray,
        frame_of: IntArray,
        instance_of: IntArray,
    ) -> bytes:
        """One annotation per placed instance: points (N, K, 2) and placed (N, K)."""
        n = len(points)
        # Keypoints text: "x,y,2" per placed point and "0,0,0" per missing one; the
        # visibility is written as a negative marker (coordinates are never negative).
        triples = np.empty((n, points.shape[1], 3), dtype=np.float64)
        triples[..., :2] = points
        triples[..., 2] = np.where(placed, -1.0, -2.0)
        text = _json_text(triples.reshape(n, -1))
        keypoints = _rows(text.replace(b"null,null,-2.0", b"0,0,0").replace(b"-1.0", b"2"))
        # Tight box of the placed points, padded by MARS's margin and clipped to the image.
        x0 = np.where(placed, points[..., 0], np.inf).min(axis=1)
        x1 = np.where(placed, points[..., 0], -np.inf).max(axis=1)
        y0 = np.where(placed, points[..., 1], np.inf).min(axis=1)
        y1 = np.where(placed, points[..., 1], -np.inf).max(axis=1)
        sizes = batch.image_sizes()[frame_of]
        width, height = sizes[:, 0], sizes[:, 1]
        known = ~np.isnan(width)
        with np.errstate(invalid="ignore"):
            pad_x0 = x0 - BOX_MARGIN * width
            pad_x1 = x1 + BOX_MARGIN * width
            pad_y0 = y0 - BOX_MARGIN * height
            pad_y1 = y1 + BOX_MARGIN * height
            # Python's max(0.0, v) and min(w, v), as the per-frame code computed them.
            x0 = np.where(known, np.where(pad_x0 > 0.0, pad_x0, 0.0), x0)
            x1 = np.where(known, np.where(pad_x1 < width, pad_x1, width), x1)
            y0 = np.where(known, np.where(pad_y0 > 0.0, pad_y0, 0.0), y0)
            y1 = np.where(known, np.where(pad_y1 < height, pad_y1, height), y1)
        box_w, box_h = x1 - x0, y1 - y0
        boxes = _rows(_json_text(py_round(np.stack([x0, y0, box_w, box_h], axis=1), 2)))
        lines = np.array(batch.lines, dtype=np.int64)[frame_of]
        ids = (lines - 1) * len(self.instances) + instance_of + 1
        return _assemble(
            b',{"id":',
            _items(_json_text(ids)),
            b',"image_id":',
            _items(_json_text(lines)),
            b',"category_id":',
            _items(_json_text(self.categories[instance_of])),
            b',"keypoints":[',
            keypoints,
            b'],"num_keypoints":',
            _items(_json_text(placed.sum(axis=1))),
            b',"bbox":[',
            boxes,
            b'],"area":',
            _items(_json_text(py_round(box_w * box_h, 2))),
            b',"iscrowd":0}',
        )


def _csv_field(text: str) -> bytes:
    """One CSV field as `csv.writer` (excel dialect, minimal quoting) writes it, after making a
    cell a spreadsheet would take for a formula plain text (a leading `'`)."""
    if text[:1] in _FORMULA_STARTS:
        text = "'" + text
    if _CSV_SPECIAL.search(text) is None:
        return text.encode("utf-8")
    out = io.StringIO()
    csv.writer(out).writerow([text, ""])
    return out.getvalue()[:-3].encode("utf-8")  # drop the "," and the empty field's "\r\n"


_CSV_SPECIAL = re.compile('[,"\r\n]')
_FORMULA_STARTS = frozenset("=+-@\t\r")


_ANY_SPECIAL = re.compile('[,"\r\n]|(?:^|\x00)[=+\\-@\t]')


def _csv_fields(texts: list[str]) -> list[bytes]:
    """`_csv_field` of each text, checked for the whole batch at once (one regex over the
    joined texts) when none needs quoting or a formula guard, which is the usual batch."""
    joined = "\x00".join(texts)
    if _ANY_SPECIAL.search(joined) is None and joined.count("\x00") == len(texts) - 1:
        return joined.encode("utf-8").split(b"\x00") if texts else []
    return [_csv_field(text) for text in texts]


def csv_line(cells: Iterable[str]) -> bytes:
    """One formula-safe CSV row (excel dialect), for the small tables (problems)."""
    return b",".join(map(_csv_field, cells)) + b"\r\n"


class CsvRows:
    """The CSV rows of a batch. Missing consensus points get a row with empty x, y and spread
    and n_workers 0, so every frame has the same rows. Rows are the bytes `csv.writer` would
    write (excel dialect), assembled per batch from one JSON text per column group instead of
    per-row formatting."""

    def __init__(self, spec: LabelSpec) -> None:
        names = {(a, j): name for a, j, name in instance_names(spec)}
        n_kp, n_obj = len(spec.keypoints), spec.num_obj
        self.slot_prefixes = [
            b","
            + _csv_field(names[(s // n_obj // n_kp, s % n_obj)])
            + b","
            + _csv_field(spec.keypoints[s // n_obj % n_kp])
            + b","
            for s in range(spec.n_slots)
        ]

    def encode(self, batch: FrameBatch, consensus: BatchConsensus) -> tuple[bytes, list[bytes]]:
        """The rows, and each point's "x,y" text (slot order) for `DlcRows` to reuse."""
        n_frames, n_slots = consensus.n_workers.shape
        points = np.round(consensus.points, 2).reshape(-1, 2)
        # Python's csv writes floats with repr, which orjson matches for these values
        # (two decimals, so never the exponent form of tiny numbers); NaN becomes empty.
        xy = _rows(_json_text(points).replace(b"null", b""))
        # ",<n_workers>," and "<spread>\r\n" as single pieces: fewer pieces to join per row.
        counts = _json_text(consensus.n_workers.reshape(-1))
        spread = _json_text(np.round(consensus.spread, 2).reshape(-1)).replace(b"null", b"")
        refs = _csv_fields(batch.source_refs)
        rows = _assemble(
            chain.from_iterable(map(repeat, refs, repeat(n_slots))),
            cycle(self.slot_prefixes),
            xy,
            (b"," + counts[1:-1].replace(b",", b",\0,") + b",").split(b"\0"),
            (spread[1:-1].replace(b",", b"\r\n\0") + b"\r\n").split(b"\0"),
        )
        return rows, xy


class FrameRows:
    """The rows of `frames.csv` for a batch: per frame, its image id (the line of the parent's
    manifest, as in COCO), how many workers answered it, in how many labeling jobs (rounds), the
    mean expected error of its consensus points in px (the robust consensus's; empty from the
    median) and the spread of its least agreed point (px, as `keypoints.csv` has it). It is
    what `relabel` chooses frames from."""

    def encode(self, batch: FrameBatch, consensus: BatchConsensus) -> bytes:
        if not len(batch):
            return b""
        with np.errstate(all="ignore"):
            spread = np.fmax.reduce(consensus.spread, axis=1)
            if consensus.uncertainty is None:
                uncertainty = np.full(len(batch), np.nan)
            else:
                counted = np.isfinite(consensus.uncertainty)
                uncertainty = np.where(counted, consensus.uncertainty, 0.0).sum(axis=1) / (
                    counted.sum(axis=1)
                )
        numbers = np.stack([np.round(uncertainty, 2), np.round(spread, 2)], axis=1)
        pairs = _rows(_json_text(numbers).replace(b"null", b""))
        counts = _items(_json_text(np.array([len(w) for w in batch.workers], dtype=np.int64)))
        rounds = _items(_json_text(np.array(batch.rounds or [1] * len(batch), dtype=np.int64)))
        return _assemble(
            _csv_fields(batch.source_refs),
            b",",
            _items(_json_text(np.array(batch.lines, dtype=np.int64))),
            b",",
            counts,
            b",",
            rounds,
            b",",
            pairs,
            b"\r\n",
        )


class DlcRows:
    """The rows of DeepLabCut's `CollectedData_<scorer>.csv` for a batch: one per frame,
    indexed `labeled-data,<folder>,<image>`, then x and y of every individual's keypoints
    (individuals, then keypoints, then x, y, as DeepLabCut orders its columns); a point nobody
    placed is an empty cell, which pandas reads as NaN. Numbers are the consensus rounded to
    2 decimals, as in `keypoints.csv`."""

    def __init__(self, spec: LabelSpec, folder: str) -> None:
        self.spec = spec
        n_kp, n_obj = len(spec.keypoints), spec.num_obj
        order = [
            (a * n_kp + k) * n_obj + j for a, j, _ in instance_names(spec) for k in range(n_kp)
        ]
        self.order = None if order == list(range(spec.n_slots)) else np.array(order)
        self.prefix = b"labeled-data," + _csv_field(folder) + b","

    def header(self) -> bytes:
        spec = self.spec
        instances = instance_names(spec)
        columns = [(name, k) for _, _, name in instances for k in spec.keypoints]
        rows = [["scorer", "", ""] + [DLC_SCORER] * (2 * len(columns))]
        if len(instances) > 1:
            rows.append(["individuals", "", ""] + [n for n, _ in columns for _ in "xy"])
        rows.append(["bodyparts", "", ""] + [k for _, k in columns for _ in "xy"])
        rows.append(["coords", "", ""] + ["x", "y"] * len(columns))
        return b"".join(b",".join(map(_csv_field, row)) + b"\n" for row in rows)

    def encode(self, batch: FrameBatch, consensus: BatchConsensus, xy: list[bytes]) -> bytes:
        """`xy` is each point's "x,y" text in slot order, as `CsvRows` wrote it."""
        if self.order is None:
            n = self.spec.n_slots
            rows = [b",".join(xy[i : i + n]) for i in range(0, len(xy), n)]
        else:
            points = np.round(consensus.points, 2)[:, self.order]
            rows = _rows(_json_text(points.reshape(len(points), -1)).replace(b"null", b""))
        names = _csv_fields(batch.file_names())
        return _assemble(self.prefix, names, b",", rows, b"\n")


class MarsRecords:
    """The records of MARS's `processed_keypoints.json` for a batch, each preceded by a comma.

    The file is a list with one record per image,
    `{"image", "height", "width", "frame_id", "ann_label", "ann": [], "ann_<animal>": {...}}`
    where each animal has `X`/`Y` (workers x keypoints, after flip correction), `med`/`mu`/`std`
    as `[Y-list, X-list]`, `bbox` `[xmin, xmax, ymin, ymax]`, all as fractions of the image size
    exactly as MARS stores them, and `area` in square pixels. `image` and `frame_id` are the
    `source-ref` (MARS had a local path there). A point a worker did not place is NaN, as in
    MARS's own file (Python's json reads it; strict JSON parsers do not). With `num_obj` > 1,
    instance n > 1 of an animal is stored as `ann_<animal>_<n>`.

    The text is assembled per batch: each kind of number (X, Y, med, ...) is encoded once for
    the whole batch and cut into per-record pieces, because encoding ~250 floats per frame one
    record at a time was the slowest part of a consolidation.
    """

    def __init__(self, spec: LabelSpec) -> None:
        self.spec = spec
        self.keys = [
            (a, j, orjson.dumps(f"ann_{animal}" if j == 0 else f"ann_{animal}_{j + 1}"))
            for a, j, _ in instance_names(spec)
            for animal in [spec.animal_names[a]]
        ]
        self.labels = orjson.dumps(list(spec.keypoints))
        self.sizes: dict[float | None, bytes] = {}

    def encode(self, batch: FrameBatch, consensus: BatchConsensus) -> bytes:
        spec = self.spec
        n_frames, n_workers = consensus.coords.shape[:2]
        n_animals, n_kp, n_obj = len(spec.animal_names), len(spec.keypoints), spec.num_obj
        size = batch.image_sizes()
        # Everything in the order it is written: (B, A, n, 2, W, K) and (B, A, n, 2, K), axis 3
        # = (x, y), keypoints innermost; computed straight into that layout (no copies later).
        coords = consensus.coords.reshape(n_frames, n_workers, n_animals, n_kp, n_obj, 2)
        norm = np.empty((n_frames, n_animals, n_obj, 2, n_workers, n_kp))
        frame_size = size[:, None, None, :, None, None]
        np.divide(coords.transpose(0, 2, 4, 5, 1, 3), frame_size, out=norm)
        with np.errstate(all="ignore"):
            placed = ~np.isnan(norm)
            count = placed.sum(axis=4)  # (B, A, n, 2, K)
            any_placed = count > 0
            med = (
                consensus.points.reshape(n_frames, n_animals, n_kp, n_obj, 2).transpose(
                    0, 1, 3, 4, 2
                )
                / frame_size[..., 0]
            )
            total = np.where(placed, norm, 0.0).sum(axis=4)
            mu = np.where(any_placed, total / np.maximum(count, 1), np.nan)
            dev = np.where(placed, (norm - mu[:, :, :, :, None]) ** 2, 0.0).sum(axis=4)
            std = np.where(any_placed, np.sqrt(dev / np.maximum(count, 1)), np.nan)
        norm_r = np.round(norm, 5, out=norm)
        med_r = np.round(med, 5)
        mu_r = np.round(mu, 5)
        std_r = np.round(std, 5)
        # The box of the placed (rounded) medians, grown like MARS's `correct_box`.
        med_placed = ~np.isnan(med_r[..., 0, :])  # (B, A, n, K)
        with np.errstate(invalid="ignore"):
            xmin = np.where(med_placed, med_r[..., 0, :], np.inf).min(axis=-1)
            xmax = np.where(med_placed, med_r[..., 0, :], -np.inf).max(axis=-1)
            ymin = np.where(med_placed, med_r[..., 1, :], np.inf).min(axis=-1)
            ymax = np.where(med_placed, med_r[..., 1, :], -np.inf).max(axis=-1)
            x0, x1, y0, y1 = _mars_box(xmin, xmax, ymin, ymax)
            area = (
                np.abs(x1 - x0)
                * np.abs(y1 - y0)
                * np.nan_to_num(size[:, 0], nan=0.0)[:, None, None]
                * np.nan_to_num(size[:, 1], nan=0.0)[:, None, None]
            )
        nobody = ~med_placed.any(axis=-1)  # (B, A, n)
        bbox = py_round(np.stack([x0, x1, y0, y1], axis=-1), 5)
        bbox[nobody] = np.nan
        area = py_round(area, 2)
        area[nobody] = np.nan

        def nan_text(array: npt.NDArray[np.floating[Any]]) -> bytes:
            return _json_text(array).replace(b"null", b"NaN")

        # One text per kind of number for the whole batch, cut into (frame, animal, instance)
        # pieces; piece (b, a, j) of a kind with `m` members sits at ((b * A + a) * n + j) * m.
        per_frame = n_animals * n_obj
        axes = _blocks(nan_text(norm_r.reshape(-1, n_workers, n_kp)))
        spread = _blocks(
            nan_text(np.stack([med_r, mu_r, std_r], axis=3)[:, :, :, :, ::-1].reshape(-1, 2, n_kp))
        )
        boxes = _rows(nan_text(bbox.reshape(-1, 4)))
        areas = _items(_json_text(area.reshape(-1)).replace(b"null", b"NaN"))
        n_real = [len(w) for w in batch.workers]
        short = [b for b in range(n_frames) if n_real[b] < n_workers]
        sizes = self.sizes
        refs = _string_bodies(batch.source_refs)
        columns: list[bytes | Iterable[bytes]] = [
            b',{"image":"',
            refs,
            b'","height":',
            _cached_texts(batch.heights, sizes, orjson.dumps),
            b',"width":',
            _cached_texts(batch.widths, sizes, orjson.dumps),
            b',"frame_id":"',
            refs,
        ]
        close = b'","ann_label":' + self.labels + b',"ann":[]'
        for a, j, key in self.keys:
            at = a * n_obj + j
            xs = axes[at * 2 :: per_frame * 2]
            ys = axes[at * 2 + 1 :: per_frame * 2]
            for b in short:  # padded workers are not in the record
                xs[b] = nan_text(norm_r[b, a, j, 0, : n_real[b]])[2:-2]
                ys[b] = nan_text(norm_r[b, a, j, 1, : n_real[b]])[2:-2]
            columns += [
                close + b"," + key + b':{"X":[[',
                xs,
                b']],"Y":[[',
                ys,
                b']],"bbox":[',
                boxes[at::per_frame],
                b'],"med":[[',
                spread[at * 3 :: per_frame * 3],
                b']],"mu":[[',
                spread[at * 3 + 1 :: per_frame * 3],
                b']],"std":[[',
                spread[at * 3 + 2 :: per_frame * 3],
                b']],"area":',
                areas[at::per_frame],
            ]
            close = b"}"
        columns.append(close + b"}")
        return _assemble(*columns)


def _mars_box(
    xmin: FloatArray, xmax: FloatArray, ymin: FloatArray, ymax: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """MARS's `correct_box`: grow by 4% of the image, never past its edges (fractions)."""
    x_stretch = np.minimum(np.minimum(xmin, np.abs(1 - xmax)), BOX_MARGIN)
    y_stretch = np.minimum(np.minimum(ymin, np.abs(1 - ymax)), BOX_MARGIN)
    return xmin - x_stretch, xmax + x_stretch, ymin - y_stretch, ymax + y_stretch


@dataclass(frozen=True, slots=True)
class Segment:
    """Text another process wrote: `length` bytes at `offset` of its file number `file`."""

    file: int
    offset: int
    length: int


Text = bytes | Segment


@dataclass(frozen=True, slots=True)
class BatchTexts:
    """A batch's share of the four export streams. The JSON ones hold objects each preceded
    by a comma; the writer drops the comma in front of a stream's first object."""

    images: Text
    annotations: Text
    csv: Text
    mars: Text
    dlc: Text

    def streams(self) -> tuple[Text, Text, Text, Text, Text]:
        """The five texts in stream order: images, annotations, CSV, MARS, DeepLabCut."""
        return (self.images, self.annotations, self.csv, self.mars, self.dlc)


class BatchEncoder:
    """Everything a batch contributes to the exports; it depends on the batch alone."""

    def __init__(self, spec: LabelSpec, dlc_folder: str) -> None:
        self.coco = CocoRecords(spec)
        self.csv = CsvRows(spec)
        self.mars = MarsRecords(spec)
        self.dlc = DlcRows(spec, dlc_folder)

    def encode(self, batch: FrameBatch, consensus: BatchConsensus) -> BatchTexts:
        images, annotations = self.coco.encode(batch, consensus)
        table, xy = self.csv.encode(batch, consensus)
        return BatchTexts(
            images,
            annotations,
            table,
            self.mars.encode(batch, consensus),
            self.dlc.encode(batch, consensus, xy),
        )


class ResultWriter:
    """The three training exports, written batch by batch in manifest order.

    Each file is written under a `.part` name and renamed only by `close`, so a failure never
    leaves a truncated file that looks finished (`abort` removes the parts). COCO wants images
    and annotations as two arrays of one object, so annotations go to a side file that `close`
    appends. Text another process wrote arrives as a `Segment` of its file and is copied in the
    kernel (`copy_file_range`), never through Python.
    """

    def __init__(
        self,
        paths: tuple[Path, Path, Path, Path],
        spec: LabelSpec,
        job_name: str | None,
        dlc_folder: str,
    ):
        coco, csv_path, mars, dlc = paths
        self.coco = CocoRecords(spec)
        self.final = [coco, csv_path, mars, dlc]
        self.parts = [_part(coco), coco.with_name(coco.name + ".annotations.part")]
        self.parts += [_part(csv_path), _part(mars), _part(dlc)]
        self.files: list[IO[bytes]] = []
        try:
            for path in self.parts:
                self.files.append(open(path, "wb", buffering=0))  # noqa: SIM115
        except BaseException:
            self.abort()
            raise
        self.started = [False, False, True, False, True]  # CSV rows carry no separator
        self.sources: list[int] = []
        images, _, table, mars_file, dlc_file = self.files
        write_all(images, self.coco.header(job_name))
        write_all(table, b",".join(_csv_field(c) for c in CSV_COLUMNS) + b"\r\n")
        write_all(mars_file, b"[")
        write_all(dlc_file, DlcRows(spec, dlc_folder).header())

    def add_source(self, path: str) -> int:
        """Register another process's text file; `Segment.file` is the returned number."""
        self.sources.append(os.open(path, os.O_RDONLY))
        return len(self.sources) - 1

    def add(self, texts: BatchTexts) -> None:
        for stream, text in enumerate(texts.streams()):
            self._write(stream, text)

    def _write(self, stream: int, text: Text) -> None:
        skip = 0 if self.started[stream] else 1
        if isinstance(text, bytes):
            if text:
                write_all(self.files[stream], text[skip:])
                self.started[stream] = True
            return
        if text.length:
            _copy(
                self.sources[text.file], self.files[stream], text.offset + skip, text.length - skip
            )
            self.started[stream] = True

    def close(self) -> None:
        images, annotations, table, mars_file, _ = self.files
        annotations.close()
        write_all(images, b'],"annotations":[')
        side = os.open(self.parts[1], os.O_RDONLY)
        try:
            _copy(side, images, 0, os.fstat(side).st_size)
        finally:
            os.close(side)
        write_all(images, self.coco.footer())
        write_all(mars_file, b"]\n")
        for handle in self.files:
            handle.close()
        self._close_sources()
        os.remove(self.parts[1])
        for part, path in zip((self.parts[0], *self.parts[2:]), self.final, strict=True):
            os.replace(part, path)

    def abort(self) -> None:
        for handle in self.files:
            handle.close()
        self._close_sources()
        for part in self.parts:
            with contextlib.suppress(FileNotFoundError):
                os.remove(part)

    def _close_sources(self) -> None:
        for fd in self.sources:
            os.close(fd)
        self.sources = []


def _copy(source: int, target: IO[bytes], offset: int, length: int) -> None:
    """Append `length` bytes at `offset` of file descriptor `source` to `target`."""
    out = target.fileno()
    while length > 0:
        try:
            done = os.copy_file_range(source, out, length, offset)
        except (AttributeError, OSError):
            done = 0  # not Linux, or a file system that cannot: copy through memory
        if done <= 0:
            data = os.pread(source, min(length, 1 << 24), offset)
            if not data:
                raise OSError(f"the consolidation's temporary text ended early ({length} left)")
            write_all(target, data)
            done = len(data)
        offset += done
        length -= done


def write_all(target: IO[bytes], data: bytes) -> None:
    """Write all of `data` to an unbuffered file, which may take it in pieces."""
    view = memoryview(data)
    while view:
        done = target.write(view)
        if not done:
            raise OSError(f"could not write to {getattr(target, 'name', 'a file')}")
        view = view[done:]

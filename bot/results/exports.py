"""Training exports of a consolidated job, written batch by batch so memory never holds a job.

- `coco-keypoints.json`: COCO keypoints, one category per animal.
- `keypoints.csv`: one row per frame, animal and keypoint, for spreadsheets and pandas.
- `processed_keypoints.json`: the per-image records MARS's `manifest_to_dict` writes, so MARS's
  own training scripts (tfrecord, priors, evaluation) take gtbot's output unchanged.

Skeleton choice (COCO `skeleton`, 1-based): keypoints in config order form a chain; a member of
a left/right check pair is not chained to its partner but hangs from the nearest unpaired
keypoint before it and the nearest after it. The MARS mouse (nose, ears, neck, knees, tail)
gets nose-ear-neck and neck-knee-tail diamonds, the shape MARS draws; with no pairs it is the
plain chain.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from bot.results.consensus import BatchConsensus
from bot.results.reader import Frame
from bot.results.spec import LabelSpec

CSV_COLUMNS = ("frame", "animal", "keypoint", "x", "y", "n_workers", "spread")
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


def file_name(source_ref: str) -> str:
    """The image's base name: MARS keeps frames flat in `annotation-data/raw-images/`."""
    return PurePosixPath(source_ref.split("?", 1)[0]).name or source_ref


def _box(
    xs: list[float], ys: list[float], width: float | None, height: float | None
) -> tuple[float, float, float, float]:
    """Tight box of the placed points, padded like MARS and clipped to the image."""
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if width is not None and height is not None:
        x0 = max(0.0, x0 - BOX_MARGIN * width)
        x1 = min(width, x1 + BOX_MARGIN * width)
        y0 = max(0.0, y0 - BOX_MARGIN * height)
        y1 = min(height, y1 + BOX_MARGIN * height)
    return x0, y0, x1 - x0, y1 - y0


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


class CocoWriter:
    """Images go straight to the output file; annotations to a side file appended at the end,
    since COCO wants the two as separate arrays of one object."""

    def __init__(self, path: Path, spec: LabelSpec, job_name: str | None) -> None:
        self.path = path
        self.spec = spec
        self.job_name = job_name
        self.out: IO[str] = open(_part(path), "w", encoding="utf-8")  # noqa: SIM115
        self.annotations_path = path.with_name(path.name + ".annotations.part")
        self.annotations: IO[str] = open(self.annotations_path, "w", encoding="utf-8")  # noqa: SIM115
        info = {"description": f"gtbot consensus of {job_name or 'a Ground Truth job'}"}
        self.out.write('{"info": ' + json.dumps(info) + ', "images": [')
        self.image_id = 0
        self.annotation_id = 0
        self.instances = instance_names(spec)

    def add_batch(self, frames: list[Frame], consensus: BatchConsensus) -> None:
        spec = self.spec
        n_kp, n_obj = len(spec.keypoints), spec.num_obj
        points = np.round(consensus.points, 2).tolist()
        images = []
        annotations = []
        for b, frame in enumerate(frames):
            self.image_id += 1
            image = {
                "id": self.image_id,
                "file_name": file_name(frame.source_ref),
                "coco_url": frame.source_ref,
                "width": int(round(frame.width)) if frame.width is not None else 0,
                "height": int(round(frame.height)) if frame.height is not None else 0,
            }
            images.append(json.dumps(image))
            frame_points = points[b]
            for a, j, _ in self.instances:
                keypoints: list[float] = []
                xs: list[float] = []
                ys: list[float] = []
                for k in range(n_kp):
                    x, y = frame_points[(a * n_kp + k) * n_obj + j]
                    if x == x:
                        keypoints += (x, y, 2)
                        xs.append(x)
                        ys.append(y)
                    else:
                        keypoints += (0, 0, 0)
                if not xs:
                    continue
                bx, by, bw, bh = _box(xs, ys, frame.width, frame.height)
                self.annotation_id += 1
                annotations.append(
                    json.dumps(
                        {
                            "id": self.annotation_id,
                            "image_id": self.image_id,
                            "category_id": a + 1,
                            "keypoints": keypoints,
                            "num_keypoints": len(xs),
                            "bbox": [round(bx, 2), round(by, 2), round(bw, 2), round(bh, 2)],
                            "area": round(bw * bh, 2),
                            "iscrowd": 0,
                        }
                    )
                )
        if images:
            lead = ", " if self.image_id > len(images) else ""
            self.out.write(lead + ", ".join(images))
        if annotations:
            lead = ", " if self.annotation_id > len(annotations) else ""
            self.annotations.write(lead + ", ".join(annotations))

    def close(self) -> None:
        self.annotations.close()
        self.out.write('], "annotations": [')
        with open(self.annotations_path, encoding="utf-8") as side:
            shutil.copyfileobj(side, self.out)
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
        self.out.write('], "categories": ' + json.dumps(categories) + "}\n")
        self.out.close()
        os.remove(self.annotations_path)
        os.replace(_part(self.path), self.path)


class CsvWriter:
    """Missing consensus points get a row with empty x, y and spread and n_workers 0, so every
    frame has the same rows."""

    def __init__(self, path: Path, spec: LabelSpec) -> None:
        self.path = path
        self.file: IO[str] = open(_part(path), "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        self.writer.writerow(CSV_COLUMNS)
        names = {(a, j): name for a, j, name in instance_names(spec)}
        n_kp, n_obj = len(spec.keypoints), spec.num_obj
        self.slot_names = [
            (names[(s // n_obj // n_kp, s % n_obj)], spec.keypoints[s // n_obj % n_kp])
            for s in range(spec.n_slots)
        ]

    def add_batch(self, frames: list[Frame], consensus: BatchConsensus) -> None:
        xs = np.round(consensus.points[..., 0], 2).tolist()
        ys = np.round(consensus.points[..., 1], 2).tolist()
        spread = np.round(consensus.spread, 2).tolist()
        counts = consensus.n_workers.tolist()
        names = self.slot_names
        rows = []
        for b, frame in enumerate(frames):
            ref = frame.source_ref
            for s, (x, y, n, sp) in enumerate(zip(xs[b], ys[b], counts[b], spread[b], strict=True)):
                animal, keypoint = names[s]
                if x == x:
                    rows.append((ref, animal, keypoint, x, y, n, sp))
                else:
                    rows.append((ref, animal, keypoint, "", "", 0, ""))
        self.writer.writerows(rows)

    def close(self) -> None:
        self.file.close()
        os.replace(_part(self.path), self.path)


class MarsWriter:
    """MARS's `processed_keypoints.json`: a list with one record per image,

    `{"image", "height", "width", "frame_id", "ann_label", "ann": [], "ann_<animal>": {...}}`
    where each animal has `X`/`Y` (workers x keypoints, after flip correction), `med`/`mu`/`std`
    as `[Y-list, X-list]`, `bbox` `[xmin, xmax, ymin, ymax]`, all as fractions of the image size
    exactly as MARS stores them, and `area` in square pixels. `image` and `frame_id` are the
    `source-ref` (MARS had a local path there). A point a worker did not place is NaN, as in
    MARS's own file (Python's json reads it; strict JSON parsers do not). With `num_obj` > 1,
    instance n > 1 of an animal is stored as `ann_<animal>_<n>`.
    """

    def __init__(self, path: Path, spec: LabelSpec) -> None:
        self.path = path
        self.spec = spec
        self.file: IO[str] = open(_part(path), "w", encoding="utf-8")  # noqa: SIM115
        self.file.write("[")
        self.count = 0
        self.keys = [
            (a, j, f"ann_{animal}" if j == 0 else f"ann_{animal}_{j + 1}")
            for a, j, _ in instance_names(spec)
            for animal in [spec.animal_names[a]]
        ]

    def add_batch(self, frames: list[Frame], consensus: BatchConsensus) -> None:
        spec = self.spec
        n_frames, n_workers = consensus.coords.shape[:2]
        n_animals, n_kp, n_obj = len(spec.animal_names), len(spec.keypoints), spec.num_obj
        size = np.array(
            [(f.width or math.nan, f.height or math.nan) for f in frames],
            dtype=np.float64,
        )  # (B, 2)
        coords = consensus.coords.reshape(n_frames, n_workers, n_animals, n_kp, n_obj, 2)
        norm = coords / size[:, None, None, None, None, :]
        with np.errstate(all="ignore"):
            placed = ~np.isnan(norm[..., 0])
            any_placed = np.count_nonzero(placed, axis=1) > 0  # (B, A, K, n)
            med = (
                consensus.points.reshape(n_frames, n_animals, n_kp, n_obj, 2)
                / size[:, None, None, None, :]
            )
            total = np.where(placed[..., None], norm, 0.0).sum(axis=1)
            count = placed.sum(axis=1)[..., None]
            mu = np.where(any_placed[..., None], total / np.maximum(count, 1), np.nan)
            dev = np.where(placed[..., None], (norm - mu[:, None]) ** 2, 0.0).sum(axis=1)
            std = np.where(any_placed[..., None], np.sqrt(dev / np.maximum(count, 1)), np.nan)
        # Innermost axis = keypoints, so `tolist` yields the X/Y rows MARS stores directly.
        norm_l = np.round(norm.transpose(0, 2, 4, 5, 1, 3), 5).tolist()  # (B, A, n, 2, W, K)
        med_l = np.round(med.transpose(0, 1, 3, 4, 2), 5).tolist()  # (B, A, n, 2, K)
        mu_l = np.round(mu.transpose(0, 1, 3, 4, 2), 5).tolist()
        std_l = np.round(std.transpose(0, 1, 3, 4, 2), 5).tolist()
        labels = list(spec.keypoints)
        records = []
        for b, frame in enumerate(frames):
            n_real = len(frame.workers)
            record: dict[str, Any] = {
                "image": frame.source_ref,
                "height": frame.height,
                "width": frame.width,
                "frame_id": frame.source_ref,
                "ann_label": labels,
                "ann": [],
            }
            for a, j, key in self.keys:
                xs, ys = norm_l[b][a][j]
                m_x, m_y = med_l[b][a][j]
                u_x, u_y = mu_l[b][a][j]
                s_x, s_y = std_l[b][a][j]
                placed_x = [v for v in m_x if v == v]
                placed_y = [v for v in m_y if v == v]
                if placed_x:
                    x0, x1, y0, y1 = _mars_box(
                        min(placed_x), max(placed_x), min(placed_y), max(placed_y)
                    )
                    area = abs(x1 - x0) * abs(y1 - y0) * (frame.width or 0) * (frame.height or 0)
                    bbox = [round(x0, 5), round(x1, 5), round(y0, 5), round(y1, 5)]
                else:
                    bbox, area = [math.nan] * 4, math.nan
                record[key] = {
                    "X": xs[:n_real],
                    "Y": ys[:n_real],
                    "bbox": bbox,
                    "med": [m_y, m_x],
                    "mu": [u_y, u_x],
                    "std": [s_y, s_x],
                    "area": round(area, 2) if area == area else area,
                }
            records.append(record)
        if records:
            text = json.dumps(records)[1:-1]
            self.file.write((", " if self.count else "") + text)
            self.count += len(records)

    def close(self) -> None:
        self.file.write("]\n")
        self.file.close()
        os.replace(_part(self.path), self.path)


def _mars_box(
    xmin: float, xmax: float, ymin: float, ymax: float
) -> tuple[float, float, float, float]:
    """MARS's `correct_box`: grow by 4% of the image, never past its edges (fractions)."""
    x_stretch = min(xmin, abs(1 - xmax), BOX_MARGIN)
    y_stretch = min(ymin, abs(1 - ymax), BOX_MARGIN)
    return xmin - x_stretch, xmax + x_stretch, ymin - y_stretch, ymax + y_stretch

"""Annotator agreement over a whole job, accumulated batch by batch in constant memory.

Medians over millions of distances would need every distance kept; log-spaced histograms
(about 6.5 % per bin, interpolated inside the bin) keep the memory fixed by the number of
workers and labels, never by the number of frames, at a precision far below annotation noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.results.consensus import BatchConsensus, FloatArray, IntArray
from bot.results.spec import LabelSpec

N_BINS = 256
_DECADES = 7.0  # each histogram spans [low, low * 1e7)
_PX_LOW = 0.01
_FRACTION_LOW = 1e-5
_SECONDS_LOW = 0.1
# Outlier rule: a point further from the consensus than both of these.
OUTLIER_MEDIAN_FACTOR = 5.0
OUTLIER_BODY_FRACTION = 0.10

CountArray = npt.NDArray[np.int64]


def _bins(values: FloatArray, low: float) -> IntArray:
    """Bin 0 holds [0, low); bin i >= 1 holds [low * r**(i-1), low * r**i)."""
    scale = (N_BINS - 1) / _DECADES
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.floor(np.log10(np.maximum(values, low * 0.5) / low) * scale) + 1
    return np.clip(raw, 0, N_BINS - 1).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _edges(low: float) -> FloatArray:
    scale = (N_BINS - 1) / _DECADES
    upper = low * 10.0 ** (np.arange(N_BINS) / scale)
    edges = np.concatenate(([0.0], upper))  # bin i spans edges[i]..edges[i+1]
    edges.flags.writeable = False  # shared by every caller (cached)
    return edges


def histogram_median(counts: CountArray, low: float) -> float | None:
    total = int(counts.sum())
    if total == 0:
        return None
    edges = _edges(low)
    cumulative = np.cumsum(counts)
    half = total / 2.0
    i = int(np.searchsorted(cumulative, half, side="left"))
    i = min(i, N_BINS - 1)
    before = float(cumulative[i - 1]) if i > 0 else 0.0
    inside = float(counts[i])
    share = (half - before) / inside if inside else 0.0
    return float(edges[i] + (edges[i + 1] - edges[i]) * min(max(share, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class KeypointAgreement:
    """Agreement on one keypoint over every animal and frame of a job."""

    keypoint: str
    median_px: float | None
    median_body_fraction: float | None
    placed_share: float
    points: int


@dataclass(frozen=True, slots=True)
class WorkerAgreement:
    """One worker over a whole job. `rank` 1 is the worker furthest from the consensus;
    `review` gives the reasons to look at this worker's answers, if any."""

    rank: int
    worker: str
    frames: int
    points: int
    median_error_px: float | None
    swapped_frames: int
    flip_share: float
    outliers: int
    outlier_share: float
    median_seconds: float | None
    total_seconds: float | None
    timed_tasks: int
    review: tuple[str, ...]


# A worker is named for review when a figure is this many times the crowd's typical one (the
# median over workers) and above a floor: real public crowds are noisy (about 20 % of left/right
# pairs swapped, 13-17 % of clicks far off), so only the unusual stand out.
REVIEW_FACTOR = 2.0
REVIEW_MIN_SWAP_SHARE = 0.3
REVIEW_MIN_OUTLIER_SHARE = 0.2


def review_reasons(
    worker: dict[str, Any],
    typical_error: float | None,
    typical_swaps: float,
    typical_outliers: float,
) -> tuple[str, ...]:
    reasons = []
    error = worker["median_error_px"]
    if error is not None and typical_error and error > REVIEW_FACTOR * typical_error:
        reasons.append(
            f"median distance {error:.1f} px, {error / typical_error:.1f}x the crowd's "
            f"{typical_error:.1f} px"
        )
    swaps = worker["flip_share"]
    if swaps > max(REVIEW_MIN_SWAP_SHARE, REVIEW_FACTOR * typical_swaps) and worker["frames"] > 1:
        reasons.append(f"left/right swapped in {swaps:.0%} of frames")
    outliers = worker["outlier_share"]
    if outliers > max(REVIEW_MIN_OUTLIER_SHARE, REVIEW_FACTOR * typical_outliers):
        reasons.append(f"{outliers:.0%} of points are outliers")
    return tuple(reasons)


@dataclass(slots=True)
class AgreementPart:
    """The agreement figures of one batch, with its own worker numbering (first appearance in
    the batch), so batches can be measured in any process and merged in manifest order.
    Outlier candidates are kept sparse: a batch has few, and a dense table per worker, label
    and bin would be most of what a batch sends between processes."""

    frames: int
    flip_frames: int
    worker_names: list[str]
    label_px: CountArray  # (labels, bins)
    label_fraction: CountArray  # (labels, bins)
    label_placed: CountArray  # (labels,)
    label_asked: CountArray  # (labels,)
    body_px: CountArray  # (bins,)
    worker_px: CountArray  # (workers, bins)
    worker_points: CountArray  # (workers,)
    worker_frames: CountArray  # (workers,)
    worker_flips: CountArray  # (workers,)
    worker_seconds: CountArray  # (workers, bins)
    worker_seconds_total: FloatArray  # (workers,)
    candidates: CountArray  # (n, 3): worker, label, bin of each point past the body fraction
    frame_workers: CountArray | None = None  # frames by how many workers answered them


def agreement_part(
    spec: LabelSpec, consensus: BatchConsensus, workers: list[list[str]], seconds: FloatArray
) -> AgreementPart:
    """Measure one batch; `workers` are each frame's worker ids and `seconds` (B, W) the time
    each spent, NaN where not reported (padding included)."""
    n_frames, width = consensus.flipped.shape
    n_labels = spec.n_labels
    ids: dict[str, int] = {}
    flat = [ids.setdefault(name, len(ids)) for name in chain.from_iterable(workers)]
    rows = np.full((n_frames, width), -1, dtype=np.int64)
    rows[np.arange(width) < np.fromiter(map(len, workers), np.int64, n_frames)[:, None]] = flat
    n_workers = len(ids)
    real = rows >= 0  # (B, W)
    distance = consensus.distance  # (B, W, S)
    placed = ~np.isnan(distance)
    slot_label = np.arange(spec.n_slots, dtype=np.int64) // spec.num_obj
    slot_animal = slot_label // len(spec.keypoints)
    slot_instance = np.arange(spec.n_slots, dtype=np.int64) % spec.num_obj
    label_of = np.broadcast_to(slot_label, placed.shape)
    # Body length per frame, animal, instance from the consensus.
    head, tail = spec.body_axis
    n_kp, n_obj = len(spec.keypoints), spec.num_obj
    points = consensus.points.reshape(n_frames, len(spec.animal_names), n_kp, n_obj, 2)
    d = points[:, :, head] - points[:, :, tail]
    body = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2)  # (B, A, n)
    finite_body = body[np.isfinite(body) & (body > 0)]
    slot_body = body[:, slot_animal, slot_instance]  # (B, S)
    fraction = distance / slot_body[:, None, :]

    bins = _bins(distance[placed], _PX_LOW)
    placed_label = label_of[placed]
    ok_fraction = placed & np.isfinite(fraction)
    f_bins = _bins(fraction[ok_fraction], _FRACTION_LOW)
    worker_grid = np.broadcast_to(rows[:, :, None], placed.shape)
    worker_of = worker_grid[placed]
    flipped = consensus.flipped & real
    candidate = ok_fraction & (fraction > OUTLIER_BODY_FRACTION)
    candidates = np.stack(
        [
            worker_grid[candidate],
            label_of[candidate],
            _bins(distance[candidate], _PX_LOW),
        ],
        axis=1,
    )
    timed = real & np.isfinite(seconds)
    t_worker = rows[timed]
    t_values = seconds[timed]
    return AgreementPart(
        frames=n_frames,
        flip_frames=int(flipped.any(axis=1).sum()),
        worker_names=list(ids),
        label_px=_table(placed_label * N_BINS + bins, n_labels),
        label_fraction=_table(label_of[ok_fraction] * N_BINS + f_bins, n_labels),
        label_placed=np.bincount(placed_label, minlength=n_labels)[:n_labels],
        label_asked=np.full(n_labels, int(real.sum()) * spec.num_obj, dtype=np.int64),
        body_px=np.bincount(_bins(finite_body, _PX_LOW), minlength=N_BINS),
        worker_px=_table(worker_of * N_BINS + bins, n_workers),
        worker_points=np.bincount(worker_of, minlength=n_workers),
        worker_frames=np.bincount(rows[real], minlength=n_workers),
        worker_flips=np.bincount(rows[flipped], minlength=n_workers),
        worker_seconds=_table(t_worker * N_BINS + _bins(t_values, _SECONDS_LOW), n_workers),
        worker_seconds_total=np.bincount(t_worker, weights=t_values, minlength=n_workers).astype(
            np.float64
        ),
        candidates=candidates,
        frame_workers=np.bincount(np.fromiter(map(len, workers), np.int64, n_frames)),
    )


def _table(keys: IntArray, rows: int) -> CountArray:
    """Counts of `row * N_BINS + bin` keys as a (rows, N_BINS) table."""
    return np.bincount(keys, minlength=rows * N_BINS).reshape(rows, N_BINS)


class AgreementAccumulator:
    """Collects the per-keypoint and per-worker figures of `agreement.json` from the parts of
    every batch, merged in manifest order (which numbers the workers)."""

    def __init__(self, spec: LabelSpec) -> None:
        self.spec = spec
        n_labels = spec.n_labels
        self.n_labels = n_labels
        self.label_px = np.zeros((n_labels, N_BINS), dtype=np.int64)
        self.label_fraction = np.zeros((n_labels, N_BINS), dtype=np.int64)
        self.label_placed = np.zeros(n_labels, dtype=np.int64)
        self.label_asked = np.zeros(n_labels, dtype=np.int64)
        self.body_px = np.zeros(N_BINS, dtype=np.int64)
        self.worker_ids: dict[str, int] = {}
        self.worker_names: list[str] = []
        capacity = 16
        self.worker_px = np.zeros((capacity, N_BINS), dtype=np.int64)
        self.worker_candidates = np.zeros((capacity, n_labels, N_BINS), dtype=np.int32)
        self.worker_seconds = np.zeros((capacity, N_BINS), dtype=np.int64)
        self.worker_seconds_total = np.zeros(capacity, dtype=np.float64)
        self.worker_frames = np.zeros(capacity, dtype=np.int64)
        self.worker_points = np.zeros(capacity, dtype=np.int64)
        self.worker_flips = np.zeros(capacity, dtype=np.int64)
        self.frames = 0
        self.flip_frames = 0
        self.frame_workers = np.zeros(1, dtype=np.int64)

    def worker_index(self, worker: str) -> int:
        index = self.worker_ids.get(worker)
        if index is None:
            index = len(self.worker_names)
            self.worker_ids[worker] = index
            self.worker_names.append(worker)
            if index >= len(self.worker_frames):
                self._grow(2 * len(self.worker_frames))
        return index

    def _grow(self, capacity: int) -> None:
        def grown(a: Any) -> Any:
            out = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
            out[: len(a)] = a
            return out

        self.worker_px = grown(self.worker_px)
        self.worker_candidates = grown(self.worker_candidates)
        self.worker_seconds = grown(self.worker_seconds)
        self.worker_seconds_total = grown(self.worker_seconds_total)
        self.worker_frames = grown(self.worker_frames)
        self.worker_points = grown(self.worker_points)
        self.worker_flips = grown(self.worker_flips)

    def merge(self, part: AgreementPart) -> None:
        """Fold in the next batch's figures."""
        self.frames += part.frames
        self.flip_frames += part.flip_frames
        if part.frame_workers is not None:
            if len(part.frame_workers) > len(self.frame_workers):
                grown = np.zeros(len(part.frame_workers), dtype=np.int64)
                grown[: len(self.frame_workers)] = self.frame_workers
                self.frame_workers = grown
            self.frame_workers[: len(part.frame_workers)] += part.frame_workers
        self.label_px += part.label_px
        self.label_fraction += part.label_fraction
        self.label_placed += part.label_placed
        self.label_asked += part.label_asked
        self.body_px += part.body_px
        at = np.array([self.worker_index(name) for name in part.worker_names], dtype=np.int64)
        self.worker_px[at] += part.worker_px
        self.worker_points[at] += part.worker_points
        self.worker_frames[at] += part.worker_frames
        self.worker_flips[at] += part.worker_flips
        self.worker_seconds[at] += part.worker_seconds
        self.worker_seconds_total[at] += part.worker_seconds_total
        if len(part.candidates):
            worker, label, bins = part.candidates.T
            np.add.at(self.worker_candidates, (at[worker], label, bins), 1)

    # -- results -----------------------------------------------------------------------------
    def workers_per_frame(self) -> tuple[tuple[int, int], ...]:
        """(workers, frames) for every number of workers some frame had, fewest first."""
        return tuple((n, int(c)) for n, c in enumerate(self.frame_workers.tolist()) if c)

    def keypoint_medians(self) -> list[float | None]:
        """Per keypoint (all animals), median worker distance to consensus in px."""
        n_kp = len(self.spec.keypoints)
        return [histogram_median(self.label_px[k::n_kp].sum(axis=0), _PX_LOW) for k in range(n_kp)]

    def keypoints(self) -> tuple[KeypointAgreement, ...]:
        n_kp = len(self.spec.keypoints)
        medians = self.keypoint_medians()
        out = []
        for k, name in enumerate(self.spec.keypoints):
            asked = int(self.label_asked[k::n_kp].sum())
            placed = int(self.label_placed[k::n_kp].sum())
            out.append(
                KeypointAgreement(
                    keypoint=name,
                    median_px=_round(medians[k]),
                    median_body_fraction=_round(
                        histogram_median(self.label_fraction[k::n_kp].sum(axis=0), _FRACTION_LOW),
                        4,
                    ),
                    placed_share=round(placed / asked, 4) if asked else 0.0,
                    points=placed,
                )
            )
        return tuple(out)

    def to_json(self, job_name: str | None, consensus: str = "median") -> dict[str, Any]:
        """Everything in `agreement.json`; plain types only."""
        spec = self.spec
        n_kp = len(spec.keypoints)
        medians = self.keypoint_medians()
        body_median = histogram_median(self.body_px, _PX_LOW)
        labels = []
        for i, label_name in enumerate(spec.labels):
            labels.append(
                {
                    "label": label_name,
                    "animal": spec.animal_names[i // n_kp],
                    "keypoint": spec.keypoints[i % n_kp],
                    "median_px": _round(histogram_median(self.label_px[i], _PX_LOW)),
                    "median_body_fraction": _round(
                        histogram_median(self.label_fraction[i], _FRACTION_LOW), 4
                    ),
                    "placed": int(self.label_placed[i]),
                    "asked": int(self.label_asked[i]),
                }
            )
        workers: list[dict[str, Any]] = []
        # Outliers per worker: candidate points in bins whose centre lies beyond the label's
        # threshold (at histogram resolution).
        edges = _edges(_PX_LOW)
        centres = (edges[:-1] + edges[1:]) / 2.0
        thresholds = [
            OUTLIER_MEDIAN_FACTOR * (medians[i % n_kp] or 0.0) for i in range(spec.n_labels)
        ]
        beyond = centres[None, :] > np.array(thresholds)[:, None]  # (labels, bins)
        n_workers = len(self.worker_names)
        outlier_counts = (self.worker_candidates[:n_workers] * beyond).sum(axis=(1, 2)).tolist()
        for index, name in enumerate(self.worker_names):
            frames = int(self.worker_frames[index])
            outliers = int(outlier_counts[index])
            timed = int(self.worker_seconds[index].sum())
            points = int(self.worker_points[index])
            workers.append(
                {
                    "worker": name,
                    "frames": frames,
                    "points": points,
                    "median_error_px": _round(histogram_median(self.worker_px[index], _PX_LOW)),
                    "flip_share": round(int(self.worker_flips[index]) / frames, 4)
                    if frames
                    else 0.0,
                    "outliers": outliers,
                    "outlier_share": round(outliers / points, 4) if points else 0.0,
                    "median_seconds": _round(
                        histogram_median(self.worker_seconds[index], _SECONDS_LOW), 1
                    )
                    if timed
                    else None,
                    "total_seconds": round(float(self.worker_seconds_total[index]), 1)
                    if timed
                    else None,
                    "timed_tasks": timed,
                    "swapped_frames": int(self.worker_flips[index]),
                }
            )
        # Ranked furthest from the consensus first (no points last), then named for review
        # against the crowd's typical figures.
        workers.sort(
            key=lambda w: (
                w["median_error_px"] is None,
                -(w["median_error_px"] or 0.0),
                w["worker"],
            )
        )
        errors = [w["median_error_px"] for w in workers if w["median_error_px"] is not None]
        typical_error = float(np.median(errors)) if errors else None
        typical_swaps = float(np.median([w["flip_share"] for w in workers])) if workers else 0.0
        typical_outliers = (
            float(np.median([w["outlier_share"] for w in workers])) if workers else 0.0
        )
        for rank, worker in enumerate(workers, start=1):
            worker["rank"] = rank
            worker["review"] = list(
                review_reasons(worker, typical_error, typical_swaps, typical_outliers)
            )
        return {
            "job_name": job_name,
            "frames": self.frames,
            "frames_with_flip_corrected": self.flip_frames,
            "workers_per_frame": {str(n): c for n, c in self.workers_per_frame()},
            "body_length": {
                "from": spec.keypoints[spec.body_axis[0]],
                "to": spec.keypoints[spec.body_axis[1]],
                "median_px": _round(body_median),
            },
            "keypoints": [
                {
                    "keypoint": k.keypoint,
                    "median_px": k.median_px,
                    "median_body_fraction": k.median_body_fraction,
                    "placed_share": k.placed_share,
                    "points": k.points,
                }
                for k in self.keypoints()
            ],
            "labels": labels,
            "workers": workers,
            "workers_to_review": [w["worker"] for w in workers if w["review"]],
            "method": {
                "distance": "Euclidean distance of each worker's point (after left/right flip "
                "correction) to the per-frame "
                + (
                    "median of all workers"
                    if consensus == "median"
                    else "robust consensus (bot/results/robust.py)"
                )
                + ", in pixels",
                "consensus": consensus,
                "body_fraction": "the same distance divided by the consensus distance between "
                f"{spec.keypoints[spec.body_axis[0]]!r} and "
                f"{spec.keypoints[spec.body_axis[1]]!r} of that animal in that frame",
                "outlier": f"a point further than both {OUTLIER_MEDIAN_FACTOR:g} x the "
                f"keypoint's job-wide median distance and {OUTLIER_BODY_FRACTION:.0%} of the "
                "animal's body length",
                "flip_share": "share of the worker's frames where at least one left/right "
                "pair was swapped to match the consensus",
                "rank": "1 is the worker whose median distance to the consensus is largest",
                "review": f"a worker is named for review when its median distance is over "
                f"{REVIEW_FACTOR:g}x the median over workers, its swap share over "
                f"{REVIEW_FACTOR:g}x the workers' median and {REVIEW_MIN_SWAP_SHARE:.0%}, or its "
                f"outlier share over {REVIEW_FACTOR:g}x the workers' median and "
                f"{REVIEW_MIN_OUTLIER_SHARE:.0%}",
                "precision": f"medians and outlier counts come from log-spaced histograms "
                f"({N_BINS} bins over 7 decades, about 6.5% wide, interpolated)",
            },
        }


def worker_report(document: dict[str, Any]) -> tuple[WorkerAgreement, ...]:
    """The ranked per-worker figures of an `agreement.json` document."""
    names = [f.name for f in fields(WorkerAgreement)]
    return tuple(
        WorkerAgreement(**{**{name: w[name] for name in names}, "review": tuple(w["review"])})
        for w in document["workers"]
    )


def _round(value: float | None, digits: int = 2) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)

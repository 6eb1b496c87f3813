"""A consensus that weighs each click by how believable it is: gtbot's `robust` estimator.

MARS takes each keypoint's median over the workers. That wastes evidence in two ways: when the
workers agree, a mean of their clicks is more precise than their median; and when they do not,
the median lands between a good click and a wild one. This estimator, chosen by measurement on
emulated public-crowd work (bench/relabel.py, figures in bench/README.md), learns three things
from each batch of frames of the job itself and uses them per click:

- how far each keypoint's clicks usually scatter, and each worker's own scatter and share of
  wild clicks (workers who are careful count more, as in an inverse-variance mean);
- the animal's shape: for projects with one instance per label and four or more keypoints, the
  mean layout of the keypoints (up to position, rotation and size) from the frames where the
  workers clearly agree. Fitted robustly to each animal in each frame, it predicts where each
  keypoint should be. A click far from both the other clicks and that prediction is taken for a
  wild click; a left/right pair whose members sit on the wrong sides of the fitted body is
  swapped back even when most workers swapped it. The prediction only decides which clicks
  count: it is never averaged into the result, so an unusual pose stays as the workers put it.
- each keypoint's estimate is then the reliability-weighted mean of the clicks that count
  (an EM over "inlier or wild click"); where no click is consistent, MARS's median.

Everything comes from the batch alone (`bot.results.batch`), so two processes give the same
files as one. The per-frame `uncertainty` (expected error of the estimate, px) is what `relabel`
and the automatic rounds rank frames by (bot/jobs/relabel.py).
"""

from __future__ import annotations

import math

import numpy as np

from bot.results.consensus import (
    BatchConsensus,
    BoolArray,
    FloatArray,
    IntArray,
    consensus_batch,
    nanmedian_workers,
    pair_slots,
)
from bot.results.spec import LabelSpec

# A click further than this many standard deviations (per axis, times sqrt 2) from the median
# starts out as a wild click.
INLIER_SIGMAS = 2.5
# Prior share of wild clicks per worker, and how many clicks' worth of weight it carries.
PRIOR_WILD = 0.12
PRIOR_WILD_WEIGHT = 10.0
# How many clicks' worth of weight the crowd's scatter carries in each worker's own.
PRIOR_SCATTER_WEIGHT = 2.0
# A wild click lands anywhere within this share of the image's width of the truth.
WILD_RADIUS = 0.1
# Animals needed in a batch, all keypoints clearly agreed, to learn the shape from.
MIN_SHAPES = 12
# EM iterations after the first (which looks around the shape's prediction).
EM_ROUNDS = 3
# Floor on a keypoint's scatter, px: clicks are rounded to 0.1 px and a batch may be tiny.
MIN_SIGMA = 0.5
_RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))  # median of |N(0, I2)| is 1.1774 sigma


def robust_batch(
    coords: FloatArray,
    spec: LabelSpec,
    workers: list[list[str]],
    width: float = 1000.0,
    *,
    shape: bool = True,
    weights: bool = True,
) -> BatchConsensus:
    """The robust consensus of a batch (see the module docstring); `workers` are each frame's
    worker ids in column order, `width` the frames' typical width (px) for wild clicks.
    `shape` and `weights` off leave out the shape and the per-worker habits, to measure what
    each adds (bench/relabel.py --explore)."""
    base = consensus_batch(coords, spec)
    cc = base.coords
    n_frames, n_workers, n_slots, _ = cc.shape
    if n_frames == 0:
        return base
    placed = ~np.isnan(cc[..., 0])
    column = _worker_columns(workers, n_frames, n_workers)
    sigma = _keypoint_sigma(base.distance, spec)  # (S,)
    scaled = base.distance / sigma  # per-axis sigmas * sqrt 2 at the usual scatter
    limit = INLIER_SIGMAS * math.sqrt(2.0)
    inlier = scaled <= limit
    ratio, wild = _worker_habits(scaled, inlier, column)
    if not weights:
        ratio, wild = np.ones_like(ratio), np.full_like(wild, PRIOR_WILD)
    variance = ratio[:, :, None] * (sigma * sigma)[None, None, :]  # (B, W, S) per axis
    start = _inlier_mean(cc, base.points, inlier, 1.0 / variance, placed)
    flipped = base.flipped
    body = _Shape.fit(start, spec, ~np.isnan(start[..., 0]) & _agreed(inlier, placed))
    if not shape:
        body = None
    if body is not None:
        prediction, prediction_sd = body.predict(start)
        cc = _swap_to_shape(cc, spec, prediction)
        flipped = _moved(coords, cc)
    else:
        prediction, prediction_sd = start, np.zeros(start.shape[:2])
    wild_density = wild[:, :, None] / (math.pi * (WILD_RADIUS * width) ** 2)
    estimate = prediction
    for round_ in range(EM_ROUNDS + 1):
        spread = variance + (prediction_sd[:, None, :] ** 2 if round_ == 0 else 0.0)
        d2 = ((cc - estimate[:, None]) ** 2).sum(axis=3)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            likely = (
                (1.0 - wild[:, :, None]) * np.exp(-d2 / (2.0 * spread)) / (2 * math.pi * spread)
            )
            belief = np.where(placed, likely / (likely + wild_density), 0.0)
        weight = belief / variance
        total = weight.sum(axis=1)
        summed = (np.where(placed[..., None], cc, 0.0) * weight[..., None]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimate = np.where((total > 0)[..., None], summed / total[..., None], estimate)
    support = belief.sum(axis=1)
    trusted = support >= 0.5
    points = np.where(trusted[..., None], estimate, start)
    distance = _distance(cc, points[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        standard_error = np.where(trusted, np.sqrt(1.0 / total), base.spread)
    off_shape = _distance(points, prediction)
    if body is not None:
        deviation = off_shape / (math.sqrt(2.0) * np.maximum(prediction_sd, MIN_SIGMA))
        gross = 1.0 / (1.0 + np.exp(-2.0 * (deviation - 3.0)))
        uncertainty = 1.25 * standard_error + gross * off_shape
    else:
        uncertainty = 1.25 * standard_error + np.where(support < 1.5, base.spread, 0.0)
    uncertainty = np.where(np.isnan(points[..., 0]), np.nan, uncertainty)
    return BatchConsensus(
        coords=cc,
        points=points,
        n_workers=placed.sum(axis=1).astype(np.int64),
        spread=nanmedian_workers(distance[..., None])[..., 0],
        distance=distance,
        flipped=flipped,
        flip_rounds=base.flip_rounds,
        uncertainty=uncertainty,
    )


def _distance(a: FloatArray, b: FloatArray) -> FloatArray:
    d = a - b
    return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


def _worker_columns(workers: list[list[str]], n_frames: int, width: int) -> IntArray:
    """(B, W) batch-wide number of the worker in each column; padding gets a number of its own
    (it has no clicks, so it learns nothing)."""
    ids: dict[str, int] = {}
    out = np.full((n_frames, width), -1, dtype=np.int64)
    for b, names in enumerate(workers):
        out[b, : len(names)] = [ids.setdefault(name, len(ids)) for name in names]
    out[out < 0] = len(ids)
    return out


def _keypoint_sigma(distance: FloatArray, spec: LabelSpec) -> FloatArray:
    """Per slot, the usual per-axis scatter of clicks around the median, pooled over animals and
    instances of the same keypoint (more clicks, steadier figure)."""
    n_slots = distance.shape[2]
    keypoint = (np.arange(n_slots) // spec.num_obj) % len(spec.keypoints)
    out = np.empty(n_slots)
    for k in range(len(spec.keypoints)):
        values = distance[:, :, keypoint == k]
        values = values[~np.isnan(values)]
        typical = float(np.median(values)) / _RAYLEIGH_MEDIAN if values.size else 0.0
        out[keypoint == k] = max(typical, MIN_SIGMA)
    return out


def _worker_habits(
    scaled: FloatArray, inlier: BoolArray, column: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Each click's worker's scatter (as a multiple of the usual variance) and share of wild
    clicks, from the batch, pulled towards the crowd's by a prior worth a few clicks."""
    n_ids = int(column.max()) + 1
    placed = ~np.isnan(scaled)
    who = np.broadcast_to(column[:, :, None], scaled.shape)
    good = inlier & placed
    squares = np.bincount(who[good], weights=scaled[good] ** 2 / 2.0, minlength=n_ids)
    goods = np.bincount(who[good], minlength=n_ids)
    clicks = np.bincount(who[placed], minlength=n_ids)
    ratio = (squares + PRIOR_SCATTER_WEIGHT) / (goods + PRIOR_SCATTER_WEIGHT)
    wild = (clicks - goods + PRIOR_WILD * PRIOR_WILD_WEIGHT) / (clicks + PRIOR_WILD_WEIGHT)
    return ratio[column], np.clip(wild[column], 0.01, 0.9)


def _inlier_mean(
    cc: FloatArray, median: FloatArray, inlier: BoolArray, weight: FloatArray, placed: BoolArray
) -> FloatArray:
    """Weighted mean of the clicks near the median where they are at least two and a majority;
    the median elsewhere."""
    use = inlier & placed
    w = np.where(use, weight, 0.0)
    total = w.sum(axis=1)
    summed = (np.where(use[..., None], cc, 0.0) * w[..., None]).sum(axis=1)
    count = use.sum(axis=1)
    ok = (count >= 2) & (2 * count > placed.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok[..., None], summed / total[..., None], median)


def _agreed(inlier: BoolArray, placed: BoolArray) -> BoolArray:
    """(B, S): at least two clicks near the median, and most of them."""
    count = (inlier & placed).sum(axis=1)
    return (count >= 2) & (2 * count > placed.sum(axis=1))


class _Shape:
    """The mean layout of an animal's keypoints, as complex numbers (x + iy), centred and of
    unit size, with each keypoint's scatter around it; fitted to an animal by a similarity
    (z = a * mean + b: position, rotation, size)."""

    def __init__(self, mean: np.ndarray, scatter: FloatArray, n_animals: int) -> None:
        self.mean = mean
        self.scatter = scatter
        self.n_animals = n_animals

    @classmethod
    def fit(cls, points: FloatArray, spec: LabelSpec, agreed: BoolArray) -> _Shape | None:
        n_kp = len(spec.keypoints)
        if spec.num_obj != 1 or n_kp < 4:
            return None
        n_animals = len(spec.animal_names)
        z = _complex(points).reshape(len(points), n_animals, n_kp)
        clear = agreed.reshape(len(points), n_animals, n_kp).all(axis=2)
        sample = z[clear]
        if len(sample) < MIN_SHAPES:
            return None
        mean = _unit(sample[0])
        for _ in range(4):
            a, b = _similarity(sample, mean, np.ones(sample.shape))
            mean = _unit(((sample - b) / a).mean(axis=0))
        a, b = _similarity(sample, mean, np.ones(sample.shape))
        residual = np.abs((sample - b) / a - mean)
        scatter = np.sqrt((residual**2).mean(axis=0) / 2.0)
        if not np.all(np.isfinite(scatter)):
            return None
        return cls(mean, scatter, n_animals)

    def predict(self, points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Where each keypoint of each animal should be (B, S, 2) and how sure that is (B, S,
        per-axis px), from a fit that gives keypoints far from the others little weight."""
        n_frames = len(points)
        n_kp = len(self.mean)
        z = _complex(points).reshape(n_frames, self.n_animals, n_kp)
        weight = np.where(np.isnan(z), 0.0, 1.0)
        for _ in range(3):
            a, b = _similarity(z, self.mean, weight)
            residual = np.abs(np.nan_to_num(z) - (a * self.mean + b))
            size = np.maximum(np.abs(a) * self.scatter * math.sqrt(2.0), MIN_SIGMA)
            weight = np.where(np.isnan(z), 0.0, 1.0 / (1.0 + (residual / (2.5 * size)) ** 2))
        a, b = _similarity(z, self.mean, weight)
        fitted = (a * self.mean + b).reshape(n_frames, -1)
        sd = (np.abs(a) * self.scatter).reshape(n_frames, -1)
        known = (weight.sum(axis=2, keepdims=True) >= 2.0).repeat(n_kp, axis=2)
        fitted = np.where(known.reshape(n_frames, -1), fitted, np.nan + 0j)
        return np.stack([fitted.real, fitted.imag], axis=-1), np.where(
            known.reshape(n_frames, -1), sd, np.inf
        )


def _complex(points: FloatArray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


def _unit(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean()
    size = math.sqrt(float((np.abs(centred) ** 2).mean())) or 1.0
    return centred / size


def _similarity(
    z: np.ndarray, mean: np.ndarray, weight: FloatArray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares a, b with z ~ a * mean + b over the last axis (2-D similarity is
    linear in complex numbers, so this is closed form)."""
    total = weight.sum(axis=-1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    z0 = np.nan_to_num(z)
    z_mean = (weight * z0).sum(axis=-1, keepdims=True) / safe
    m_mean = (weight * mean).sum(axis=-1, keepdims=True) / safe
    zc, mc = z0 - z_mean, mean - m_mean
    num = (weight * zc * np.conj(mc)).sum(axis=-1, keepdims=True)
    den = (weight * np.abs(mc) ** 2).sum(axis=-1, keepdims=True)
    a = num / np.where(den > 0, den, 1.0)
    a = np.where(np.abs(a) > 1e-9, a, 1.0)
    return a, z_mean - a * m_mean


def _moved(raw: FloatArray, cc: FloatArray) -> BoolArray:
    """(B, W): the worker has a point that is not where the worker put it (a pair swapped)."""
    same = (raw == cc) | (np.isnan(raw) & np.isnan(cc))
    return ~same.all(axis=(2, 3))


def _swap_to_shape(cc: FloatArray, spec: LabelSpec, prediction: FloatArray) -> FloatArray:
    """Each worker's left/right pair put on the sides the fitted body says, whatever the
    majority did."""
    cc = cc.copy()
    for s1, s2 in pair_slots(spec):
        a, b = cc[:, :, s1], cc[:, :, s2]
        q1, q2 = prediction[:, None, s1], prediction[:, None, s2]
        with np.errstate(invalid="ignore"):
            keep = _nan0(_distance(a, q1)) + _nan0(_distance(b, q2))
            swap = _nan0(_distance(a, q2)) + _nan0(_distance(b, q1))
            do = (swap < keep) & ~np.isnan(q1[..., 0]) & ~np.isnan(q2[..., 0])
        do &= ~(np.isnan(a[..., 0]) & np.isnan(b[..., 0]))
        if do.any():
            mask = do[..., None]
            cc[:, :, s1] = np.where(mask, b, a)
            cc[:, :, s2] = np.where(mask, a, b)
    return cc


def _nan0(values: FloatArray) -> FloatArray:
    return np.where(np.isnan(values), 0.0, values)

"""Consensus of several workers' keypoints: MARS's median with left/right flip correction.

Everything works on a batch of frames at once, an array (frames, workers, slots, 2) with NaN
where a worker did not place a point, because per-frame numpy calls cost more than the maths.
Frames with fewer workers than the batch's widest are padded with all-NaN workers, which the
NaN-aware medians ignore exactly like an unplaced point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.results.spec import LabelSpec

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Flip correction stops when no worker changes; this bound only guards against a cycle.
MAX_FLIP_ROUNDS = 10
# A swap must shorten the summed distance by more than this (px) so ties never oscillate.
_SWAP_EPS = 1e-6
# Instance matching for num_obj > 1 tries every permutation up to this many instances.
_MAX_PERMUTED_INSTANCES = 4
# Instance matching re-orders workers until their orders fit the medians they make. Each round
# lowers the summed Manhattan distance by more than _SWAP_EPS, so it ends by itself; this is a
# guard only (random batches of 2-4 instances settle within 6 rounds).
MAX_MATCH_ROUNDS = 50


@dataclass(frozen=True, slots=True)
class BatchConsensus:
    """Consensus of a batch; B frames, W workers (padded), S slots (labels x num_obj).

    `coords` holds the workers' points after flip correction, which is what the agreement
    figures and the MARS export describe.
    """

    coords: FloatArray  # (B, W, S, 2)
    points: FloatArray  # (B, S, 2), NaN where nobody placed the point
    n_workers: IntArray  # (B, S) workers who placed the point
    spread: FloatArray  # (B, S) median distance of those workers to the consensus, px
    distance: FloatArray  # (B, W, S) each worker's distance to the consensus, NaN if unplaced
    flipped: BoolArray  # (B, W) the worker had at least one pair swapped in this frame
    flip_rounds: int
    # (B, S) expected error of each consensus point, px: the robust estimator's (bot/results/
    # robust.py), which `relabel` ranks frames by; None from the median.
    uncertainty: FloatArray | None = None


def nanmedian_workers(values: FloatArray) -> FloatArray:
    """Median over axis 1 ignoring NaN; NaN where every value is NaN.

    `np.nanmedian` takes a masked-array path for short axes that is an order of magnitude
    slower. The values are put in order with NaN last, and the middle depends on how many are
    real; with a handful of workers choosing it count by count is cheaper than gathering it
    with computed indices.
    """
    ordered = _ordered(values)
    count = np.count_nonzero(~np.isnan(values), axis=1)
    median = np.full(values.shape[:1] + values.shape[2:], np.nan)
    for n in range(1, values.shape[1] + 1):
        lo, hi = (n - 1) // 2, n // 2
        middle = ordered[lo] if lo == hi else (ordered[lo] + ordered[hi]) * 0.5
        np.copyto(median, middle, where=count == n)
    return median


def _ordered(values: FloatArray) -> list[FloatArray]:
    """The slices of axis 1 in ascending order, NaN last, element by element."""
    ordered = np.sort(values, axis=1)
    return [ordered[:, i] for i in range(values.shape[1])]


def _distance(a: FloatArray, b: FloatArray) -> FloatArray:
    d = a - b
    return np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])


def pair_slots(spec: LabelSpec) -> list[tuple[IntArray, IntArray]]:
    """For each check pair, the slot indices of its two members in every animal and instance."""
    n_kp, n_obj = len(spec.keypoints), spec.num_obj
    out = []
    for k1, k2 in spec.pair_indices:
        first, second = [], []
        for a in range(len(spec.animal_names)):
            for j in range(n_obj):
                first.append((a * n_kp + k1) * n_obj + j)
                second.append((a * n_kp + k2) * n_obj + j)
        out.append((np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)))
    return out


def consensus_batch(coords: FloatArray, spec: LabelSpec) -> BatchConsensus:
    """Median of workers per slot, after swapping each worker's left/right pairs that fit the
    median better swapped; repeated until no worker changes (the median moves with the swaps).

    A worker's pair is swapped when |a - m2| + |b - m1| < |a - m1| + |b - m2| (unplaced members
    count 0, so a lone "left ear" put on the right ear moves too). When every worker who placed
    the pair would swap, nobody does: that is the same labelling renamed, and swapping all of
    them would only swap the medians and loop.
    """
    coords = np.array(coords, dtype=np.float64, copy=True)
    if spec.num_obj > 1:
        coords = _match_instances(coords, spec.num_obj)
    n_frames, n_workers = coords.shape[0], coords.shape[1]
    pairs = pair_slots(spec)
    median = nanmedian_workers(coords)
    # Net swap state per pair member slot: a swap and a later swap back is no correction.
    parity = [np.zeros((n_frames, n_workers, len(s1)), dtype=bool) for s1, _ in pairs]
    rounds = 0
    while pairs and rounds < MAX_FLIP_ROUNDS:
        rounds += 1
        changed = False
        for p, (s1, s2) in enumerate(pairs):
            a, b = coords[:, :, s1], coords[:, :, s2]  # (B, W, P, 2)
            m1, m2 = median[:, None, s1], median[:, None, s2]  # (B, 1, P, 2)
            has_a = ~np.isnan(a[..., 0])
            has_b = ~np.isnan(b[..., 0])
            d_a1, d_b2 = _distance(a, m1), _distance(b, m2)
            d_a2, d_b1 = _distance(a, m2), _distance(b, m1)
            keep = np.where(has_a, d_a1, 0.0) + np.where(has_b, d_b2, 0.0)
            swap = np.where(has_a, d_a2, 0.0) + np.where(has_b, d_b1, 0.0)
            # NaN (the other member has no median yet) compares False: no swap.
            do = (swap < keep - _SWAP_EPS) & (has_a | has_b)
            active = (has_a | has_b).sum(axis=1)
            unanimous = do.sum(axis=1) == active  # (B, P)
            do &= ~unanimous[:, None, :]
            if not do.any():
                continue
            changed = True
            mask = do[..., None]
            coords[:, :, s1] = np.where(mask, b, a)
            coords[:, :, s2] = np.where(mask, a, b)
            parity[p] ^= do
            # Only this pair's slots moved; the other medians stand.
            both = np.concatenate([s1, s2])
            median[:, both] = nanmedian_workers(coords[:, :, both])
        if not changed:
            break
    distance = _distance(coords, median[:, None])
    placed = ~np.isnan(coords[..., 0])
    spread = nanmedian_workers(distance[..., None])[..., 0]
    flipped = np.zeros((n_frames, n_workers), dtype=bool)
    for state in parity:
        flipped |= state.any(axis=2)
    return BatchConsensus(
        coords=coords,
        points=median,
        n_workers=placed.sum(axis=1).astype(np.int64),
        spread=spread,
        distance=distance,
        flipped=flipped,
        flip_rounds=rounds,
    )


def _match_instances(coords: FloatArray, num_obj: int) -> FloatArray:
    """Give each worker's repeated placements of one label a consistent instance order.

    Workers place a label `num_obj` times in any order; instances are first ordered left to
    right, then each worker's order is re-chosen to best fit the per-instance medians (all
    permutations up to 4 instances), until no worker's order changes: a fixed number of rounds
    left some batches half matched. Instances are matched per label: instance j of "nose" and
    instance j of "tail" are not guaranteed to be the same individual, which the template
    gives no way to know.
    """
    n_frames, n_workers, n_slots, _ = coords.shape
    grouped = coords.reshape(n_frames, n_workers, n_slots // num_obj, num_obj, 2)
    x = np.where(np.isnan(grouped[..., 0]), np.inf, grouped[..., 0])
    order = np.argsort(x, axis=3, kind="stable")
    grouped = np.take_along_axis(grouped, order[..., None], axis=3)
    if num_obj <= _MAX_PERMUTED_INSTANCES:
        perms = np.array(list(itertools.permutations(range(num_obj))), dtype=np.int64)
        for _ in range(MAX_MATCH_ROUNDS):
            median = nanmedian_workers(grouped)  # (B, L, n, 2)
            costs = []
            for perm in perms:
                moved = grouped[:, :, :, perm]
                # Manhattan distance: the per-axis median is what minimises it, so every round
                # lowers the summed distance and the rounds must end (no cycle to cap).
                d = np.abs(moved - median[:, None]).sum(axis=-1)
                # An unplaced point costs nothing. A placed point has no median to fit in a
                # slot nobody uses: it may not move there (workers who each placed one mouse
                # would all jump to the empty slot and back, round after round).
                d = np.where(np.isnan(moved[..., 0]), 0.0, np.where(np.isnan(d), np.inf, d))
                costs.append(d.sum(axis=3))
            cost = np.stack(costs, axis=-1)  # (B, W, L, perms); perms[0] is the order as it is
            best = np.argmin(cost, axis=-1)  # (B, W, L)
            gain = cost[..., 0] - np.take_along_axis(cost, best[..., None], axis=-1)[..., 0]
            best = np.where(gain > _SWAP_EPS, best, 0)  # a tie never moves a worker
            if not best.any():
                break  # every worker's order fits the medians it makes: a fixed point
            chosen = perms[best]  # (B, W, L, n)
            grouped = np.take_along_axis(grouped, chosen[..., None], axis=3)
    return grouped.reshape(n_frames, n_workers, n_slots, 2)

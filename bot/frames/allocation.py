"""How many frames each video contributes: proportional to length, shortfalls handed on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class VideoEntry:
    path: Path
    key: str
    prefix: str
    frames: int
    kept: dict[int, str]
    rejected: frozenset[int]


@dataclass
class VideoStats:
    existing: int
    wanted: int = 0
    added: int = 0
    duplicates: int = 0


def video_key(path: Path, project_dir: Path) -> str:
    """How frames.csv names a video: relative to the project when inside it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def file_prefixes(videos: Sequence[Path], videos_dir: Path) -> dict[Path, str]:
    """Video stem, or the relative path flattened when two videos share a stem."""
    stems: dict[str, int] = {}
    for p in videos:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    prefixes: dict[Path, str] = {}
    for p in videos:
        if stems[p.stem] == 1:
            prefixes[p] = p.stem
        else:
            rel = p.relative_to(videos_dir)
            prefixes[p] = "_".join(rel.parts).replace(".", "_")
    return prefixes


def apportion(weights: Sequence[float], total: int, caps: Sequence[int]) -> list[int]:
    """Largest-remainder split of `total` by weight, never above a cap (water-filling).

    When only zero-weight slots have room left, they share what remains equally, so a total
    that fits under the caps is always handed out in full.
    """
    n = len(weights)
    out = [0] * n
    remaining = min(total, sum(max(0, c) for c in caps))
    while remaining > 0:
        open_idx = [i for i in range(n) if out[i] < caps[i] and weights[i] > 0]
        eff = {i: float(weights[i]) for i in open_idx}
        if not open_idx:
            open_idx = [i for i in range(n) if out[i] < caps[i]]
            eff = {i: 1.0 for i in open_idx}
            if not open_idx:
                break
        wsum = sum(eff.values())
        shares = {i: remaining * eff[i] / wsum for i in open_idx}
        left = remaining
        for i in open_idx:
            step = min(math.floor(shares[i]), caps[i] - out[i])
            out[i] += step
            left -= step
        for i in sorted(open_idx, key=lambda i: (-(shares[i] - math.floor(shares[i])), i)):
            if left == 0:
                break
            if out[i] < caps[i]:
                out[i] += 1
                left -= 1
        remaining = left
    return out


def allocate_missing(
    entries: Sequence[VideoEntry], count: int, existing_total: int
) -> dict[str, int]:
    """Per-video frames to add so that the whole set approaches `count` proportionally.

    Each video's fair share of the frames attributable to the current videos is compared with
    what it already has; the missing frames go to the videos furthest below their share.
    """
    existing_here = sum(len(e.kept) for e in entries)
    from_other = existing_total - existing_here
    fair = apportion(
        [float(e.frames) for e in entries],
        max(0, count - from_other),
        [e.frames for e in entries],
    )
    deficits = [max(0, f - len(e.kept)) for f, e in zip(fair, entries, strict=True)]
    need = count - existing_total
    room = [max(0, e.frames - len(e.kept) - len(e.rejected)) for e in entries]
    shares = apportion(
        [float(d) for d in deficits], need, [min(r, d) for r, d in zip(room, deficits, strict=True)]
    )
    if sum(shares) < need:
        extra = apportion(
            [float(e.frames) for e in entries],
            need - sum(shares),
            [r - s for r, s in zip(room, shares, strict=True)],
        )
        shares = [s + x for s, x in zip(shares, extra, strict=True)]
    return {e.key: s for e, s in zip(entries, shares, strict=True)}


def redistribute(entries: Sequence[VideoEntry], exhausted: set[str], short: int) -> dict[str, int]:
    """Hand a shortfall (static or broken videos) to videos that still gave all they were asked."""
    open_entries = [e for e in entries if e.key not in exhausted]
    caps = [max(0, e.frames - len(e.kept) - len(e.rejected)) for e in open_entries]
    shares = apportion([float(e.frames) for e in open_entries], short, caps)
    return {e.key: s for e, s in zip(open_entries, shares, strict=True) if s > 0}

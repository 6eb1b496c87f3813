"""Pictures a lab looks at before trusting a job: a contact sheet and an agreement chart.

Pillow only: the bot runs headless and matplotlib would be a heavy dependency for two images.
Only the handful of frames shown are kept (and their images loaded), never the whole job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from bot.results.agreement import WorkerAgreement
from bot.results.consensus import BatchConsensus, FloatArray
from bot.results.reader import Frame, FrameBatch, file_name
from bot.results.spec import LabelSpec

LoadImage = Callable[[str], "Image.Image | None"]

# Distinguishable on dark and light frames (Tableau 10, then a few more).
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (255, 215, 0),
    (0, 0, 128),
]
TILE_WIDTH = 360
_GREY = (128, 128, 128)
_BACKGROUND = (250, 250, 250)
_INK = (20, 20, 20)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True, slots=True)
class PreviewFrame:
    """What one contact-sheet tile needs; a few of these are all the preview keeps."""

    source_ref: str
    width: float | None
    height: float | None
    workers: FloatArray  # (W, S, 2) flip-corrected worker points
    points: FloatArray  # (S, 2) consensus
    score: float  # mean spread over placed points, px


# Splitmix64 constants: a frame's place in the "random" sample is a hash of its line number,
# so the sample is the same whichever process read the frame and however the job was cut.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _sample_keys(lines: list[int], seed: int) -> npt.NDArray[np.uint64]:
    z = np.array(lines, dtype=np.uint64) + np.uint64(seed) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True, slots=True)
class PreviewCandidate:
    """A frame that may be shown: the best, worst or sampled few of its batch."""

    line: int
    sample_key: int
    frame: PreviewFrame


class PreviewPicker:
    """Keeps the best- and worst-agreed frames and a reproducible pseudo-random few.

    Each batch offers its own best, worst and sampled few (`candidates`, which any process can
    compute); `merge` keeps the job's, so the choice does not depend on how the job was cut.
    """

    def __init__(self, best: int = 4, worst: int = 4, sample: int = 4, seed: int = 0) -> None:
        self.n_best, self.n_worst, self.n_sample = best, worst, sample
        self.seed = seed
        self.best: list[PreviewCandidate] = []
        self.worst: list[PreviewCandidate] = []
        self.sample: list[PreviewCandidate] = []

    def candidates(self, frames: FrameBatch, consensus: BatchConsensus) -> list[PreviewCandidate]:
        with np.errstate(all="ignore"):
            spread = consensus.spread
            counted = np.isfinite(spread)
            scores = np.where(counted, spread, 0.0).sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
        usable = np.flatnonzero(counted.any(axis=1) & np.isfinite(scores))
        if not len(usable):
            return []
        lines = np.array(frames.lines, dtype=np.int64)[usable]
        keys = _sample_keys(lines.tolist(), self.seed)
        by_score = usable[np.lexsort((lines, scores[usable]))]
        key_of = dict(zip(usable.tolist(), keys.tolist(), strict=True))
        chosen = {
            *by_score[: self.n_best].tolist(),
            *by_score[len(by_score) - self.n_worst :].tolist(),
            *usable[np.argsort(keys, kind="stable")[: self.n_sample]].tolist(),
        }
        return [
            PreviewCandidate(
                frames.lines[b], key_of[b], self._item(frames[b], consensus, b, float(scores[b]))
            )
            for b in sorted(chosen)
        ]

    def merge(self, candidates: list[PreviewCandidate]) -> None:
        def keep(
            kept: list[PreviewCandidate],
            key: Callable[[PreviewCandidate], tuple[float, int]],
            limit: int,
        ) -> list[PreviewCandidate]:
            return sorted([*kept, *candidates], key=key)[:limit]

        self.best = keep(self.best, lambda c: (c.frame.score, c.line), self.n_best)
        self.worst = keep(self.worst, lambda c: (-c.frame.score, c.line), self.n_worst)
        self.sample = keep(self.sample, lambda c: (c.sample_key, c.line), self.n_sample)

    @staticmethod
    def _item(frame: Frame, consensus: BatchConsensus, b: int, score: float) -> PreviewFrame:
        n = len(frame.workers)
        return PreviewFrame(
            source_ref=frame.source_ref,
            width=frame.width,
            height=frame.height,
            workers=consensus.coords[b, :n].copy(),
            points=consensus.points[b].copy(),
            score=score,
        )

    def chosen(self) -> list[tuple[str, PreviewFrame]]:
        """Most agreed first, then least agreed, then the sample; no frame twice."""
        out: list[tuple[str, PreviewFrame]] = []
        seen: set[str] = set()
        groups = [("most agreed", self.best), ("least agreed", self.worst), ("sample", self.sample)]
        for title, kept in groups:
            for candidate in kept:
                if candidate.frame.source_ref not in seen:
                    seen.add(candidate.frame.source_ref)
                    out.append((title, candidate.frame))
        return out


def _colour(spec: LabelSpec, slot: int) -> tuple[int, int, int]:
    keypoint = slot // spec.num_obj % len(spec.keypoints)
    return PALETTE[keypoint % len(PALETTE)]


def _tile(spec: LabelSpec, title: str, item: PreviewFrame, load_image: LoadImage) -> Image.Image:
    width = item.width or 640.0
    height = item.height or 480.0
    try:
        picture = load_image(item.source_ref)
    except Exception:  # a missing or unreadable frame must not cost the whole preview
        picture = None
    if picture is not None:
        picture = picture.convert("RGB")
        width, height = float(picture.width), float(picture.height)
    scale = TILE_WIDTH / width
    tile_h = max(int(round(height * scale)), 1)
    if picture is None:
        base = Image.new("RGB", (TILE_WIDTH, tile_h), _GREY)
    else:
        base = picture.resize((TILE_WIDTH, tile_h))
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for worker in item.workers:
        for s, (x, y) in enumerate(worker.tolist()):
            if x == x:
                r, g, b = _colour(spec, s)
                cx, cy = x * scale, y * scale
                draw.ellipse((cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5), fill=(r, g, b, 90))
    for s, (x, y) in enumerate(item.points.tolist()):
        if x == x:
            cx, cy = x * scale, y * scale
            draw.ellipse(
                (cx - 4, cy - 4, cx + 4, cy + 4),
                fill=(*_colour(spec, s), 255),
                outline=(255, 255, 255, 255),
            )
    picture_rgb = Image.alpha_composite(base.convert("RGBA"), overlay).convert("RGB")
    font = _font(13)
    header = 36
    tile = Image.new("RGB", (TILE_WIDTH, tile_h + header), _BACKGROUND)
    tile.paste(picture_rgb, (0, header))
    text = ImageDraw.Draw(tile)
    workers = len(item.workers)
    text.text(
        (4, 2),
        f"{title}: spread {item.score:.1f} px, {workers} worker{'s' if workers != 1 else ''}",
        fill=_INK,
        font=font,
    )
    text.text((4, 18), file_name(item.source_ref)[:48], fill=(90, 90, 90), font=font)
    return tile


def preview_png(
    path: Path, spec: LabelSpec, chosen: Sequence[tuple[str, PreviewFrame]], load_image: LoadImage
) -> None:
    """Contact sheet: consensus points solid, each worker's points faint, one colour per
    keypoint (same colour for every animal), legend underneath."""
    tiles = [_tile(spec, title, item, load_image) for title, item in chosen]
    columns = min(4, max(len(tiles), 1))
    rows = max(math.ceil(len(tiles) / columns), 1)
    tile_h = max((t.height for t in tiles), default=80)
    font = _font(14)
    legend_rows = math.ceil(len(spec.keypoints) / 4)
    legend_h = 16 + 22 * legend_rows
    gap = 6
    sheet = Image.new(
        "RGB",
        (columns * (TILE_WIDTH + gap) + gap, rows * (tile_h + gap) + gap + legend_h),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    if not tiles:
        draw.text((gap, gap + 30), "no consolidated frame to show", fill=_INK, font=font)
    for i, tile in enumerate(tiles):
        sheet.paste(
            tile, (gap + (i % columns) * (TILE_WIDTH + gap), gap + (i // columns) * (tile_h + gap))
        )
    top = rows * (tile_h + gap) + gap + 8
    column_w = max((sheet.width - 2 * gap) // 4, 1)
    for k, name in enumerate(spec.keypoints):
        x = gap + (k % 4) * column_w
        y = top + (k // 4) * 22
        draw.ellipse((x, y + 3, x + 12, y + 15), fill=PALETTE[k % len(PALETTE)])
        draw.text((x + 18, y), name, fill=_INK, font=font)
    # Fast zlib: a picture looked at once; optimize=True retried settings for a few KB.
    sheet.save(path, format="PNG", compress_level=1)


def _nice_step(top: float) -> float:
    raw = top / 5.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def agreement_png(
    path: Path, keypoints: Sequence[str], medians_px: Sequence[float | None], title: str
) -> None:
    """Horizontal bars so long keypoint names stay readable; value printed at each bar."""
    bar_chart_png(
        path,
        keypoints,
        medians_px,
        title,
        "median distance of workers to consensus (px)",
        [PALETTE[i % len(PALETTE)] for i in range(len(keypoints))],
        [None if v is None else f"{v:.1f}" for v in medians_px],
    )


REVIEW_RED = (214, 39, 40)
_CALM_BLUE = (31, 119, 180)


def workers_png(
    path: Path, workers: Sequence[WorkerAgreement], title: str, limit: int = 30
) -> None:
    """Each worker's median distance to the consensus, furthest first; workers to review in
    red, with their swaps and outliers beside the bar. At most `limit` workers are drawn (a
    public-crowd job has hundreds); the title says how many are left out."""
    shown = list(workers[:limit])
    if len(workers) > limit:
        title += f"; the {limit} furthest of {len(workers)} shown"
    bar_chart_png(
        path,
        [_short_name(w.worker) for w in shown],
        [w.median_error_px for w in shown],
        title,
        "median distance to consensus (px); red: to review",
        [REVIEW_RED if w.review else _CALM_BLUE for w in shown],
        [
            None
            if w.median_error_px is None
            else f"{w.median_error_px:.1f}  swaps {w.flip_share:.0%}, outliers {w.outlier_share:.0%}"
            for w in shown
        ],
        value_room=230,
    )


def _short_name(worker: str) -> str:
    return worker if len(worker) <= 40 else worker[:18] + "..." + worker[-18:]


def bar_chart_png(
    path: Path,
    names: Sequence[str],
    values_px: Sequence[float | None],
    title: str,
    caption: str,
    colours: Sequence[tuple[int, int, int]],
    notes: Sequence[str | None],
    value_room: int = 90,
) -> None:
    """Horizontal bars so long names stay readable; `notes` printed at each bar."""
    label_font, tick_font, title_font = _font(15), _font(13), _font(17)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = int(max((probe.textlength(k, font=label_font) for k in names), default=40)) + 16
    bar_h, row_h = 20, 30
    plot_w = 520
    left, top = name_w + 10, 50
    height = top + row_h * max(len(names), 1) + 70
    width = left + plot_w + value_room
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 12), title, fill=_INK, font=title_font)
    values = [v for v in values_px if v is not None and math.isfinite(v)]
    top_value = max(values, default=1.0) or 1.0
    step = _nice_step(top_value * 1.05)
    axis_max = step * math.ceil(top_value * 1.05 / step)
    bottom = top + row_h * max(len(names), 1)
    tick = 0.0
    while tick <= axis_max + step / 1000:
        x = left + plot_w * tick / axis_max
        draw.line((x, top - 4, x, bottom), fill=(225, 225, 225))
        draw.line((x, bottom, x, bottom + 5), fill=_INK)
        text = f"{tick:g}"
        draw.text(
            (x - probe.textlength(text, font=tick_font) / 2, bottom + 8),
            text,
            fill=_INK,
            font=tick_font,
        )
        tick += step
    for i, (name, value) in enumerate(zip(names, values_px, strict=True)):
        y = top + i * row_h + (row_h - bar_h) / 2
        draw.text(
            (left - 10 - probe.textlength(name, font=label_font), y + 1),
            name,
            fill=_INK,
            font=label_font,
        )
        note = notes[i]
        if value is None or not math.isfinite(value) or note is None:
            draw.text((left + 6, y + 2), "no points", fill=(120, 120, 120), font=tick_font)
            continue
        x1 = left + plot_w * value / axis_max
        draw.rectangle((left, y, max(x1, left + 1), y + bar_h), fill=colours[i])
        draw.text((x1 + 6, y + 2), note, fill=_INK, font=tick_font)
    draw.line((left, top - 4, left, bottom), fill=_INK)
    draw.line((left, bottom, left + plot_w, bottom), fill=_INK)
    draw.text(
        (left + plot_w / 2 - probe.textlength(caption, font=label_font) / 2, bottom + 30),
        caption,
        fill=_INK,
        font=label_font,
    )
    image.save(path, format="PNG", compress_level=1)

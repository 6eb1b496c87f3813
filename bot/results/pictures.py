"""Pictures a lab looks at before trusting a job: a contact sheet and an agreement chart.

Pillow only: the bot runs headless and matplotlib would be a heavy dependency for two images.
Only the handful of frames shown are kept (and their images loaded), never the whole job.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bot.results.consensus import BatchConsensus, FloatArray
from bot.results.exports import file_name
from bot.results.reader import Frame, FrameBatch
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


class PreviewPicker:
    """Keeps the best- and worst-agreed frames and a reproducible random few."""

    def __init__(self, best: int = 4, worst: int = 4, sample: int = 4, seed: int = 0) -> None:
        self.n_best, self.n_worst, self.n_sample = best, worst, sample
        self.best: list[tuple[float, int, PreviewFrame]] = []  # max-heap by negated score
        self.worst: list[tuple[float, int, PreviewFrame]] = []  # min-heap by score
        self.sample: list[PreviewFrame] = []
        self.seen = 0
        self.order = 0
        self.random = random.Random(seed)

    def add_batch(self, frames: FrameBatch, consensus: BatchConsensus) -> None:
        with np.errstate(all="ignore"):
            spread = consensus.spread
            counted = np.isfinite(spread)
            scores = np.where(counted, spread, 0.0).sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
        scores[~counted.any(axis=1)] = np.nan
        order = np.argsort(scores)
        finite = [int(i) for i in order if math.isfinite(scores[i])]
        extremes = set(finite[: self.n_best]) | set(finite[len(finite) - self.n_worst :])
        sampled: dict[int, int] = {}  # batch position -> reservoir slot (classic algorithm R)
        for b in range(len(frames)):
            if not math.isfinite(scores[b]):
                continue
            self.seen += 1
            if len(self.sample) + len(sampled) < self.n_sample:
                sampled[b] = len(self.sample) + len(sampled)
            else:
                slot = self.random.randrange(self.seen)
                if slot < self.n_sample:
                    sampled = {k: v for k, v in sampled.items() if v != slot}
                    sampled[b] = slot
        items = {}
        for b in sorted(extremes | set(sampled)):
            item = self._item(frames[b], consensus, b, float(scores[b]))
            items[b] = item
            key = self.order + b
            self._push(self.best, (-item.score, -key, item), self.n_best)
            self._push(self.worst, (item.score, -key, item), self.n_worst)
        for b, slot in sorted(sampled.items(), key=lambda entry: entry[1]):
            if slot < len(self.sample):
                self.sample[slot] = items[b]
            else:
                self.sample.append(items[b])
        self.order += len(frames)

    @staticmethod
    def _push(
        heap: list[tuple[float, int, PreviewFrame]],
        entry: tuple[float, int, PreviewFrame],
        limit: int,
    ) -> None:
        if limit <= 0:
            return
        if len(heap) < limit:
            heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
            heapq.heapreplace(heap, entry)

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
        """Most agreed first, then least agreed, then the random sample; no frame twice."""
        out: list[tuple[str, PreviewFrame]] = []
        seen: set[str] = set()
        groups = [
            ("most agreed", sorted(self.best, key=lambda e: (-e[0], e[1]))),
            ("least agreed", sorted(self.worst, key=lambda e: (-e[0], e[1]))),
        ]
        for title, entries in groups:
            for entry in entries:
                if entry[2].source_ref not in seen:
                    seen.add(entry[2].source_ref)
                    out.append((title, entry[2]))
        for item in self.sample:
            if item.source_ref not in seen:
                seen.add(item.source_ref)
                out.append(("sample", item))
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
    if picture is None:
        base = Image.new("RGB", (max(int(width), 1), max(int(height), 1)), _GREY)
    else:
        base = picture.convert("RGB")
        width, height = float(base.width), float(base.height)
    scale = TILE_WIDTH / width
    tile_h = max(int(round(height * scale)), 1)
    base = base.resize((TILE_WIDTH, tile_h))
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
    text.text((4, 2), f"{title}: spread {item.score:.1f} px", fill=_INK, font=font)
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
    sheet.save(path, format="PNG", optimize=True)


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
    label_font, tick_font, title_font = _font(15), _font(13), _font(17)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = int(max((probe.textlength(k, font=label_font) for k in keypoints), default=40)) + 16
    bar_h, row_h = 20, 30
    plot_w = 520
    left, top = name_w + 10, 50
    height = top + row_h * max(len(keypoints), 1) + 70
    width = left + plot_w + 90
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 12), title, fill=_INK, font=title_font)
    values = [v for v in medians_px if v is not None and math.isfinite(v)]
    top_value = max(values, default=1.0) or 1.0
    step = _nice_step(top_value * 1.05)
    axis_max = step * math.ceil(top_value * 1.05 / step)
    bottom = top + row_h * max(len(keypoints), 1)
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
    for i, (name, value) in enumerate(zip(keypoints, medians_px, strict=True)):
        y = top + i * row_h + (row_h - bar_h) / 2
        draw.text(
            (left - 10 - probe.textlength(name, font=label_font), y + 1),
            name,
            fill=_INK,
            font=label_font,
        )
        if value is None or not math.isfinite(value):
            draw.text((left + 6, y + 2), "no points", fill=(120, 120, 120), font=tick_font)
            continue
        x1 = left + plot_w * value / axis_max
        draw.rectangle((left, y, max(x1, left + 1), y + bar_h), fill=PALETTE[i % len(PALETTE)])
        draw.text((x1 + 6, y + 2), f"{value:.1f}", fill=_INK, font=tick_font)
    draw.line((left, top - 4, left, bottom), fill=_INK)
    draw.line((left, bottom, left + plot_w, bottom), fill=_INK)
    caption = "median distance of workers to consensus (px)"
    draw.text(
        (left + plot_w / 2 - probe.textlength(caption, font=label_font) / 2, bottom + 30),
        caption,
        fill=_INK,
        font=label_font,
    )
    image.save(path, format="PNG", optimize=True)

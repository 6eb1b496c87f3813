"""Synthetic frames of mice in an arena, at known poses, for the sandbox and the tests.

A real lab's frames are not available to a fresh install or to CI, and checking consensus needs
the true keypoints anyway. Each frame carries its own truth as a JPEG comment (`gtbot-truth:` +
JSON), so the Ground Truth emulator's workforce can aim at it without a side channel; the same
truth is also written to `truth.json` for post-processing tests.

Geometry follows a top-down camera: image x to the right, y down, so for an animal heading along
unit vector h its right side is h rotated by +90 degrees, (-h_y, h_x).
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFilter

from bot.errors import ConfigError

TRUTH_PREFIX = "gtbot-truth:"

MARS_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "right ear",
    "left ear",
    "top of neck",
    "right rear knee",
    "left rear knee",
    "base of tail",
)
MARS_PAIRS: tuple[tuple[str, str], ...] = (
    ("right ear", "left ear"),
    ("right rear knee", "left rear knee"),
)

# Body-frame positions for a 100 px mouse: (forward from body centre, to the animal's right).
_KNOWN_POINTS: dict[str, tuple[float, float]] = {
    "nose": (50.0, 0.0),
    "right eye": (41.0, 6.0),
    "left eye": (41.0, -6.0),
    "right ear": (33.0, 10.0),
    "left ear": (33.0, -10.0),
    "top of neck": (16.0, 0.0),
    "neck": (16.0, 0.0),
    "right front paw": (22.0, 16.0),
    "left front paw": (22.0, -16.0),
    "centre of body": (0.0, 0.0),
    "center of body": (0.0, 0.0),
    "body center": (0.0, 0.0),
    "right rear knee": (-24.0, 14.0),
    "left rear knee": (-24.0, -14.0),
    "right hind paw": (-34.0, 17.0),
    "left hind paw": (-34.0, -17.0),
    "base of tail": (-50.0, 0.0),
    "tail base": (-50.0, 0.0),
    "middle of tail": (-85.0, 0.0),
    "tip of tail": (-120.0, 0.0),
    "tail tip": (-120.0, 0.0),
    "end of tail": (-120.0, 0.0),
}
_TAIL_FORWARD = -50.0
# Share of frames where the animals are pressed together (see `draw_frames`). Recordings of
# social behaviour have animals in contact for a good part of the time; a quarter is an
# assumption, not a measurement, and any share can be asked for.
HUDDLE_FRACTION = 0.25


@dataclass(frozen=True)
class _Pose:
    x: float
    y: float
    heading: float
    bend: float
    scale: float

    def to_image(self, forward: float, right: float) -> tuple[float, float]:
        """Body frame -> image; the spine curves smoothly, nose end by +bend/2, tail end -bend/2."""
        angle = self.heading + self.bend * max(-0.5, min(0.5, forward / 100))
        hx, hy = math.cos(angle), math.sin(angle)
        rx, ry = -hy, hx
        f, r = forward * self.scale, right * self.scale
        return self.x + f * hx + r * rx, self.y + f * hy + r * ry


def _body_position(keypoint: str) -> tuple[float, float]:
    """Known anatomy, else a stable spot on the body; 'left'/'right' words mirror each other."""
    if keypoint in _KNOWN_POINTS:
        return _KNOWN_POINTS[keypoint]
    words = keypoint.split()
    side = 1.0 if "right" in words else -1.0 if "left" in words else 0.0
    neutral = " ".join(word for word in words if word not in ("left", "right"))
    digest = zlib.crc32(neutral.encode())
    forward = -40.0 + (digest % 81)
    return forward, side * (8.0 + (digest >> 8) % 8)


def _colour(animal: str, rng: random.Random) -> tuple[int, int, int]:
    known = {"black": (28, 28, 30), "white": (238, 236, 228), "brown": (120, 80, 50)}
    if animal in known:
        return known[animal]
    try:
        rgb = ImageColor.getrgb(animal)
        return rgb[0], rgb[1], rgb[2]
    except ValueError:
        return rng.randrange(40, 220), rng.randrange(40, 220), rng.randrange(40, 220)


def _ellipse(
    pose: _Pose, forward: float, a: float, b: float, n: int = 40
) -> list[tuple[float, float]]:
    """An ellipse in the body frame (semi-axes a along the body, b across), as a polygon."""
    return [
        pose.to_image(forward + a * math.cos(t), b * math.sin(t))
        for t in (2 * math.pi * i / n for i in range(n))
    ]


def _draw_mouse(draw: ImageDraw.ImageDraw, pose: _Pose, colour: tuple[int, int, int]) -> None:
    dark = tuple(max(0, c - 40) for c in colour)
    pink = (230, 170, 170)
    ear_colour = pink if sum(colour) > 400 else (70, 60, 60)
    tail = [pose.to_image(_TAIL_FORWARD - 8 * i, 6 * math.sin(i / 2.5)) for i in range(12)]
    draw.line(
        tail, fill=pink if sum(colour) > 400 else (90, 80, 80), width=max(2, int(4 * pose.scale))
    )
    draw.polygon(_ellipse(pose, -16.0, 36.0, 21.0), fill=colour, outline=dark)
    draw.polygon(_ellipse(pose, 32.0, 20.0, 13.0), fill=colour, outline=dark)
    for side in (-1.0, 1.0):
        ex, ey = pose.to_image(33.0, 10.0 * side)
        radius = 6.5 * pose.scale
        draw.ellipse(
            (ex - radius, ey - radius, ex + radius, ey + radius), fill=ear_colour, outline=dark
        )
        eye_x, eye_y = pose.to_image(41.0, 5.0 * side)
        draw.ellipse((eye_x - 1.5, eye_y - 1.5, eye_x + 1.5, eye_y + 1.5), fill=(10, 10, 10))


def _place(
    rng: random.Random, count: int, width: int, height: int, margin: float, separation: float
) -> list[tuple[float, float]]:
    """Centres far enough apart that animals rarely overlap; relaxes if the arena is crowded."""
    centres: list[tuple[float, float]] = []
    for _ in range(count):
        for attempt in range(200):
            x = rng.uniform(margin, width - margin)
            y = rng.uniform(margin, height - margin)
            needed = separation * (1 - attempt / 200)
            if all(math.hypot(x - cx, y - cy) >= needed for cx, cy in centres):
                break
        centres.append((x, y))
    return centres


def _arena(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Grey bedding with speckle, inside darker walls: enough texture to look like a frame."""
    base = np.full((height, width, 3), (92, 86, 78), dtype=np.int16)
    inset = int(min(width, height) * 0.04)
    base[inset : height - inset, inset : width - inset] = (150, 142, 128)
    noise = rng.normal(0, 9, size=(height, width, 1)).astype(np.int16)
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    return image.filter(ImageFilter.GaussianBlur(0.8))


def _frame_truth(poses: dict[str, _Pose], keypoints: Sequence[str]) -> dict[str, list[list[float]]]:
    return {
        animal: [
            [round(v, 2) for v in pose.to_image(*_body_position(keypoint))]
            for keypoint in keypoints
        ]
        for animal, pose in poses.items()
    }


def _outline(pose: _Pose) -> list[list[tuple[float, float]]]:
    """The shapes `_draw_mouse` fills opaquely (body, head, ears): what hides whatever lies
    under this animal."""
    ears = [
        [
            (ex + 6.5 * pose.scale * math.cos(t), ey + 6.5 * pose.scale * math.sin(t))
            for t in (2 * math.pi * i / 16 for i in range(16))
        ]
        for ex, ey in (pose.to_image(33.0, 10.0 * side) for side in (-1.0, 1.0))
    ]
    return [_ellipse(pose, -16.0, 36.0, 21.0), _ellipse(pose, 32.0, 20.0, 13.0), *ears]


def _inside(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd rule: whether (x, y) lies inside the polygon."""
    inside = False
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _occluded(
    poses: dict[str, _Pose], truth: dict[str, list[list[float]]]
) -> dict[str, list[bool]]:
    """Per animal and keypoint, whether an animal drawn later (on top) covers the point, so it
    cannot be seen in the frame and a worker can only guess where it is."""
    animals = list(poses)
    covers = {
        animal: [s for later in animals[i + 1 :] for s in _outline(poses[later])]
        for i, animal in enumerate(animals)
    }
    return {
        animal: [any(_inside(x, y, shape) for shape in covers[animal]) for x, y in points]
        for animal, points in truth.items()
    }


def _huddle(
    centres: list[tuple[float, float]],
    rng: random.Random,
    width: int,
    height: int,
    margin: float,
    body: float,
) -> list[tuple[float, float]]:
    """The other animals moved against the first, 0.35 to 0.9 body lengths from it: touching,
    side by side or partly on top, as animals are when they huddle, fight or groom."""
    cx, cy = centres[0]
    out = [centres[0]]
    for _ in centres[1:]:
        distance = rng.uniform(0.35, 0.9) * body
        angle = rng.uniform(-math.pi, math.pi)
        x = min(max(cx + distance * math.cos(angle), margin), width - margin)
        y = min(max(cy + distance * math.sin(angle), margin), height - margin)
        out.append((x, y))
    return out


def draw_frames(
    out_dir: str | Path,
    n: int,
    *,
    species: str = "mouse",
    animals: Sequence[str] = ("black", "white"),
    keypoints: Sequence[str] = MARS_KEYPOINTS,
    pairs: Sequence[Sequence[str]] = MARS_PAIRS,
    width: int = 1024,
    height: int = 570,
    seed: int = 0,
    truth_path: str | Path | None = None,
    huddle_fraction: float = HUDDLE_FRACTION,
) -> list[Path]:
    """Draw `n` frames `frame_000000.jpg`... into `out_dir`, each carrying its truth.

    The truth of all frames also goes to `truth_path` (default: `truth.json` next to `out_dir`,
    i.e. in its parent, so it is not mistaken for a frame to upload), keyed by file name.

    Frames are not all equally hard, as in a real experiment: in a share `huddle_fraction` of
    them the animals are pressed together (0.35-0.9 body lengths apart), and an animal drawn on
    top hides some keypoints of the one under it. The truth marks each keypoint `occluded`
    where it is hidden, and the frame `huddled`; the emulated workers are less sure there (see
    aws/emulator/workforce.py). Frames that are not huddled are the same, for a seed, whatever
    `huddle_fraction` is.
    """
    if n < 0:
        raise ConfigError(f"Cannot draw {n} frames; ask for zero or more.")
    if not animals or not keypoints:
        raise ConfigError("Synthetic frames need at least one animal and one keypoint.")
    if width < 200 or height < 150:
        raise ConfigError(f"A {width}x{height} frame is too small for two animals; use 200x150+.")
    if not 0.0 <= huddle_fraction <= 1.0:
        raise ConfigError(f"huddle_fraction is a share from 0 to 1, got {huddle_fraction}.")
    for pair in pairs:
        if len(pair) != 2 or any(name not in keypoints for name in pair):
            raise ConfigError(
                f"Pair {list(pair)} must name two of the keypoints ({', '.join(keypoints)})."
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    # Huddles come from a generator of their own, so the other frames do not depend on them.
    huddle_rng = random.Random(f"huddle:{seed}")
    noise_rng = np.random.default_rng(seed)
    colours = {animal: _colour(animal, rng) for animal in animals}
    scale = min(width, height) / 570 * 1.1
    reach = 60.0 * scale
    truth_by_file: dict[str, dict[str, list[list[float]]]] = {}
    occluded_by_file: dict[str, dict[str, list[int]]] = {}
    paths: list[Path] = []
    for index in range(n):
        centres = _place(
            rng, len(animals), width, height, margin=reach * 1.6, separation=2.2 * reach
        )
        huddled = len(animals) > 1 and huddle_rng.random() < huddle_fraction
        if huddled:
            centres = _huddle(centres, huddle_rng, width, height, reach * 1.6, 100.0 * scale)
        poses = {
            animal: _Pose(
                x=cx,
                y=cy,
                heading=rng.uniform(-math.pi, math.pi),
                bend=rng.uniform(-0.45, 0.45),
                scale=scale * rng.uniform(0.9, 1.1),
            )
            for animal, (cx, cy) in zip(animals, centres, strict=True)
        }
        image = _arena(width, height, noise_rng)
        draw = ImageDraw.Draw(image)
        for animal, pose in poses.items():
            _draw_mouse(draw, pose, colours[animal])
        truth = _frame_truth(poses, keypoints)
        hidden = _occluded(poses, truth)
        comment = {
            "width": width,
            "height": height,
            "huddled": huddled,
            "keypoints": [
                {"label": f"{animal} {species} {keypoint}", "x": x, "y": y}
                | ({"occluded": True} if hidden[animal][k] else {})
                for animal, points in truth.items()
                for k, (keypoint, (x, y)) in enumerate(zip(keypoints, points, strict=True))
            ],
            "pairs": [
                [f"{animal} {species} {a}", f"{animal} {species} {b}"]
                for animal in animals
                for a, b in pairs
            ],
            "animals": [
                [f"{animal} {species} {keypoint}" for keypoint in keypoints] for animal in animals
            ],
        }
        path = out / f"frame_{index:06d}.jpg"
        image.save(path, "JPEG", quality=88, comment=(TRUTH_PREFIX + json.dumps(comment)).encode())
        truth_by_file[path.name] = truth
        occluded_by_file[path.name] = {
            animal: [k for k, hid in enumerate(flags) if hid] for animal, flags in hidden.items()
        }
        paths.append(path)
    truth_file = Path(truth_path) if truth_path is not None else out.parent / "truth.json"
    truth_file.parent.mkdir(parents=True, exist_ok=True)
    truth_file.write_text(
        json.dumps(
            {
                "width": width,
                "height": height,
                "animals": list(animals),
                "species": species,
                "keypoints": list(keypoints),
                "pairs": [list(pair) for pair in pairs],
                "truth": truth_by_file,
                "occluded": occluded_by_file,
            }
        )
    )
    return paths


def read_truth(image_path: str | Path) -> dict[str, Any] | None:
    """The truth a frame carries, or None for a frame without one (a real camera frame)."""
    with Image.open(image_path) as image:
        comment = image.info.get("comment")
    if not isinstance(comment, bytes | str):
        return None
    text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
    if not text.startswith(TRUTH_PREFIX):
        return None
    data: dict[str, Any] = json.loads(text[len(TRUTH_PREFIX) :])
    return data

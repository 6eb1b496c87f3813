"""What a video reader hands back, the thumbnails near-duplicates are compared on, and the
error for a file that is not a readable video."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

THUMB_SIDE = 64


class DecodedFrame(Protocol):
    index: int
    timestamp_s: float

    def thumb(self) -> NDArray[np.float32]: ...

    def image(self) -> Image.Image: ...


class VideoReader(Protocol):
    frame_count: int
    declared_count: bool

    def read(self, index: int) -> DecodedFrame | None: ...

    def close(self) -> None: ...


class VideoUnreadable(Exception):
    """The file cannot be opened or parsed as a video."""


def thumb_from_file(path: Path) -> NDArray[np.float32]:
    with Image.open(path) as im:
        im.draft("L", (THUMB_SIDE * 2, THUMB_SIDE * 2))
        return thumb_from_image(im)


def thumb_from_image(im: Image.Image) -> NDArray[np.float32]:
    small = im.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def short_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."

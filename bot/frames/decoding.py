"""What a video reader hands back, the thumbnails near-duplicates are compared on, and the
error for a file that is not a readable video."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

_THUMB = 64


class _Decoded(Protocol):
    index: int
    timestamp_s: float

    def thumb(self) -> NDArray[np.float32]: ...

    def image(self) -> Image.Image: ...


class _Reader(Protocol):
    frame_count: int
    declared_count: bool

    def read(self, index: int) -> _Decoded | None: ...

    def close(self) -> None: ...


class _VideoUnreadable(Exception):
    """The file cannot be opened or parsed as a video."""


def _thumb_from_file(path: Path) -> NDArray[np.float32]:
    with Image.open(path) as im:
        im.draft("L", (_THUMB * 2, _THUMB * 2))
        return _thumb_from_image(im)


def _thumb_from_image(im: Image.Image) -> NDArray[np.float32]:
    small = im.convert("L").resize((_THUMB, _THUMB), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."

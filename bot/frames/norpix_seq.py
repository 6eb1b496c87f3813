"""Norpix StreamPix .seq reader: FFmpeg has no demuxer for MARS's capture format."""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bot.frames.decoding import THUMB_SIDE, VideoUnreadable, short_error, thumb_from_image

_SEQ_MAGIC = 0xFEED
_SEQ_RAW_FORMATS = {100: "L", 200: "BGR"}
_SEQ_JPEG_FORMATS = {102, 201}


@dataclass
class NorpixSeqFrame:
    index: int
    timestamp_s: float
    data: bytes
    mode: str
    size: tuple[int, int]

    def _open(self, draft: bool) -> Image.Image:
        if self.mode == "JPEG":
            im = Image.open(io.BytesIO(self.data))
            if draft:
                im.draft("L", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            im.load()
            return im
        if self.mode == "BGR":
            arr = np.frombuffer(self.data, np.uint8).reshape(self.size[1], self.size[0], 3)
            return Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1]), "RGB")
        return Image.frombytes("L", self.size, self.data)

    def thumb(self) -> NDArray[np.float32]:
        return thumb_from_image(self._open(draft=True))

    def image(self) -> Image.Image:
        return self._open(draft=False)


class NorpixSeqReader:
    """Norpix StreamPix `.seq`: a header (1024 bytes, 8192 from version 5) then frames.

    Raw frames (8-bit mono, 24-bit BGR) sit at fixed offsets `true_image_size` apart. JPEG frames
    (as MARS records them) are `uint32 size` + JPEG bytes (`size` counts its own 4 bytes) followed
    by an 8-byte timestamp; each offset is checked against the JPEG start marker, and a small
    forward search absorbs padding some StreamPix versions add, so a damaged index stops cleanly.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._fh = path.open("rb")
        except OSError as exc:
            raise VideoUnreadable(f"cannot be read ({short_error(exc)})") from exc
        try:
            self._parse_header(path)
        except (struct.error, OSError) as exc:
            self._fh.close()
            raise VideoUnreadable(f"has a damaged Norpix .seq header ({short_error(exc)})") from exc
        except VideoUnreadable:
            self._fh.close()
            raise

    def _parse_header(self, path: Path) -> None:
        head = self._fh.read(1024)
        if len(head) < 620:
            raise VideoUnreadable("is too short to be a Norpix .seq file")
        (magic,) = struct.unpack_from("<I", head, 0)
        if magic != _SEQ_MAGIC:
            raise VideoUnreadable("is not a Norpix .seq file (bad magic number)")
        version, header_size = struct.unpack_from("<ii", head, 28)
        width, height, bit_depth, _real, image_bytes, image_format, allocated = struct.unpack_from(
            "<7I", head, 548
        )
        _origin, true_size = struct.unpack_from("<II", head, 576)
        (fps,) = struct.unpack_from("<d", head, 584)
        if header_size <= 0:
            header_size = 8192 if version >= 5 else 1024
        self._size = (int(width), int(height))
        self._fps = fps if math.isfinite(fps) and fps > 0 else 0.0
        self._ts_len = 8 if version >= 5 else 6
        self._file_size = path.stat().st_size
        self.declared_count = allocated > 0
        if image_format in _SEQ_RAW_FORMATS:
            self._mode = _SEQ_RAW_FORMATS[image_format]
            depth = 8 if self._mode == "L" else 24
            if bit_depth != depth or image_bytes != width * height * depth // 8:
                raise VideoUnreadable(
                    f"uses {bit_depth}-bit raw frames; only 8-bit mono and 24-bit BGR raw "
                    "frames are supported (export the sequence as JPEG .seq or .avi in StreamPix)"
                )
            self._image_bytes = int(image_bytes)
            self._block = int(true_size) or int(image_bytes) + self._ts_len
            self._offsets: list[int] = []
            readable = max(0, (self._file_size - header_size) // self._block)
            self._base = header_size
            self.frame_count = min(int(allocated), readable) if allocated else readable
        elif image_format in _SEQ_JPEG_FORMATS:
            self._mode = "JPEG"
            self._base = header_size
            self._offsets = self._index_jpeg(header_size, int(allocated))
            self.frame_count = len(self._offsets)
        else:
            raise VideoUnreadable(
                f"uses Norpix image format {image_format}, which is not supported (raw 8-bit "
                "mono/24-bit BGR and JPEG are); export it as .avi from StreamPix"
            )
        if self.frame_count == 0:
            raise VideoUnreadable("contains no readable frames")

    def _index_jpeg(self, offset: int, allocated: int) -> list[int]:
        offsets: list[int] = []
        limit = allocated if allocated > 0 else 1 << 62
        while len(offsets) < limit and offset + 8 <= self._file_size:
            self._fh.seek(offset)
            head = self._fh.read(6)
            if len(head) < 6 or head[4:6] != b"\xff\xd8":
                found = self._resync(offset)
                if found is None:
                    break
                offset = found
                continue
            (size,) = struct.unpack_from("<I", head, 0)
            if size < 8 or offset + size > self._file_size:
                break
            offsets.append(offset)
            offset += size + self._ts_len
        return offsets

    def _resync(self, offset: int) -> int | None:
        """Look a little ahead for `size` + JPEG start marker (padding between frames)."""
        self._fh.seek(offset)
        window = self._fh.read(1024)
        at = window.find(b"\xff\xd8\xff", 4)
        if at < 4:
            return None
        return offset + at - 4

    def read(self, index: int) -> NorpixSeqFrame | None:
        if index < 0 or index >= self.frame_count:
            return None
        if self._mode == "JPEG":
            start = self._offsets[index]
            self._fh.seek(start)
            (size,) = struct.unpack("<I", self._fh.read(4))
            data = self._fh.read(size - 4)
            stamp = self._fh.read(self._ts_len)
        else:
            start = self._base + index * self._block
            self._fh.seek(start)
            data = self._fh.read(self._image_bytes)
            stamp = self._fh.read(self._ts_len)
            if len(data) < self._image_bytes:
                return None
        seconds = index / self._fps if self._fps else _seq_stamp(stamp) - self._first_stamp()
        return NorpixSeqFrame(index, seconds, data, self._mode, self._size)

    def _first_stamp(self) -> float:
        if self._mode == "JPEG":
            self._fh.seek(self._offsets[0])
            (size,) = struct.unpack("<I", self._fh.read(4))
            self._fh.seek(self._offsets[0] + size)
        else:
            self._fh.seek(self._base + self._image_bytes)
        return _seq_stamp(self._fh.read(self._ts_len))

    def close(self) -> None:
        self._fh.close()


def _seq_stamp(raw: bytes) -> float:
    if len(raw) >= 8:
        secs, ms, us = struct.unpack("<IHH", raw[:8])
        return secs + ms / 1e3 + us / 1e6
    if len(raw) >= 6:
        secs, ms = struct.unpack("<IH", raw[:6])
        return secs + ms / 1e3
    return 0.0

"""Random access by frame number over FFmpeg (PyAV), for every format but Norpix .seq."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.error
import av.video.stream
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bot.frames.decoding import THUMB_SIDE, VideoUnreadable, short_error

_SEQUENTIAL_FORMATS = {"mpeg", "mpegts", "mpegvideo", "h264", "hevc", "m4v"}


@dataclass
class PyAvFrame:
    index: int
    timestamp_s: float
    frame: av.VideoFrame

    def thumb(self) -> NDArray[np.float32]:
        small = self.frame.reformat(
            width=THUMB_SIDE, height=THUMB_SIDE, format="gray", interpolation="AREA"
        )
        return small.to_ndarray().astype(np.float32)

    def image(self) -> Image.Image:
        # to_ndarray + fromarray is several times faster than VideoFrame.to_image at 1080p.
        return Image.fromarray(self.frame.to_ndarray(format="rgb24"), "RGB")


class PyAvReader:
    """Random access by frame number over FFmpeg: seek to the keyframe at or before the target,
    then decode forward; close targets are reached by decoding on instead of seeking again.

    MPEG program/transport streams and raw elementary streams carry timestamps on only some
    packets, so after a seek FFmpeg's guessed timestamps can be a frame off; those are read
    front to back and frames are numbered by counting, which is exact.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._container = self._open()
        try:
            stream = self._container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise VideoUnreadable("has no frame rate (cannot map frame numbers to times)")
            self._rate = Fraction(rate)
            if stream.time_base is None:
                raise VideoUnreadable("has no time base")
            self._tb = Fraction(stream.time_base)
            scale = self._tb * self._rate
            self._scale_num, self._scale_den = scale.numerator, scale.denominator
            self._start = stream.start_time or 0
            formats = set(self._container.format.name.split(","))
            self._sequential = bool(formats & _SEQUENTIAL_FORMATS)
            self.declared_count = bool(stream.frames) and not self._sequential
            if self.declared_count:
                self.frame_count = int(stream.frames)
            else:
                self.frame_count = self._estimate_count()
        except VideoUnreadable:
            self._container.close()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._container.close()
            raise VideoUnreadable(f"cannot be read as a video ({short_error(exc)})") from exc
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next_index: int | None = None
        self._gop = 0

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(str(self._path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoUnreadable(f"cannot be opened as a video ({short_error(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise VideoUnreadable("has no video stream")
        # No codec threads: frame threading refills its pipeline after every seek, which costs
        # more than it gains here; the process pool (and video chunks) use the cores instead.
        return container

    @property
    def _stream(self) -> av.video.stream.VideoStream:
        return self._container.streams.video[0]

    def _estimate_count(self) -> int:
        """Frame count when the header has none: container duration (Matroska, WebM) or, for
        streams without a trustworthy duration, one demux pass (no decoding)."""
        stream = self._stream
        if not self._sequential:
            if stream.duration:
                seconds = Fraction(stream.duration) * self._tb
                return max(1, round(seconds * self._rate))
            if self._container.duration:
                seconds = Fraction(self._container.duration, av.time_base)
                return max(1, round(seconds * self._rate))
        counted = sum(1 for p in self._container.demux(stream) if p.size)
        self._container.close()
        self._container = self._open()
        return counted

    def _index_of(self, frame: av.VideoFrame) -> int:
        if self._sequential:
            return self._next_index or 0
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return self._next_index or 0
        # Integer round-half-up of (pts - start) * time_base * rate: exact, and cheap enough to
        # run for every frame decoded on the way to a target.
        num = (pts - self._start) * self._scale_num
        return (2 * num + self._scale_den) // (2 * self._scale_den)

    def _seek(self, index: int) -> None:
        if self._sequential:
            self._container.close()
            self._container = self._open()
            self._decoder = self._container.decode(self._stream)
            self._next_index = 0
            return
        pts = self._start + int(Fraction(index) / self._rate / self._tb)
        self._container.seek(max(pts, self._start), stream=self._stream, backward=True)
        self._decoder = self._container.decode(self._stream)
        self._next_index = None

    def read(self, index: int) -> PyAvFrame | None:
        ahead = None if self._next_index is None else index - self._next_index
        if self._sequential:
            sought = self._decoder is None or ahead is None or ahead < 0
        else:
            sought = self._decoder is None or ahead is None or ahead < 0 or ahead > self._gop
        if sought:
            self._seek(index)
        for retry in range(4):
            assert self._decoder is not None
            decoded_here = 0
            for frame in self._decoder:
                current = self._index_of(frame)
                decoded_here += 1
                self._next_index = current + 1
                if current < index:
                    continue
                if sought and decoded_here == 1 and current > index > 0 and retry < 3:
                    break  # the seek landed past the target: the container's index is coarse
                if sought:
                    self._gop = max(self._gop, decoded_here)
                if frame.pts is not None and not self._sequential:
                    seconds = float((frame.pts - self._start) * self._tb)
                else:
                    seconds = float(current / self._rate)
                return PyAvFrame(current, max(0.0, seconds), frame)
            else:
                self._decoder = None
                self._next_index = None
                return None
            self._seek(max(0, index - max(16, self._gop) * 2**retry))
        return None

    def close(self) -> None:
        self._container.close()

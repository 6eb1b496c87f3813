"""Consolidating a large local manifest with two processes, for the same files as one.

The manifest is cut into chunks of `batch_lines` lines: exactly the batches the sequential
reader makes (no state crosses a batch). The main process and one child process claim chunks
in turn (`_Claims`: the claimer reads its chunk and leaves where the next one starts) and do
*all* the work a batch alone determines (`BatchWork`: reading and checking, consensus, the
export text, agreement figures, preview candidates). Claiming in turn, not a fixed split,
keeps both cores busy however the machine's load shifts. The child appends its chunks' export
text to a file of its own and sends the rest (a few hundred KB) as a pickle file with a short
pipe message; the main process folds every chunk's result into the outputs strictly in
manifest order, copying the child's text with `copy_file_range`, and reads a chunk of its own
whenever the next one is not ready. So what depends on order (worker numbering, the capped
problem list, the first job name, the file layout) comes out exactly as in one process.

The child is forked when this process runs a single thread (it starts at once, modules loaded)
and `spawn`ed otherwise, because the bot runs threads and forking a threaded process can
deadlock the child. It never sees `fetch` (closures do not cross processes, and the caller's
credentials stay in the caller): a chunk that needs a worker-response file is handed back raw
and read in the main process. Pickles hold only the plain values the child built and are read
from a private temporary folder. Memory stays bounded: each process holds at most `_AHEAD`
chunks the main process has not folded yet.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import shutil
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedReader
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, SpawnContext
from typing import Any

from bot.results.batch import BatchResult, BatchWork
from bot.results.exports import BatchTexts, ResultWriter, Segment, write_all
from bot.results.reader import Fetch, ReadReport, read_chunk
from bot.results.spec import LabelSpec

# Below this many lines the sequential path is used: a second process costs start-up (a few
# tenths of a second when spawned) that a small manifest (tests, Slack flows) would only lose.
PARALLEL_MIN_LINES = 20_000
# Chunks a process may have read ahead of the main process's folding.
_AHEAD = 4
# How often a child waiting for room checks that its parent is still alive, seconds.
_PARENT_CHECK = 1.0
# First read when cutting a chunk; later reads follow the size of the previous chunk.
_FIRST_READ = 1 << 20
_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class LocalManifest:
    """A manifest the second process can open itself: a regular file and where to start."""

    path: str
    offset: int


@dataclass(slots=True)
class _Chunk:
    """One chunk's results (none if no line was usable, several if wide lines were computed
    apart) and its share of the read report (all its problems), to be merged into the
    caller's report in chunk order."""

    index: int
    results: list[BatchResult]
    report: ReadReport


class _FetchNeeded(BaseException):
    """Raised by the child's stand-in `fetch`. A BaseException so that the reader's
    `except Exception` around the caller's fetch cannot turn it into a reported problem."""


def local_manifest(
    lines: object, min_lines: int | None = PARALLEL_MIN_LINES
) -> LocalManifest | None:
    """The file behind `lines` if it is a binary file handle on a regular local file (and, with
    `min_lines`, has at least that many lines left); None means "read it sequentially".

    Only an `open(path, "rb")` handle qualifies: text handles translate newlines and cannot
    report byte offsets, and any other iterable may not be a file at all. The name must still
    lead to the very file that is open (not renamed or replaced since).
    """
    if not isinstance(lines, BufferedReader) or lines.closed:
        return None
    name = lines.name
    if not isinstance(name, str):
        return None
    try:
        fd = lines.fileno()
        opened = os.fstat(fd)
        named = os.stat(name)
        offset = lines.tell()
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
        named.st_dev,
        named.st_ino,
    ):
        return None
    if min_lines is not None and not _has_lines(fd, offset, min_lines):
        return None
    return LocalManifest(os.path.abspath(name), offset)


def _has_lines(fd: int, offset: int, wanted: int) -> bool:
    """Whether about `wanted` lines or more follow `offset`, judged from the first MB's line
    lengths (the threshold is rough anyway: it only decides whether a second process pays off);
    `pread` so the caller's handle does not move."""
    sample = os.pread(fd, _SAMPLE_BYTES, offset)
    lines = sample.count(b"\n")
    if lines >= wanted:
        return True
    if not lines:
        return False
    remaining = os.fstat(fd).st_size - offset
    return lines * remaining >= wanted * len(sample)


def read_lines(fd: int, start: int, count: int, block: int) -> tuple[list[memoryview], int]:
    """The next `count` lines from byte `start` of file descriptor `fd` (fewer at the end),
    each with its newline as iterating the file gives them, and where the line after them
    starts. Reads with `pread`, `block` bytes first and then doubling, finds the newlines with
    `find` (memchr), and hands out views of the bytes read rather than a copy of each line
    (orjson reads a view as it is)."""
    data = b""
    ends: list[int] = []
    while len(ends) < count:
        more = os.pread(fd, max(block, len(data)), start + len(data))
        if not more:
            break
        cut = len(data)
        data += more
        find = data.find
        cut = find(b"\n", cut)
        while cut >= 0:
            ends.append(cut + 1)
            if len(ends) == count:
                break
            cut = find(b"\n", cut + 1)
    if len(ends) < count and data and (not ends or ends[-1] != len(data)):
        ends.append(len(data))  # a last line without a newline
    # Views into what was read (bytes past the chunk included, unused): no copy of the chunk.
    view = memoryview(data)
    return [view[a:b] for a, b in zip([0, *ends], ends, strict=False)], start + (
        ends[-1] if ends else 0
    )


class _Claims:
    """Which chunk each process reads next. Chunk i is the `batch_lines` lines after chunk
    i - 1, so its start is only known once chunk i - 1 was cut: the claimer cuts its own chunk
    (reads it and finds its last newline, a millisecond) while holding the lock, and leaves
    where the next one starts. No pass over the whole file before the work starts."""

    def __init__(self, ctx: Any, start: int) -> None:
        self.index = ctx.Value("q", 0)
        self.offset = ctx.Value("q", start)
        self.block = _FIRST_READ  # per process: a little more than the last chunk took

    def claim(self, fd: int, batch_lines: int) -> tuple[int, list[memoryview]]:
        """The next chunk's index and lines (no lines past the end of the manifest)."""
        with self.index.get_lock():
            index = int(self.index.value)
            start = int(self.offset.value)
            lines, end = read_lines(fd, start, batch_lines, self.block)
            self.index.value = index + 1
            self.offset.value = end
        self.block = max(_FIRST_READ, (end - start) * 9 // 8)
        return index, lines


def _read(
    index: int,
    lines: list[bytes] | list[memoryview],
    batch_lines: int,
    spec: LabelSpec,
    fetch: Fetch,
    label_attribute: str | None,
    work: BatchWork,
) -> _Chunk:
    report = ReadReport(limit=None)
    batches = read_chunk(
        lines,
        index * batch_lines + 1,
        spec,
        fetch=fetch,
        report=report,
        label_attribute=label_attribute,
    )
    return _Chunk(index, [work(batch) for batch in batches], report)


def _no_fetch(uri: str) -> bytes:
    raise _FetchNeeded(uri)


class _TextFile:
    """The child's export text: appended chunk after chunk; the main process copies pieces.
    Open until the child exits."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self._size = 0

    def put(self, texts: BatchTexts) -> BatchTexts:
        segments = []
        for text in texts.streams():
            if not isinstance(text, bytes):
                raise TypeError("a batch's own texts are bytes")
            write_all(self._file, text)
            segments.append(Segment(0, self._size, len(text)))
            self._size += len(text)
        return BatchTexts(*segments)


def _child(
    conn: Connection,
    claims: _Claims,
    room: Any,
    manifest: LocalManifest,
    folder: str,
    spec: LabelSpec,
    label_attribute: str | None,
    batch_lines: int,
    dlc_folder: str,
    consensus: str = "median",
) -> None:
    """The second process: claim, read and send chunks until the manifest ends. Any failure is
    sent as text so the parent can raise it; the parent never evaluates what it receives
    beyond unpickling the plain values this function built."""
    parent = multiprocessing.parent_process()
    try:
        work = BatchWork(spec, dlc_folder, consensus)
        texts = _TextFile(_text_path(folder))
        fd = os.open(manifest.path, os.O_RDONLY)
        while True:
            while not room.acquire(timeout=_PARENT_CHECK):
                if parent is not None and not parent.is_alive():
                    return
            index, lines = claims.claim(fd, batch_lines)
            if not lines:
                conn.send(("end", index, None))
                return
            try:
                chunk = _read(index, lines, batch_lines, spec, _no_fetch, label_attribute, work)
            except _FetchNeeded:
                _post(conn, folder, "fetch", index, [line.tobytes() for line in lines])
                continue
            chunk.results = [
                BatchResult(
                    texts.put(result.texts), result.agreement, result.preview, result.frames
                )
                for result in chunk.results
            ]
            _post(conn, folder, "chunk", index, chunk)
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", -1, traceback.format_exc()))
    finally:
        conn.close()


class _Inbox:
    """The child's chunks. Each arrives as a file in a private temporary folder, announced by a
    short pipe message, so the child never waits on a pipe while the main process is busy."""

    def __init__(self, conn: Connection, folder: str) -> None:
        self._conn = conn
        self._folder = folder
        self._kinds: dict[int, str] = {}
        self.end: int | None = None

    def _receive(self) -> None:
        try:
            kind, index, text = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(
                f"the consolidation reader process ended unexpectedly ({exc!r})"
            ) from exc
        if kind == "error":
            raise RuntimeError(f"the consolidation reader process failed:\n{text}")
        if kind == "end":
            self.end = index
        else:
            self._kinds[index] = kind

    def take(self, index: int) -> _Chunk | list[bytes] | None:
        """Chunk `index` (or, if it needs `fetch`, its raw lines) if it has arrived."""
        while self.end is None and index not in self._kinds and self._conn.poll():
            self._receive()
        if self._kinds.pop(index, None) is None:
            return None
        path = _chunk_path(self._folder, index)
        with open(path, "rb") as source:
            payload: _Chunk | list[bytes] = pickle.load(source)
        os.unlink(path)
        return payload

    def wait(self, index: int) -> None:
        """Block until chunk `index` has arrived; raise if the child failed."""
        while index not in self._kinds:
            if self.end is not None:
                # The child sends its chunks in order: after its end a chunk cannot come.
                raise RuntimeError(f"the consolidation reader process lost chunk {index}")
            self._receive()


def _chunk_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"chunk-{index}.pickle")


def _text_path(folder: str) -> str:
    return os.path.join(folder, "texts")


def _post(conn: Connection, folder: str, kind: str, index: int, payload: object) -> None:
    with open(_chunk_path(folder, index), "wb") as out:
        pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
    conn.send((kind, index, None))


def parallel_results(
    manifest: LocalManifest,
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None,
    batch_lines: int,
    writer: ResultWriter,
    dlc_folder: str,
    consensus: str = "median",
) -> Iterator[BatchResult]:
    """Every usable batch's result, in manifest order, computed by this process and one
    child; the child's export text is a `Segment` of a file registered with `writer`.
    `report` ends exactly as the sequential read leaves it."""
    ctx = _context()
    claims = _Claims(ctx, manifest.offset)
    room = ctx.Semaphore(_AHEAD)
    receiving, sending = ctx.Pipe(duplex=False)
    folder = tempfile.mkdtemp(prefix="gtbot-consolidate-")
    process = ctx.Process(
        target=_child,
        args=(
            sending,
            claims,
            room,
            manifest,
            folder,
            spec,
            label_attribute,
            batch_lines,
            dlc_folder,
            consensus,
        ),
        name="gtbot-consolidate-reader",
        daemon=True,
    )
    with _main_module_hidden():
        process.start()
    sending.close()
    fd = os.open(manifest.path, os.O_RDONLY)
    finished = False
    try:
        work = BatchWork(spec, dlc_folder, consensus)
        inbox = _Inbox(receiving, folder)
        source: int | None = None
        own: dict[int, _Chunk] = {}
        own_end: int | None = None
        position = 0
        while True:
            chunk = own.pop(position, None)
            if chunk is None:
                received = inbox.take(position)
                if received is not None:
                    room.release()
                    if isinstance(received, list):
                        chunk = _read(
                            position,
                            received,
                            batch_lines,
                            spec,
                            fetch,
                            label_attribute,
                            work,
                        )
                    else:
                        chunk = received
                        if chunk.results:
                            if source is None:
                                source = writer.add_source(_text_path(folder))
                            chunk.results = [_from_source(r, source) for r in chunk.results]
            if chunk is not None:
                # Problems reach the report (and its sink) in line order, as in one process.
                report.merge(chunk.report)
                yield from chunk.results
                position += 1
                continue
            ends = [end for end in (own_end, inbox.end) if end is not None]
            if ends and position >= min(ends):
                break
            if own_end is None and len(own) < _AHEAD:
                # Nothing to fold yet: read a chunk here rather than wait for the child.
                index, lines = claims.claim(fd, batch_lines)
                if lines:
                    own[index] = _read(
                        index, lines, batch_lines, spec, fetch, label_attribute, work
                    )
                else:
                    own_end = index
                continue
            inbox.wait(position)
        finished = True
    finally:
        os.close(fd)
        if finished:
            # Past the end the child only claims an empty chunk and says so; let it.
            process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)
        receiving.close()
        shutil.rmtree(folder, ignore_errors=True)


def _context() -> ForkContext | SpawnContext:
    """`fork` when this process runs a single thread: the child starts at once with every
    module loaded (a `spawn`ed one spends about 0.2 s importing numpy and the reader before its
    first chunk). With other threads running (the bot serving Slack) a fork could copy a lock
    another thread holds, so the child is `spawn`ed instead."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a `spawn`ed child without it re-running the parent's `__main__` module.

    `spawn` re-imports the main script in the child so that pickled references to it resolve;
    the child here only runs `_child` with plain arguments, and re-importing the `gtbot`
    console script pulls in the whole bot (about 0.6 s before the child reads a line).
    multiprocessing skips that step for a main module without `__spec__` and `__file__`
    (as in an interactive session), so both are hidden while the child starts.
    """
    main = sys.modules.get("__main__")
    saved = {
        name: main.__dict__.pop(name) for name in ("__file__",) if main and name in main.__dict__
    }
    spec = getattr(main, "__spec__", None)
    if main is not None:
        main.__spec__ = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)
            main.__spec__ = spec


def _from_source(result: BatchResult, source: int) -> BatchResult:
    """The child's segments, pointed at the file number the writer gave its text file."""
    texts = result.texts
    segments = []
    for text in texts.streams():
        if not isinstance(text, Segment):
            raise TypeError("the child's texts are segments of its file")
        segments.append(Segment(source, text.offset, text.length))
    return BatchResult(BatchTexts(*segments), result.agreement, result.preview, result.frames)

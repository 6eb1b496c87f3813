"""Read a large local manifest with two processes; the writers still see one ordered stream.

Reading (JSON, checks, assembling the arrays) and the consensus are about 70 % of a
consolidation and one Python thread cannot go faster, so a second process takes part of it.
The manifest is cut into chunks of `batch_lines` lines, exactly the batches the sequential
reader makes (no state crosses a batch), and both processes claim chunks from a shared counter:
each reads and computes the consensus of the chunks it claimed, skipping the others' lines, and
the child also encodes its chunks' CSV rows and MARS records (they depend on the batch alone).
The main process also feeds every batch, in chunk order, to the agreement figures, the writers
and the preview picker, so everything order-dependent (worker numbering, the float sums of
seconds, ids in the exports, the first job name, the capped problem list) comes out exactly as
in one process. Claiming from a counter, not a fixed split, keeps both cores busy however the
machine's load shifts: the main process reads a chunk whenever it has nothing to write yet.

The child is started with `spawn`, because the bot runs threads and forking a threaded process
can deadlock the child. It never sees `fetch` (closures do not cross processes, and the caller's
credentials stay in the caller): a chunk that needs a worker-response file is handed back raw
and read in the main process. Chunks travel as pickle files in a private temporary folder (see
`_Inbox`), never evaluated: they hold only the plain values the reader built. Memory stays
bounded: each process holds at most `_AHEAD` chunks that the writers have not consumed yet.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import shutil
import stat
import tempfile
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedReader
from itertools import islice
from multiprocessing.connection import Connection
from typing import Any

from bot.results.consensus import BatchConsensus, consensus_batch
from bot.results.exports import CsvRows, MarsRecords
from bot.results.reader import Fetch, FrameBatch, Problem, ReadReport, read_chunk
from bot.results.spec import LabelSpec

# Below this many lines the sequential path is used: starting a `spawn`ed Python with numpy
# costs a few tenths of a second, which a small manifest (tests, Slack flows) would only lose.
PARALLEL_MIN_LINES = 20_000
# Chunks a process may have read ahead of the writers; bounds memory (a 1,024-frame chunk with
# its consensus is about 6 MB) while letting either process run ahead of a slow moment.
_AHEAD = 4
# How often a child waiting for room checks that its parent is still alive, seconds.
_PARENT_CHECK = 1.0
_COUNT_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class LocalManifest:
    """A manifest the second process can open itself: a regular file and where to start."""

    path: str
    offset: int


@dataclass(slots=True)
class _Chunk:
    """One chunk's batch (None if no line was usable), its consensus and its share of the
    read report, to be merged into the caller's report in chunk order."""

    index: int
    batch: FrameBatch | None
    consensus: BatchConsensus | None
    problems: list[Problem]
    problem_count: int
    frames: int
    frames_skipped: int
    job_name: str | None
    last_line: int
    # The batch's CSV rows and MARS records when the child encoded them (the main process
    # encodes its own chunks while writing).
    encoded: Encoded | None


# A batch's CSV rows and MARS records, encoded by the child.
Encoded = tuple[bytes, bytes]


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
    """Whether at least `wanted` lines follow `offset` (a last line without a newline is not
    counted; the threshold is rough anyway); reads only as far as needed, with `pread` so the
    caller's handle does not move."""
    seen = 0
    while seen < wanted:
        block = os.pread(fd, _COUNT_BLOCK, offset)
        if not block:
            return False
        seen += block.count(b"\n")
        offset += len(block)
    return True


class _Cursor:
    """Forward-only access to chunk `index` of the manifest: the lines of chunks claimed by the
    other process are read past, which costs far less than parsing them."""

    def __init__(self, manifest: LocalManifest, batch_lines: int) -> None:
        self._handle = open(manifest.path, "rb")  # noqa: SIM115 - closed by close()
        self._handle.seek(manifest.offset)
        self._batch_lines = batch_lines
        self._next = 0

    def take(self, index: int) -> list[bytes]:
        """The lines of chunk `index` (empty past the end); chunks must be asked in order."""
        skip = (index - self._next) * self._batch_lines
        if skip:
            deque(islice(self._handle, skip), maxlen=0)
        self._next = index + 1
        return list(islice(self._handle, self._batch_lines))

    def close(self) -> None:
        self._handle.close()


def _claim(counter: Any) -> int:
    with counter.get_lock():
        index = int(counter.value)
        counter.value = index + 1
    return index


def _read(
    index: int,
    lines: list[bytes],
    batch_lines: int,
    spec: LabelSpec,
    fetch: Fetch,
    label_attribute: str | None,
    limit: int,
    encoders: tuple[CsvRows, MarsRecords] | None = None,
) -> _Chunk:
    report = ReadReport(limit=limit)
    batch = read_chunk(
        lines,
        index * batch_lines + 1,
        spec,
        fetch=fetch,
        report=report,
        label_attribute=label_attribute,
    )
    consensus = None if batch is None else consensus_batch(batch.coords, spec)
    encoded = None
    if encoders is not None and batch is not None and consensus is not None:
        rows, records = encoders
        encoded = (rows.encode(batch, consensus), records.encode(batch, consensus))
    return _Chunk(
        index,
        batch,
        consensus,
        report.problems,
        report.problem_count,
        report.frames,
        report.frames_skipped,
        report.job_name,
        report.lines,
        encoded,
    )


def _merge(report: ReadReport, chunk: _Chunk) -> None:
    """Fold a chunk's report into the caller's as if its lines had been read there: problems
    in line order up to the cap, counts in full, the first job name kept."""
    room = report.limit - len(report.problems)
    if room > 0:
        report.problems.extend(chunk.problems[:room])
    report.problem_count += chunk.problem_count
    report.frames += chunk.frames
    report.frames_skipped += chunk.frames_skipped
    report.lines = max(report.lines, chunk.last_line)
    if report.job_name is None:
        report.job_name = chunk.job_name


def _no_fetch(uri: str) -> bytes:
    raise _FetchNeeded(uri)


def _child(
    conn: Connection,
    counter: Any,
    room: Any,
    manifest: LocalManifest,
    folder: str,
    spec: LabelSpec,
    label_attribute: str | None,
    batch_lines: int,
    limit: int,
) -> None:
    """The second process: claim, read and send chunks until the manifest ends. Any failure is
    sent as text so the parent can raise it; the parent never evaluates what it receives
    beyond unpickling the plain values this function built."""
    parent = multiprocessing.parent_process()
    try:
        encoders = (CsvRows(spec), MarsRecords(spec))
        cursor = _Cursor(manifest, batch_lines)
        while True:
            while not room.acquire(timeout=_PARENT_CHECK):
                if parent is not None and not parent.is_alive():
                    return
            index = _claim(counter)
            lines = cursor.take(index)
            if not lines:
                conn.send(("end", index, None))
                return
            try:
                chunk = _read(
                    index, lines, batch_lines, spec, _no_fetch, label_attribute, limit, encoders
                )
            except _FetchNeeded:
                _post(conn, folder, "fetch", index, lines)
                continue
            _post(conn, folder, "chunk", index, chunk)
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", -1, traceback.format_exc()))
    finally:
        conn.close()


class _Inbox:
    """The child's chunks. Each arrives as a file in a private temporary folder, announced by a
    short pipe message: a pipe moves 64 KB at a time, and a main process busy writing (holding
    the GIL) made the child wait on every piece of a ~10 MB chunk, about a fifth of its time."""

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


def _post(conn: Connection, folder: str, kind: str, index: int, payload: object) -> None:
    with open(_chunk_path(folder, index), "wb") as out:
        pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
    conn.send((kind, index, None))


def parallel_batches(
    manifest: LocalManifest,
    spec: LabelSpec,
    *,
    fetch: Fetch,
    report: ReadReport,
    label_attribute: str | None,
    batch_lines: int,
) -> Iterator[tuple[FrameBatch, BatchConsensus, Encoded | None]]:
    """Every usable batch of the manifest with its consensus (and, for the child's, its CSV
    rows and MARS records), in manifest order, read by this process and one `spawn`ed child;
    `report` ends exactly as the sequential read leaves it."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    room = ctx.Semaphore(_AHEAD)
    receiving, sending = ctx.Pipe(duplex=False)
    folder = tempfile.mkdtemp(prefix="gtbot-consolidate-")
    process = ctx.Process(
        target=_child,
        args=(
            sending,
            counter,
            room,
            manifest,
            folder,
            spec,
            label_attribute,
            batch_lines,
            report.limit,
        ),
        name="gtbot-consolidate-reader",
        daemon=True,
    )
    process.start()
    sending.close()
    inbox = _Inbox(receiving, folder)
    cursor = _Cursor(manifest, batch_lines)
    own: dict[int, _Chunk] = {}
    own_end: int | None = None
    position = 0
    finished = False
    try:
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
                            report.limit,
                        )
                    else:
                        chunk = received
            if chunk is not None:
                _merge(report, chunk)
                if chunk.batch is not None and chunk.consensus is not None:
                    yield chunk.batch, chunk.consensus, chunk.encoded
                position += 1
                continue
            ends = [end for end in (own_end, inbox.end) if end is not None]
            if ends and position >= min(ends):
                break
            if own_end is None and len(own) < _AHEAD:
                # Nothing to write yet: read a chunk here rather than wait for the child.
                index = _claim(counter)
                lines = cursor.take(index)
                if lines:
                    own[index] = _read(
                        index, lines, batch_lines, spec, fetch, label_attribute, report.limit
                    )
                else:
                    own_end = index
                continue
            inbox.wait(position)
        finished = True
    finally:
        cursor.close()
        if finished:
            # Past the end the child only claims an empty chunk and says so; let it.
            process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)
        receiving.close()
        shutil.rmtree(folder, ignore_errors=True)

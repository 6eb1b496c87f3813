"""Two lanes of work, so that a quick answer never waits behind a long job.

Slack waits 3 seconds for an ack and nothing after it, so every request is acknowledged on its
own HTTP thread and its work handed to a lane: the quick lane (help, status, jobs, watch,
doctor, buttons) has many threads, because its work mostly waits on AWS; the long lane (upload,
frames, submit, results, consolidate, template, and the consolidation of a finished job) has as
many as GTBOT_LONG_JOBS allows, because its work also uses the processor and the network. Bolt's
lazy listeners shared one pool of 5 threads between both: 30 `/gt status` with AWS answering in
2 s kept a `/gt help` waiting 12.6 s.

A piece of work queued behind others is told how many are ahead of it, and told again each time
the queue moves. When gtbot stops, work still queued is handed back (told it will not run) and
work still running after the deadline is told it was interrupted: the process cannot end a
thread, but it can say so before it exits. Worker threads are daemons, so a stuck AWS call
cannot keep a stopping process alive.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bot.errors import GtBotError

log = logging.getLogger("gtbot.lanes")

# The quick lane: commands that wait on AWS for a second or two each. Threads that wait cost
# little memory and no processor, so this is sized for a busy lab (30 `status` at once leave
# room for a `help`), not for the 2 cores.
QUICK_WORKERS = 64
QUICK_WAITING = 500
# Long commands waiting for a slot: beyond this, a new one is refused with "busy".
LONG_WAITING = 50
# Acks first: a lane starts its next piece of work once no request has been in its ack for
# ACK_QUIET_SECONDS, or after ACK_DEFER_SECONDS at most (a steady stream cannot starve it).
ACK_QUIET_SECONDS = 0.05
ACK_DEFER_SECONDS = 0.5


class LaneFullError(GtBotError):
    """Too much work is already waiting: say so rather than queue without end."""


@dataclass
class _Work:
    run: Callable[[], None]
    name: str
    abandon: Callable[[str], None] | None
    moved: Callable[[int], None] | None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


@dataclass(frozen=True)
class Stopped:
    """What a lane's stop left undone: work handed back unstarted, and work interrupted."""

    handed_back: tuple[str, ...] = ()
    interrupted: tuple[str, ...] = ()


class AckGate:
    """Acks before work. Python runs one thread at a time: 30 `/gt status` sent at once start
    30 pieces of work that would share the processor with the 29 acks still to send (measured:
    p99 of a burst's acks 10x a bare Bolt app's). Work waits for a lull in the acks instead;
    Slack waits 3 s for an ack, and a person does not notice 50 ms more for an answer."""

    def __init__(
        self, quiet: float = ACK_QUIET_SECONDS, longest: float = ACK_DEFER_SECONDS
    ) -> None:
        self.quiet = quiet
        self.longest = longest
        self._acking = 0
        self._last = 0.0
        self._lock = threading.Lock()

    @contextmanager
    def acking(self) -> Iterator[None]:
        """Around a request's ack (the HTTP edge, the Socket Mode listener)."""
        with self._lock:
            self._acking += 1
        try:
            yield
        finally:
            with self._lock:
                self._acking -= 1
                self._last = time.monotonic()

    def wait(self) -> None:
        """Until no ack is in progress or just ended; polled, so that acks pay no wake-ups."""
        until = time.monotonic() + self.longest
        while True:
            now = time.monotonic()
            with self._lock:
                busy = self._acking > 0 or now - self._last < self.quiet
            if not busy or now >= until:
                return
            time.sleep(min(self.quiet, until - now))


class Lane:
    """A bounded pool of daemon threads with a FIFO queue that knows each item's place."""

    def __init__(
        self, name: str, workers: int, max_waiting: int, gate: AckGate | None = None
    ) -> None:
        if workers < 1:
            raise ValueError("a lane needs at least one worker")
        self.name = name
        self.gate = gate
        self.workers = workers
        self.max_waiting = max_waiting
        self._queue: deque[_Work] = deque()
        self._running: list[_Work] = []
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._stopping = False
        self._cond = threading.Condition()

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(
        self,
        run: Callable[[], None],
        *,
        name: str = "",
        abandon: Callable[[str], None] | None = None,
        moved: Callable[[int], None] | None = None,
    ) -> int:
        """Queue `run` (it runs in the caller's context: trace id, user, command) and return
        how many pieces of work are ahead of it: 0 when a thread takes it now.

        `abandon(reason)` is called instead of, or during, `run` when the lane stops first;
        `moved(ahead)` each time work ahead of it starts. Raises LaneFullError when
        `max_waiting` pieces already wait."""
        work = _Work(run, name or getattr(run, "__name__", "work"), abandon, moved)
        with self._cond:
            if self._stopping:
                raise LaneFullError("gtbot is restarting. Run the command again in a minute.")
            # Every thread not running work (idle, just started, or not yet made) takes the
            # queue's next item, so whatever is beyond them waits.
            free = self.workers - len(self._running)
            if len(self._queue) >= self.max_waiting and free <= len(self._queue):
                raise LaneFullError(
                    f"gtbot is busy: {len(self._queue)} {self.name} commands are already "
                    "waiting. Try again in a few minutes."
                )
            self._queue.append(work)
            ahead = max(0, len(self._queue) - free)
            # `_idle` counts waiting threads, woken or not, until they take the lock again:
            # wake one per queued item (a woken thread that finds nothing waits again), and
            # start a thread when the queue is longer than the threads that will wake for it.
            self._cond.notify(len(self._queue))
            thread = None
            if len(self._queue) > self._idle and len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._worker,
                    name=f"gtbot-{self.name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(thread)
        # Started outside the lock: start() waits until the new thread runs, which on a loaded
        # machine can take long, and other requests' acks must not queue behind it.
        if thread is not None:
            thread.start()
        return ahead

    def _worker(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._queue and not self._stopping:
                    self._cond.wait()
                self._idle -= 1
                if self._stopping and not self._queue:
                    self._threads.remove(threading.current_thread())
                    return
                work = self._queue.popleft()
                self._running.append(work)
                free = self.workers - len(self._running)
                waiting = [(max(0, i + 1 - free), w) for i, w in enumerate(self._queue)]
            for ahead, later in waiting:
                if later.moved is not None:
                    _quietly(
                        later.context.copy().run, later.moved, ahead, what=f"{later.name} (moved)"
                    )
            if self.gate is not None:
                self.gate.wait()
            try:
                work.context.run(work.run)
            except BaseException:  # the work's own edge reports; a lane thread must survive
                log.exception("%s work %s failed", self.name, work.name)
            finally:
                with self._cond:
                    self._running.remove(work)
                    self._cond.notify_all()

    def stop(self, deadline: float) -> Stopped:
        """Take nothing new, hand back what waits, give what runs until `deadline` (a
        time.monotonic() value) to finish, then tell what still runs that it was interrupted."""
        with self._cond:
            self._stopping = True
            # The first `free` items were told they start now (a thread is on its way to each):
            # they run; only those told they wait are handed back.
            free = max(0, self.workers - len(self._running))
            queued = list(self._queue)[free:]
            for _ in queued:
                self._queue.pop()
            self._cond.notify_all()
        for work in queued:
            if work.abandon is not None:
                _quietly(work.context.copy().run, work.abandon, "not started", what=work.name)
        with self._cond:
            while (self._running or self._queue) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            unstarted = list(self._queue)
            self._queue.clear()
            left = list(self._running)
        for work in unstarted:
            if work.abandon is not None:
                _quietly(work.context.copy().run, work.abandon, "not started", what=work.name)
        queued += unstarted
        for work in left:
            if work.abandon is not None:
                _quietly(work.context.copy().run, work.abandon, "interrupted", what=work.name)
        if queued or left:
            log.warning(
                "%s lane stopped: %d handed back, %d interrupted", self.name, len(queued), len(left)
            )
        return Stopped(tuple(w.name for w in queued), tuple(w.name for w in left))


def _quietly(func: Callable[..., object], *args: object, what: str) -> None:
    """Telling someone about their work must not stop the lane from telling the next."""
    try:
        func(*args)
    except Exception:
        log.exception("could not tell %s", what)


class Lanes:
    """The quick and the long lane of one gtbot process."""

    def __init__(self, long_jobs: int, gate: AckGate | None = None) -> None:
        self.gate = gate or AckGate()
        self.quick = Lane("quick", QUICK_WORKERS, QUICK_WAITING, self.gate)
        self.long = Lane("long", long_jobs, LONG_WAITING, self.gate)

    def stop(self, deadline: float) -> tuple[Stopped, Stopped]:
        """Both lanes at once, within the same deadline."""
        results: dict[str, Stopped] = {}
        threads = [
            threading.Thread(
                target=lambda lane=lane: results.__setitem__(lane.name, lane.stop(deadline))
            )
            for lane in (self.quick, self.long)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results["quick"], results["long"]

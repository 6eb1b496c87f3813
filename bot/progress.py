"""Progress of long work (uploads, frames, consolidation), said once and shown by each edge.

A use case asks its Context's `progress` for a task with a description and a total, advances
it as items are done and closes it. It never knows who watches: a terminal draws a bar with
tqdm (`TerminalProgress`), Slack keeps one message updated (handlers/slack.ProgressMessage),
the sandbox and tests collect lines (`LineProgress`), and the default shows nothing. A note
(`progress("Checking bucket ...")`) is a one-off line for steps with nothing to count.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol


class Task(Protocol):
    """One piece of counted work."""

    def advance(self, n: int = 1) -> None: ...

    def set_total(self, total: int | None) -> None: ...

    def close(self) -> None: ...


class Progress:
    """Where use cases report; this base shows nothing (work nobody watches)."""

    def note(self, message: str) -> None:
        """A step with nothing to count."""

    def task(self, description: str, total: int | None, unit: str = "") -> Task:
        return _Silent()

    def __call__(self, message: str) -> None:
        self.note(message)


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass


def seconds_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Meter:
    """Count, rate and time left of one task, as a line of text (for edges without a bar)."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._clock = clock
        self._start = clock()

    def advance(self, n: int = 1) -> None:
        self.done += n

    def rate(self) -> float | None:
        elapsed = self._clock() - self._start
        return self.done / elapsed if elapsed > 0 and self.done else None

    def line(self, finished: bool = False) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            count = f"{self.done:,}/{self.total:,} ({100 * self.done // self.total}%)"
        else:
            count = f"{self.done:,}{unit}"
        parts = [f"{self.description}: {count}"]
        rate = self.rate()
        if rate is not None:
            parts.append(f"{rate:,.1f}{unit or ' items'}/s")
        if finished:
            parts.append(f"done in {seconds_text(self._clock() - self._start)}")
        elif rate and self.total and self.total > self.done:
            parts.append(f"about {seconds_text((self.total - self.done) / rate)} left")
        return ", ".join(parts)


class _LineTask:
    def __init__(self, owner: LineProgress, meter: Meter) -> None:
        self.owner = owner
        self.meter = meter
        self.shown = -1
        self.closed = False

    def advance(self, n: int = 1) -> None:
        self.meter.advance(n)
        total = self.meter.total
        step = 10 * self.meter.done // total if total else self.meter.done // 100
        if step != self.shown:
            self.shown = step
            self.owner.sink(self.meter.line())

    def set_total(self, total: int | None) -> None:
        self.meter.total = total

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.sink(self.meter.line(finished=True))


class LineProgress(Progress):
    """Progress as lines of text for a sink: every tenth of a task, and its end."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink

    def note(self, message: str) -> None:
        self.sink(message)

    def task(self, description: str, total: int | None, unit: str = "") -> Task:
        return _LineTask(self, Meter(description, total, unit))


class _BarTask:
    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.lock = threading.Lock()

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.bar.update(n)

    def set_total(self, total: int | None) -> None:
        with self.lock:
            self.bar.total = total
            self.bar.refresh()

    def close(self) -> None:
        with self.lock:
            self.bar.close()


class TerminalProgress(Progress):
    """A tqdm bar per task on stderr (count, rate, time left); nothing at all when stderr is
    not a terminal, so a script's output and the JSON log stay clean."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def note(self, message: str) -> None:
        if self.interactive:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)

    def task(self, description: str, total: int | None, unit: str = "") -> Task:
        if not self.interactive:
            return _Silent()
        from tqdm import tqdm

        return _BarTask(
            tqdm(
                total=total,
                desc=description,
                unit=f" {unit}" if unit else "it",
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.2,
            )
        )


def counted(task: Task) -> Callable[[int], None]:
    """Feed a task from a callback that reports how many are done so far (not how many more)."""
    shown = [0]

    def seen(done: int) -> None:
        if done > shown[0]:
            task.advance(done - shown[0])
            shown[0] = done

    return seen

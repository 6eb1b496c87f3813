"""A long command's progress in Slack: one message kept up to date, from "queued, 2 ahead" to
"finished", with count, rate and time left while it runs (bot.progress.Meter).

The work never waits on Slack for its progress: it only sets the message's latest line, and
one thread (the board) sends the lines that changed. chat.update is a Tier 3 method (50+ calls
a minute per workspace: https://docs.slack.dev/reference/methods/chat.update,
https://docs.slack.dev/apis/web-api/rate-limits), so the board sends at most one update every
UPDATE_GAP seconds across all messages, and each message at most every `interval` seconds:
five uploads at once share the budget instead of each meeting 429s. A change of state (queued,
started, finished) is sent at once by the thread that makes it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError

from bot.progress import Meter, Progress, Task, seconds_text
from handlers.blocks import say

log = logging.getLogger("gtbot.slack")

# 40 updates a minute across every progress message: under Tier 3's 50.
UPDATE_GAP = 1.5
WAITING, RUNNING, DONE = "waiting", "running", "done"
ICONS = {WAITING: ":hourglass:", RUNNING: ":hourglass_flowing_sand:"}


class ProgressBoard:
    """Sends the changed lines of every open progress message, within Slack's rate."""

    def __init__(self, gap: float = UPDATE_GAP) -> None:
        self.gap = gap
        self._messages: list[ProgressMessage] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, message: ProgressMessage) -> None:
        with self._cond:
            if message not in self._messages:
                self._messages.append(message)
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="gtbot-progress", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, message: ProgressMessage) -> None:
        with self._cond:
            if message in self._messages:
                self._messages.remove(message)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(0.25)
                due = [m for m in self._messages if m.due()]
            if not due or time.monotonic() - last < self.gap:
                continue
            oldest = min(due, key=lambda m: m.last_sent)
            try:
                oldest.flush()
            except Exception:  # a progress line is a courtesy: never let it end the board
                log.exception("progress update failed")
            last = time.monotonic()


class ProgressMessage(Progress):
    """One message in `channel` for one long command: posted by `open`, then kept current."""

    def __init__(
        self, board: ProgressBoard, client: Any, channel: str, title: str, interval: float = 2.0
    ) -> None:
        self.board = board
        self.client = client
        self.channel = channel
        self.title = title.replace("`", "'")
        self.interval = interval
        self.ts: str | None = None
        self.state = WAITING
        self.line = "starting"
        self.sent_line: str | None = None
        self.last_sent = 0.0
        self.started = 0.0
        self.counted = ""
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ states

    def open(self, ahead: int, slots: int) -> str:
        """Post the message: queued behind `ahead` others, or starting. Raises SlackApiError
        (the channel refuses the bot) so the command can be refused before it runs."""
        with self.lock:
            if self.state == WAITING:
                self.line = _queued(ahead, slots) if ahead else "starting"
            text = self._text()
            self.ts = str(self.client.chat_postMessage(channel=self.channel, text=text)["ts"])
            self.sent_line, self.last_sent = self.line, time.monotonic()
        self.board.add(self)
        return self.ts

    def moved(self, ahead: int, slots: int) -> None:
        """The queue moved: say the new place at once (it changes rarely)."""
        with self.lock:
            if self.state != WAITING:
                return
            self.line = _queued(ahead, slots) if ahead else "starting"
            if self.ts is not None:
                self._send()

    def start(self) -> None:
        with self.lock:
            self.state, self.line, self.started = RUNNING, "started", time.monotonic()
            if self.ts is not None:
                self._send()

    def finish(self, line: str, icon: str = ":white_check_mark:") -> None:
        """The message's last state (finished, failed, interrupted), sent whatever the rate."""
        with self.lock:
            if self.state == DONE:
                return
            self.state, self.line = DONE, line
            if self.ts is not None:
                self._send(icon)
        self.board.remove(self)

    def elapsed(self) -> str:
        return seconds_text(time.monotonic() - self.started) if self.started else "0 s"

    def summary(self) -> str:
        """How long it ran, and its last counted line (count and rate) when it had one:
        `finished in 12 s (Uploading frames: 300/300 (100%), 25.0 frames/s, done in 12 s)`."""
        with self.lock:
            counted = f" ({self.counted})" if self.counted else ""
        return f"{self.elapsed()}{counted}"

    # ------------------------------------------------------------------ Progress

    def note(self, message: str) -> None:
        with self.lock:
            if self.state == RUNNING:
                self.line = message

    def task(self, description: str, total: int | None, unit: str = "") -> Task:
        return _MessageTask(self, Meter(description, total, unit))

    # ------------------------------------------------------------------ sending

    def due(self) -> bool:
        with self.lock:
            return (
                self.state == RUNNING
                and self.ts is not None
                and self.line != self.sent_line
                and time.monotonic() - self.last_sent >= self.interval
            )

    def flush(self) -> None:
        with self.lock:
            if self.state == RUNNING and self.line != self.sent_line:
                self._send()

    def _text(self, icon: str | None = None) -> str:
        return f"{icon or ICONS.get(self.state, '')} `{say(self.title)}`: {say(self.line)}"

    def _send(self, icon: str | None = None) -> None:
        """chat.update of the message; a failure is logged and the command goes on."""
        text = self._text(icon)
        try:
            self.client.chat_update(channel=self.channel, ts=self.ts, text=text)
        except SlackApiError as exc:
            log.warning("progress message failed: %s", exc.response.get("error"))
        except (OSError, SlackClientError) as exc:
            log.warning("progress message failed: %s", type(exc).__name__)
        self.sent_line, self.last_sent = self.line, time.monotonic()


def _queued(ahead: int, slots: int) -> str:
    return (
        f"queued, {ahead} ahead ({slots} long command{'s' * (slots != 1)} run at a time; "
        "this message changes when it starts)"
    )


class _MessageTask:
    def __init__(self, message: ProgressMessage, meter: Meter) -> None:
        self.message, self.meter = message, meter
        self.lock = threading.Lock()

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.meter.advance(n)
            line = self.meter.line()
        self.message.note(line)

    def set_total(self, total: int | None) -> None:
        with self.lock:
            self.meter.total = total

    def close(self) -> None:
        with self.lock:
            line = self.meter.line(finished=True)
        self.message.note(line)
        with self.message.lock:
            self.message.counted = line

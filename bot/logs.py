"""gtbot's log: one JSON object per line, each carrying the trace id of the work it belongs to.

Log lines hold text from outside (job names, Slack errors, exception messages). Written as JSON,
a newline or U+2028 inside a value is escaped, so no value can start a line of its own and
forge, say, an audit record. A trace id is set per request, click and watcher tick; the id an
apology shows a user finds every line of that piece of work, and a line written for a Slack
command also names its `user` and `command` (the verb only: arguments are the user's text).
The level is GTBOT_LOG_LEVEL (DEBUG, INFO, WARNING or ERROR; INFO by default).
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from bot.errors import ConfigError

_TRACE_ID: ContextVar[str | None] = ContextVar("gtbot_trace_id", default=None)
_USER: ContextVar[str | None] = ContextVar("gtbot_user", default=None)
_COMMAND: ContextVar[str | None] = ContextVar("gtbot_command", default=None)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# alembic reports every migration step and plugin at INFO: noise to a lab manager; a failed
# upgrade still raises with its message.
NOISY = (
    "alembic",
    "botocore",
    "boto3",
    "urllib3",
    "werkzeug",
    "apscheduler",
    "slack_bolt",
    "slack_sdk",
    "waitress",
)


# A trace id finds log lines; it guards nothing, so it need not be unguessable. uuid4 reads
# os.urandom on every call (about 45 us, a sixth of a request's ack path in bench/lanes.py);
# a generator seeded once from it costs well under a microsecond.
_IDS = random.Random()


def new_trace_id() -> str:
    return f"{_IDS.getrandbits(48):012x}"


def current_trace_id() -> str | None:
    """The trace id of the work in progress, if it has one (never makes one)."""
    return _TRACE_ID.get()


def trace_id() -> str:
    """The current work's trace id; a fresh one for work that has none yet."""
    current = _TRACE_ID.get()
    if current is None:
        current = new_trace_id()
        _TRACE_ID.set(current)
    return current


@contextmanager
def traced(
    trace: str | None = None, *, user: str | None = None, command: str | None = None
) -> Iterator[str]:
    """Run a piece of work (a request, a click, a tick) under its own trace id, naming who
    asked and which command when known; a lane runs the work in a copy of this context."""
    tokens = (
        _TRACE_ID.set(trace or new_trace_id()),
        _USER.set(user or None),
        _COMMAND.set(command or None),
    )
    try:
        yield trace_id()
    finally:
        for var, token in zip((_TRACE_ID, _USER, _COMMAND), tokens, strict=True):
            var.reset(token)  # type: ignore[attr-defined]


def set_command(command: str) -> None:
    """Name the command once it is parsed, for the rest of this piece of work's context."""
    _COMMAND.set(command)


class _TraceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            record.trace_id = _TRACE_ID.get()
        for name, var in (("user", _USER), ("command", _COMMAND)):
            value = var.get()
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines: time, level, logger, message, trace id, extras, traceback."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{trace_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_TraceFilter())
    return handler


def level_from_env(value: str | None) -> int:
    """GTBOT_LOG_LEVEL as a logging level; a clear error for anything else."""
    name = (value or "INFO").strip().upper()
    if name not in LEVELS:
        raise ConfigError(
            f"GTBOT_LOG_LEVEL={value!r} is not a log level. Write one of {', '.join(LEVELS)} "
            "(INFO when unset)."
        )
    return int(getattr(logging, name))


def configure_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """The process's logging: JSON lines on stderr; chatty libraries at WARNING even when
    gtbot's own level is DEBUG (botocore's DEBUG lines carry signed request headers)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(json_handler(stream))
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))

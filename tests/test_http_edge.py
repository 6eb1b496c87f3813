"""The HTTP edge before anything is authenticated, and the log it writes.

A request body is capped before a byte of it is read, a malformed timestamp is a 401 and not a
crash, a refused body is never logged, and every log line is one JSON object, so a newline in
a value cannot forge a record. `/healthz` says unhealthy when the database cannot take a write.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_harness import ADMIN, CHANNEL, Harness, signature_headers, start_harness
from test_install_files import healthcheck

from bot import logs
from handlers.server import MAX_BODY_BYTES
from handlers.slack import audit_line

FORGED = '{"level": "INFO", "logger": "gtbot.audit", "message": "audit launch"}'


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(tmp_path, s3_endpoint, setenv=monkeypatch.setenv)
    yield harness
    harness.stop()


def _raw(bot: Harness, head: bytes, body: bytes = b"", timeout: float = 5.0) -> tuple[int, float]:
    """Send raw bytes; (status, seconds until the status line came back)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", bot.running.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


def _untouched(bot: Harness) -> None:
    time.sleep(0.2)
    assert bot.stub.calls == [] and bot.emu.calls == []


def test_a_huge_body_is_refused_before_it_is_read(bot: Harness) -> None:
    """The adversarial run's 300 MB POST took 1.9 GB: now it is refused on its headers."""
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 300000000\r\n\r\n"
    )
    status, seconds = _raw(bot, head, b"payload=" + b"x" * 1000)
    assert status == 413 and seconds < 2.0
    # Just over the cap, with a valid signature: still refused, on the length alone.
    body = b"text=" + b"x" * MAX_BODY_BYTES
    signed = "".join(f"{k}: {v}\r\n" for k, v in signature_headers(body).items()).encode()
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + signed
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    assert _raw(bot, head, body[:1000])[0] == 413
    no_length = b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert _raw(bot, no_length)[0] == 411
    _untouched(bot)


# "²³" passes str.isdigit() but not int(); a header travels as Latin-1.
@pytest.mark.parametrize("stamp", ["abc", "1.5e9", "\u00b2\u00b3", ""])
def test_a_timestamp_that_is_not_a_number_is_401(bot: Harness, stamp: str) -> None:
    body = bot.command_body("help", user=ADMIN, channel=CHANNEL, response_id="ts")
    headers = signature_headers(body)
    headers["X-Slack-Request-Timestamp"] = stamp
    assert bot.deliver(body, headers=headers, signed=False).status == 401
    _untouched(bot)


def test_refused_bodies_are_never_logged(
    tmp_path: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bolt logged a refused body whole at INFO, so a body with a newline forged a log line.
    (The bot starts with INFO on, as `gtbot serve` runs: Bolt fixes its loggers' levels then.)"""
    caplog.set_level(logging.INFO)
    bot = start_harness(tmp_path, s3_endpoint, setenv=monkeypatch.setenv)
    try:
        body = bot.command_body(f"help\n{FORGED}", user=ADMIN, channel=CHANNEL, response_id="f")
        headers = signature_headers(body, secret="not-the-secret")
        assert bot.deliver(body, headers=headers, signed=False).status == 401
        _untouched(bot)
    finally:
        bot.stop()
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "forged" not in said and "audit launch" not in said and "help" not in said
    assert "refused a request to /slack/events" in said  # the refusal itself is logged


def test_every_log_record_is_one_json_line_with_its_trace_id() -> None:
    stream = io.StringIO()
    handler = logs.json_handler(stream)
    logger = logging.getLogger("gtbot")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with logs.traced("feedc0ffee12"):
            audit_line("stop", user=f"U1\n{FORGED}", channel="C1\u2028" + FORGED, job="j")
            try:
                raise RuntimeError(f"boom\n{FORGED}")
            except RuntimeError:
                logging.getLogger("gtbot.x").exception("failed on %s", f"job\r\n{FORGED}")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # two records, two lines: no value started a line
    audit, error = (json.loads(line) for line in lines)
    assert audit["logger"] == "gtbot.audit" and audit["trace_id"] == "feedc0ffee12"
    assert audit["audit"] == {
        "action": "stop",
        "user": f"U1\n{FORGED}",
        "channel": "C1\u2028" + FORGED,
        "job": "j",
    }
    assert error["level"] == "ERROR" and "RuntimeError: boom" in error["exc_info"]
    assert "\u2028" not in stream.getvalue()  # escaped: some readers split on it too


def test_healthz_is_unhealthy_while_the_database_cannot_be_written(bot: Harness) -> None:
    def health() -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(bot.url + "/healthz", timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert health() == (200, {"ok": True, "holds_lease": False})  # no watcher in this harness
    port = urllib.parse.urlsplit(bot.url).port or 80
    assert healthcheck(port) == 0  # the Dockerfile's HEALTHCHECK agrees
    path = bot.running.deps.store.url.removeprefix("sqlite:///")
    other = sqlite3.connect(path)  # another writer holds the database
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert health() == (503, {"ok": False, "error": "OperationalError"})
        assert time.monotonic() - started < 5.0
        assert healthcheck(port) == 1
    finally:
        other.rollback()
        other.close()
    assert health() == (200, {"ok": True, "holds_lease": False})  # no watcher in this harness

"""`gtbot socket`: Socket Mode against a loopback WebSocket stand-in for Slack's gateway.

Slack's gateway is a WebSocket server that hands the app envelopes and expects each one acked
by envelope id; this one speaks just enough RFC 6455 (handshake, text frames, ping/pong) to
deliver one `/gt help` and read the ack back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_stub import SlackStub
from test_install_files import healthcheck

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Gateway:
    """Accepts one Socket Mode connection, sends one envelope, records what comes back."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope
        self.received: list[dict[str, Any]] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/link/?ticket=t"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self._send(conn, 0x1, json.dumps({"type": "hello"}).encode())
        self._send(conn, 0x1, json.dumps(self.envelope).encode())
        try:
            while True:
                opcode, payload = self._read(conn)
                if opcode == 0x9:
                    self._send(conn, 0xA, payload)
                elif opcode == 0x1:
                    self.received.append(json.loads(payload))
                elif opcode == 0x8:
                    return
        except OSError:
            return

    @staticmethod
    def _send(conn: socket.socket, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([len(payload)])
        else:
            header += bytes([126]) + struct.pack(">H", len(payload))
        conn.sendall(header + payload)

    @staticmethod
    def _read(conn: socket.socket) -> tuple[int, bytes]:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise OSError("closed")
                data += chunk
            return data

        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", exactly(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", exactly(8))[0]
        mask = exactly(4) if second & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(length)))
        return first & 0x0F, payload


class GatewayStub(SlackStub):
    gateway_url = ""

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "apps.connections.open":
            return {"ok": True, "url": self.gateway_url}
        return super()._answer(method, params)


@pytest.fixture
def stub() -> Iterator[GatewayStub]:
    server = GatewayStub()
    yield server
    server.stop()


def _listening_port(bot: subprocess.Popen[bytes], lines: list[str], timeout: float) -> int:
    """The port of /healthz, from the JSON log line `gtbot listening on http://...`."""
    assert bot.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = bot.stdout.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line)
        found = re.search(r"gtbot listening on http://127\.0\.0\.1:(\d+)/healthz", line)
        if found:
            return int(found.group(1))
    raise AssertionError("no /healthz address in the log:\n" + "".join(lines)[-2000:])


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_socket_mode_answers_a_slash_command(stub: GatewayStub, tmp_path: Path) -> None:
    """`gtbot socket` with no signing secret: it connects, acks and answers over the socket,
    serves /healthz (what the Docker HEALTHCHECK probes), and stops cleanly on SIGTERM."""
    gateway = Gateway(
        {
            "envelope_id": "env-1",
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {
                "command": "/gt",
                "text": "help",
                "user_id": "U1",
                "channel_id": "C1",
                "team_id": "T1",
                "response_url": f"{stub.url}/response/r1",
                "trigger_id": "t1",
            },
        }
    )
    stub.gateway_url = gateway.url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTBOT_", "SLACK_"))} | {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_APP_TOKEN": "xapp-test",
        "SLACK_API_URL": stub.api_url,
        "GTBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'gtbot.db'}",
        "GTBOT_PROJECTS_DIR": str(tmp_path / "projects"),
        "GTBOT_BIND": "127.0.0.1",
    }
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot", "socket", "--port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        port = _listening_port(bot, lines, 20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not stub.of("response_url"):
            time.sleep(0.1)
        assert [r["envelope_id"] for r in gateway.received][:1] == ["env-1"], gateway.received
        replies = stub.of("response_url")
        assert replies, "no answer to /gt help"
        assert "Commands" in json.dumps(replies[0].params)
        assert stub.of("apps.connections.open")
        status, health = _health(port)
        assert status == 200 and health["ok"] and health["socket_mode"] is True, health
        assert healthcheck(port) == 0  # the Dockerfile's HEALTHCHECK works here too
        assert "holds_lease" in health
    finally:
        bot.send_signal(signal.SIGTERM)
        out, _ = bot.communicate(timeout=20)
    log = "".join(lines) + out.decode(errors="replace")
    assert bot.returncode == 0, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    assert "SIGTERM: stopping" in log and "gtbot stopped" in log


def test_socket_mode_needs_its_app_token_but_no_signing_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.errors import ConfigError
    from handlers.server import slack_credentials

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"^SLACK_APP_TOKEN not set.*manifest\.socket\.yml"):
        slack_credentials(socket_mode=True)
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-test")
    assert slack_credentials(socket_mode=True) == ("xoxb-test", None, "xapp-test")
    with pytest.raises(ConfigError, match=r"^SLACK_SIGNING_SECRET not set"):
        slack_credentials(socket_mode=False)

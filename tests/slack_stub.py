"""A loopback stand-in for the Slack Web API that records every call.

It answers what gtbot uses (auth.test, chat.*, usergroups.users.list, the files upload v2 trio,
response_url posts) and can be told to answer 429 with Retry-After or fail a channel.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class SlackStub:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.groups: dict[str, list[str]] = {}
        self.rate_limit_next: int = 0
        self.gone_channels: set[str] = set()
        self._ts = 1700000000.000100
        self.uploads: dict[str, bytes] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                stub._handle(self, raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api_url = self.url + "/api/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ recording

    def of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()

    def _next_ts(self) -> str:
        with self.lock:
            self._ts += 1
            return f"{self._ts:.6f}"

    # ------------------------------------------------------------------ answering

    def _parse(self, handler: BaseHTTPRequestHandler, raw: bytes) -> dict[str, Any]:
        ctype = handler.headers.get("Content-Type", "")
        if "json" in ctype:
            return json.loads(raw or b"{}")
        if "form" in ctype:
            return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
        return {"_body": raw}

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        path = urllib.parse.urlparse(handler.path).path
        if path.startswith("/upload/"):
            self.uploads[path.rsplit("/", 1)[-1]] = raw
            self._send(handler, 200, {"ok": True})
            return
        params = self._parse(handler, raw)
        for key in ("blocks", "files"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        method = path.rsplit("/", 1)[-1] if path.startswith("/api/") else "response_url"
        if path.startswith("/response/"):
            method = "response_url"
        with self.lock:
            self.calls.append(Call(method, params))
            limited = self.rate_limit_next > 0 and method != "response_url"
            if limited:
                self.rate_limit_next -= 1
        if limited:
            self._send(handler, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
            return
        channel = str(params.get("channel", ""))
        if channel in self.gone_channels:
            self._send(handler, 200, {"ok": False, "error": "channel_not_found"})
            return
        self._send(handler, 200, self._answer(method, params))

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": "UBOT",
                "bot_id": "BBOT",
                "team_id": "T1",
                "user": "gtbot",
            }
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            ts = params.get("ts") or self._next_ts()
            return {"ok": True, "channel": params.get("channel"), "ts": ts, "message": {"ts": ts}}
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.groups.get(str(params.get("usergroup")), [])}
        if method == "files.getUploadURLExternal":
            file_id = f"F{len(self.uploads) + len(self.calls)}"
            return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": f["id"]} for f in params.get("files", [])]}
        if method == "conversations.info":
            return {"ok": True, "channel": {"id": params.get("channel")}}
        if method == "response_url":
            return {"ok": True}
        return {"ok": True}

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

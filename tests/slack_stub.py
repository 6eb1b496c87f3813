"""A loopback stand-in for the Slack Web API that records every call.

It answers what gtbot uses (auth.test, chat.*, usergroups.users.list, the files upload v2 trio,
conversations.replies/history, response_url posts) and can be told to answer 429 with
Retry-After, fail a channel, or fail a method for good (e.g. `missing_scope`).

It keeps the messages it accepted, per channel, so reading a thread back answers as Slack does
(https://docs.slack.dev/reference/methods/conversations.replies): the parent and its replies,
oldest first, cursor-paginated; `metadata` (https://docs.slack.dev/messaging/message-metadata,
an object with `event_type` and `event_payload`) only when `include_all_metadata` is true; a
file shared into a thread by files.completeUploadExternal is a reply carrying `files`.
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
        # Users whose direct messages conversations.open refuses (user_disabled).
        self.disabled_users: set[str] = set()
        self._ts = 1700000000.000100
        self.uploads: dict[str, bytes] = {}
        # Answer `{"ok": false, "error": ...}` to every call of a method (a missing scope).
        self.fail_methods: dict[str, str] = {}
        # Accepted messages per channel, in posting order.
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                stub._handle(self, raw)

            def do_GET(self) -> None:  # noqa: N802 - conversations.* readers are GETs
                stub._handle(self, b"")

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
        if handler.command == "GET":
            query = urllib.parse.urlparse(handler.path).query
            return {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        ctype = handler.headers.get("Content-Type", "")
        if "json" in ctype:
            return json.loads(raw or b"{}")
        if "form" in ctype:
            return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
        return {"_body": raw}

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The messages of one thread as stored: the parent first."""
        with self.lock:
            return [
                m
                for m in self.messages.get(channel, [])
                if m["ts"] == ts or m.get("thread_ts") == ts
            ]

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
        channel = str(params.get("channel") or params.get("channel_id") or "")
        if channel in self.gone_channels:
            self._send(handler, 200, {"ok": False, "error": "channel_not_found"})
            return
        if method in self.fail_methods:
            self._send(handler, 200, {"ok": False, "error": self.fail_methods[method]})
            return
        self._send(handler, 200, self._answer(method, params))

    def _keep(self, channel: str, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.setdefault(channel, []).append(message)

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        """chat.postMessage: `metadata` must be an object with a string `event_type` and an
        object `event_payload` (JSON-encoded when the call is form-encoded)."""
        channel = str(params.get("channel"))
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "text": params.get("text", "")}
        message["bot_id"] = "BBOT"
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return {"ok": False, "error": "invalid_metadata_format"}
        if metadata is not None:
            if not (
                isinstance(metadata, dict)
                and isinstance(metadata.get("event_type"), str)
                and isinstance(metadata.get("event_payload"), dict)
            ):
                return {"ok": False, "error": "invalid_metadata_schema"}
            message["metadata"] = metadata
        self._keep(channel, message)
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _read(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.replies (a thread) or conversations.history (top-level, newest first)."""
        channel = str(params.get("channel"))
        with self.lock:
            stored = [dict(m) for m in self.messages.get(channel, [])]
        if method == "conversations.replies":
            ts = str(params.get("ts"))
            if not any(m["ts"] == ts for m in stored):
                return {"ok": False, "error": "thread_not_found"}
            found = [m for m in stored if m["ts"] == ts or m.get("thread_ts") == ts]
            found.sort(key=lambda m: float(m["ts"]))
        else:
            found = [m for m in stored if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]
            found.sort(key=lambda m: float(m["ts"]), reverse=True)
        if str(params.get("include_all_metadata", "")).lower() not in ("true", "1"):
            for m in found:
                m.pop("metadata", None)
        start = int(params.get("cursor") or 0)
        limit = int(params.get("limit") or 1000)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": "UBOT",
                "bot_id": "BBOT",
                "team_id": "T1",
                "user": "gtbot",
            }
        if method == "chat.postMessage":
            return self._post(params)
        if method in ("chat.update", "chat.postEphemeral"):
            ts = params.get("ts") or self._next_ts()
            return {"ok": True, "channel": params.get("channel"), "ts": ts, "message": {"ts": ts}}
        if method in ("conversations.replies", "conversations.history"):
            return self._read(method, params)
        if method == "usergroups.users.list":
            return {"ok": True, "users": self.groups.get(str(params.get("usergroup")), [])}
        if method == "files.getUploadURLExternal":
            file_id = f"F{len(self.uploads) + len(self.calls)}"
            with self.lock:
                self._files[file_id] = {"id": file_id, "name": params.get("filename")}
            return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = []
            for f in params.get("files", []):
                with self.lock:
                    known = dict(self._files.get(f["id"], {"id": f["id"]}))
                known["title"] = f.get("title") or known.get("name")
                files.append(known)
            channel = params.get("channel_id")
            if channel:
                message = {"type": "message", "ts": self._next_ts(), "files": files}
                message["text"] = params.get("initial_comment") or ""
                if params.get("thread_ts"):
                    message["thread_ts"] = str(params["thread_ts"])
                self._keep(str(channel), message)
            return {"ok": True, "files": [{"id": f["id"]} for f in files]}
        if method == "conversations.open":
            # https://docs.slack.dev/reference/methods/conversations.open: `users`, one id for
            # a 1:1 DM (the channel's id is a D...); errors as its table names them.
            users = str(params.get("users") or "")
            if not users:
                return {"ok": False, "error": "users_list_not_supplied"}
            if users in self.disabled_users:
                return {"ok": False, "error": "user_disabled"}
            if "," in users:
                return {"ok": False, "error": "method_not_supported_for_channel_type"}
            return {"ok": True, "channel": {"id": "D" + users}}
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

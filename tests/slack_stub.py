"""A loopback stand-in for the Slack Web API that records every call and answers as Slack does.

It answers what gtbot uses (auth.test, chat.*, usergroups.users.list, the files upload v2 trio,
conversations.replies/history, response_url posts) and is as strict as Slack's pages, so a
defect that real Slack would refuse cannot pass here:

- The token (https://docs.slack.dev/authentication/tokens; every method's "Errors" table): no
  token is `not_authed`; a token that is not a bot token (`xoxb-`), or one revoked with
  `revoke()`, is `invalid_auth`. apps.connections.open takes the app-level token (`xapp-`)
  only (https://docs.slack.dev/reference/methods/apps.connections.open).
- The channel: a deleted or unknown one (`gone_channels`, or none given) is
  `channel_not_found`; one the bot was never invited to (`outside_channels`) is
  `not_in_channel` (https://docs.slack.dev/reference/methods/chat.postMessage).
- Blocks: Block Kit's limits, `invalid_blocks` otherwise (see `block_errors`).
- Messages: chat.update and chat.delete of a ts that is not a message of that channel (never
  posted, or deleted) answer `message_not_found`, and of another author's message
  `cant_update_message` / `cant_delete_message`
  (https://docs.slack.dev/reference/methods/chat.update,
  https://docs.slack.dev/reference/methods/chat.delete). A deleted message with replies stays
  as a tombstone ("This message was deleted."), so its thread lives on; a reply to, or a read
  of, a message that is gone answers `thread_not_found`. chat.update without `blocks` keeps
  the message's blocks, as its page says. A post with neither text nor blocks is `no_text`.
- Rate limits (https://docs.slack.dev/apis/web-api/rate-limits): HTTP 429 with a JSON body
  `{"ok": false, "error": "ratelimited"}` and a Retry-After header in seconds, for the next
  `rate_limit_next` calls.

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

BOT_USER, BOT_ID = "UBOT", "BBOT"
# Methods whose `channel` (or `channel_id`) must name a conversation the bot is in.
_IN_CHANNEL = frozenset(
    {
        "chat.postMessage",
        "chat.postEphemeral",
        "chat.update",
        "chat.delete",
        "conversations.replies",
        "conversations.history",
    }
)
# Methods that do not take the bot token: a response_url is its own credential.
_NO_TOKEN = frozenset({"response_url"})
TOMBSTONE = "This message was deleted."


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


# ---------------------------------------------------------------------------- Block Kit limits
# https://docs.slack.dev/reference/block-kit/blocks: "up to 50 blocks in each message".
MAX_BLOCKS = 50
# https://docs.slack.dev/reference/block-kit/blocks/section-block: text 1..3000 characters,
# fields at most 10 of at most 2000 characters; block_id at most 255 characters.
SECTION_TEXT, SECTION_FIELDS, FIELD_TEXT, BLOCK_ID = 3000, 10, 2000, 255
# https://docs.slack.dev/reference/block-kit/blocks/header-block: plain_text, at most 150.
HEADER_TEXT = 150
# https://docs.slack.dev/reference/block-kit/blocks/context-block: 1..10 elements.
CONTEXT_ELEMENTS = 10
# https://docs.slack.dev/reference/block-kit/blocks/actions-block: 1..25 elements.
ACTIONS_ELEMENTS = 25
# https://docs.slack.dev/reference/block-kit/block-elements/button-element: text (plain_text)
# at most 75, action_id at most 255, value at most 2000, style primary or danger.
BUTTON_TEXT, ACTION_ID, BUTTON_VALUE = 75, 255, 2000
# https://docs.slack.dev/reference/block-kit/composition-objects/confirmation-dialog-object:
# title 100, text 300, confirm 30, deny 30 characters.
CONFIRM_LIMITS = {"title": 100, "text": 300, "confirm": 30, "deny": 30}
# https://docs.slack.dev/reference/block-kit/composition-objects/text-object
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


def _text_errors(where: str, obj: Any, limit: int, types: frozenset[str] = TEXT_TYPES) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where} must be a text object of type {' or '.join(sorted(types))}"]
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        size = len(text) if isinstance(text, str) else "no"
        return [f"{where}.text must be 1..{limit} characters, has {size}"]
    return []


def _button_errors(where: str, button: Any) -> list[str]:
    if not isinstance(button, dict) or button.get("type") != "button":
        return [f"{where} must be a button (the only element gtbot uses)"]
    errors = _text_errors(
        f"{where}.text", button.get("text"), BUTTON_TEXT, frozenset({"plain_text"})
    )
    if len(str(button.get("action_id", ""))) > ACTION_ID:
        errors.append(f"{where}.action_id is longer than {ACTION_ID}")
    if len(str(button.get("value", ""))) > BUTTON_VALUE:
        errors.append(f"{where}.value is longer than {BUTTON_VALUE}")
    if button.get("style") not in (None, "primary", "danger"):
        errors.append(f"{where}.style must be primary or danger")
    confirm = button.get("confirm")
    if confirm is not None:
        for key, limit in CONFIRM_LIMITS.items():
            kinds = frozenset({"plain_text"}) if key != "text" else TEXT_TYPES
            errors += _text_errors(f"{where}.confirm.{key}", confirm.get(key), limit, kinds)
    return errors


def block_errors(blocks: Any) -> list[str]:
    """Why Slack would answer `invalid_blocks` to these blocks (empty: it would take them)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    if len(blocks) > MAX_BLOCKS:
        return [f"{len(blocks)} blocks, more than {MAX_BLOCKS}"]
    errors: list[str] = []
    ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            errors.append(f"{where} must be an object")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > BLOCK_ID:
                errors.append(f"{where}.block_id is longer than {BLOCK_ID}")
            if block_id in ids:
                errors.append(f"{where}.block_id {block_id!r} is used twice")
            ids.add(str(block_id))
        kind = block.get("type")
        if kind == "section":
            fields = block.get("fields")
            if block.get("text") is None and not fields:
                errors.append(f"{where} needs text or fields")
            if block.get("text") is not None:
                errors += _text_errors(f"{where}.text", block["text"], SECTION_TEXT)
            if fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= SECTION_FIELDS:
                    errors.append(f"{where}.fields must hold 1..{SECTION_FIELDS} text objects")
                else:
                    for j, f in enumerate(fields):
                        errors += _text_errors(f"{where}.fields[{j}]", f, FIELD_TEXT)
        elif kind == "header":
            errors += _text_errors(
                f"{where}.text", block.get("text"), HEADER_TEXT, frozenset({"plain_text"})
            )
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= CONTEXT_ELEMENTS:
                errors.append(f"{where}.elements must hold 1..{CONTEXT_ELEMENTS} elements")
            else:
                for j, e in enumerate(elements):
                    errors += _text_errors(f"{where}.elements[{j}]", e, SECTION_TEXT)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= ACTIONS_ELEMENTS:
                errors.append(f"{where}.elements must hold 1..{ACTIONS_ELEMENTS} elements")
            else:
                for j, e in enumerate(elements):
                    errors += _button_errors(f"{where}.elements[{j}]", e)
        elif kind != "divider":
            errors.append(f"{where}.type {kind!r} is not a block gtbot uses")
    return errors


class SlackStub:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.groups: dict[str, list[str]] = {}
        self.rate_limit_next: int = 0
        self.retry_after: int = 1
        self.gone_channels: set[str] = set()
        # Users whose direct messages conversations.open refuses (user_disabled).
        self.disabled_users: set[str] = set()
        self.outside_channels: set[str] = set()
        self.revoked: set[str] = set()
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

    # ------------------------------------------------------------------ what people do

    def revoke(self, token: str) -> None:
        """The app was uninstalled or its token regenerated: Slack refuses the old token."""
        with self.lock:
            self.revoked.add(token)

    def delete(self, channel: str, ts: str) -> None:
        """Someone deletes a message in Slack's client (a job card, say)."""
        with self.lock:
            self._delete(channel, ts)

    def _delete(self, channel: str, ts: str) -> None:
        stored = self.messages.get(channel, [])
        message = next((m for m in stored if m["ts"] == ts and not m.get("deleted")), None)
        if message is None:
            return
        if any(m.get("thread_ts") == ts and m["ts"] != ts for m in stored):
            message.clear()
            message.update(
                {"type": "message", "subtype": "tombstone", "ts": ts, "text": TOMBSTONE},
                thread_ts=ts,
                deleted=True,
            )
        else:
            stored.remove(message)

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

    def _refusal(self, method: str, token: str, params: dict[str, Any]) -> str | None:
        """Slack's answer to a call it refuses before doing anything: token, then channel."""
        if method in _NO_TOKEN:
            return None
        if not token:
            return "not_authed"
        kind = "xapp-" if method == "apps.connections.open" else "xoxb-"
        if not token.startswith(kind):
            return (
                "not_allowed_token_type" if token.startswith(("xoxb-", "xapp-")) else "invalid_auth"
            )
        if token in self.revoked:
            return "invalid_auth"
        channel = str(params.get("channel") or params.get("channel_id") or "")
        needs_channel = method in _IN_CHANNEL or method == "conversations.info"
        if (needs_channel and not channel) or (channel and channel in self.gone_channels):
            return "channel_not_found"
        if method in _IN_CHANNEL and channel in self.outside_channels:
            return "not_in_channel"
        return None

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
        bearer = str(handler.headers.get("Authorization", ""))
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else ""
        token = token or str(params.get("token") or "")
        with self.lock:
            self.calls.append(Call(method, params))
            limited = self.rate_limit_next > 0 and method != "response_url"
            if limited:
                self.rate_limit_next -= 1
        if limited:
            self._send(
                handler,
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(self.retry_after)},
            )
            return
        refused = self._refusal(method, token, params)
        if refused is not None:
            self._send(handler, 200, {"ok": False, "error": refused})
            return
        if method in self.fail_methods:
            self._send(handler, 200, {"ok": False, "error": self.fail_methods[method]})
            return
        self._send(handler, 200, self._answer(method, params))

    def _keep(self, channel: str, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.setdefault(channel, []).append(message)

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        """A message of the channel that was not deleted (a tombstone does not count)."""
        with self.lock:
            return next(
                (
                    m
                    for m in self.messages.get(channel, [])
                    if m["ts"] == ts and not m.get("deleted")
                ),
                None,
            )

    def _thread_exists(self, channel: str, ts: str) -> bool:
        with self.lock:
            return any(m["ts"] == ts for m in self.messages.get(channel, []))

    def _content_error(
        self, params: dict[str, Any], *, needs_content: bool
    ) -> dict[str, Any] | None:
        blocks = params.get("blocks")
        if needs_content and not params.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                return {
                    "ok": False,
                    "error": "invalid_blocks",
                    "errors": errors,
                    "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
                }
        return None

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        """chat.postMessage: `metadata` must be an object with a string `event_type` and an
        object `event_payload` (JSON-encoded when the call is form-encoded)."""
        channel = str(params.get("channel"))
        refused = self._content_error(params, needs_content=True)
        if refused is not None:
            return refused
        if params.get("thread_ts") and not self._thread_exists(channel, str(params["thread_ts"])):
            return {"ok": False, "error": "thread_not_found"}
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "text": params.get("text", "")}
        message["bot_id"] = BOT_ID
        message["user"] = BOT_USER
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

    def post_as(self, channel: str, text: str, user: str = "UPERSON") -> str:
        """A person's message in a channel (which gtbot may not edit or delete)."""
        ts = self._next_ts()
        self._keep(channel, {"type": "message", "ts": ts, "text": text, "user": user})
        return ts

    def _edit(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """chat.update and chat.delete: only an existing message of this bot."""
        channel, ts = str(params.get("channel")), str(params.get("ts") or "")
        message = self._find(channel, ts)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if message.get("bot_id") != BOT_ID:
            verb = "update" if method == "chat.update" else "delete"
            return {"ok": False, "error": f"cant_{verb}_message"}
        if method == "chat.delete":
            with self.lock:
                self._delete(channel, ts)
            return {"ok": True, "channel": channel, "ts": ts}
        refused = self._content_error(params, needs_content=False)
        if refused is not None:
            return refused
        with self.lock:
            if "text" in params:
                message["text"] = params["text"]
            if "blocks" in params:  # absent: the message keeps its blocks
                message["blocks"] = params["blocks"]
            shown = {k: v for k, v in message.items() if k != "metadata"}
        return {"ok": True, "channel": channel, "ts": ts, "text": shown["text"], "message": shown}

    def _read(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.replies (a thread) or conversations.history (top-level, newest first)."""
        channel = str(params.get("channel"))
        with self.lock:
            stored = [
                {k: v for k, v in m.items() if k != "deleted"}
                for m in self.messages.get(channel, [])
            ]
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
                "user_id": BOT_USER,
                "bot_id": BOT_ID,
                "team_id": "T1",
                "user": "gtbot",
            }
        if method == "chat.postMessage":
            return self._post(params)
        if method in ("chat.update", "chat.delete"):
            return self._edit(method, params)
        if method == "chat.postEphemeral":
            refused = self._content_error(params, needs_content=True)
            return refused or {"ok": True, "message_ts": self._next_ts()}
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
                message["bot_id"] = BOT_ID
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

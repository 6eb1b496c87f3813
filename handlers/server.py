"""Running the Slack app: HTTP (`gtbot serve`) or Socket Mode (`gtbot socket`).

HTTP is served through Bolt's WSGI adapter on a threaded wsgiref server, so the bind address is
a setting (Bolt's own `App.start()` always binds 0.0.0.0) and `GET /healthz` can sit beside
`/slack/events` for orchestrators.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier

from bot import launcher
from bot.context import Context
from bot.errors import ConfigError
from bot.logs import traced
from bot.settings import Settings
from bot.state import Store
from bot.watcher import LEASE_NAME, default_holder
from handlers.slack import SlackDeps, SlackNotifier, build_app

log = logging.getLogger("gtbot.server")


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of clicks beyond it had connections
    # dropped and retried by TCP a second later, eating a third of Slack's 3-second ack window.
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.client_address[0], *args)


# Slack caps a message at 40,000 characters of text and 50 blocks (Block Kit reference,
# https://docs.slack.dev/reference/block-kit/blocks), and the only buttons gtbot handles sit on
# cards it posted itself (a few KB). A slash command or an event is smaller still. 1 MiB is
# several times the largest payload Slack can send, and bounds what one unauthenticated
# request can make the bot hold in memory.
MAX_BODY_BYTES = 1024 * 1024
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _answer(
    start_response: Callable[..., Any], status: str, body: dict[str, object]
) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _read_body(environ: dict[str, Any]) -> bytes | tuple[str, str]:
    """The request body, or (status, reason) when it cannot be a request from Slack.

    The length is checked before a byte is read, so a huge body costs nothing but the refusal.
    """
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw_length:
        return "411 Length Required", "a body with a Content-Length is required"
    if not re.fullmatch(r"[0-9]{1,19}", raw_length):
        return "400 Bad Request", "Content-Length is not a number"
    length = int(raw_length)
    if length > MAX_BODY_BYTES:
        return "413 Content Too Large", f"bodies over {MAX_BODY_BYTES} bytes are refused"
    stream = environ["wsgi.input"]
    chunks, left = [], length
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            return "400 Bad Request", "the body ended before its Content-Length"
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _verified_body(environ: dict[str, Any], verifier: SignatureVerifier) -> bytes | tuple[str, str]:
    """Slack's v0 signature (https://docs.slack.dev/authentication/verifying-requests-from-slack):
    HMAC-SHA256 over `v0:<timestamp>:<body>`, the timestamp within 5 minutes."""
    body = _read_body(environ)
    if isinstance(body, tuple):
        return body
    timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP") or "")
    signature = str(environ.get("HTTP_X_SLACK_SIGNATURE") or "")
    if not _TIMESTAMP.fullmatch(timestamp):
        return "401 Unauthorized", "X-Slack-Request-Timestamp is missing or not a number"
    if not verifier.is_valid(body, timestamp, signature):
        return "401 Unauthorized", "the signature does not match or the timestamp is stale"
    return body


def make_wsgi(
    app: App, store: Store, signing_secret: str, lease_holder: str | None = None
) -> Callable[..., Iterable[bytes]]:
    """The HTTP edge: health, then size cap and signature check, and only then Bolt.

    `GET /healthz` says whether the database takes a write (503 if not) and, as `holds_lease`,
    whether this replica (the watcher lease's `lease_holder`) is the job watcher now: every
    healthy replica answers 200, and an orchestrator can tell which one polls.

    This layer, not Bolt, authenticates requests: Bolt's own check logs a rejected body whole
    (RequestVerification._debug_log_error), and a body is never logged here. Keeping it in the
    WSGI app means any WSGI server in front keeps the same guarantees.
    """
    slack = SlackRequestHandler(app)
    verifier = SignatureVerifier(signing_secret)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with traced():
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            if method == "GET" and path == "/healthz":
                try:
                    store.check_writable()
                except Exception as exc:  # health checks report, they do not raise
                    log.warning("health check: the database cannot be written (%s)", exc)
                    return _answer(
                        start_response,
                        "503 Service Unavailable",
                        {"ok": False, "error": type(exc).__name__},
                    )
                holds = lease_holder is not None and store.lease_holder(LEASE_NAME) == lease_holder
                return _answer(start_response, "200 OK", {"ok": True, "holds_lease": holds})
            if method == "POST" and path == slack.path:
                body = _verified_body(environ, verifier)
                if isinstance(body, tuple):
                    status, reason = body
                    log.warning(
                        "refused a request to %s: %s",
                        path,
                        reason,
                        extra={"remote": environ.get("REMOTE_ADDR"), "status": status[:3]},
                    )
                    return _answer(start_response, status, {"error": "invalid request"})
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
            return slack(environ, start_response)

    return wsgi


def slack_credentials(socket_mode: bool = False) -> tuple[str, str, str | None]:
    token = os.environ.get("SLACK_BOT_TOKEN", "")
    secret = os.environ.get("SLACK_SIGNING_SECRET", "")
    app_token = os.environ.get("SLACK_APP_TOKEN")
    missing = [
        n for n, v in (("SLACK_BOT_TOKEN", token), ("SLACK_SIGNING_SECRET", secret)) if not v
    ]
    if socket_mode and not app_token:
        missing.append("SLACK_APP_TOKEN")
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set. Install the Slack app from slack-app-manifest.yml and "
            "copy its tokens into the environment (see the README's 'Slack' section)."
        )
    return token, secret, app_token


@dataclass
class Running:
    """A started bot: its HTTP server (if any), Slack deps and background watcher."""

    app: App
    deps: SlackDeps
    server: WSGIServer | None
    stop_watcher: Callable[[], None]

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def shutdown(self) -> None:
        self.stop_watcher()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_bot(
    settings: Settings,
    *,
    port: int | None,
    host: str | None = None,
    socket_mode: bool = False,
    watcher: bool = True,
) -> Running:
    token, secret, _ = slack_credentials(socket_mode)
    store = Store(settings.database_url)
    ctx = Context(settings=settings, store=store)
    app, deps = build_app(
        ctx, store, token=token, signing_secret=secret, api_url=settings.slack_api_url
    )
    for plan in launcher.recover_launches(ctx, store):
        log.info("settled plan %s left launching by a previous run: now %s", plan.id, plan.state)
    # The watcher lease's holder name. Only one live process can hold a host and port, so a
    # bot restarted on its usual port takes its own lease back at once instead of waiting for
    # it to lapse; otherwise a name no other process has.
    holder = f"{socket.gethostname()}:{port}" if port else default_holder()
    server = None
    if port is not None:
        server = make_server(
            host or settings.bind_address,
            port,
            make_wsgi(app, store, secret, holder if watcher else None),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        threading.Thread(target=server.serve_forever, name="gtbot-http", daemon=True).start()
        log.info(
            "gtbot listening on http://%s:%s/slack/events",
            host or settings.bind_address,
            server.server_address[1],
        )
    stop_watcher: Callable[[], None] = lambda: None  # noqa: E731
    if watcher:
        from bot.relabel import advance_chains
        from bot.results_service import completion_results
        from bot.watcher import Watcher, start_watcher

        def rounds(watcher: Watcher) -> None:
            """Automatic follow-up rounds, launched with their launcher's rights as they are."""
            advance_chains(watcher.ctx, watcher.store, watcher.tell, deps.auth.is_submitter)

        stop_watcher = start_watcher(
            ctx,
            store,
            SlackNotifier(deps.client),
            results=completion_results,
            holder=holder,
            after_tick=rounds,
        )
    running = Running(app=app, deps=deps, server=server, stop_watcher=stop_watcher)
    return running

"""Running the Slack app: HTTP (`gtbot serve`) or Socket Mode (`gtbot socket`).

HTTP is served by waitress (a production WSGI server: a pool of request threads, bodies capped
at MAX_BODY_BYTES before they are read) through Bolt's WSGI adapter, so the bind address is a
setting (Bolt's own `App.start()` always binds 0.0.0.0) and `GET /healthz` sits beside
`/slack/events`. Socket Mode serves `/healthz` the same way (it needs no public URL, but an
orchestrator still probes), so one HEALTHCHECK fits both.

Stopping (SIGTERM, Ctrl-C) is graceful within SHUTDOWN_SECONDS: the listening socket closes
first (nothing new is accepted), requests already read get their answers, the watcher stops
ticking, work in the lanes finishes or is handed back (its asker told), and the watcher lease
is freed so another replica takes over at its next tick.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import waitress
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier
from waitress import wasyncore

from bot.context import Context
from bot.errors import ConfigError
from bot.jobs import launcher
from bot.jobs.watcher import LEASE_NAME, default_holder
from bot.lanes import AckGate, Lanes
from bot.logs import traced
from bot.settings import Settings
from bot.state import Store
from handlers.slack import SlackDeps, SlackNotifier, build_app

log = logging.getLogger("gtbot.server")

# Docker's `stop` sends SIGTERM and kills 10 s later: the lanes get 7 s; the remaining 3 s are
# for telling the askers of interrupted work (a Slack post each) and closing, which on a loaded
# machine took over 2 s (an 8 s budget ended at 10.3 s).
SHUTDOWN_SECONDS = 7.0
# Request threads: each one only acks and hands work to a lane (a few milliseconds), so a few
# serve bursts of Slack's requests; waitress queues connections beyond them, it never drops.
HTTP_THREADS = 8

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


def _health(
    start_response: Callable[..., Any],
    store: Store,
    lease_holder: str | None,
    connected: Callable[[], bool] | None,
) -> Iterable[bytes]:
    """`{"ok": true, "holds_lease": ...}`, or 503 when the database cannot take a write or
    (Socket Mode) the connection to Slack is down."""
    try:
        store.check_writable()
    except Exception as exc:  # health checks report, they do not raise
        log.warning("health check: the database cannot be written (%s)", exc)
        return _answer(
            start_response, "503 Service Unavailable", {"ok": False, "error": type(exc).__name__}
        )
    holds = lease_holder is not None and store.lease_holder(LEASE_NAME) == lease_holder
    body: dict[str, object] = {"ok": True, "holds_lease": holds}
    if connected is not None:
        body["socket_mode"] = up = bool(connected())
        if not up:
            body.update(ok=False, error="not connected to Slack")
            return _answer(start_response, "503 Service Unavailable", body)
    return _answer(start_response, "200 OK", body)


def make_health_wsgi(
    store: Store, lease_holder: str | None, connected: Callable[[], bool]
) -> Callable[..., Iterable[bytes]]:
    """Socket Mode's HTTP side: `/healthz` and nothing else (Slack talks over the WebSocket)."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with traced():
            if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == "/healthz":
                return _health(start_response, store, lease_holder, connected)
            return _answer(start_response, "404 Not Found", {"error": "only /healthz is here"})

    return wsgi


def make_wsgi(
    app: App,
    store: Store,
    signing_secret: str,
    lease_holder: str | None = None,
    gate: AckGate | None = None,
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
    gate = gate or AckGate()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with traced():
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            if method == "GET" and path == "/healthz":
                return _health(start_response, store, lease_holder, None)
            if method == "POST" and path == slack.path:
                with gate.acking():
                    return _slack_request(environ, start_response)
            return slack(environ, start_response)

    def _slack_request(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        body = _verified_body(environ, verifier)
        if isinstance(body, tuple):
            status, reason = body
            log.warning(
                "refused a request to %s: %s",
                environ.get("PATH_INFO"),
                reason,
                extra={"remote": environ.get("REMOTE_ADDR"), "status": status[:3]},
            )
            return _answer(start_response, status, {"error": "invalid request"})
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return slack(environ, start_response)

    return wsgi


def slack_credentials(socket_mode: bool = False) -> tuple[str, str | None, str | None]:
    """The Slack tokens this way of running needs: HTTP checks requests with the signing
    secret; Socket Mode is authenticated by its app-level token and needs no signing secret."""
    token = os.environ.get("SLACK_BOT_TOKEN", "")
    secret = os.environ.get("SLACK_SIGNING_SECRET", "") or None
    app_token = os.environ.get("SLACK_APP_TOKEN") or None
    needed: list[tuple[str, str | None]] = [("SLACK_BOT_TOKEN", token)]
    needed += (
        [("SLACK_APP_TOKEN", app_token)] if socket_mode else [("SLACK_SIGNING_SECRET", secret)]
    )
    missing = [name for name, value in needed if not value]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set. Install the Slack app from "
            f"{'slack-app-manifest.socket.yml' if socket_mode else 'slack-app-manifest.yml'} and "
            "copy its tokens into the environment (see the README's 'Slack' section)."
        )
    return token, secret, app_token


class HttpServer:
    """waitress on its own thread, with a stop in two steps: stop accepting, then close."""

    def __init__(self, wsgi: Callable[..., Iterable[bytes]], host: str, port: int) -> None:
        self.server: Any = waitress.create_server(
            wsgi,
            host=host,
            port=port,
            threads=HTTP_THREADS,
            # The same cap as the WSGI layer's: a larger body is refused on its Content-Length
            # before it is read (waitress refuses a length >= the setting, the WSGI layer one
            # > MAX_BODY_BYTES, so one more byte makes both say "over 1 MiB").
            max_request_body_size=MAX_BODY_BYTES + 1,
            backlog=1024,
            connection_limit=500,
            channel_timeout=60,
            ident="gtbot",
            expose_tracebacks=False,
            asyncore_use_poll=True,
        )
        self.thread = threading.Thread(target=self.server.run, name="gtbot-http", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    @property
    def host(self) -> str:
        return str(self.server.effective_host)

    def _in_loop(self, thunk: Callable[[], None]) -> None:
        """Run `thunk` on the server's own thread (waitress's loop is not thread-safe)."""
        self.server.trigger.pull_trigger(thunk)

    def stop_accepting(self) -> None:
        """Close the listening socket: new connections are refused from now on."""
        done = threading.Event()

        def close_listener() -> None:
            wasyncore.dispatcher.close(self.server)
            done.set()

        self._in_loop(close_listener)
        done.wait(2)

    def busy(self) -> bool:
        """Whether a request is still being answered (its ack not yet sent)."""
        dispatcher = self.server.task_dispatcher
        channels = list(self.server.active_channels.values())
        return bool(dispatcher.queue) or any(getattr(c, "requests", None) for c in channels)

    def close(self, deadline: float) -> None:
        """Let answers in progress go out (until `deadline`), then close every connection."""
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.02)

        def close_all() -> None:
            for channel in list(self.server.active_channels.values()):
                channel.close()
            self.server.trigger.close()

        self._in_loop(close_all)
        self.thread.join(max(0.5, deadline - time.monotonic()))
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)


@dataclass
class Running:
    """A started bot: its HTTP server (`/slack/events` and `/healthz`, or `/healthz` alone in
    Socket Mode), Slack deps, background watcher and, in Socket Mode, its connection."""

    app: App
    deps: SlackDeps
    server: HttpServer | None
    stop_watcher: Callable[[], None]
    socket: Any = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def shutdown(self, seconds: float = SHUTDOWN_SECONDS) -> None:
        """Stop gracefully within `seconds` (+2 s to close the sockets)."""
        deadline = time.monotonic() + seconds
        if self.server is not None:
            self.server.stop_accepting()
        if self.socket is not None:
            try:
                self.socket.close()
            except Exception:  # the connection may already be gone
                log.exception("closing the Socket Mode connection failed")
        self.stop_watcher()
        quick, long = self.deps.lanes.stop(deadline)
        self.deps.board.stop()
        if self.server is not None:
            self.server.close(max(deadline, time.monotonic() + 1))
        log.info(
            "gtbot stopped: %d command(s) handed back, %d interrupted",
            len(quick.handed_back) + len(long.handed_back),
            len(quick.interrupted) + len(long.interrupted),
        )


def start_bot(
    settings: Settings,
    *,
    port: int | None,
    host: str | None = None,
    socket_mode: bool = False,
    watcher: bool = True,
) -> Running:
    """Start serving Slack: `port` for HTTP (`/slack/events` and `/healthz`; in Socket Mode
    `/healthz` only), None for no HTTP at all; 0 picks a free port."""
    token, secret, app_token = slack_credentials(socket_mode)
    store = Store(settings.database_url)
    ctx = Context(settings=settings, store=store)
    lanes = Lanes(settings.long_jobs)
    app, deps = build_app(
        ctx,
        store,
        token=token,
        signing_secret=secret,
        api_url=settings.slack_api_url,
        lanes=lanes,
    )
    for plan in launcher.recover_launches(ctx, store):
        log.info("settled plan %s left launching by a previous run: now %s", plan.id, plan.state)
    # The watcher lease's holder name. Only one live process can hold a host and port, so a
    # bot restarted on its usual port takes its own lease back at once instead of waiting for
    # it to lapse; otherwise a name no other process has.
    holder = f"{socket.gethostname()}:{port}" if port else default_holder()
    handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        handler = SocketModeHandler(app, app_token)
    server = None
    if port is not None:
        lease_holder = holder if watcher else None
        wsgi = (
            make_health_wsgi(store, lease_holder, handler.client.is_connected)
            if handler is not None
            else make_wsgi(app, store, secret or "", lease_holder, lanes.gate)
        )
        server = HttpServer(wsgi, host or settings.bind_address, port)
        what = "/healthz" if handler is not None else "/slack/events"
        log.info("gtbot listening on http://%s:%s%s", server.host, server.port, what)
    stop_watcher: Callable[[], None] = lambda: None  # noqa: E731
    if watcher:
        from bot.job_results import completion_results
        from bot.jobs.relabel import advance_chains
        from bot.jobs.watcher import Watcher, start_watcher

        def rounds(watcher: Watcher) -> None:
            """Automatic follow-up rounds, launched with their launcher's rights as they are."""
            advance_chains(watcher.ctx, watcher.store, watcher.tell, deps.auth.is_submitter)

        def background(name: str, run: Callable[[], None], abandon: Callable[[str], None]) -> int:
            return lanes.long.submit(run, name=name, abandon=abandon)

        stop_watcher = start_watcher(
            ctx,
            store,
            SlackNotifier(deps.client),
            results=completion_results,
            holder=holder,
            after_tick=rounds,
            background=background,
        )
    if handler is not None:
        handler.connect()
        log.info("gtbot connected to Slack in Socket Mode")
    return Running(app=app, deps=deps, server=server, stop_watcher=stop_watcher, socket=handler)

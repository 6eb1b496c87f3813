"""Running the Slack app: HTTP (`gtbot serve`) or Socket Mode (`gtbot socket`).

HTTP is served through Bolt's WSGI adapter on a threaded wsgiref server, so the bind address is
a setting (Bolt's own `App.start()` always binds 0.0.0.0) and `GET /healthz` can sit beside
`/slack/events` for orchestrators.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy as sa
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import launcher
from bot.context import Context
from bot.errors import ConfigError
from bot.settings import Settings
from bot.state import Store
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


def make_wsgi(app: App, store: Store) -> Callable[..., Iterable[bytes]]:
    slack = SlackRequestHandler(app)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == "/healthz":
            body: dict[str, object]
            try:
                with store.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                status, body = "200 OK", {"ok": True, "error": None}
            except Exception as exc:  # health checks report, they do not raise
                status, body = "503 Service Unavailable", {"ok": False, "error": type(exc).__name__}
            start_response(status, [("Content-Type", "application/json")])
            body = {k: v for k, v in body.items() if v is not None}
            return [json.dumps(body).encode()]
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
    server = None
    holder = None
    if port is not None:
        server = make_server(
            host or settings.bind_address,
            port,
            make_wsgi(app, store),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        if port:
            # Only one live process can hold this host and port, so a bot restarted on its
            # usual port takes its own lease back at once instead of waiting for it to lapse.
            holder = f"{socket.gethostname()}:{port}"
        threading.Thread(target=server.serve_forever, name="gtbot-http", daemon=True).start()
        log.info(
            "gtbot listening on http://%s:%s/slack/events",
            host or settings.bind_address,
            server.server_address[1],
        )
    stop_watcher: Callable[[], None] = lambda: None  # noqa: E731
    if watcher:
        from bot.results_service import completion_results
        from bot.watcher import start_watcher

        stop_watcher = start_watcher(
            ctx, store, SlackNotifier(deps.client), results=completion_results, holder=holder
        )
    running = Running(app=app, deps=deps, server=server, stop_watcher=stop_watcher)
    return running

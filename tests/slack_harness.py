"""A real gtbot HTTP endpoint on loopback, driven the way Slack drives it.

Shared by the Slack app tests and `bench/ack.py`: the bot is started with `start_bot` (its WSGI
app on a real port), talks to a recording stub of the Slack Web API, moto S3 and the Ground
Truth emulator, and receives requests signed exactly as Slack signs them (v0 HMAC-SHA256), so
the signature check, the retry middleware and the ack path are the production ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import boto3
from slack_stub import Call, SlackStub

from aws.emulator.groundtruth import (
    EmulatorSettings,
    GroundTruthEmulator,
    start_groundtruth_emulator,
)
from bot.settings import Settings
from handlers import blocks
from handlers.blocks import say
from handlers.server import Running, start_bot

TOKEN = "xoxb-000000000000-not-a-real-token"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM_ID = "T1"
SANDBOX_TEAM = "arn:aws:sagemaker:us-east-2:123456789012:workteam/private-crowd/sandbox-labelers"
CHANNEL = "CGTBOT"
ELSEWHERE = "CRANDOM"
ADMIN = "UADMIN"
SUBMITTER = "USUBMIT"
OTHER = "UOTHER"


class RecordingStub(SlackStub):
    """The shared stub, plus the path each call came to (to tell response_urls apart)."""

    def _parse(self, handler: BaseHTTPRequestHandler, raw: bytes) -> dict[str, Any]:
        params = super()._parse(handler, raw)
        params["_path"] = urllib.parse.urlparse(handler.path).path
        return params

    def responses(self, response_id: str) -> list[dict[str, Any]]:
        """Everything posted to one slash command's (or click's) response_url, in order."""
        path = f"/response/{response_id}"
        return [c.params for c in self.of("response_url") if c.params.get("_path") == path]

    def api_calls(self) -> list[Call]:
        """Web API calls (not response_url posts): what a refusal must never cause."""
        with self.lock:
            return [c for c in self.calls if c.method != "response_url"]


def signature_headers(body: bytes, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


@dataclass(frozen=True)
class Sent:
    """One HTTP delivery to the bot: its status, body and how long the ack took."""

    status: int
    body: bytes
    seconds: float
    response_id: str


def _post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Harness:
    running: Running
    stub: RecordingStub
    emu: GroundTruthEmulator
    projects_dir: Path
    s3_url: str
    secret: str = SECRET
    counter: list[int] = field(default_factory=lambda: [0])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    # ------------------------------------------------------------------ deliveries

    def deliver(
        self,
        body: bytes,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        headers: Mapping[str, str] | None = None,
        signed: bool = True,
        response_id: str = "",
    ) -> Sent:
        all_headers = {"Content-Type": content_type}
        if signed:
            all_headers.update(signature_headers(body, self.secret))
        all_headers.update(headers or {})
        started = time.perf_counter()
        status, answer = _post(self.url + "/slack/events", body, all_headers)
        return Sent(status, answer, time.perf_counter() - started, response_id)

    def command_body(self, text: str, *, user: str, channel: str, response_id: str) -> bytes:
        return urllib.parse.urlencode(
            {
                "token": "deprecated-verification-token",
                "team_id": TEAM_ID,
                "team_domain": "lab",
                "channel_id": channel,
                "channel_name": "gtbot",
                "user_id": user,
                "user_name": user.lower(),
                "command": "/gt",
                "text": text,
                "api_app_id": "A1",
                "response_url": f"{self.stub.url}/response/{response_id}",
                "trigger_id": f"trigger.{response_id}",
            }
        ).encode()

    def command(
        self,
        text: str,
        *,
        user: str = ADMIN,
        channel: str = CHANNEL,
        headers: Mapping[str, str] | None = None,
        signed: bool = True,
    ) -> Sent:
        """`/gt <text>` as Slack posts it; its response_url is unique to this delivery."""
        rid = uuid.uuid4().hex
        body = self.command_body(text, user=user, channel=channel, response_id=rid)
        return self.deliver(body, headers=headers, signed=signed, response_id=rid)

    def click_body(
        self, action_id: str, value: str, *, user: str, channel: str, message_ts: str, rid: str
    ) -> bytes:
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "lab"},
            "user": {"id": user, "team_id": TEAM_ID},
            "api_app_id": "A1",
            "token": "deprecated-verification-token",
            "trigger_id": f"trigger.{rid}",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "channel": {"id": channel, "name": "gtbot"},
            "message": {"type": "message", "ts": message_ts, "text": "card"},
            "response_url": f"{self.stub.url}/response/{rid}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "gt_job" if action_id == blocks.STOP_ACTION else "gt_plan",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()

    def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = ADMIN,
        channel: str = CHANNEL,
        message_ts: str = "0.0",
        retry: int | None = None,
    ) -> Sent:
        """A button click; `retry` adds X-Slack-Retry-Num as Slack's re-deliveries carry."""
        rid = uuid.uuid4().hex
        body = self.click_body(
            action_id, value, user=user, channel=channel, message_ts=message_ts, rid=rid
        )
        headers = {}
        if retry is not None:
            headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return self.deliver(body, headers=headers, response_id=rid)

    # ------------------------------------------------------------------ observing

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
    ) -> Any:
        """Poll until `predicate()` is truthy: the work after an ack runs in the background."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_responses(self, sent: Sent, count: int = 1, timeout: float = 15.0) -> list[Any]:
        return list(
            self.wait_for(
                lambda: (r := self.stub.responses(sent.response_id)) and len(r) >= count and r,
                timeout,
                f"{count} response(s) to {sent.response_id}",
            )
        )

    def progress_messages(self, text: str, channel: str = CHANNEL) -> list[dict[str, Any]]:
        """The progress messages long commands `/gt <text>` posted in the channel, in order."""
        shown = say("/gt " + text.replace("`", "'"))
        title = f"`{shown}`"
        return [
            m
            for m in self.stub.messages.get(channel, [])
            if title in str(m.get("text")) and not m.get("thread_ts")
        ]

    def progress_message(self, text: str, channel: str = CHANNEL) -> dict[str, Any] | None:
        """The last progress message of `/gt <text>` in the channel."""
        found = self.progress_messages(text, channel)
        return found[-1] if found else None

    def replies(self, parent: dict[str, Any], channel: str = CHANNEL) -> list[dict[str, Any]]:
        """The replies in a message's thread, oldest first."""
        return [m for m in self.stub.thread(channel, parent["ts"]) if m["ts"] != parent["ts"]]

    def progress_lines(self, text: str, channel: str = CHANNEL) -> list[str]:
        """What the progress message of `/gt <text>` said, in order: posted, then updated."""
        parent = self.progress_message(text, channel)
        if parent is None:
            return []
        # The stub keeps a message as last edited (as Slack does); what was first posted is in
        # the chat.postMessage call.
        title = "`" + say("/gt " + text.replace("`", "'")) + "`"
        posted = [
            str(c.params.get("text"))
            for c in self.stub.of("chat.postMessage")
            if c.params.get("channel") == channel
            and title in str(c.params.get("text"))
            and not c.params.get("thread_ts")
        ]
        updates = [
            str(c.params.get("text"))
            for c in self.stub.of("chat.update")
            if c.params.get("ts") == parent["ts"]
        ]
        return [posted[-1] if posted else str(parent["text"]), *updates]

    def said(
        self, text: str, *, user: str = ADMIN, channel: str = CHANNEL, timeout: float = 30.0
    ) -> str:
        """`/gt <text>`, and what its asker reads: the response_url answers (a quick command,
        a refusal, a failed quick check), or a long command's replies in the thread of its
        progress message once that message says it ended."""
        before = len(self.progress_messages(text, channel))
        sent = self.command(text, user=user, channel=channel)

        def answer() -> str | None:
            if responses := self.stub.responses(sent.response_id):
                return texts(responses)
            posted = self.progress_messages(text, channel)
            if len(posted) <= before:
                return None
            replies = self.replies(posted[-1], channel)
            last = self.progress_now(text, channel)
            ended = any(w in last for w in ("finished in", "failed after", "interrupted"))
            return texts(replies) if replies and ended else None

        return str(self.wait_for(answer, timeout, f"the answer to /gt {text}"))

    def progress_now(self, text: str, channel: str = CHANNEL) -> str:
        """What the progress message of `/gt <text>` says now ("" before it is posted)."""
        lines = self.progress_lines(text, channel)
        return lines[-1] if lines else ""

    def long_reply(
        self, text: str, *, channel: str = CHANNEL, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The answer of a long command `/gt <text>`: the first reply in its progress
        message's thread (Slack's stored message: `text` and `blocks`)."""

        def answer() -> dict[str, Any] | None:
            parent = self.progress_message(text, channel)
            replies = self.replies(parent, channel) if parent is not None else []
            return replies[0] if replies else None

        return dict(self.wait_for(answer, timeout, f"the answer to /gt {text}"))

    def buckets(self) -> list[str]:
        s3 = boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-2")
        return sorted(b["Name"] for b in s3.list_buckets().get("Buckets", []))

    def aws_calls(self, operation: str | None = None) -> list[str]:
        calls = list(self.emu.calls)
        return calls if operation is None else [c for c in calls if c == operation]

    def plan_cards(self) -> list[Call]:
        """chat.postMessage calls that carry a Launch button."""
        return [c for c in self.stub.of("chat.postMessage") if _action_value(c, "gt_launch")]

    def plan_at(self, index: int) -> tuple[str, str]:
        """The plan id on the index-th plan card, and the card's ts once the store has it."""
        plan_id = _action_value(self.plan_cards()[index], "gt_launch")
        assert plan_id is not None
        ts = self.wait_for(
            lambda: (p := self.running.deps.store.get_plan(plan_id)) and p.message_ts,
            10,
            "the plan card's ts in the store",
        )
        return plan_id, str(ts)

    def submit_plan(self, project: str = "demo", *, user: str = ADMIN) -> tuple[str, str]:
        """`/gt submit` until its plan card is posted: (plan id, card ts)."""
        before = len(self.plan_cards())
        self.command(f"submit {project}", user=user)
        self.wait_for(lambda: len(self.plan_cards()) > before, 30, "the plan card")
        self.wait_for(
            lambda: "the plan card is below" in self.progress_now(f"submit {project}"),
            10,
            "the end of submit's progress message",
        )
        return self.plan_at(before)

    def launch(self, project: str = "demo", *, user: str = SUBMITTER) -> tuple[str, str]:
        """Submit, click Launch, and wait for the plan to be launched: (job name, card ts)."""
        plan_id, ts = self.submit_plan(project, user=user)
        self.click(blocks.LAUNCH_ACTION, plan_id, user=user, message_ts=ts)
        plan = self.wait_for(
            lambda: (
                (p := self.running.deps.store.get_plan(plan_id)) and p.state == "launched" and p
            ),
            30,
            "the launch",
        )
        return str(plan.job_name), ts

    def stop(self) -> None:
        """Stop the three servers side by side: each waits out its own poll interval."""
        stoppers = [self.running.shutdown, self.emu.stop, self.stub.stop]
        threads = [threading.Thread(target=f) for f in stoppers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)


def _action_value(call: Call, action_id: str) -> str | None:
    for block in call.params.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return str(element.get("value"))
    return None


def texts(responses: list[dict[str, Any]]) -> str:
    """Everything a person would read in some responses: text and the blocks' text."""
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in responses)


def start_harness(
    workdir: Path,
    s3_url: str,
    *,
    admins: str = ADMIN,
    submitters: str = SUBMITTER,
    channels: str = CHANNEL,
    emulator: EmulatorSettings | None = None,
    watcher: bool = False,
    frames: int = 3,
    stub: RecordingStub | None = None,
    setenv: Callable[[str, str], None] = os.environ.__setitem__,
    settings_env: Mapping[str, str] | None = None,
) -> Harness:
    """A bot on 127.0.0.1:0 with a `demo` project; `setenv` (monkeypatch's in tests) sets the
    variables boto3 and `start_bot` read, so a test leaves the process as it found it.
    `settings_env` adds GTBOT_ settings (e.g. GTBOT_LONG_JOBS)."""
    from conftest import write_project

    projects = workdir / "projects"
    projects.mkdir(parents=True, exist_ok=True)
    write_project(projects, "demo", frames=frames, job_workteam_arn=SANDBOX_TEAM)
    stub = stub or RecordingStub()
    emu = start_groundtruth_emulator(s3_url, emulator or EmulatorSettings(seed=1))
    for key, value in {
        "AWS_ENDPOINT_URL_SAGEMAKER": emu.url,
        "AWS_ENDPOINT_URL_S3": s3_url,
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
    }.items():
        setenv(key, value)
    settings = Settings.from_env(
        {
            "GTBOT_PROJECTS_DIR": str(projects),
            "GTBOT_DATABASE_URL": f"sqlite:///{workdir / 'gtbot.db'}",
            "GTBOT_CONFIG": str(_empty_lab_config(workdir)),
            "GTBOT_ADMINS": admins,
            "GTBOT_SUBMITTERS": submitters,
            "GTBOT_CHANNELS": channels,
            "SLACK_API_URL": stub.api_url,
            "GTBOT_BIND": "127.0.0.1",
        }
        | dict(settings_env or {})
    )
    running = start_bot(settings, port=0, host="127.0.0.1", watcher=watcher)
    stub.clear()  # auth.test at start-up is not a side effect of any request
    return Harness(running=running, stub=stub, emu=emu, projects_dir=projects, s3_url=s3_url)


def restart(harness: Harness, **env: str) -> None:
    """Stop the bot and start it again on the same database, emulators and stub, with some
    settings changed (e.g. GTBOT_SUBMITTERS): what an admin's restart does."""
    old = harness.running.deps.ctx.settings
    harness.running.shutdown()
    settings = Settings.from_env(
        {
            "GTBOT_PROJECTS_DIR": str(old.projects_dir),
            "GTBOT_DATABASE_URL": old.database_url,
            "GTBOT_CONFIG": str(old.lab_config_path),
            "GTBOT_ADMINS": ",".join(sorted(old.admins)),
            "GTBOT_SUBMITTERS": ",".join(sorted(old.submitters)),
            "GTBOT_CHANNELS": ",".join(sorted(old.channels)),
            "SLACK_API_URL": str(old.slack_api_url),
            "GTBOT_BIND": "127.0.0.1",
        }
        | env
    )
    harness.running = start_bot(settings, port=0, host="127.0.0.1", watcher=False)
    harness.stub.clear()


def _empty_lab_config(workdir: Path) -> Path:
    """An explicit, empty gtbot.yml, so a stray one in the working directory cannot leak in."""
    path = workdir / "gtbot.yml"
    path.write_text("job: {}\n")
    return path

"""Shared pieces of the watcher tests and bench: a job rig on the emulators and a Slack stub
that also records each answer's HTTP status and the caller's token.

The plain `SlackStub` records a call before deciding to answer 429, so counting "posts" needs
the status; and two bot processes talking to one stub are told apart by their bot tokens.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from slack_stub import Call, SlackStub

from aws.clients import ClientFactory
from aws.emulator.groundtruth import GroundTruthEmulator
from bot.cards import JobCard
from bot.context import Context
from bot.jobs.watcher import Posted, PostFailed
from bot.settings import Settings
from bot.state import Store
from bot.synthetic import draw_frames

REGION = "us-east-2"
TEAM = f"arn:aws:sagemaker:{REGION}:123456789012:workteam/private-crowd/sandbox-labelers"
ROLE = "arn:aws:iam::123456789012:role/service-role/GtbotTestRole"
DATA, OUTPUT, UI = "watch-frames", "watch-frames-output", "watch-ui"
CARD_RE = re.compile(
    r"^(?P<job>\S+): (?P<status>\w+) \[[-#]*\] "
    r"(?:\d+% \((?P<labeled>\d+)/\d+ labeled\)|waiting for the first objects)$"
)


class _TrackingCalls(list[Call]):
    """The stub's call list; remembers, per handler thread, the call it just appended."""

    def __init__(self, local: threading.local) -> None:
        super().__init__()
        self._local = local

    def append(self, call: Call) -> None:
        super().append(call)
        self._local.call = call


class RecordingSlackStub(SlackStub):
    """SlackStub plus: the HTTP status and `ok` of every answer, and the bot token used."""

    def __init__(self) -> None:
        self._local = threading.local()
        super().__init__()
        self.calls = _TrackingCalls(self._local)
        self.answers: dict[int, tuple[int, bool]] = {}
        # Answer 429 to the next n calls whose text contains the key (e.g. the completion post).
        self.rate_limit_text: dict[str, int] = {}
        # Answer `{"ok": false, "error": ...}` to the next call whose text contains the key.
        self.fail_text: dict[str, str] = {}

    def _parse(self, handler: Any, raw: bytes) -> dict[str, Any]:
        params = super()._parse(handler, raw)
        params["_token"] = str(handler.headers.get("Authorization", "")).removeprefix("Bearer ")
        self._local.call = None
        text = str(params.get("text", ""))
        with self.lock:
            for needle, left in self.rate_limit_text.items():
                if left > 0 and needle in text:
                    self.rate_limit_text[needle] = left - 1
                    self.rate_limit_next += 1
        return params

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get("text", ""))
        with self.lock:
            needle = next((n for n in self.fail_text if n in text), None)
            error = self.fail_text.pop(needle) if needle is not None else None
        if error is not None:
            return {"ok": False, "error": error}
        return super()._answer(method, params)

    def limited(self) -> list[Call]:
        """Calls answered 429."""
        with self.lock:
            return [c for c in self.calls if self.answers.get(id(c), (0, False))[0] == 429]

    def by_token(self, token: str) -> list[Call]:
        """Chat calls made with one bot token: which process posted."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c.method.startswith("chat.") and c.params.get("_token") == token
            ]

    def _send(
        self,
        handler: Any,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        call = getattr(self._local, "call", None)
        if call is not None:
            with self.lock:
                self.answers[id(call)] = (status, bool(body.get("ok")))
        super()._send(handler, status, body, headers)

    def delivered(self, method: str) -> list[Call]:
        """Calls of `method` Slack accepted (200 and ok): what the channel really shows."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c.method == method and self.answers.get(id(c), (0, False)) == (200, True)
            ]

    def cards(self, channel: str | None = None) -> list[Call]:
        """Top-level posts with blocks: job cards (thread replies carry `thread_ts`)."""
        return [
            c
            for c in self.delivered("chat.postMessage")
            if c.params.get("blocks") and not c.params.get("thread_ts")
            if channel is None or c.params.get("channel") == channel
        ]

    def thread_posts(self, channel: str | None = None) -> list[Call]:
        return [
            c
            for c in self.delivered("chat.postMessage")
            if c.params.get("thread_ts")
            if channel is None or c.params.get("channel") == channel
        ]

    def completions(self, channel: str | None = None) -> list[Call]:
        """Completion posts: the thread replies that give the final counts."""
        return [c for c in self.thread_posts(channel) if "Counts:" in str(c.params["text"])]

    def updates(self, channel: str | None = None) -> list[Call]:
        return [
            c
            for c in self.delivered("chat.update")
            if channel is None or c.params.get("channel") == channel
        ]


def watcher_context(
    tmp_path: Path, setenv: Callable[[str, str], None], stub: SlackStub, **env: str
) -> Context:
    """The context a watcher test runs in: its own SQLite file and projects folder, the Slack
    stub as the Web API, and any other GTBOT_* settings given in `env`."""
    setenv("GTBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'gtbot.db'}")
    setenv("GTBOT_PROJECTS_DIR", str(tmp_path / "projects"))
    setenv("SLACK_API_URL", stub.api_url)
    for key, value in env.items():
        setenv(key, value)
    settings = Settings.from_env()
    return Context(settings=settings, store=Store(settings.database_url))


def card_state(call: Call) -> tuple[str, int, int]:
    """(status, labeled, failed objects) as a card shows them, from a recorded post or update."""
    match = CARD_RE.match(html.unescape(str(call.params["text"])))
    assert match, call.params["text"]
    blocks_text = json.dumps(call.params.get("blocks", []))
    failed = re.search(r"Failed objects: (\d+)", blocks_text)
    return match["status"], int(match["labeled"] or 0), int(failed[1]) if failed else 0


def text_of(call: Call) -> str:
    """A posted text as a reader sees it (Slack shows `&amp;` as `&`): the text of every block,
    one per line, or the message's `text` when it has no blocks."""
    blocks = call.params.get("blocks") or []
    parts = [] if blocks else [str(call.params.get("text", ""))]
    for block in blocks:
        if isinstance(block.get("text"), dict):
            parts.append(str(block["text"].get("text", "")))
        parts += [str(e.get("text", "")) for e in block.get("elements") or [] if "text" in e]
    return html.unescape("\n".join(parts))


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


TEMPLATE_URI = f"s3://{UI}/template.liquid.html"


def interface_template() -> str:
    """gtbot's own annotation interface for the sample project (two mice, MARS keypoints, no
    pre-annotation Lambda): the emulator renders every task from it, as Ground Truth would."""
    from bot.project import parse_project
    from bot.recipe import render_interface

    sample = Path(__file__).parent / "samples" / "project-config.yml"
    project = parse_project(sample, "demo", {})
    return render_interface(project, f"s3://{UI}/instructions.png")


@dataclass
class JobRig:
    """Buckets, frames, a manifest and the rendered annotation interface in the S3 emulator;
    jobs created straight in the Ground Truth emulator with boto3, as `/gt watch` would find
    them."""

    emulator: GroundTruthEmulator
    s3_url: str
    frames_dir: Path
    sm: Any = field(init=False)
    s3: Any = field(init=False)
    _prepared: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=self.emulator.url)
        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=self.s3_url)
        for bucket in (DATA, OUTPUT, UI):
            self.s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        bucket, _, key = TEMPLATE_URI.removeprefix("s3://").partition("/")
        self.s3.put_object(Bucket=bucket, Key=key, Body=interface_template().encode())

    def manifest(self, frames: int) -> str:
        """A manifest of `frames` small frames that carry their truth (no template needed)."""
        if frames not in self._prepared:
            paths = draw_frames(self.frames_dir / f"n{frames}", frames, width=200, height=150)
            lines = []
            for path in paths:
                key = f"n{frames}/{path.name}"
                self.s3.upload_file(str(path), DATA, key)
                lines.append(json.dumps({"source-ref": f"s3://{DATA}/{key}"}) + "\n")
            key = f"n{frames}/manifest.json"
            self.s3.put_object(Bucket=DATA, Key=key, Body="".join(lines).encode())
            self._prepared[frames] = f"s3://{DATA}/{key}"
        return self._prepared[frames]

    def create_job(
        self, name: str, *, frames: int = 4, workers: int = 1, manifest: str | None = None
    ) -> None:
        self.sm.create_labeling_job(
            LabelingJobName=name,
            LabelAttributeName="annotatedResult",
            InputConfig={
                "DataSource": {"S3DataSource": {"ManifestS3Uri": manifest or self.manifest(frames)}}
            },
            OutputConfig={"S3OutputPath": f"s3://{OUTPUT}/jobs/"},
            RoleArn=ROLE,
            HumanTaskConfig={
                "WorkteamArn": TEAM,
                "UiConfig": {"UiTemplateS3Uri": TEMPLATE_URI},
                "TaskTitle": "Label the mice",
                "TaskDescription": "Place every keypoint of both mice",
                "NumberOfHumanWorkersPerDataObject": workers,
                "TaskTimeLimitInSeconds": 300,
            },
        )

    def status(self, name: str) -> str:
        return str(self.sm.describe_labeling_job(LabelingJobName=name)["LabelingJobStatus"])

    def read(self, uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


class ScriptedSlack:
    """A notifier (the watcher's `Notifier`) that records every call; `fail[method]` lists the
    errors its next calls raise, in order, so a test scripts what Slack answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
        self.fail: dict[str, list[Exception | None]] = {}
        self.gone_users: set[str] = set()
        self.thread = Posted(keys=frozenset({"seen-key"}))  # what `posted` finds

    def _call(self, method: str, *args: object, **kwargs: object) -> None:
        self.calls.append((method, args, kwargs))
        if self.fail.get(method):
            error = self.fail[method].pop(0)  # None: this call goes through
            if error is not None:
                raise error

    def of(self, method: str) -> list[tuple[tuple[object, ...], dict[str, object]]]:
        return [(a, k) for m, a, k in self.calls if m == method]

    def post_card(self, channel: str, card: JobCard, thread_ts: str | None = None) -> str:
        self._call("post_card", channel, card, thread_ts)
        return "1700000000.000100"

    def update_card(self, channel: str, ts: str, card: JobCard) -> None:
        self._call("update_card", channel, ts, card)

    def post_thread(
        self,
        channel: str,
        thread_ts: str | None,
        text: str,
        key: str | None = None,
        *,
        mention: tuple[str, ...] = (),
        links: object = None,
        skip: frozenset[str] = frozenset(),
    ) -> str:
        self._call(
            "post_thread",
            channel,
            thread_ts,
            text,
            key=key,
            mention=mention,
            links=links,
            skip=skip,
        )
        return "1700000000.000200"

    def open_dm(self, user: str) -> str:
        self._call("open_dm", user)
        if user in self.gone_users:
            raise PostFailed("user_disabled", permanent=True)
        return f"D{user}"

    def upload_file(self, channel: str, thread_ts: str | None, path: Path, title: str) -> None:
        self._call("upload_file", channel, thread_ts, path, title)

    def posted(self, channel: str, thread_ts: str | None) -> Posted:
        self._call("posted", channel, thread_ts)
        return self.thread


class StubbedSageMaker(ClientFactory):
    """A client factory whose SageMaker clients are the test's (Stubber-wrapped) ones: `client`
    for every region but those in `per_region`; `asked` lists the regions asked for."""

    def __init__(self, client: object, per_region: dict[str, object] | None = None) -> None:
        super().__init__()
        self._sagemaker = client
        self._per_region = per_region or {}
        self.asked: list[str] = []

    def sagemaker(self, region: str) -> object:
        self.asked.append(region)
        return self._per_region.get(region, self._sagemaker)

"""The end of a job is told once, whatever fails on the way: a record of steps in the database.

Over loopback with the real SlackNotifier: the completion text and each picture are steps, each
done once. A failed upload never brings the text back; a permanent Slack error is reported once
and not retried; a crash between Slack's answer and the database write is found out by reading
the thread back (message metadata) before posting again; results that cannot be built are said
to be unavailable, once. Watching a finished job again does not tell its end again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from watcher_support import JobRig, RecordingSlackStub, text_of, wait_until, watcher_context

from aws.emulator.groundtruth import GroundTruthEmulator
from aws.groundtruth import JobInfo
from bot.context import Context
from bot.errors import GtBotError
from bot.jobs.watcher import Completion, TickReport, Watcher
from bot.state import Store, WatchRow
from handlers.slack import SlackNotifier, web_client

CHANNEL = "CDONE"


@pytest.fixture
def emulator(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    return make_emulator(rate=20.0, initializing_seconds=0.1, seed=3)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: RecordingSlackStub) -> Context:
    return watcher_context(tmp_path, monkeypatch.setenv, stub)


class Results:
    """A results hook with two pictures; counts its calls, can be told to fail."""

    def __init__(self, folder: Path, fail: BaseException | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files = []
        for name in ("preview.png", "agreement.png"):
            Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / name)
            self.files.append(folder / name)
        self.fail = fail
        self.calls = 0

    def __call__(self, ctx: Context, watch: WatchRow, job: JobInfo) -> Completion:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return Completion(text="Consensus: 2 frames.", files=tuple(self.files))


class Killed(BaseException):
    """The process died here (kill -9): nothing after this line ran."""


class CrashAfter:
    """The real notifier, except that the process dies right after Slack accepted one call."""

    def __init__(self, inner: SlackNotifier, method: str) -> None:
        self.inner = inner
        self.method = method
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            answer = real(*args, **kwargs)
            if not self.crashed:
                self.crashed = True
                raise Killed()
            return answer

        return call


def _notifier(ctx: Context) -> SlackNotifier:
    assert ctx.settings.slack_api_url
    return SlackNotifier(web_client("xoxb-test", ctx.settings.slack_api_url))


def _finished_job(ctx: Context, rig: JobRig, name: str) -> Store:
    rig.create_job(name, frames=2)
    wait_until(lambda: rig.status(name) == "Completed", 15, f"{name} to complete")
    assert ctx.store is not None
    ctx.store.add_watch(job_name=name, region="us-east-2", channel=CHANNEL, owner="U1")
    return ctx.store


def _ticks(watcher: Watcher, n: int) -> list[TickReport]:
    reports = []
    for _ in range(n):
        reports.append(watcher.tick())
        time.sleep(0.05)
    return reports


def _uploads(stub: RecordingSlackStub) -> list[str]:
    """Titles of the files Slack accepted into a channel."""
    return [
        str(f.get("title"))
        for c in stub.delivered("files.completeUploadExternal")
        for f in c.params.get("files", [])
    ]


def test_a_failed_upload_never_posts_the_text_again(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, tmp_path: Path
) -> None:
    """Slack fails the upload for a while: the text is posted once, the pictures once each."""
    job = "mice-upload-fails"
    store = _finished_job(ctx, rig, job)
    results = Results(tmp_path / "out")
    watcher = Watcher(ctx, store, _notifier(ctx), holder="w", lease_seconds=30, results=results)
    stub.fail_methods["files.getUploadURLExternal"] = "internal_error"
    _ticks(watcher, 3)
    assert len(stub.completions(CHANNEL)) == 1
    del stub.fail_methods["files.getUploadURLExternal"]
    reports = _ticks(watcher, 3)
    assert [r.announced for r in reports] == [[job], [], []]
    assert len(stub.completions(CHANNEL)) == 1
    assert sorted(_uploads(stub)) == [f"{job}: agreement.png", f"{job}: preview.png"]
    assert results.calls == 1
    watch = store.get_watch(job)
    assert watch is not None and watch.completion_announced


def test_a_permanent_slack_error_is_reported_once(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, tmp_path: Path
) -> None:
    """No files:write scope: each picture is tried once and said to be missing once."""
    job = "mice-no-files-scope"
    store = _finished_job(ctx, rig, job)
    stub.fail_methods["files.getUploadURLExternal"] = "missing_scope"
    watcher = Watcher(
        ctx, store, _notifier(ctx), holder="w", lease_seconds=30, results=Results(tmp_path / "o")
    )
    reports = _ticks(watcher, 5)
    assert reports[0].announced == [job] and all(r.announced == [] for r in reports[1:])
    assert len(stub.completions(CHANNEL)) == 1
    assert len(stub.of("files.getUploadURLExternal")) == 2  # one try per picture
    notes = [text_of(c) for c in stub.thread_posts(CHANNEL) if "Could not attach" in text_of(c)]
    assert sorted(notes) == sorted(
        f"Could not attach {name} here: Slack said `missing_scope`. "
        f"`/gt results {job}` posts the pictures again."
        for name in ("preview.png", "agreement.png")
    )
    assert store.active_watches() == []


def test_a_post_that_keeps_failing_for_passing_reasons_is_given_up_after_five_tries(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack fails the completion text every time, for a reason that could pass: it is tried
    MAX_STEP_ATTEMPTS (5) times, one per tick, then given up and said so, never retried forever."""
    job = "mice-text-keeps-failing"
    store = _finished_job(ctx, rig, job)
    watcher = Watcher(ctx, store, _notifier(ctx), holder="w", lease_seconds=30)
    with caplog.at_level(logging.WARNING, logger="gtbot.watcher"):
        for _ in range(8):
            stub.fail_text["Counts:"] = "fatal_error"
            watcher.tick()
    tries = [
        c
        for c in stub.of("chat.postMessage")
        if "Counts:" in text_of(c) and c.params["channel"] == CHANNEL
    ]
    assert len(tries) == 5
    assert [r.getMessage() for r in caplog.records if "failed for good" in r.getMessage()] == [
        f"announcement of {job}: text step failed for good: gave up after 5 attempts: fatal_error"
    ]


@pytest.mark.parametrize("error", ["not_in_channel", "missing_scope"])
def test_a_permanent_error_on_the_completion_text_is_not_retried(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, error: str
) -> None:
    job = f"mice-text-{error.replace('_', '-')}"
    store = _finished_job(ctx, rig, job)
    stub.fail_text["Counts:"] = error
    watcher = Watcher(ctx, store, _notifier(ctx), holder="w", lease_seconds=30)
    _ticks(watcher, 4)
    tries = [
        c
        for c in stub.of("chat.postMessage")
        if "Counts:" in text_of(c) and c.params["channel"] == CHANNEL
    ]
    assert len(tries) == 1
    announcement = store.get_announcement(job)
    assert announcement is not None and announcement.state == "done"
    watch = store.get_watch(job)
    assert watch is not None and watch.completion_announced
    dms = [c for c in stub.delivered("chat.postMessage") if c.params["channel"] == "DU1"]
    if error == "not_in_channel":  # the channel is gone: the end goes to the owner's DM, once
        assert [c.params["users"] for c in stub.of("conversations.open")] == ["U1"]
        assert len(dms) == 1 and "Counts:" in text_of(dms[0])
        assert "can no longer post in the job's channel" in text_of(dms[0])
    else:  # the same error would meet a DM: nothing more is tried
        assert dms == [] and stub.of("conversations.open") == []


@pytest.mark.parametrize("method", ["post_thread", "upload_file"])
def test_a_crash_between_the_post_and_the_record_does_not_post_twice(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, tmp_path: Path, method: str
) -> None:
    """Slack accepted the post, then the process died before the database knew. The restarted
    watcher reads the thread back and finds it instead of posting it again."""
    job = f"mice-crash-{method.replace('_', '-')}"
    store = _finished_job(ctx, rig, job)
    results = Results(tmp_path / "out")
    crashing = CrashAfter(_notifier(ctx), method)
    first = Watcher(ctx, store, crashing, holder="host:3000", lease_seconds=30, results=results)  # type: ignore[arg-type]
    with pytest.raises(Killed):
        first.tick()
    reads = len(stub.of("conversations.replies"))
    # The same host and port again (what a restarted `gtbot serve` is).
    again = Watcher(
        ctx, store, _notifier(ctx), holder="host:3000", lease_seconds=30, results=results
    )
    assert again.tick().announced == [job]
    assert len(stub.of("conversations.replies")) == reads + 1  # looked before posting
    assert len(stub.completions(CHANNEL)) == 1
    assert sorted(_uploads(stub)) == [f"{job}: agreement.png", f"{job}: preview.png"]
    completion = stub.completions(CHANNEL)[0]
    assert completion.params["metadata"]["event_payload"] == {"key": f"{job}:completion"}


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (GtBotError("No project here matches the job."), "because No project here matches the job"),
        (RuntimeError("disk on fire"), "because of an unexpected error (trace id "),
    ],
    ids=["expected", "unexpected"],
)
def test_results_that_fail_are_said_unavailable_once(
    ctx: Context,
    rig: JobRig,
    stub: RecordingSlackStub,
    tmp_path: Path,
    failure: BaseException,
    said: str,
) -> None:
    job = f"mice-results-{'x' if isinstance(failure, GtBotError) else 'y'}"
    store = _finished_job(ctx, rig, job)
    results = Results(tmp_path / "out", fail=failure)
    watcher = Watcher(ctx, store, _notifier(ctx), holder="w", lease_seconds=30, results=results)
    _ticks(watcher, 3)
    (completion,) = stub.completions(CHANNEL)
    text = text_of(completion)
    assert f"Results unavailable {said}" in text and f"`/gt results {job}` tries again" in text
    assert "disk on fire" not in text
    assert results.calls == 1
    assert _uploads(stub) == []


def test_watching_a_finished_job_again_does_not_tell_its_end_again(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, tmp_path: Path
) -> None:
    job = "mice-rewatched"
    store = _finished_job(ctx, rig, job)
    results = Results(tmp_path / "out")
    watcher = Watcher(ctx, store, _notifier(ctx), holder="w", lease_seconds=30, results=results)
    assert watcher.tick().announced == [job]
    store.remove_watch(job)  # /gt unwatch, then /gt watch elsewhere
    store.add_watch(job_name=job, region="us-east-2", channel="COTHER", owner="U2")
    reports = _ticks(watcher, 3)
    assert all(r.announced == [] for r in reports)
    assert stub.completions("COTHER") == [] and len(stub.completions(CHANNEL)) == 1
    assert len(stub.cards("COTHER")) == 1  # the card shows the state, nothing more
    assert results.calls == 1

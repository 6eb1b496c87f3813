"""People are told about their jobs: the end (and a failure) mentions whoever launched the job
and whoever asked `watch <job> --notify`; a job that makes no progress for GTBOT_STALL_HOURS is
told once; when the channel is gone they are told in direct messages; building the results runs
outside the tick, so the other cards keep moving, with the claim renewed while it runs.

Over loopback with the real SlackNotifier, the Ground Truth emulator and moto S3.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from watcher_support import DATA, JobRig, RecordingSlackStub, text_of, wait_until, watcher_context

from aws.emulator.groundtruth import GroundTruthEmulator
from aws.groundtruth import JobInfo
from bot.context import Context
from bot.jobs.watcher import Completion, Watcher
from bot.state import Store, WatchRow, utcnow
from handlers.slack import SlackNotifier, web_client

REGION = "us-east-2"
LAUNCHER, WATCHER, OWNER = "U0LAUNCHER", "U0WATCHER", "U0OWNER"


@pytest.fixture
def emulator(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    return make_emulator(rate=20.0, initializing_seconds=0.1, seed=5)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: RecordingSlackStub) -> Context:
    return watcher_context(tmp_path, monkeypatch.setenv, stub)


def _store(ctx: Context) -> Store:
    assert ctx.store is not None
    return ctx.store


def _watcher(ctx: Context, **kwargs: object) -> Watcher:
    assert ctx.settings.slack_api_url
    notifier = SlackNotifier(web_client("xoxb-test", ctx.settings.slack_api_url))
    return Watcher(ctx, _store(ctx), notifier, holder="w", lease_seconds=30, **kwargs)  # type: ignore[arg-type]


def _launched_from_slack(store: Store, job: str) -> None:
    """The plan that became `job`, as Launch leaves it: its requester is the launcher."""
    store.add_plan(
        plan_id=f"plan-{job}",
        project="demo",
        region=REGION,
        job_name=job,
        requested_by=LAUNCHER,
        channel="CJOBS",
        summary={},
        request={},
    )
    assert store.transition_plan(f"plan-{job}", ("pending",), "launched", by=LAUNCHER)


def _ticks_until(watcher: Watcher, done: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        watcher.tick()
        time.sleep(0.1)


def test_the_end_mentions_the_launcher_and_who_asked_to_be_told(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    store = _store(ctx)
    job = "mice-told-done"
    rig.create_job(job, frames=2)
    _launched_from_slack(store, job)
    store.add_watch(job_name=job, region=REGION, channel="CJOBS", owner=OWNER)
    store.add_subscriber(job, WATCHER)
    store.add_subscriber(job, WATCHER)  # asked twice, told once
    watcher = _watcher(ctx)
    _ticks_until(watcher, lambda: bool((w := store.get_watch(job)) and w.completion_announced))
    (completion,) = stub.completions("CJOBS")
    said = text_of(completion)
    assert said.startswith(f"<@{LAUNCHER}> <@{WATCHER}>\n")  # the owner asked for no mention
    assert str(completion.params["text"]).startswith(f"<@{LAUNCHER}> <@{WATCHER}> ")
    assert f"<@{OWNER}>" not in said


def test_a_failure_mentions_them_too(ctx: Context, rig: JobRig, stub: RecordingSlackStub) -> None:
    store = _store(ctx)
    job = "mice-told-failed"
    rig.create_job(job, manifest=f"s3://{DATA}/no/such/manifest.json")
    wait_until(lambda: rig.status(job) == "Failed", 10, "the job to fail")
    store.add_watch(job_name=job, region=REGION, channel="CFAIL")
    store.add_subscriber(job, WATCHER)
    watcher = _watcher(ctx)
    _ticks_until(watcher, lambda: bool((w := store.get_watch(job)) and w.completion_announced))
    (completion,) = stub.completions("CFAIL")
    assert text_of(completion).startswith(f"<@{WATCHER}>\n```{job} failed: ")


def test_a_stall_is_told_once_and_again_after_the_job_moves(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    store = _store(ctx)
    ctx.settings = dataclasses.replace(ctx.settings, stall_hours=0.5 / 3600)  # half a second
    job = "mice-told-stalled"
    emulator.settings.update({"rate": 0})  # nobody works: the job never moves
    rig.create_job(job, frames=3)
    _launched_from_slack(store, job)
    store.add_watch(job_name=job, region=REGION, channel="CSTALL", owner=OWNER)
    watcher = _watcher(ctx)

    def stalls() -> list[str]:
        return [text_of(c) for c in stub.thread_posts("CSTALL") if "no progress" in text_of(c)]

    _ticks_until(watcher, lambda: len(stalls()) == 1)
    for _ in range(4):  # still stalled: nothing more
        time.sleep(0.2)
        watcher.tick()
    assert len(stalls()) == 1
    said = stalls()[0]
    assert said.startswith(f"<@{LAUNCHER}>\n{job} has made no progress for ")
    assert f"`stop {job}`" in said and " labeled, 0 failed, " in said

    emulator.settings.update({"rate": 0.5})  # a little work, then nothing again
    _ticks_until(watcher, lambda: bool((w := store.get_watch(job)) and w.stall_told_at is None))
    emulator.settings.update({"rate": 0})
    _ticks_until(watcher, lambda: len(stalls()) == 2)


def _watched_still_job(
    ctx: Context, rig: JobRig, emulator: GroundTruthEmulator, job: str, channel: str
) -> tuple[Store, Watcher]:
    """A running job nobody works on, watched with GTBOT_STALL_HOURS=1 until the watcher has
    noted when it last moved (the test then sets that moment)."""
    store = _store(ctx)
    ctx.settings = dataclasses.replace(ctx.settings, stall_hours=1.0)
    emulator.settings.update({"rate": 0})  # nobody works: the job never moves
    rig.create_job(job, frames=3)
    store.add_watch(job_name=job, region=REGION, channel=channel, owner=OWNER)
    watcher = _watcher(ctx)
    _ticks_until(watcher, lambda: bool((w := store.get_watch(job)) and w.progress_at))
    return store, watcher


def test_a_stall_is_measured_in_hours(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """GTBOT_STALL_HOURS is hours: with 1, counts unmoved for two minutes are no stall (a slow
    crowd), and counts unmoved for two hours are, told once."""
    job = "mice-told-hours"
    store, watcher = _watched_still_job(ctx, rig, emulator, job, "CHOURS")

    def stalls() -> list[str]:
        return [text_of(c) for c in stub.thread_posts("CHOURS") if "no progress" in text_of(c)]

    store.update_watch(job, progress_at=utcnow() - timedelta(minutes=2))
    watcher.tick()
    assert stalls() == []
    store.update_watch(job, progress_at=utcnow() - timedelta(hours=2))
    watcher.tick()
    watcher.tick()
    assert len(stalls()) == 1 and stalls()[0].startswith(f"{job} has made no progress for 1 h")


@pytest.mark.parametrize(("error", "tries"), [("fatal_error", 2), ("missing_scope", 1)])
def test_a_stall_warning_slack_fails_is_told_once_it_can_be(
    ctx: Context,
    rig: JobRig,
    stub: RecordingSlackStub,
    emulator: GroundTruthEmulator,
    error: str,
    tries: int,
) -> None:
    """A passing error gives the stall's claim back, so the next tick tells it (once); an
    error that cannot pass keeps it, so the warning is not posted again every tick."""
    job = f"mice-stall-{error.replace('_', '-')}"
    store, watcher = _watched_still_job(ctx, rig, emulator, job, "CSTALLS")
    store.update_watch(job, progress_at=utcnow() - timedelta(hours=2))
    stub.fail_text["no progress"] = error
    for _ in range(4):
        watcher.tick()
    posts = [c for c in stub.of("chat.postMessage") if "no progress" in text_of(c)]
    assert len(posts) == tries
    told = [c for c in stub.thread_posts("CSTALLS") if "no progress" in text_of(c)]
    assert len(told) == tries - 1


def test_a_gone_channel_moves_the_telling_to_direct_messages(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    """The channel goes away while the job runs: its people are told so in DMs, and the end
    of the job reaches each of them there, once; no card is tried in the channel again."""
    store = _store(ctx)
    job = "mice-told-in-dms"
    rig.create_job(job, frames=2)
    _launched_from_slack(store, job)
    store.add_watch(job_name=job, region=REGION, channel="CGONE", owner=OWNER)
    store.add_subscriber(job, WATCHER)
    stub.gone_channels.add("CGONE")
    watcher = _watcher(ctx)
    watcher.tick()
    watch = store.get_watch(job)
    assert watch is not None and watch.dm_only and not watch.parked
    opened = [c.params["users"] for c in stub.of("conversations.open")]
    assert opened == [LAUNCHER, WATCHER, OWNER]
    notes = [text_of(c) for c in stub.delivered("chat.postMessage")]
    assert len(notes) == 3 and all("can no longer post in the channel" in n for n in notes)

    _ticks_until(watcher, lambda: bool((w := store.get_watch(job)) and w.completion_announced))
    for _ in range(2):
        watcher.tick()
    for user in (LAUNCHER, WATCHER, OWNER):
        ends = [c for c in stub.delivered("chat.postMessage") if c.params["channel"] == f"D{user}"]
        ends = [c for c in ends if "Counts:" in text_of(c)]
        assert len(ends) == 1, user
        assert "can no longer post in the job's channel" in text_of(ends[0])
    assert len([c for c in stub.calls if c.params.get("channel") == "CGONE"]) == 1


def test_a_disabled_user_is_skipped_and_the_others_are_told(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    store = _store(ctx)
    job = "mice-told-one-gone"
    rig.create_job(job, frames=2)
    wait_until(lambda: rig.status(job) == "Completed", 15, "the job to complete")
    store.add_watch(job_name=job, region=REGION, channel="CGONE2", owner=OWNER)
    store.add_subscriber(job, WATCHER)
    stub.disabled_users.add(WATCHER)
    stub.gone_channels.add("CGONE2")
    watcher = _watcher(ctx)
    _ticks_until(watcher, lambda: bool((w := store.get_watch(job)) and w.completion_announced))
    told = [c.params["channel"] for c in stub.delivered("chat.postMessage")]
    assert told == [f"D{OWNER}", f"D{OWNER}"]  # where the card went, then the end
    assert "Counts:" in text_of(stub.delivered("chat.postMessage")[-1])
    announcement = store.get_announcement(job)
    assert announcement is not None and announcement.steps is not None
    states = {s["key"]: s["state"] for s in announcement.steps}
    assert states[f"{job}:dm:{WATCHER}"] == "failed" and states[f"{job}:dm:{OWNER}"] == "done"


class SlowResults:
    """A results hook that takes as long as the test says (a big job's consolidation)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, ctx: Context, watch: WatchRow, job: JobInfo) -> Completion:
        self.started.set()
        assert self.release.wait(20)
        return Completion(text="Consensus: 2 frames.")


def test_results_are_built_outside_the_tick_and_their_claim_is_renewed(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    store = _store(ctx)
    rig.create_job("mice-big-one", frames=2)
    wait_until(lambda: rig.status("mice-big-one") == "Completed", 15, "the big job")
    store.add_watch(job_name="mice-big-one", region=REGION, channel="CBIG")
    results = SlowResults()
    threads: list[threading.Thread] = []

    def background(name: str, run: Callable[[], None], abandon: Callable[[str], None]) -> None:
        threads.append(threading.Thread(target=run, name=name, daemon=True))
        threads[-1].start()

    watcher = _watcher(ctx, results=results, background=background)
    watcher.lease_seconds = 1.5  # the heartbeat renews every half second
    watcher.tick()
    assert results.started.wait(10)
    # The tick returned while the results are still being built (they wait for `release`):
    # it did not wait for them. No clock: under load a time bound failed with no fault.
    assert len(threads) == 1 and threads[0].is_alive() and not results.release.is_set()
    claimed = store.get_announcement("mice-big-one")
    assert claimed is not None and claimed.claimed_by == "w"

    # Another job starts while the big one's results are built: its card moves at once.
    rig.create_job("mice-other", frames=2)
    store.add_watch(job_name="mice-other", region=REGION, channel="COTHER")
    watcher.tick()
    assert len(stub.cards("COTHER")) == 1
    watcher.tick()  # the announcement is not handed over twice
    assert len(threads) == 1

    # Past the claim's lease: another watcher may not take it, the heartbeat kept it fresh.
    time.sleep(2.0)
    assert (
        store.claim_announcement("mice-big-one", "other", 1.5, channel="CBIG", thread_ts=None)
        is None
    )
    results.release.set()
    threads[0].join(10)
    (completion,) = stub.completions("CBIG")
    assert "Consensus: 2 frames." in text_of(completion)
    watch = store.get_watch("mice-big-one")
    assert watch is not None and watch.completion_announced

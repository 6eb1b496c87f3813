"""The job watcher over loopback: the Ground Truth emulator, moto S3 and a Slack Web API stub,
with the real SlackNotifier and WebClient (its 429/5xx retry handlers included).

What a channel sees is read back from the stub: one card, in-place updates only when status or
counters changed, a thread reply per status change, one completion post whose link downloads
the output manifest. Faults (Slack 429, AWS throttling and 5xx, vanished jobs, gone channels)
must end in the same single completion post, or in one parked watch and one log line.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber
from watcher_support import (
    DATA,
    TEAM,
    JobRig,
    RecordingSlackStub,
    ScriptedSlack,
    StubbedSageMaker,
    card_state,
    text_of,
    wait_until,
    watcher_context,
)

from aws.emulator.groundtruth import (
    GroundTruthEmulator,
)
from bot.context import Context
from bot.jobs.watcher import TickReport, Watcher
from bot.settings import Settings
from bot.state import Store
from handlers.slack import SlackNotifier, web_client

LINK_HOURS = 6


@pytest.fixture
def emulator(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    return make_emulator(rate=6.0, initializing_seconds=0.3, seed=7)


@pytest.fixture
def ctx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: RecordingSlackStub, emulator: object
) -> Context:
    return watcher_context(
        tmp_path,
        monkeypatch.setenv,
        stub,
        GTBOT_LINK_HOURS=str(LINK_HOURS),
        GTBOT_POLL_SECONDS="1",
    )


def _store(ctx: Context) -> Store:
    assert ctx.store is not None
    return ctx.store


def _watcher(ctx: Context, **kwargs: object) -> Watcher:
    """The watcher as `gtbot serve` builds it: the real notifier over a retrying WebClient."""
    assert ctx.settings.slack_api_url
    notifier = SlackNotifier(web_client("xoxb-test", ctx.settings.slack_api_url))
    return Watcher(ctx, _store(ctx), notifier, lease_seconds=30, **kwargs)  # type: ignore[arg-type]


def _tick_until_announced(watcher: Watcher, job: str, timeout: float = 30.0) -> list[TickReport]:
    reports: list[TickReport] = []
    deadline = time.monotonic() + timeout
    while True:
        reports.append(watcher.tick())
        watch = watcher.store.get_watch(job)
        if watch is None or watch.completion_announced or watch.parked:
            return reports
        if time.monotonic() > deadline:
            raise AssertionError(f"{job} was not announced within {timeout:.0f} s: {watch}")
        time.sleep(0.15)


def _assert_card_history(stub: RecordingSlackStub, channel: str) -> list[tuple[str, int, int]]:
    """One card; every update shows a status/counters different from what was shown before."""
    cards = stub.cards(channel)
    assert len(cards) == 1, [text_of(c) for c in cards]
    shown = [card_state(cards[0])] + [card_state(u) for u in stub.updates(channel)]
    for before, after in zip(shown, shown[1:], strict=False):
        assert before != after, f"an update repeated what the card showed: {after}"
    statuses = [s for s, _, _ in shown]
    changes = sum(1 for a, b in zip(statuses, statuses[1:], strict=False) if a != b)
    status_replies = [c for c in stub.thread_posts(channel) if "→" in text_of(c)]
    assert len(status_replies) == changes, [text_of(c) for c in status_replies]
    return shown


def test_job_from_creation_to_completed(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """One card, updates only on change, status replies in its thread, one completion post
    whose presigned link downloads the output manifest and states GTBOT_LINK_HOURS."""
    job, channel = "mice-watch-ok", "CJOBS"
    rig.create_job(job, frames=6, workers=2)
    store = _store(ctx)
    store.add_watch(job_name=job, region="us-east-2", channel=channel, owner="U1")
    watcher = _watcher(ctx)

    first = watcher.tick()
    assert first.held_lease and first.aws_calls == 1 and first.updated == [job]
    wait_until(lambda: rig.status(job) == "InProgress", 10, "InProgress")
    wait_until(
        lambda: (
            rig.sm.describe_labeling_job(LabelingJobName=job)["LabelCounters"]["TotalLabeled"] >= 1
        ),
        10,
        "the first labeled object",
    )
    # Freeze the workforce: the first tick picks up the change, the second has nothing to say.
    emulator.settings.update({"rate": 0})
    time.sleep(0.3)  # let the workforce finish the task it may be in
    watcher.tick()
    before = len(stub.calls)
    quiet = watcher.tick()
    assert quiet.held_lease and quiet.updated == [] and quiet.announced == []
    assert len(stub.calls) == before, "a tick where nothing changed posted to Slack"
    emulator.settings.update({"rate": 6.0})

    _tick_until_announced(watcher, job)
    after = len(stub.calls)
    assert watcher.tick().updated == [] and len(stub.calls) == after

    shown = _assert_card_history(stub, channel)
    assert shown[0][0] in ("Initializing", "InProgress") and shown[-1] == ("Completed", 6, 0)
    assert any(s == "InProgress" and n >= 1 for s, n, _ in shown)  # progress shown in place
    card_ts = stub.updates(channel)[0].params["ts"]
    assert all(c.params["thread_ts"] == card_ts for c in stub.thread_posts(channel))

    completions = stub.completions(channel)
    assert len(completions) == 1
    text = text_of(completions[0])
    assert "completed" in text and "6 labeled, 0 failed, 0 not labeled" in text
    assert f"valid for {LINK_HOURS} h" in text
    # A link, not a wall of URL: Slack shows `output.manifest`, the URL sits behind it.
    found = re.search(r"<(https?://[^|>]+)\|output\.manifest>", text)
    assert found is not None, text
    link = found.group(1)
    assert text.count("X-Amz-Signature") == 1
    query = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)
    assert query["X-Amz-Expires"] == [str(LINK_HOURS * 3600)]
    with urllib.request.urlopen(link, timeout=10) as response:
        downloaded = response.read()
    uri = rig.sm.describe_labeling_job(LabelingJobName=job)["LabelingJobOutput"][
        "OutputDatasetS3Uri"
    ]
    assert downloaded == rig.read(uri) and downloaded.count(b"\n") == 6


def test_launched_plan_card_becomes_the_job_card(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, projects_dir: Path
) -> None:
    """Through submit and Launch: the plan card is updated in place, no second card appears."""
    from conftest import write_project

    from bot.commands import Router
    from bot.jobs import launcher

    write_project(
        projects_dir,
        "mice",
        frames=3,
        job_workteam_arn=TEAM,
        job_workers_per_image=1,
        region="us-east-2",
    )
    ctx = Context(settings=Settings.from_env(), store=ctx.store)
    store = _store(ctx)
    channel = "CPLAN"
    reply = Router(ctx).run("submit mice", interface="slack", user="U1", channel=channel)
    assert reply.plan is not None, reply.text
    plan_id = launcher.record_plan(store, reply.plan, user="U1", channel=channel)
    client = web_client("xoxb-test", stub.api_url)
    posted = client.chat_postMessage(channel=channel, text="plan", blocks=[])
    store.set_plan_message(plan_id, str(posted["ts"]))
    decision = launcher.launch_plan(
        ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True
    )
    assert decision.kind == "launched", decision.message

    _tick_until_announced(_watcher(ctx), reply.plan.job_name)
    assert stub.cards(channel) == []  # the plan message was the only top-level post
    assert {u.params["ts"] for u in stub.updates(channel)} == {posted["ts"]}
    assert card_state(stub.updates(channel)[-1])[0] == "Completed"
    completions = stub.completions(channel)
    assert len(completions) == 1 and completions[0].params["thread_ts"] == posted["ts"]


def test_failed_job_posts_reason_and_what_to_check(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    job, channel = "mice-watch-failed", "CFAIL"
    rig.create_job(job, manifest=f"s3://{DATA}/no/such/manifest.json")
    wait_until(lambda: rig.status(job) == "Failed", 10, "the job to fail")
    reason = rig.sm.describe_labeling_job(LabelingJobName=job)["FailureReason"]
    _store(ctx).add_watch(job_name=job, region="us-east-2", channel=channel)
    _tick_until_announced(_watcher(ctx), job)

    assert len(stub.cards(channel)) == 1
    assert reason in text_of(stub.cards(channel)[0]) or reason in str(
        stub.cards(channel)[0].params["blocks"]
    )
    (completion,) = stub.completions(channel)
    text = text_of(completion)
    assert f"{job} failed: {reason}" in text
    assert "What to check" in text and "manifest" in text and "doctor" in text
    assert "http" not in text  # no link to an output that does not exist


@pytest.mark.slow
def test_slack_429_is_waited_out_and_completion_posted_once(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """Retry-After is honoured by the WebClient; the card update and the completion post each
    meet a 429 and still land exactly once."""
    job, channel = "mice-watch-429", "C429"
    emulator.settings.update({"rate": 0})  # the first tick must see the job unfinished
    rig.create_job(job, frames=2)
    _store(ctx).add_watch(job_name=job, region="us-east-2", channel=channel)
    watcher = _watcher(ctx)
    stub.rate_limit_next = 1  # the card post
    watcher.tick()
    emulator.settings.update({"rate": 6.0})
    wait_until(lambda: rig.status(job) == "Completed", 15, "Completed")
    stub.rate_limit_next = 2  # the card update, twice
    stub.rate_limit_text["Counts:"] = 1  # and the completion post once
    started = time.monotonic()
    report = watcher.tick()
    took = time.monotonic() - started
    assert report.announced == [job]
    assert len(stub.limited()) == 4 and took >= 3.0  # three waits of Retry-After: 1
    assert len(stub.cards(channel)) == 1
    assert len(stub.completions(channel)) == 1
    assert card_state(stub.updates(channel)[-1])[0] == "Completed"


def test_aws_throttling_and_5xx_are_retried(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """Faults injected into half of the SageMaker calls are absorbed by retries: the calls the
    watcher counted are fewer than the emulator answered, and the ending is the same."""
    job, channel = "mice-watch-faults", "CFAULT"
    rig.create_job(job, frames=3)
    _store(ctx).add_watch(job_name=job, region="us-east-2", channel=channel)
    # With seed 10 the first tick's listing meets a ThrottlingException, then an HTTP 500.
    emulator.settings.update({"throttle_fraction": 0.2, "error_fraction": 0.3, "seed": 10})
    start = len(emulator.calls)
    reports = _tick_until_announced(_watcher(ctx), job, timeout=40)
    emulator.settings.update({"throttle_fraction": 0, "error_fraction": 0})

    answered = emulator.calls[start:].count("ListLabelingJobs")
    counted = sum(r.aws_calls for r in reports)
    assert counted == len(reports)  # one page per tick, no describe
    assert answered >= counted + 2, "the injected faults were not retried"
    assert len(stub.cards(channel)) == 1 and len(stub.completions(channel)) == 1
    _assert_card_history(stub, channel)


def test_vanished_job_is_parked_once(
    ctx: Context,
    rig: JobRig,
    stub: RecordingSlackStub,
    emulator: GroundTruthEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not in the listing and describe says ResourceNotFound: one log line, one describe call,
    nothing in Slack, and no more calls for it afterwards."""
    store = _store(ctx)
    store.add_watch(job_name="mice-never-was", region="us-east-2", channel="CGHOST")
    watcher = _watcher(ctx)
    start = len(emulator.calls)
    with caplog.at_level(logging.WARNING, logger="gtbot.watcher"):
        reports = [watcher.tick() for _ in range(3)]
    assert reports[0].parked == ["mice-never-was"] and reports[0].aws_calls == 2
    assert [r.aws_calls for r in reports[1:]] == [0, 0]  # nothing left to watch
    assert emulator.calls[start:].count("DescribeLabelingJob") == 1
    lines = [r for r in caplog.records if "mice-never-was" in r.getMessage()]
    assert len(lines) == 1 and "no longer exists" in lines[0].getMessage()
    watch = store.get_watch("mice-never-was")
    assert watch is not None and watch.parked and "no longer exists" in (watch.park_reason or "")
    assert [c for c in stub.calls if c.method.startswith("chat.")] == []


def test_gone_channel_is_parked_once_and_others_go_on(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(ctx)
    rig.create_job("mice-gone-channel", frames=2)
    rig.create_job("mice-live-channel", frames=2)
    store.add_watch(job_name="mice-gone-channel", region="us-east-2", channel="CGONE")
    store.add_watch(job_name="mice-live-channel", region="us-east-2", channel="CLIVE")
    stub.gone_channels.add("CGONE")
    watcher = _watcher(ctx)
    with caplog.at_level(logging.WARNING, logger="gtbot.watcher"):
        _tick_until_announced(watcher, "mice-live-channel")
        for _ in range(2):
            watcher.tick()
    assert len([c for c in stub.calls if c.params.get("channel") == "CGONE"]) == 1
    lines = [r for r in caplog.records if "mice-gone-channel" in r.getMessage()]
    assert len(lines) == 1 and "channel_not_found" in lines[0].getMessage()
    watch = store.get_watch("mice-gone-channel")
    assert watch is not None and watch.parked and not watch.completion_announced
    assert len(stub.completions("CLIVE")) == 1


def test_card_is_remembered_even_if_the_next_post_fails(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    """A watch that knows a status but has no card yet (its plan card was never posted) gets a
    card and a status reply in one tick. If the reply fails, the next tick must update that
    card, not post a second one."""
    job, channel = "mice-watch-nocard", "CNOCARD"
    rig.create_job(job, frames=4, workers=2)
    store = _store(ctx)
    store.add_watch(job_name=job, region="us-east-2", channel=channel)
    store.update_watch(job, last_status="Initializing")
    wait_until(lambda: rig.status(job) == "InProgress", 10, "InProgress")
    stub.fail_text["→"] = "fatal_error"
    watcher = _watcher(ctx)
    assert watcher.tick().updated == []  # the reply failed: the tick is retried next time
    _tick_until_announced(watcher, job)
    assert len(stub.cards(channel)) == 1
    assert len(stub.completions(channel)) == 1
    replies = [text_of(c) for c in stub.thread_posts(channel) if "→" in text_of(c)]
    assert replies[0].startswith(f"{job}: Initializing → ")


def test_lease_one_holder_and_takeover_after_expiry(ctx: Context, rig: JobRig) -> None:
    """In one process, quickly: a second watcher does nothing while the lease is held, and
    takes over once it lapses (the two-process test proves the same with real processes)."""
    store = _store(ctx)
    store.add_watch(job_name="mice-lease", region="us-east-2", channel="CLEASE")
    rig.create_job("mice-lease", frames=1)
    a = Watcher(ctx, store, ScriptedSlack(), holder="a", lease_seconds=1.0)
    b = Watcher(ctx, store, ScriptedSlack(), holder="b", lease_seconds=1.0)
    assert a.tick().held_lease
    assert b.tick() == TickReport()  # no lease: no AWS call, no post
    assert a.tick().held_lease  # renewal by the holder
    time.sleep(1.2)
    assert b.tick().held_lease and store.lease_holder("watcher") == "b"
    assert not a.tick().held_lease


def _summary(name: str, labeled: int) -> dict[str, object]:
    when = datetime(2026, 11, 20, tzinfo=UTC)
    return {
        "LabelingJobName": name,
        "LabelingJobArn": f"arn:aws:sagemaker:us-east-2:123456789012:labeling-job/{name}",
        "CreationTime": when,
        "LastModifiedTime": when,
        "LabelingJobStatus": "InProgress",
        "LabelCounters": {"TotalLabeled": labeled, "Unlabeled": 10 - labeled},
        "WorkteamArn": TEAM,
    }


def test_one_listing_reaches_back_to_the_oldest_watched_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing starts 10 minutes before the oldest watched job, so a job launched hours
    before the newest is in it too; from the newest, each older job would cost a
    DescribeLabelingJob every tick (found by the independent run)."""
    monkeypatch.setenv("GTBOT_PROJECTS_DIR", str(tmp_path / "projects"))
    client = boto3.client("sagemaker", region_name="us-east-2")
    old, new = datetime(2026, 11, 20, 6, tzinfo=UTC), datetime(2026, 11, 20, 9, tzinfo=UTC)
    listing = {
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "CreationTimeAfter": old - timedelta(minutes=10),
        "MaxResults": 100,
    }
    with Stubber(client) as stubbed:
        stubbed.add_response(
            "list_labeling_jobs",
            {"LabelingJobSummaryList": [_summary("mice-new", 1), _summary("mice-old", 4)]},
            listing,
        )
        store = Store(f"sqlite:///{tmp_path / 'gtbot.db'}")
        store.add_watch(job_name="mice-old", region="us-east-2", channel="C1", job_created=old)
        store.add_watch(job_name="mice-new", region="us-east-2", channel="C2", job_created=new)
        ctx = Context(settings=Settings.from_env(), clients=StubbedSageMaker(client), store=store)
        report = Watcher(ctx, store, ScriptedSlack(), lease_seconds=30).tick()
        stubbed.assert_no_pending_responses()
    assert sorted(report.updated) == ["mice-new", "mice-old"] and report.aws_calls == 1


def test_a_job_on_the_second_page_of_the_listing_is_read_from_that_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lab with more than a page of jobs (ListLabelingJobs pages at MaxResults): the watcher
    reads every page of its one listing, so a job on page 2 needs no DescribeLabelingJob."""
    monkeypatch.setenv("GTBOT_PROJECTS_DIR", str(tmp_path / "projects"))
    client = boto3.client("sagemaker", region_name="us-east-2")
    listing = {"SortBy": "CreationTime", "SortOrder": "Descending", "CreationTimeAfter": ANY}
    with Stubber(client) as stubbed:
        stubbed.add_response(
            "list_labeling_jobs",
            {"LabelingJobSummaryList": [_summary("mice-newer", 1)], "NextToken": "page-2"},
            listing | {"MaxResults": 100},
        )
        stubbed.add_response(
            "list_labeling_jobs",
            {"LabelingJobSummaryList": [_summary("mice-on-page-2", 4)]},
            listing | {"MaxResults": 100, "NextToken": "page-2"},
        )
        store = Store(f"sqlite:///{tmp_path / 'gtbot.db'}")
        store.add_watch(job_name="mice-on-page-2", region="us-east-2", channel="CPAGES")
        ctx = Context(settings=Settings.from_env(), clients=StubbedSageMaker(client), store=store)
        slack = ScriptedSlack()
        report = Watcher(ctx, store, slack, lease_seconds=30).tick()
        stubbed.assert_no_pending_responses()
    assert report.updated == ["mice-on-page-2"] and report.aws_calls == 2
    cards = [args[1] for args, _ in slack.of("post_card")]
    assert [(c.job_name, c.counters.total_labeled) for c in cards] == [("mice-on-page-2", 4)]


def _refused(stub: RecordingSlackStub, method: str) -> list[object]:
    """Calls of `method` Slack answered with ok: false."""
    return [c for c in stub.of(method) if stub.answers.get(id(c)) == (200, False)]


def test_a_deleted_card_is_posted_again_and_the_end_told_under_it(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """Someone deletes the job card: Slack answers message_not_found to its update. The watcher
    posts a new card, which carries the job's thread from then on, instead of retrying the
    old one every tick; the completion is told once, under the new card."""
    job, channel = "mice-watch-deleted", "CDELETED"
    emulator.settings.update({"rate": 0})
    rig.create_job(job, frames=3)
    store = _store(ctx)
    store.add_watch(job_name=job, region="us-east-2", channel=channel)
    watcher = _watcher(ctx)
    watcher.tick()
    first = (store.get_watch(job) or pytest.fail("no watch")).message_ts
    assert first and len(stub.cards(channel)) == 1
    stub.delete(channel, first)
    emulator.settings.update({"rate": 6.0})
    _tick_until_announced(watcher, job)
    calls = len(stub.calls)
    assert watcher.tick().updated == [] and len(stub.calls) == calls  # nothing left to retry

    assert len(_refused(stub, "chat.update")) == 1  # message_not_found, once
    assert len(stub.cards(channel)) == 2
    watch = store.get_watch(job)
    assert watch is not None and watch.message_ts not in (None, first)
    assert watch.thread_ts == watch.message_ts
    (completion,) = stub.completions(channel)
    assert completion.params["thread_ts"] == watch.message_ts
    # The new card shows the end, by its own post or an update (a loaded machine may see the job
    # finish in the very tick the card is posted again); no update goes to the old card.
    reposted = stub.cards(channel)[1]
    later = [u for u in stub.updates(channel) if u.at > reposted.at]
    assert card_state(max([reposted, *later], key=lambda c: c.at))[0] == "Completed"
    assert {u.params["ts"] for u in later} <= {watch.message_ts}


def test_a_card_slack_refuses_for_good_does_not_hold_up_the_end(
    ctx: Context,
    rig: JobRig,
    stub: RecordingSlackStub,
    emulator: GroundTruthEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slack refuses every card update (invalid_blocks, say): each change is tried once and
    logged, never retried every tick, and the completion is still told."""
    job, channel = "mice-watch-refused", "CREFUSED"
    emulator.settings.update({"rate": 0})  # the card is posted before the job ends
    rig.create_job(job, frames=3)
    _store(ctx).add_watch(job_name=job, region="us-east-2", channel=channel)
    stub.fail_methods["chat.update"] = "invalid_blocks"
    watcher = _watcher(ctx)
    watcher.tick()
    assert len(stub.cards(channel)) == 1 and stub.completions(channel) == []
    emulator.settings.update({"rate": 6.0})
    with caplog.at_level(logging.WARNING, logger="gtbot.watcher"):
        reports = _tick_until_announced(watcher, job)
    changes = sum(1 for r in reports if r.updated)
    assert changes >= 1
    assert len(stub.of("chat.update")) == changes
    assert len(stub.completions(channel)) == 1
    assert sum("invalid_blocks" in r.getMessage() for r in caplog.records) == changes


def test_a_refused_token_holds_everything_and_gives_nothing_up(
    ctx: Context,
    rig: JobRig,
    stub: RecordingSlackStub,
    emulator: GroundTruthEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bot token is revoked (invalid_auth) while two jobs end: each tick stops at the
    first refusal (no other watch can be told either), says so once, and counts no attempt,
    so once an admin fixes the token each end is told once, however long it took."""
    jobs = {"mice-watch-token": "CTOKEN", "mice-watch-token2": "CTOKEN2"}
    emulator.settings.update({"rate": 0})  # the first tick must see the jobs unfinished
    store = _store(ctx)
    for job, channel in jobs.items():
        rig.create_job(job, frames=2)
        store.add_watch(job_name=job, region="us-east-2", channel=channel)
    watcher = _watcher(ctx)
    watcher.tick()
    assert all(stub.completions(channel) == [] for channel in jobs.values())
    emulator.settings.update({"rate": 6.0})
    for job in jobs:
        wait_until(lambda job=job: rig.status(job) == "Completed", 15, "Completed")
    stub.revoke("xoxb-test")
    with caplog.at_level(logging.ERROR, logger="gtbot.watcher"):
        for _ in range(7):  # more ticks than a step may fail for passing reasons
            assert watcher.tick().announced == []
    refused = [r for r in caplog.records if "SLACK_BOT_TOKEN" in r.getMessage()]
    assert len(refused) == 7  # one per tick: the tick stopped at the first watch
    for job, channel in jobs.items():
        assert stub.completions(channel) == []
        announcement = store.get_announcement(job)
        assert announcement is None or announcement.state == "open"

    stub.revoked.clear()
    for job, channel in jobs.items():
        _tick_until_announced(watcher, job)
        assert len(stub.completions(channel)) == 1
        assert card_state(stub.updates(channel)[-1])[0] == "Completed"


def test_a_thread_deleted_mid_announcement_gets_the_end_in_the_channel(
    ctx: Context, rig: JobRig, stub: RecordingSlackStub
) -> None:
    """The completion post fails for a passing reason, then the card (the thread's parent,
    with no replies yet) is deleted: the reply answers thread_not_found, and the end is
    told in the channel instead."""
    job, channel = "mice-watch-thread", "CTHREAD"
    rig.create_job(job, frames=2)
    store = _store(ctx)
    store.add_watch(job_name=job, region="us-east-2", channel=channel)
    watcher = _watcher(ctx)
    wait_until(lambda: rig.status(job) == "Completed", 15, "Completed")
    stub.fail_text["Counts:"] = "internal_error"
    watcher.tick()
    watch = store.get_watch(job)
    assert watch is not None and not watch.completion_announced and watch.message_ts
    stub.delete(channel, watch.message_ts)
    _tick_until_announced(watcher, job)
    told = [c for c in stub.delivered("chat.postMessage") if "Counts:" in text_of(c)]
    assert len(told) == 1 and not told[0].params.get("thread_ts")


def test_the_rig_gives_each_job_everything_ground_truth_reads(rig: JobRig) -> None:
    """The rig's job points only at objects that exist: the annotation interface, the manifest
    and every frame it names. A job whose inputs are missing would fail in AWS, so a test on it
    would pass only because the emulator was kinder than the service."""
    rig.emulator.settings.update({"rate": 0})
    rig.create_job("mice-rig-inputs", frames=2)
    job = rig.sm.describe_labeling_job(LabelingJobName="mice-rig-inputs")
    template = rig.read(job["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]).decode()
    assert "<crowd-keypoint" in template and "grant_read_access" in template
    manifest = rig.read(job["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"])
    refs = [json.loads(line)["source-ref"] for line in manifest.decode().splitlines()]
    assert len(refs) == 2
    assert all(rig.read(ref)[:2] == b"\xff\xd8" or rig.read(ref)[:4] == b"\x89PNG" for ref in refs)

"""The watcher's parts that the flows reach only rarely, driven directly: a real store (SQLite)
and a Slack fake whose failures each test scripts, so no emulator is needed.

Direct messages when a channel is gone, giving up a step, handing work to the background,
reading a thread back, a watch without a card, `tell`, and the scheduler `serve` starts. The
flows in test_watcher.py, test_people_told.py and test_announcement.py drive the same code
end to end; these pin what those flows cannot see (what the log says, what is stored).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from watcher_support import ScriptedSlack, StubbedSageMaker, wait_until

from aws import groundtruth as gt
from aws.clients import ClientFactory
from bot.context import Context
from bot.errors import ConfigError
from bot.jobs.watcher import (
    LEASE_NAME,
    Completion,
    DestinationGone,
    MessageGone,
    NotifierUnauthorized,
    Posted,
    PostFailed,
    TickReport,
    Watcher,
    stall_text,
    start_watcher,
)
from bot.links import Links
from bot.settings import Settings
from bot.state import AnnouncementRow, ClaimLost, Store, WatchRow, utcnow

JOB = "mice-parts"
WATCHER_LOG = "gtbot.watcher"


class _CountingStore(Store):
    """The real store, counting the writes to a watch (a quiet tick should write nothing)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.watch_writes: list[dict[str, object]] = []

    def update_watch(self, job_name: str, **values: object) -> None:
        self.watch_writes.append(dict(values))
        super().update_watch(job_name, **values)


class _CheckedStore(_CountingStore):
    """Checks every record of an announcement's steps as it is written: a crash right after any
    write resumes from that record, so it must be whole (never None, never fewer steps than
    before, no done step undone), or the next run would post again what was posted."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bad_writes: list[str] = []

    def save_steps(self, job_name: str, holder: str, steps: list[dict[str, Any]]) -> None:
        before = self.get_announcement(job_name)
        old = (before.steps if before is not None else None) or []
        if not isinstance(steps, list) or len(steps) < len(old):
            self.bad_writes.append(f"{job_name}: {steps!r} after {len(old)} steps")
        else:
            undone = [
                o["key"]
                for o, n in zip(old, steps, strict=False)
                if o["state"] == "done" != n["state"]
            ]
            if undone:
                self.bad_writes.append(f"{job_name}: done steps undone: {undone}")
        super().save_steps(job_name, holder, steps)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[_CheckedStore]:
    checked = _CheckedStore(f"sqlite:///{tmp_path / 'gtbot.db'}")
    yield checked
    assert checked.bad_writes == []


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store) -> Context:
    monkeypatch.setenv("GTBOT_PROJECTS_DIR", str(tmp_path / "projects"))
    return Context(settings=Settings.from_env(), clients=ClientFactory(), store=store)


@pytest.fixture
def slack() -> ScriptedSlack:
    return ScriptedSlack()


def _watcher(ctx: Context, slack: ScriptedSlack, **kwargs: object) -> Watcher:
    assert ctx.store is not None
    return Watcher(ctx, ctx.store, slack, holder="replica-a", lease_seconds=30, **kwargs)  # type: ignore[arg-type]


def _watch(store: Store, job: str = JOB, *, owner: str | None = "UOWNER") -> WatchRow:
    store.add_watch(job_name=job, region="us-west-2", channel="CLAB", owner=owner)
    watch = store.get_watch(job)
    assert watch is not None
    return watch


def _job(status: str, labeled: int = 0, *, uri: str | None = None, name: str = JOB) -> gt.JobInfo:
    return gt.JobInfo(
        name=name,
        arn=f"arn:aws:sagemaker:us-west-2:123456789012:labeling-job/{name}",
        status=status,
        created=None,
        counters=gt.LabelCounters(total_labeled=labeled, unlabeled=4 - labeled),
        output_dataset_uri=uri,
    )


def _signed_in(link: str) -> str:
    """The region a presigned link's SigV4 credential scope names."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    return query["X-Amz-Credential"][0].split("/")[2]


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WATCHER_LOG]


def _claimed(store: Store, key: str = JOB) -> AnnouncementRow:
    ann = store.claim_announcement(key, "replica-a", 30, channel="CLAB", thread_ts="1700.1")
    assert ann is not None
    return ann


# ------------------------------------------------------------------ what Slack's errors mean


def test_gone_and_refused_errors_say_whether_a_retry_can_help() -> None:
    """A deleted channel or message never comes back, so it is never retried; a refused token
    is retried once an admin fixes it. Each keeps Slack's error code for the log."""
    gone, deleted, refused = (
        DestinationGone("channel_not_found"),
        MessageGone("message_not_found"),
        NotifierUnauthorized("invalid_auth"),
    )
    assert (gone.error, gone.permanent) == ("channel_not_found", True)
    assert (deleted.error, deleted.permanent) == ("message_not_found", True)
    assert (refused.error, refused.permanent) == ("invalid_auth", False)
    assert all(isinstance(e, PostFailed) for e in (gone, deleted, refused))


# ------------------------------------------------------------------ a channel that is gone


def _gone(*_: object) -> None:
    raise DestinationGone("channel_not_found")


def test_a_gone_channel_is_told_to_each_person_in_a_dm_and_logged(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Everyone who would be mentioned hears where the card went; one whose DM fails is
    logged by name, and the others are still told."""
    watch = _watch(store)
    store.add_subscriber(JOB, "UFAN")
    store.add_subscriber(JOB, "UGONE")
    slack.gone_users.add("UGONE")
    report = TickReport()
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)

    assert _watcher(ctx, slack)._guarded(watch, report, _gone)

    now = store.get_watch(JOB)
    assert now is not None and now.dm_only and not now.parked and report.parked == []
    assert [a[0] for a, _ in slack.of("open_dm")] == ["UFAN", "UGONE", "UOWNER"]
    told = slack.of("post_thread")
    assert [(a[0], a[1]) for a, _ in told] == [("DUFAN", None), ("DUOWNER", None)]
    assert told[0][0][2] == (
        f"gtbot can no longer post in the channel where the card of {JOB} was (Slack said "
        f"channel_not_found). It will tell you here when the job ends; `/gt watch {JOB}` in "
        "another channel shows its card there."
    )
    assert _messages(caplog) == [
        f"the channel of {JOB} is gone (channel_not_found): telling its people in DMs",
        f"could not tell UGONE about {JOB}: user_disabled",
    ]


def test_a_gone_channel_with_nobody_to_tell_parks_the_watch(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    watch = _watch(store, owner=None)
    report = TickReport()
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)

    assert _watcher(ctx, slack)._guarded(watch, report, _gone)

    now = store.get_watch(JOB)
    reason = "cannot post to channel CLAB: channel_not_found"
    assert now is not None and now.parked and now.park_reason == reason and not now.dm_only
    assert report.parked == [JOB] and slack.calls == []
    assert _messages(caplog) == [f"parking the watch of {JOB}: {reason}"]


def test_the_end_told_in_dms_carries_the_links_and_says_why_it_is_there(
    ctx: Context, slack: ScriptedSlack
) -> None:
    links = Links("Links (valid for 6 h)", (("output.manifest", "https://lab-output/o"),))
    text = {"text": f"{JOB} completed.", "links": links.to_json()}
    steps = _watcher(ctx, slack)._dm_steps(JOB, text, ["U1", "U2"])
    said = f"{JOB} completed.\n(Told here because gtbot can no longer post in the job's channel.)"
    assert steps == [
        {
            "kind": "dm",
            "key": f"{JOB}:dm:{user}",
            "state": "pending",
            "attempts": 0,
            "error": None,
            "user": user,
            "text": said,
            "links": text["links"],
        }
        for user in ("U1", "U2")
    ]


# ------------------------------------------------------------------ a watch without a card


def test_a_watch_without_a_card_stores_only_what_changed(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack
) -> None:
    """Its counts and status are still kept (the stall clock reads them), written only when
    they change: a tick over many quiet jobs writes nothing."""
    _watch(store)
    store.update_watch(JOB, dm_only=True)
    watcher = _watcher(ctx, slack)

    def tick(job: gt.JobInfo) -> list[dict[str, object]]:
        store.watch_writes.clear()
        watch = store.get_watch(JOB)
        assert watch is not None
        watcher._without_card(watch, job, "us-west-2", TickReport())
        return [w for w in store.watch_writes if "last_status" in w]

    assert tick(_job("InProgress", 1)) == [
        {"last_status": "InProgress", "last_counters": {"labeled": 1, "failed": 0, "unlabeled": 3}}
    ]
    now = store.get_watch(JOB)
    assert now is not None and now.last_status == "InProgress"
    assert now.last_counters == {"labeled": 1, "failed": 0, "unlabeled": 3}
    assert tick(_job("InProgress", 1)) == []
    assert [w["last_counters"] for w in tick(_job("InProgress", 2))] == [
        {"labeled": 2, "failed": 0, "unlabeled": 2}
    ]
    assert [w["last_status"] for w in tick(_job("Stopping", 2))] == ["Stopping"]
    assert slack.calls == []


def test_a_watch_without_a_card_tells_the_end_in_dms_with_a_link_signed_in_its_region(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack
) -> None:
    _watch(store)
    store.update_watch(JOB, dm_only=True)
    watch = store.get_watch(JOB)
    assert watch is not None
    report = TickReport()
    uri = f"s3://lab-output/{JOB}/manifests/output/output.manifest"

    _watcher(ctx, slack)._one(watch, _job("Completed", 4, uri=uri), "us-west-2", report)

    assert report.announced == [JOB]
    ((args, kwargs),) = slack.of("post_thread")
    assert args[:2] == ("DUOWNER", None) and args[2].startswith(f"{JOB} completed.")
    links = kwargs["links"]
    assert isinstance(links, Links)
    ((name, link),) = links.items
    assert name == "output.manifest" and _signed_in(link) == "us-west-2"


# ------------------------------------------------------------------ announcement steps


def test_a_step_given_up_is_stored_failed_with_why_and_a_file_leaves_a_note(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    ann = _claimed(store)
    text = {"kind": "text", "key": f"{JOB}:completion", "state": "done", "attempts": 1}
    picture = {"kind": "file", "key": "t", "state": "attempted", "attempts": 1, "path": "/r/a.png"}
    steps: list[dict[str, object]] = [text, picture]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)

    _watcher(ctx, slack)._give_up(ann, steps, picture, "file_too_large")

    assert picture["state"] == "failed" and picture["error"] == "file_too_large"
    assert steps[2] == {
        "kind": "note",
        "key": f"{JOB}:note:a.png",
        "state": "pending",
        "attempts": 0,
        "error": None,
        "text": "Could not attach a.png here: Slack said `file_too_large`. "
        f"`/gt results {JOB}` posts the pictures again.",
    }
    stored = store.get_announcement(JOB)
    assert stored is not None and stored.steps == steps
    assert _messages(caplog) == [
        f"announcement of {JOB}: file step failed for good: file_too_large"
    ]


def test_a_text_step_given_up_leaves_no_note(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack
) -> None:
    ann = _claimed(store)
    step = {"kind": "dm", "key": f"{JOB}:dm:U1", "state": "pending", "attempts": 0}
    steps: list[dict[str, object]] = [step]
    _watcher(ctx, slack)._give_up(ann, steps, step, "user_disabled")
    stored = store.get_announcement(JOB)
    assert stored is not None and stored.steps == [step | {"error": "user_disabled"}]
    assert step["state"] == "failed"


def test_reading_back_asks_the_thread_or_the_dm_and_posts_anyway_when_it_cannot(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """An earlier post is looked for where it went (the thread, or a person's DM). A thread
    Slack will never show is logged and posted to anyway; a passing failure is retried."""
    ann = _claimed(store)
    watcher = _watcher(ctx, slack)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)

    assert watcher._read_back(ann) == Posted(keys=frozenset({"seen-key"}))
    assert watcher._read_back(ann, "DU1") == Posted(keys=frozenset({"seen-key"}))
    assert [a for a, _ in slack.of("posted")] == [("CLAB", "1700.1"), ("DU1", None)]

    slack.fail["posted"] = [PostFailed("not_in_channel", permanent=True)]
    assert watcher._read_back(ann) is None
    assert _messages(caplog) == [
        f"cannot read the thread of {JOB} to check for an earlier post (not_in_channel); "
        "posting anyway, which may repeat it"
    ]
    slack.fail["posted"] = [PostFailed("ratelimited", permanent=False)]
    with pytest.raises(PostFailed):
        watcher._read_back(ann)


def test_tell_posts_once_under_its_key_and_again_only_after_a_passing_failure(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack
) -> None:
    """What relabel rounds say in a thread: each message once, whatever retries happen."""
    watcher = _watcher(ctx, slack)
    key = "round:mice:2"
    slack.fail["post_thread"] = [PostFailed("ratelimited", permanent=False)]
    with pytest.raises(PostFailed):
        watcher.tell(key, "CLAB", "1700.1", "Round 2 launched.")
    taken = store.claim_announcement(key, "replica-b", 30, channel="CLAB", thread_ts="1700.1")
    assert taken is not None  # the claim was given back at once: any replica may retry
    store.release_announcement(key, "replica-b")
    for _ in range(2):
        watcher.tell(key, "CLAB", "1700.1", "Round 2 launched.")
    posts = slack.of("post_thread")
    assert len(posts) == 2
    assert posts[1] == (("CLAB", "1700.1", "Round 2 launched."), posts[1][1])
    assert posts[1][1]["key"] == key
    done = store.get_announcement(key)
    assert done is not None and done.state == "done"
    assert done.steps == [
        {"kind": "text", "key": key, "state": "done", "attempts": 2, "error": None}
        | {"text": "Round 2 launched."}
    ]


# ------------------------------------------------------------------ the background runner


class _Background:
    """A background runner that keeps what it is given, to run or abandon when a test says."""

    def __init__(self, refuse: bool = False) -> None:
        self.given: list[tuple[str, Callable[[], None], Callable[[str], None]]] = []
        self.refuse = refuse

    def __call__(self, name: str, run: Callable[[], None], abandon: Callable[[str], None]) -> None:
        if self.refuse:
            raise RuntimeError("the background runner is shutting down")
        self.given.append((name, run, abandon))


def test_work_is_handed_over_once_until_it_ran_or_was_abandoned(
    ctx: Context, slack: ScriptedSlack
) -> None:
    background = _Background()
    watcher = _watcher(ctx, slack, background=background)
    ran: list[str] = []
    abandoned: list[str] = []

    def hand_over() -> None:
        watcher._hand_over(JOB, f"announce {JOB}", lambda: ran.append("ran"), abandoned.append)

    hand_over()
    hand_over()  # still in the background: not handed over twice
    assert [name for name, _, _ in background.given] == [f"announce {JOB}"]
    background.given[0][1]()
    assert ran == ["ran"]
    hand_over()
    assert len(background.given) == 2
    background.given[1][2]("abandoned by a stop")
    assert abandoned == ["abandoned by a stop"]
    hand_over()
    assert len(background.given) == 3


def test_work_the_background_refuses_is_logged_and_handed_over_next_time(
    ctx: Context, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    background = _Background(refuse=True)
    watcher = _watcher(ctx, slack, background=background)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    watcher._hand_over(JOB, f"announce {JOB}", lambda: None, lambda reason: None)
    assert _messages(caplog) == [f"could not hand announce {JOB} to the background"]
    background.refuse = False
    watcher._hand_over(JOB, f"announce {JOB}", lambda: None, lambda reason: None)
    assert [name for name, _, _ in background.given] == [f"announce {JOB}"]


def test_after_tick_work_runs_in_the_tick_without_a_background_and_its_failure_is_logged(
    ctx: Context, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Watcher] = []

    def after(watcher: Watcher) -> None:
        seen.append(watcher)
        raise RuntimeError("the round's consolidation failed")

    watcher = _watcher(ctx, slack, after_tick=after)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    assert watcher.tick().held_lease
    assert seen == [watcher]
    assert "the watcher's after-tick work failed (will retry)" in _messages(caplog)


def test_after_tick_work_goes_to_the_background_one_at_a_time(
    ctx: Context, slack: ScriptedSlack
) -> None:
    seen: list[Watcher] = []
    background = _Background()
    watcher = _watcher(ctx, slack, after_tick=seen.append, background=background)
    watcher.tick()
    watcher.tick()  # the first is still in the background
    assert [name for name, _, _ in background.given] == ["automatic rounds"]
    assert seen == []
    background.given[0][1]()
    assert seen == [watcher]
    watcher.tick()
    assert len(background.given) == 2
    background.given[1][2]("abandoned by a stop")  # gtbot stopping: nothing to hand back
    watcher.tick()
    assert len(background.given) == 3


# ------------------------------------------------------------------ the scheduler


def test_the_scheduler_ticks_at_once_then_each_poll_and_stop_frees_the_lease(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """`serve` starts the watcher: the first tick does not wait a poll interval (the
    default minute), and stopping lets another replica take the lease at once."""
    ticks: list[Watcher] = []
    background = _Background()

    def results(*_: object) -> None:
        return None

    stop = start_watcher(
        ctx, store, slack, results=results, holder="replica-b", after_tick=ticks.append
    )
    try:
        wait_until(lambda: len(ticks) == 1, 10, "the first tick")
        time.sleep(1.5)  # a poll of a minute: no second tick
        assert len(ticks) == 1
        (watcher,) = ticks
        assert (watcher.holder, watcher.results, watcher.background) == ("replica-b", results, None)
        assert watcher.notifier is slack
        assert store.lease_holder(LEASE_NAME) == "replica-b"
    finally:
        stop()
    assert store.lease_holder(LEASE_NAME) is None
    stop_again = start_watcher(ctx, store, slack, after_tick=ticks.append, background=background)
    try:
        wait_until(lambda: len(background.given) == 1, 10, "the after-tick work handed over")
    finally:
        stop_again()


def test_the_scheduler_never_runs_two_ticks_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store, slack: ScriptedSlack
) -> None:
    """A tick that outlasts the poll (a slow Slack) is not overlapped by the next one."""
    monkeypatch.setenv("GTBOT_PROJECTS_DIR", str(tmp_path / "projects"))
    monkeypatch.setenv("GTBOT_POLL_SECONDS", "1")
    ctx = Context(settings=Settings.from_env(), clients=ClientFactory(), store=store)
    running, most, ticks = [0], [0], [0]
    lock = threading.Lock()

    def slow(_: Watcher) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(2.5 if ticks[0] == 0 else 0)
        with lock:
            running[0] -= 1
            ticks[0] += 1

    stop = start_watcher(ctx, store, slack, after_tick=slow)
    try:
        wait_until(lambda: ticks[0] >= 3, 15, "three ticks a second apart")
    finally:
        stop()
    assert most[0] == 1


# ------------------------------------------------------------------ running the steps

URI = f"s3://lab-output/{JOB}/manifests/output/output.manifest"


def _pending(kind: str, key: str, **fields: object) -> dict[str, Any]:
    return {"kind": kind, "key": key, "state": "pending", "attempts": 0, "error": None, **fields}


def _text(key: str = f"{JOB}:completion", **fields: object) -> dict[str, Any]:
    return _pending("text", key, **({"text": f"{JOB} completed."} | fields))


def _dm(user: str, **fields: object) -> dict[str, Any]:
    return _pending("dm", f"{JOB}:dm:{user}", user=user, text="The end.", **fields)


def _run(
    ctx: Context,
    store: Store,
    slack: ScriptedSlack,
    steps: list[dict[str, Any]],
    *,
    thread_ts: str | None = "1700.1",
) -> list[dict[str, Any]]:
    """Run the steps as the announcement of JOB; what the store then holds."""
    ann = store.claim_announcement(JOB, "replica-a", 30, channel="CLAB", thread_ts=thread_ts)
    assert ann is not None
    store.save_steps(JOB, "replica-a", steps)  # as composed
    try:
        _watcher(ctx, slack)._run_steps(ann, steps)
    finally:
        stored = store.get_announcement(JOB)
        assert stored is not None and stored.steps is not None
        steps[:] = stored.steps
    return steps


def _outcomes(steps: list[dict[str, Any]]) -> list[tuple[str, int, str | None]]:
    return [(s["state"], s["attempts"], s["error"]) for s in steps]


def test_each_step_is_posted_in_the_thread_and_recorded_done(
    ctx: Context, store: Store, slack: ScriptedSlack, tmp_path: Path
) -> None:
    picture = tmp_path / "frame.png"
    picture.write_bytes(b"\x89PNG")
    links = Links("Links (valid for 6 h)", (("output.manifest", "https://lab-output/o"),))
    title = f"{JOB}: frame.png"
    steps = [
        _text(mention=["U1"], links=links.to_json(), attempts=1, error="ratelimited"),
        _pending("file", title, path=str(picture), title=title),
    ]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("done", 2, None), ("done", 1, None)]
    ((args, kwargs),) = slack.of("post_thread")
    assert args == ("CLAB", "1700.1", f"{JOB} completed.")
    assert kwargs == {
        "key": f"{JOB}:completion",
        "mention": ("U1",),
        "links": links,
        "skip": frozenset(),
    }
    assert slack.of("upload_file") == [(("CLAB", "1700.1", picture, title), {})]
    assert slack.of("posted") == []  # nothing was attempted before: nothing to look for


def test_a_step_attempted_before_is_looked_for_once_and_not_posted_twice(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """A crash between a post and its record: the thread is read back (once) and what it
    already holds is marked done; what it lacks is posted, told not to repeat the rest."""
    slack.thread = Posted(
        keys=frozenset({f"{JOB}:completion"}), file_titles=frozenset({f"{JOB}: a.png"})
    )
    steps = [
        _text(state="attempted", attempts=1),
        _pending("file", f"{JOB}: a.png", path="/gone/a.png", title=f"{JOB}: a.png")
        | {"state": "attempted", "attempts": 1},
        _pending("note", f"{JOB}:note:b.png", text="Could not attach b.png.")
        | {"state": "attempted", "attempts": 1},
    ]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("done", 1, None), ("done", 1, None), ("done", 2, None)]
    assert [a for a, _ in slack.of("posted")] == [("CLAB", "1700.1")]
    ((args, kwargs),) = slack.of("post_thread")
    assert args[2] == "Could not attach b.png." and kwargs["skip"] == slack.thread.keys


def test_a_direct_message_opens_the_dm_once_and_is_looked_for_there(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.thread = Posted(keys=frozenset({f"{JOB}:dm:U2", f"{JOB}:dm:U3#1"}))
    steps = [
        _dm("U1"),
        _dm("U2", channel="DU2", state="attempted", attempts=1),
        _dm("U3", channel="DU3", state="attempted", attempts=1),
    ]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("done", 1, None), ("done", 1, None), ("done", 2, None)]
    assert steps[0]["channel"] == "DU1"
    assert [a for a, _ in slack.of("open_dm")] == [("U1",)]
    assert [a for a, _ in slack.of("posted")] == [("DU2", None), ("DU3", None)]
    posts = slack.of("post_thread")
    assert [a for a, _ in posts] == [("DU1", None, "The end."), ("DU3", None, "The end.")]
    assert posts[1][1]["skip"] == slack.thread.keys  # part 1 is already in that DM


def test_a_dm_that_cannot_be_opened_is_given_up_and_the_others_are_told(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.gone_users.add("UGONE")
    steps = [_dm("UGONE"), _dm("U1")]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("failed", 0, "user_disabled"), ("done", 1, None)]
    assert "channel" not in steps[0]


def test_a_dm_that_cannot_be_opened_yet_is_tried_next_tick(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["open_dm"] = [PostFailed("ratelimited", permanent=False)]
    steps = [_dm("U1")]
    with pytest.raises(PostFailed):
        _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("pending", 0, None)] and "channel" not in steps[0]


def test_a_step_that_failed_five_times_is_given_up_with_its_last_error(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    steps = [_text(key="b", attempts=4, error="fatal"), _text(attempts=5, error="ratelimited")]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [
        ("done", 5, None),
        ("failed", 5, "gave up after 5 attempts: ratelimited"),
    ]
    assert len(slack.of("post_thread")) == 1


def test_a_refused_token_leaves_the_step_as_it_was(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["post_thread"] = [NotifierUnauthorized("invalid_auth")]
    steps = [_text(attempts=2, error="ratelimited")]
    with pytest.raises(NotifierUnauthorized):
        _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("pending", 2, "ratelimited")]


def test_a_post_refused_for_good_is_given_up_and_a_passing_failure_is_kept_for_later(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["post_thread"] = [
        PostFailed("invalid_blocks", permanent=True),
        PostFailed("ratelimited", permanent=False),
    ]
    steps = [_text(), _text(key="b"), _text(key="c")]
    with pytest.raises(PostFailed) as raised:
        _run(ctx, store, slack, steps)
    assert raised.value.error == "ratelimited"
    assert _outcomes(steps) == [
        ("failed", 1, "invalid_blocks"),
        ("attempted", 1, "ratelimited"),
        ("pending", 0, None),
    ]


def test_a_file_no_longer_on_disk_is_given_up_with_a_note_in_the_thread(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    steps = [_pending("file", f"{JOB}: a.png", path="/gone/a.png", title=f"{JOB}: a.png")]
    _run(ctx, store, slack, steps)
    why = "a.png is no longer on the bot's disk"
    assert _outcomes(steps) == [("failed", 1, why), ("done", 1, None)]
    assert slack.of("upload_file") == []
    ((args, _),) = slack.of("post_thread")
    assert args[2].startswith(f"Could not attach a.png here: Slack said `{why}`.")


def test_a_gone_channel_sends_the_end_to_each_person_in_a_dm(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    _watch(store)
    store.add_subscriber(JOB, "UFAN")
    slack.fail["post_thread"] = [DestinationGone("channel_not_found")]
    steps = [_text(), _pending("file", "t", path="/r/a.png", title="t")]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    _run(ctx, store, slack, steps)
    gone = "channel_not_found"
    assert _outcomes(steps[:2]) == [("failed", 1, gone), ("failed", 0, gone)]
    told = f"{JOB} completed.\n(Told here because gtbot can no longer post in the job's channel.)"
    assert [(s["key"], s["state"], s["channel"], s["text"]) for s in steps[2:]] == [
        (f"{JOB}:dm:{user}", "done", f"D{user}", told) for user in ("UFAN", "UOWNER")
    ]
    assert slack.of("upload_file") == []
    assert _messages(caplog) == [f"the channel of {JOB} is gone ({gone}): its end goes to DMs"]


@pytest.mark.parametrize("watched", [True, False])
def test_a_gone_channel_with_nobody_to_tell_ends_the_announcement(
    watched: bool, ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    if watched:
        _watch(store, owner=None)
    slack.fail["post_thread"] = [DestinationGone("channel_not_found")]
    steps = [_text(), _text(key="b")]
    with pytest.raises(DestinationGone):
        _run(ctx, store, slack, steps)
    assert [s["state"] for s in steps] == ["failed", "failed"]
    ann = store.get_announcement(JOB)
    assert ann is not None and ann.state == "done"


def test_a_gone_dm_is_given_up_and_the_others_are_still_told(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["post_thread"] = [DestinationGone("channel_not_found"), None, DestinationGone("x")]
    steps = [_dm("U1", channel="DU1"), _dm("U2", channel="DU2"), _dm("U3", channel="DU3")]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [
        ("failed", 1, "channel_not_found"),
        ("done", 1, None),
        ("failed", 1, "x"),
    ]


def test_a_deleted_thread_gets_the_rest_of_the_end_in_the_channel(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail["post_thread"] = [MessageGone("thread_not_found")]
    steps = [_text(), _text(key="b")]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("done", 1, None), ("done", 1, None)]
    assert [a[:2] for a, _ in slack.of("post_thread")] == [
        ("CLAB", "1700.1"),
        ("CLAB", None),
        ("CLAB", None),
    ]
    assert _messages(caplog) == [
        f"the thread of {JOB} is gone (thread_not_found); announcing in the channel"
    ]


def test_a_deleted_message_with_no_thread_is_given_up(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["post_thread"] = [MessageGone("message_not_found")]
    steps = [_text(), _text(key="b")]
    _run(ctx, store, slack, steps, thread_ts=None)
    assert _outcomes(steps) == [("failed", 1, "message_not_found"), ("done", 1, None)]


# ------------------------------------------------------------------ what the end says


def _compose(
    ctx: Context,
    store: Store,
    slack: ScriptedSlack,
    job: gt.JobInfo,
    results: Callable[..., Completion | None] | None = None,
) -> list[dict[str, Any]]:
    watch = store.get_watch(JOB) or _watch(store)
    return _watcher(ctx, slack, results=results)._compose(watch, job, "us-west-2")


def test_the_end_carries_the_results_their_links_and_pictures(
    ctx: Context, store: Store, slack: ScriptedSlack, tmp_path: Path
) -> None:
    pictures = (tmp_path / "a.png", tmp_path / "b.png")
    extra = Links("Results", (("keypoints.json", "https://lab-output/k"),))
    asked: list[tuple[object, str, str]] = []

    def results(c: Context, watch: WatchRow, job: gt.JobInfo) -> Completion:
        asked.append((c, watch.job_name, job.name))
        return Completion("Results: 4 frames.", pictures, extra)

    _watch(store)
    store.add_subscriber(JOB, "UFAN")
    steps = _compose(ctx, store, slack, _job("Completed", 4, uri=URI), results)
    assert asked == [(ctx, JOB, JOB)]
    first = steps[0]
    assert (first["kind"], first["key"], first["state"]) == ("text", f"{JOB}:completion", "pending")
    assert first["text"] == (
        f"{JOB} completed. Counts: 4 labeled, 0 failed, 0 not labeled.\n"
        f"Output manifest: {URI}\nResults: 4 frames."
    )
    assert first["mention"] == ["UFAN"]
    links = Links.from_json(first["links"])
    assert links is not None and links.title.startswith("Links (valid for")
    assert [name for name, _ in links.items] == ["output.manifest", "keypoints.json"]
    assert steps[1:] == [
        _pending("file", f"{JOB}: {p.name}", path=str(p), title=f"{JOB}: {p.name}")
        for p in pictures
    ]


def test_results_links_stand_alone_when_there_is_no_manifest_link(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    extra = Links("Results", (("keypoints.json", "https://lab-output/k"),))
    steps = _compose(
        ctx, store, slack, _job("Stopped", 2), lambda *_: Completion("Results.", (), extra)
    )
    assert steps[0]["links"] == extra.to_json() and len(steps) == 1


def test_results_without_links_keep_the_manifest_link(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    steps = _compose(ctx, store, slack, _job("Completed", 4, uri=URI), lambda *_: None)
    links = Links.from_json(steps[0]["links"])
    assert links is not None and [n for n, _ in links.items] == ["output.manifest"]
    assert steps[0]["text"] == (  # no results, and no word of them either
        f"{JOB} completed. Counts: 4 labeled, 0 failed, 0 not labeled.\nOutput manifest: {URI}"
    )
    steps = _compose(ctx, store, slack, _job("Completed", 4, uri=URI), lambda *_: Completion("R."))
    links = Links.from_json(steps[0]["links"])
    assert links is not None and [n for n, _ in links.items] == ["output.manifest"]


def test_results_that_fail_are_said_unavailable_and_the_end_is_still_told(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*_: object) -> None:
        raise ConfigError("no frames in the folder VIDEO-BOX.")

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    job = _job("Completed", 4)
    (said,) = _compose(ctx, store, slack, job, refused)
    assert said["text"] == (
        f"{JOB} completed. Counts: 4 labeled, 0 failed, 0 not labeled.\nResults unavailable "
        f"because no frames in the folder VIDEO-BOX. `/gt results {JOB}` tries again."
    )
    assert _messages(caplog) == [
        f"results for {JOB} unavailable: no frames in the folder VIDEO-BOX."
    ]
    caplog.clear()
    (said,) = _compose(ctx, store, slack, job, broken)
    found = re.search(
        r"\nResults unavailable because of an unexpected error \(trace id (\w+)\); an admin can "
        rf"find it in the log\. `/gt results {JOB}` tries again\.$",
        said["text"],
    )
    assert found is not None and found.group(1) != "None"  # the id an admin looks for
    assert _messages(caplog)[0] == f"results of {JOB} failed, trace id {found.group(1)}"


def test_a_failed_job_builds_no_results(ctx: Context, store: Store, slack: ScriptedSlack) -> None:
    asked: list[str] = []
    steps = _compose(ctx, store, slack, _job("Failed"), lambda *_: asked.append("asked"))
    assert asked == [] and len(steps) == 1 and steps[0]["links"] is None
    assert steps[0]["text"].startswith(f"{JOB} failed: no reason given.")


def test_the_end_of_a_watch_without_a_channel_goes_to_dms_or_is_recorded_untold(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    _watch(store)
    store.update_watch(JOB, dm_only=True)
    steps = _compose(ctx, store, slack, _job("Failed"))
    assert [(s["kind"], s["user"]) for s in steps] == [("dm", "UOWNER")]
    store.update_watch(JOB, owner=None)
    (step,) = _compose(ctx, store, slack, _job("Failed"))
    assert (step["kind"], step["state"], step["error"]) == (
        "text",
        "failed",
        "channel gone, nobody to tell",
    )


# ------------------------------------------------------------------ stalls


def _stalled_for(store: Store, hours: float, labeled: int = 1) -> WatchRow:
    counters = {"labeled": labeled, "failed": 0, "unlabeled": 4 - labeled}
    store.update_watch(JOB, last_counters=counters, progress_at=utcnow() - timedelta(hours=hours))
    watch = store.get_watch(JOB)
    assert watch is not None
    return watch


def test_a_stall_is_told_once_in_the_cards_thread_after_the_set_hours(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    watch = _watch(store)
    store.update_watch(JOB, thread_ts="1700.1")
    store.add_subscriber(JOB, "UFAN")
    watcher = _watcher(ctx, slack)
    job = _job("InProgress", 1)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)

    watcher._check_stall(watch, job)  # first sight: the clock starts now
    started = store.get_watch(JOB)
    assert started is not None and started.progress_at is not None and slack.calls == []
    watcher._check_stall(_stalled_for(store, 5.9), job)
    assert slack.calls == []
    watcher._check_stall(_stalled_for(store, 6.1), job)
    ((args, kwargs),) = slack.of("post_thread")
    assert args == ("CLAB", "1700.1", stall_text(job, 6.0)) and kwargs["mention"] == ("UFAN",)
    assert _messages(caplog) == [f"told that {JOB} has stalled for 6 h"]
    told = store.get_watch(JOB)
    assert told is not None and told.stall_told_at is not None
    watcher._check_stall(told, job)
    assert len(slack.of("post_thread")) == 1

    watcher._check_stall(told, _job("InProgress", 2))  # it moved: the clock starts again
    moved = store.get_watch(JOB)
    assert moved is not None and moved.stall_told_at is None
    assert moved.progress_at is not None and moved.progress_at > told.progress_at  # type: ignore[operator]


def test_a_stall_of_a_watch_without_a_channel_is_told_in_dms(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    _watch(store)
    store.update_watch(JOB, dm_only=True)
    job = _job("InProgress", 1)
    _watcher(ctx, slack)._check_stall(_stalled_for(store, 7), job)
    assert [a for a, _ in slack.of("post_thread")] == [("DUOWNER", None, stall_text(job, 6.0))]


@pytest.mark.parametrize(("permanent", "told_again"), [(False, True), (True, False)])
def test_a_stall_warning_slack_fails_is_told_again_only_if_that_can_help(
    permanent: bool, told_again: bool, ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    _watch(store)
    watcher = _watcher(ctx, slack)
    job = _job("InProgress", 1)
    slack.fail["post_thread"] = [PostFailed("some_error", permanent=permanent)]
    with pytest.raises(PostFailed):
        watcher._check_stall(_stalled_for(store, 7), job)
    after = store.get_watch(JOB)
    assert after is not None and (after.stall_told_at is None) is told_again
    watcher._check_stall(after, job)
    assert len(slack.of("post_thread")) == (2 if told_again else 1)


@pytest.mark.parametrize("status", ["Completed", "Failed", "Stopped", "Stopping"])
def test_a_job_that_ends_or_is_stopping_is_never_called_stalled(
    status: str, ctx: Context, store: _CountingStore, slack: ScriptedSlack
) -> None:
    _watch(store)
    watch = _stalled_for(store, 9)
    store.watch_writes.clear()
    _watcher(ctx, slack)._check_stall(watch, _job(status, 1))
    assert store.watch_writes == [] and slack.calls == []


def test_the_first_tick_is_at_once_whatever_the_servers_time_zone(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """A lab server kept on local time (UTC+9 here) must not read its "now" as UTC: the first
    tick would then wait nine hours."""
    ticks: list[Watcher] = []
    before = os.environ.get("TZ")
    os.environ["TZ"] = "JST-9"
    time.tzset()
    try:
        stop = start_watcher(ctx, store, slack, after_tick=ticks.append)
        try:
            wait_until(lambda: len(ticks) == 1, 10, "the first tick")
        finally:
            stop()
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_stopping_does_not_wait_for_a_tick_in_progress(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """`serve` stops on SIGTERM while a tick may be waiting on Slack: the lease is freed at
    once (that tick stops at its next watch, and renews nothing)."""
    entered, release = threading.Event(), threading.Event()

    def blocked(_: Watcher) -> None:
        entered.set()
        release.wait(20)

    stop = start_watcher(ctx, store, slack, after_tick=blocked)
    try:
        assert entered.wait(10)
        stopper = threading.Thread(target=stop)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive() and store.lease_holder(LEASE_NAME) is None
    finally:
        release.set()


# ------------------------------------------------------------------ the card


def _card_tick(
    ctx: Context,
    store: Store,
    slack: ScriptedSlack,
    job: gt.JobInfo,
    **watch: object,
) -> TickReport:
    """One watch's turn in a tick (what `_tick` runs per listed job), on a watch set up so."""
    if store.get_watch(JOB) is None:
        _watch(store)
    if watch:
        store.update_watch(JOB, **watch)
    now = store.get_watch(JOB)
    assert now is not None
    report = TickReport()
    _watcher(ctx, slack)._one(now, job, "us-west-2", report)
    return report


def _shown(store: Store) -> tuple[object, ...]:
    w = store.get_watch(JOB)
    assert w is not None
    return (w.message_ts, w.thread_ts, w.last_status, (w.last_counters or {}).get("labeled"))


def test_a_first_card_is_posted_and_remembered(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    report = _card_tick(ctx, store, slack, _job("InProgress", 1), project="mice-lab")
    ((args, _),) = slack.of("post_card")
    assert (args[0], args[2]) == ("CLAB", None)
    card = args[1]
    assert (card.job_name, card.status, card.owner) == (JOB, "InProgress", "UOWNER")
    assert card.project == "mice-lab"
    ts = "1700000000.000100"
    assert _shown(store) == (ts, ts, "InProgress", 1) and report.updated == [JOB]
    assert slack.of("post_thread") == []  # no status before: nothing changed from


def test_a_status_change_updates_the_card_and_says_so_in_its_thread(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    job = _job("Completed", 4)
    _card_tick(ctx, store, slack, job, message_ts="M", thread_ts="M", last_status="InProgress")
    ((args, _),) = slack.of("update_card")
    assert (args[0], args[1], args[2].status) == ("CLAB", "M", "Completed")
    assert [a for a, _ in slack.of("post_thread")][0] == (
        "CLAB",
        "M",
        f"{JOB}: InProgress → Completed",
    )
    assert _shown(store) == ("M", "M", "Completed", 4)


def test_a_quiet_job_costs_no_post_and_no_write(
    ctx: Context, store: _CountingStore, slack: ScriptedSlack
) -> None:
    counters = {"labeled": 1, "failed": 0, "unlabeled": 3}
    _watch(store)
    store.update_watch(
        JOB, message_ts="M", thread_ts="M", last_status="InProgress", last_counters=counters
    )
    store.update_watch(JOB, progress_at=utcnow())
    store.watch_writes.clear()
    report = _card_tick(ctx, store, slack, _job("InProgress", 1))
    assert slack.calls == [] and store.watch_writes == [] and report.updated == []


def test_new_counts_alone_update_the_card_without_a_reply(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    _card_tick(
        ctx, store, slack, _job("InProgress", 2), message_ts="M", thread_ts="M",
        last_status="InProgress", last_counters={"labeled": 1, "failed": 0, "unlabeled": 3},
    )  # fmt: skip
    assert len(slack.of("update_card")) == 1 and slack.of("post_thread") == []
    assert _shown(store) == ("M", "M", "InProgress", 2)


def test_a_deleted_card_is_posted_again_with_a_new_thread(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail["update_card"] = [MessageGone("message_not_found")]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    _card_tick(
        ctx, store, slack, _job("InProgress", 2), message_ts="M", thread_ts="M",
        last_status="InProgress",
    )  # fmt: skip
    ts = "1700000000.000100"
    assert _shown(store) == (ts, ts, "InProgress", 2)
    assert [a[2] for a, _ in slack.of("post_card")] == [None]
    assert _messages(caplog) == [
        f"the card of {JOB} was deleted (message_not_found); posting a new one"
    ]


def test_a_card_slack_refuses_for_good_is_logged_and_the_job_goes_on(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail["update_card"] = [PostFailed("invalid_blocks", permanent=True)]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    _card_tick(
        ctx, store, slack, _job("Completed", 4), message_ts="M", thread_ts="M",
        last_status="InProgress",
    )  # fmt: skip
    assert _shown(store) == ("M", "M", "Completed", 4)
    assert slack.of("post_card") == [] and len(slack.of("post_thread")) == 2  # reply, the end
    assert _messages(caplog)[0] == f"the card of {JOB} was not updated: Slack said invalid_blocks"


# Failures that may pass, or where the watch can go on elsewhere (DMs): raised, not swallowed.
_LATER_OR_ELSEWHERE = pytest.mark.parametrize(
    "error",
    [PostFailed("ratelimited", permanent=False), DestinationGone("channel_not_found")],
    ids=["passing", "gone"],
)


@_LATER_OR_ELSEWHERE
def test_a_card_update_that_may_work_later_or_elsewhere_is_raised_and_nothing_stored(
    error: PostFailed, ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["update_card"] = [error]
    with pytest.raises(type(error)):
        _card_tick(
            ctx, store, slack, _job("InProgress", 2), message_ts="M", thread_ts="M",
            last_status="Initializing",
        )  # fmt: skip
    assert _shown(store) == ("M", "M", "Initializing", None)


@_LATER_OR_ELSEWHERE
def test_a_new_card_that_may_work_later_or_elsewhere_is_raised(
    error: PostFailed, ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    slack.fail["post_card"] = [error]
    with pytest.raises(type(error)):
        _card_tick(ctx, store, slack, _job("InProgress", 2))
    assert _shown(store) == (None, None, None, None)


def test_a_new_card_slack_refuses_for_good_leaves_the_news_without_a_card(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail["post_card"] = [PostFailed("invalid_blocks", permanent=True)]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    report = _card_tick(ctx, store, slack, _job("InProgress", 2))
    assert _shown(store) == (None, None, "InProgress", 2) and report.updated == [JOB]
    assert _messages(caplog) == [f"{JOB}: Slack refused a post for good: invalid_blocks"]


def test_a_status_reply_slack_refuses_for_good_is_logged_and_the_card_kept(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail["post_thread"] = [PostFailed("msg_too_long", permanent=True)]
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    _card_tick(
        ctx, store, slack, _job("InProgress", 2), message_ts="M", thread_ts="M",
        last_status="Initializing",
    )  # fmt: skip
    assert _shown(store) == ("M", "M", "InProgress", 2)
    assert _messages(caplog) == [f"{JOB}: Slack refused a post for good: msg_too_long"]


def test_a_follow_up_rounds_card_goes_in_its_parents_thread(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    _card_tick(ctx, store, slack, _job("InProgress", 1), thread_ts="PARENT")
    assert [a[2] for a, _ in slack.of("post_card")] == ["PARENT"]
    assert _shown(store) == ("1700000000.000100", "PARENT", "InProgress", 1)


def test_the_job_created_time_is_kept_from_aws(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    created = datetime(2026, 11, 29, 8, tzinfo=UTC)
    job = replace(_job("InProgress", 1), created=created)
    _card_tick(ctx, store, slack, job)
    watch = store.get_watch(JOB)
    assert watch is not None and watch.job_created == created


def test_the_end_is_handed_to_the_background_and_given_back_on_a_stop(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Two jobs ending in one tick: each end is handed over (results can take minutes). A stop
    gives the claim back; run, the end is told once, with a link signed in the job's region."""
    background = _Background()
    other = f"{JOB}-2"
    watcher = _watcher(ctx, slack, background=background)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    report = TickReport()
    for name in (JOB, other):
        watcher._one(
            _watch(store, name), _job("Completed", 4, uri=URI, name=name), "us-west-2", report
        )
    assert [name for name, _, _ in background.given] == [f"announce {JOB}", f"announce {other}"]
    assert report.announced == []
    _, run, abandon = background.given[0]
    _claimed(store)
    abandon("abandoned")
    assert _messages(caplog) == [f"announcement of {JOB} abandoned by a stop; handed back"]
    released = store.claim_announcement(JOB, "replica-b", 30, channel="CLAB", thread_ts=None)
    assert released is not None  # another watcher takes it at once
    store.release_announcement(JOB, "replica-b")
    run()
    assert len(_messages(caplog)) == 1  # nothing failed
    ((_, kwargs),) = [c for c in slack.of("post_thread") if c[0][2].startswith(f"{JOB} completed")]
    assert isinstance(kwargs["links"], Links)
    assert _signed_in(kwargs["links"].items[0][1]) == "us-west-2"
    done = store.get_announcement(JOB)
    assert done is not None and done.state == "done"


def test_an_end_told_in_the_background_to_a_gone_channel_parks_the_watch(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    background = _Background()
    watcher = _watcher(ctx, slack, background=background)
    watcher._one(_watch(store, owner=None), _job("Completed", 4), "us-west-2", TickReport())
    slack.fail["post_thread"] = [DestinationGone("channel_not_found")]
    background.given[0][1]()
    watch = store.get_watch(JOB)
    assert watch is not None and watch.parked
    assert watch.park_reason == "cannot post to channel CLAB: channel_not_found"


class _TakenStore(_CountingStore):
    """Another watcher takes the claim (this one was presumed dead) while this one posts."""

    def save_steps(self, job_name: str, holder: str, steps: list[dict[str, Any]]) -> None:
        if any(step["state"] == "attempted" for step in steps):
            raise ClaimLost(job_name)
        super().save_steps(job_name, holder, steps)


def test_an_end_another_watcher_took_over_is_left_to_it(
    tmp_path: Path, ctx: Context, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    store = _TakenStore(f"sqlite:///{tmp_path / 'taken.db'}")
    ctx = replace(ctx, store=store)
    report = TickReport()
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    _watcher(ctx, slack)._complete(_watch(store), _job("Completed", 4), "us-west-2", report)
    assert report.announced == [] and slack.calls == []
    assert _messages(caplog) == [f"another watcher took over the announcement of {JOB}"]


def test_an_end_told_before_is_only_marked_on_the_watch(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    watch = _watch(store)
    _claimed(store)
    store.finish_announcement(JOB, "replica-a")
    store.update_watch(JOB, completion_announced=False)
    report = TickReport()
    _watcher(ctx, slack)._complete(watch, _job("Completed", 4), "us-west-2", report)
    after = store.get_watch(JOB)
    assert after is not None and after.completion_announced
    assert slack.calls == [] and report.announced == []


# ------------------------------------------------------------------ one watch's failures


@pytest.mark.parametrize(
    ("error", "goes_on", "said"),
    [
        (
            NotifierUnauthorized("invalid_auth"),
            False,
            "Slack refuses gtbot's token (invalid_auth): nothing is posted until an admin "
            "fixes SLACK_BOT_TOKEN; the watches wait",
        ),
        (
            PostFailed("ratelimited", permanent=False),
            True,
            f"watch {JOB}: Slack said ratelimited (will retry)",
        ),
        (ConfigError("no such project."), True, f"watch {JOB}: no such project. (will retry)"),
        (RuntimeError("boom"), True, f"watch {JOB} failed this tick (will retry)"),
    ],
    ids=["token", "slack", "user", "bug"],
)
def test_a_watchs_failure_is_logged_and_only_a_refused_token_stops_the_tick(
    error: Exception,
    goes_on: bool,
    said: str,
    ctx: Context,
    store: Store,
    slack: ScriptedSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = _watch(store)

    def fails(*_: object) -> None:
        raise error

    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    assert _watcher(ctx, slack)._guarded(watch, TickReport(), fails, "arg") is goes_on
    assert _messages(caplog) == [said]
    now = store.get_watch(JOB)
    assert now is not None and not now.parked


def test_a_watchs_work_gets_its_arguments_and_the_report(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    watch = _watch(store)
    got: list[tuple[object, ...]] = []
    report = TickReport()
    assert _watcher(ctx, slack)._guarded(watch, report, lambda *a: got.append(a), "x", 2)
    assert got == [("x", 2, report)]


# ------------------------------------------------------------------ the claim's heartbeat


class _BeatStore(_CountingStore):
    """Counts the claim and lease renewals; the first renewal fails as a lost database would."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.renewals = 0
        self.leases = 0
        self.lose_after = 3

    def renew_announcement(self, job_name: str, holder: str) -> None:
        self.renewals += 1
        if self.renewals == 1:
            raise OSError("the database is restarting")
        if self.renewals >= self.lose_after:
            raise ClaimLost(job_name)
        super().renew_announcement(job_name, holder)

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        self.leases += 1
        return super().acquire_lease(name, holder, ttl_seconds)


@pytest.mark.parametrize("stopping", [False, True])
def test_the_heartbeat_renews_claim_and_lease_until_the_claim_is_lost(
    stopping: bool,
    tmp_path: Path,
    ctx: Context,
    slack: ScriptedSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _BeatStore(f"sqlite:///{tmp_path / 'beat.db'}")
    watcher = Watcher(ctx, store, slack, holder="replica-a", lease_seconds=0.3)  # type: ignore[arg-type]
    watcher._held = True
    if stopping:
        watcher.stop()
    store.claim_announcement(JOB, "replica-a", 30, channel="CLAB", thread_ts=None)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    beat = threading.Thread(target=watcher._heartbeat, args=(JOB, threading.Event()))
    beat.start()
    beat.join(10)
    assert not beat.is_alive() and store.renewals == 3  # a failure, a renewal, then lost
    assert store.leases == (0 if stopping else 1)
    assert store.lease_holder(LEASE_NAME) == (None if stopping else "replica-a")
    assert _messages(caplog) == [f"could not renew the claim on the announcement of {JOB}"]


def test_the_heartbeat_ends_with_the_work(
    tmp_path: Path, ctx: Context, slack: ScriptedSlack
) -> None:
    store = _BeatStore(f"sqlite:///{tmp_path / 'beat.db'}")
    watcher = Watcher(ctx, store, slack, holder="replica-a", lease_seconds=0.3)  # type: ignore[arg-type]
    watcher._held = True
    stop = threading.Event()
    stop.set()
    watcher._heartbeat(JOB, stop)  # the work is over before the first beat
    assert (store.renewals, store.leases) == (0, 0)


def test_the_claims_heartbeat_never_holds_up_an_exit(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """The claim beats while the results are built (minutes); its thread is a daemon, named in
    a thread dump, so a gtbot told to stop never waits on it."""
    beating: list[tuple[str, bool]] = []

    def results(*_: object) -> None:
        beating.extend((t.name, t.daemon) for t in threading.enumerate() if "claim" in t.name)

    watcher = _watcher(ctx, slack, results=results)
    watcher._complete(_watch(store), _job("Completed", 4), "us-west-2", TickReport())
    assert beating == [("gtbot-claim", True)]


def test_an_end_nobody_can_be_told_is_recorded_with_why(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """The channel is gone and nobody is left to tell: the announcement is closed with its one
    step failed and the reason, which is what an admin finds in the database."""
    _watch(store, owner=None)
    store.update_watch(JOB, dm_only=True)
    watch = store.get_watch(JOB)
    assert watch is not None
    _watcher(ctx, slack)._complete(watch, _job("Failed"), "us-west-2", TickReport())
    ann = store.get_announcement(JOB)
    assert ann is not None and ann.state == "done" and ann.steps is not None
    assert [(s["state"], s["error"]) for s in ann.steps] == [
        ("failed", "channel gone, nobody to tell")
    ]
    assert slack.calls == []


def test_parts_of_a_long_post_in_a_deleted_thread_are_all_posted_in_the_channel(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """A crash after part 1 of a long end reached the thread: the rest is posted there without
    part 1. If the thread is then deleted, part 1 went with it: the channel gets every part."""
    slack.thread = Posted(keys=frozenset({f"{JOB}:completion#1"}))
    slack.fail["post_thread"] = [MessageGone("thread_not_found")]
    steps = [_text(state="attempted", attempts=1)]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("done", 2, None)]
    assert [(a[1], k["skip"]) for a, k in slack.of("post_thread")] == [
        ("1700.1", slack.thread.keys),
        (None, frozenset()),
    ]


def test_a_channel_gone_after_part_of_the_end_keeps_what_was_told(
    ctx: Context, store: Store, slack: ScriptedSlack, tmp_path: Path
) -> None:
    """The text reached the channel, then the channel went before the pictures: the text stays
    done (it was told), the pictures fail, and the people hear the end in their DMs."""
    _watch(store)
    picture = tmp_path / "a.png"
    picture.write_bytes(b"\x89PNG")
    slack.fail["upload_file"] = [DestinationGone("channel_not_found")]
    steps = [_text(), _pending("file", "t", path=str(picture), title="t")]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps[:2]) == [("done", 1, None), ("failed", 1, "channel_not_found")]
    assert [(s["kind"], s["state"]) for s in steps[2:]] == [("dm", "done")]


def test_a_crash_after_any_write_of_a_dm_step_resumes_without_a_repeat(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """The DM's channel is recorded as soon as it is opened (`store` checks every write)."""
    steps = [_text(state="done", attempts=1), _dm("U1")]
    _run(ctx, store, slack, steps)
    assert _outcomes(steps) == [("done", 1, None), ("done", 1, None)]


# ------------------------------------------------------------------ a job the listing missed


def _described(
    ctx: Context, store: Store, slack: ScriptedSlack, answer: dict[str, Any] | None
) -> tuple[TickReport, list[str]]:
    """`_one` for a watched job the listing did not show: it is described in its region."""
    client = boto3.client("sagemaker", region_name="us-west-2")
    clients = StubbedSageMaker(client)
    watcher = Watcher(replace(ctx, clients=clients), store, slack, holder="replica-a")  # type: ignore[arg-type]
    report = TickReport()
    with Stubber(client) as stubbed:
        if answer is None:
            stubbed.add_client_error(
                "describe_labeling_job",
                service_error_code="ResourceNotFound",
                service_message=f"Could not find labeling job {JOB}",
                expected_params={"LabelingJobName": JOB},
            )
        else:
            stubbed.add_response("describe_labeling_job", answer, {"LabelingJobName": JOB})
        watcher._one(_watch(store), None, "us-west-2", report)
        stubbed.assert_no_pending_responses()
    return report, clients.asked


def test_a_job_missing_from_the_listing_is_described_in_its_region(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    when = datetime(2026, 11, 29, 8, tzinfo=UTC)
    answer = {
        "LabelingJobName": JOB,
        "LabelingJobArn": f"arn:aws:sagemaker:us-west-2:123456789012:labeling-job/{JOB}",
        "LabelingJobStatus": "InProgress",
        "LabelCounters": {"TotalLabeled": 2, "Unlabeled": 2},
        "CreationTime": when,
        "LastModifiedTime": when,
        "JobReferenceCode": "ref",
        "LabelAttributeName": "pose",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": "s3://in/m"}}},
        "OutputConfig": {"S3OutputPath": "s3://out/"},
        "RoleArn": "arn:aws:iam::123456789012:role/gt",
        "HumanTaskConfig": {
            "WorkteamArn": "arn:aws:sagemaker:us-west-2:123456789012:workteam/private-crowd/lab",
            "UiConfig": {"UiTemplateS3Uri": "s3://ui/t.html"},
            "PreHumanTaskLambdaArn": "arn:aws:lambda:us-west-2:081040173940:function:PRE-x",
            "TaskTitle": "t",
            "TaskDescription": "d",
            "NumberOfHumanWorkersPerDataObject": 1,
            "TaskTimeLimitInSeconds": 300,
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": "arn:aws:lambda:us-west-2:081040173940:function:ACS-x"
            },
        },
    }
    report, asked = _described(ctx, store, slack, answer)
    assert asked == ["us-west-2"] and report.aws_calls == 1 and report.updated == [JOB]
    assert _shown(store)[2:] == ("InProgress", 2)


def test_a_job_aws_no_longer_knows_is_parked(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    report, asked = _described(ctx, store, slack, None)
    reason = "the labeling job no longer exists in this account/region"
    watch = store.get_watch(JOB)
    assert watch is not None and watch.parked and watch.park_reason == reason
    assert asked == ["us-west-2"] and report.parked == [JOB] and slack.calls == []
    assert _messages(caplog) == [f"parking the watch of {JOB}: {reason}"]


@pytest.mark.parametrize(
    ("state", "mentioned"),
    [
        ("launching", ["ULAUNCHER", "UFAN"]),  # a crash mid-launch still made the job
        ("launched", ["ULAUNCHER", "UFAN"]),
        ("failed", ["UFAN", "ULAUNCHER"]),  # not the launcher then: only a subscriber
    ],
)
def test_whoever_launched_the_job_is_mentioned_first(
    state: str, mentioned: list[str], ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    store.add_plan(
        plan_id="plan-1",
        project="demo",
        region="us-west-2",
        job_name=JOB,
        requested_by="ULAUNCHER",
        channel="CLAB",
        summary={},
        request={},
    )
    assert store.transition_plan("plan-1", ("pending",), state, by="ULAUNCHER")
    store.add_subscriber(JOB, "UFAN")
    store.add_subscriber(JOB, "ULAUNCHER")
    assert _watcher(ctx, slack)._people(JOB) == mentioned


def test_a_new_card_is_remembered_before_its_status_reply_can_fail(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """Otherwise the next tick, finding no card, would post a second one."""
    slack.fail["post_thread"] = [PostFailed("ratelimited", permanent=False)]
    with pytest.raises(PostFailed):
        _card_tick(ctx, store, slack, _job("InProgress", 1), last_status="Initializing")
    ts = "1700000000.000100"
    assert _shown(store) == (ts, ts, "Initializing", None)
    _card_tick(ctx, store, slack, _job("InProgress", 1))
    assert len(slack.of("post_card")) == 1 and [a[1] for a, _ in slack.of("update_card")] == [ts]


# ------------------------------------------------------------------ the lease


class _LeaseStore(_CheckedStore):
    """Records each lease request; `deny_after` requests, another replica has the lease."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.asked: list[tuple[str, str, float]] = []
        self.deny_after = 1_000

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        self.asked.append((name, holder, ttl_seconds))
        if len(self.asked) > self.deny_after:
            return False
        return super().acquire_lease(name, holder, ttl_seconds)


@pytest.fixture
def lease_store(tmp_path: Path) -> _LeaseStore:
    return _LeaseStore(f"sqlite:///{tmp_path / 'lease.db'}")


def test_the_lease_is_renewed_once_a_third_of_it_has_passed(
    ctx: Context, lease_store: _LeaseStore, slack: ScriptedSlack
) -> None:
    """A long tick renews as it goes, but not at every watch: a third of the lease leaves two
    more chances before it lapses."""
    watcher = Watcher(ctx, lease_store, slack, holder="replica-a", lease_seconds=30)  # type: ignore[arg-type]
    watcher._renewed = time.monotonic() - 9  # under a third: nothing asked
    assert watcher._renew() and lease_store.asked == []
    watcher._renewed = time.monotonic() - 11
    assert watcher._renew() and lease_store.asked == [(LEASE_NAME, "replica-a", 30)]
    assert watcher._renew() and len(lease_store.asked) == 1  # just renewed
    assert lease_store.lease_holder(LEASE_NAME) == "replica-a"
    lease_store.deny_after = 1
    watcher._renewed = time.monotonic() - 11
    assert not watcher._renew()  # another replica has it now
    watcher.stop()
    assert not watcher._renew() and len(lease_store.asked) == 2  # stopping: never renewed


def test_a_tick_that_loses_the_lease_leaves_the_rest_to_its_holder(
    ctx: Context, lease_store: _LeaseStore, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    client = boto3.client("sagemaker", region_name="us-west-2")
    watcher = Watcher(
        replace(ctx, clients=StubbedSageMaker(client)), lease_store, slack, holder="replica-a",  # type: ignore[arg-type]
        lease_seconds=0.001, after_tick=lambda w: slack.calls.append(("after", (), {})),
    )  # fmt: skip
    for name in (JOB, f"{JOB}-2"):
        _watch(lease_store, name)
    lease_store.deny_after = 1  # the tick takes the lease, then loses it
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    with Stubber(client) as stubbed:
        stubbed.add_response("list_labeling_jobs", {"LabelingJobSummaryList": []})
        report = watcher.tick()
    assert report.held_lease and report.updated == [] and slack.calls == []
    assert (
        _messages(caplog)[-1] == "lost the watcher lease mid-tick; leaving the rest to its holder"
    )


def test_the_log_says_when_this_replica_becomes_or_stops_being_the_watcher(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = _watcher(ctx, slack)
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    assert watcher.tick().held_lease and watcher.tick().held_lease
    assert _messages(caplog) == ["this replica (replica-a) is now the job watcher"]
    store.release_lease(LEASE_NAME, "replica-a")
    assert store.acquire_lease(LEASE_NAME, "replica-b", 30)
    assert not watcher.tick().held_lease and not watcher.tick().held_lease
    assert _messages(caplog)[1:] == ["another replica holds the watcher lease; this one stands by"]
    assert watcher.holds_lease() is False
    caplog.clear()
    standby = Watcher(ctx, store, slack, holder="replica-c", lease_seconds=30)  # type: ignore[arg-type]
    assert not standby.tick().held_lease and not standby.tick().held_lease
    assert _messages(caplog) == ["another replica holds the watcher lease; this one stands by"]


def test_a_region_whose_listing_fails_does_not_hold_up_the_others(
    ctx: Context, store: Store, slack: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Each region's jobs are read there: the one AWS refuses is logged with what was refused
    and waits a tick, the next is listed, and a job its listing missed is described there."""
    west, europe = (boto3.client("sagemaker", region_name=r) for r in ("us-west-2", "eu-west-1"))
    clients = StubbedSageMaker(west, {"eu-west-1": europe})
    watcher = Watcher(replace(ctx, clients=clients), store, slack, holder="replica-a")  # type: ignore[arg-type]
    _watch(store)  # us-west-2, first: its listing fails
    store.add_watch(job_name="mice-eu", region="eu-west-1", channel="CLAB")
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    with Stubber(west) as refused, Stubber(europe) as listed:
        refused.add_client_error(
            "list_labeling_jobs", service_error_code="AccessDeniedException", http_status_code=400
        )
        listed.add_response("list_labeling_jobs", {"LabelingJobSummaryList": []})
        listed.add_client_error(
            "describe_labeling_job", service_error_code="ResourceNotFound", service_message="gone"
        )
        report = watcher.tick()
        listed.assert_no_pending_responses()
    assert clients.asked == ["us-west-2", "eu-west-1", "eu-west-1"]
    assert report.parked == ["mice-eu"] and report.aws_calls == 2
    assert report.updated == [] and slack.calls == []
    said = [m for m in _messages(caplog) if m.startswith("listing jobs in ")]
    assert len(said) == 1
    assert said[0].startswith("listing jobs in us-west-2 failed, will retry next tick: ")
    assert "the credentials in use are not allowed to do this" in said[0]
    watch = store.get_watch(JOB)
    assert watch is not None and not watch.parked


def test_an_end_another_watcher_is_telling_is_not_counted_here(
    ctx: Context, store: Store, slack: ScriptedSlack
) -> None:
    """Its claim is held (by a replica building its results): this tick leaves it alone."""
    taken = store.claim_announcement(JOB, "replica-b", 30, channel="CLAB", thread_ts=None)
    assert taken is not None
    report = TickReport()
    _watcher(ctx, slack)._complete(_watch(store), _job("Completed", 4), "us-west-2", report)
    assert report.announced == [] and slack.calls == []

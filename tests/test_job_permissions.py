"""Who may act on a job, checked when they act, through the real HTTP endpoint.

Watching is reading: whoever watches a job gains no right over it. Stopping a job, unwatching
someone else's watch and moving a card to another channel need the job's launcher (for a job
launched from Slack), a submitter (for any other job) or an admin, by the settings of now: a
submitter removed from GTBOT_SUBMITTERS can neither Launch an old plan nor Stop after a restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from slack_harness import (
    CHANNEL,
    OTHER,
    SUBMITTER,
    Harness,
    restart,
    start_harness,
    texts,
)
from watcher_support import JobRig

from handlers import blocks

SECOND = "USUB2"  # a submitter, but not the one who launched
ELSEWHERE_OK = "CSECOND"  # another allowed channel
LAUNCHER_ONLY = "Only the person who launched this job, or an admin"


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(
        tmp_path,
        s3_endpoint,
        setenv=monkeypatch.setenv,
        submitters=f"{SUBMITTER},{SECOND}",
        channels=f"{CHANNEL},{ELSEWHERE_OK}",
    )
    yield harness
    harness.stop()


def _said(bot: Harness, text: str, user: str, channel: str = CHANNEL) -> str:
    return bot.said(text, user=user, channel=channel)


def _clicked(bot: Harness, job: str, user: str) -> str:
    return texts(bot.wait_responses(bot.click(blocks.STOP_ACTION, job, user=user)))


def test_watching_a_job_gives_no_right_over_it(bot: Harness) -> None:
    """The adversarial run: `/gt unwatch` then `/gt watch` made a reader the watch's owner,
    and the Stop button took owners."""
    store = bot.running.deps.store
    job, _ = bot.launch(user=SUBMITTER)
    assert LAUNCHER_ONLY in _said(bot, f"unwatch {job}", OTHER)
    assert LAUNCHER_ONLY in _said(bot, f"watch {job}", OTHER, ELSEWHERE_OK)
    watch = store.get_watch(job)
    assert watch is not None and watch.channel == CHANNEL and watch.owner == SUBMITTER
    # Watching it in its own channel is reading: allowed, and it changes nobody's rights.
    assert job in _said(bot, f"watch {job}", OTHER)
    watch = store.get_watch(job)
    assert watch is not None and watch.owner == SUBMITTER
    for user in (OTHER, SECOND):
        assert LAUNCHER_ONLY in _clicked(bot, job, user)
    assert LAUNCHER_ONLY in _said(bot, f"stop {job}", SECOND)
    assert bot.aws_calls("StopLabelingJob") == []
    # The launcher may move it, and stop it.
    assert job in _said(bot, f"watch {job}", SUBMITTER, ELSEWHERE_OK)
    assert f"Stopping {job}" in _clicked(bot, job, SUBMITTER)
    assert bot.aws_calls("StopLabelingJob") == ["StopLabelingJob"]


def test_a_job_not_launched_here_belongs_to_the_submitters(bot: Harness, tmp_path: Path) -> None:
    job = "demo-20260101000001"
    # A real job: its frames, manifest and annotation interface are in S3, as AWS needs them.
    JobRig(bot.emu, bot.s3_url, tmp_path / "frames").create_job(job, frames=2)
    assert job in _said(bot, f"watch {job}", OTHER)  # OTHER now "owns" the watch...
    assert "Only a submitter, or an admin, may stop" in _clicked(bot, job, OTHER)  # ...no more
    assert bot.aws_calls("StopLabelingJob") == []
    # A submitter may unwatch someone else's watch of it.
    assert f"No longer watching {job}" in _said(bot, f"unwatch {job}", SECOND)


@pytest.mark.slow
def test_rights_are_those_of_the_settings_now(bot: Harness) -> None:
    """A submitter removed from GTBOT_SUBMITTERS: an old plan's Launch and a Stop after the
    restart are refused."""
    store = bot.running.deps.store
    job, _ = bot.launch(user=SUBMITTER)
    time.sleep(1.0)  # job names carry the second
    plan_id, ts = bot.submit_plan(user=SUBMITTER)
    restart(bot, GTBOT_SUBMITTERS=SECOND)
    seen = texts(
        bot.wait_responses(bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=ts))
    )
    assert "only submitters may do it; you are not (or no longer) one" in seen
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.state == "pending"
    assert "are no longer in GTBOT_SUBMITTERS" in _clicked(bot, job, SUBMITTER)
    assert bot.aws_calls("CreateLabelingJob") == ["CreateLabelingJob"]
    assert bot.aws_calls("StopLabelingJob") == []


def test_rebuilding_results_needs_a_submitter_and_is_audited(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gtbot.audit")
    job = "demo-20000101000000"
    assert "only submitters may run it" in _said(bot, f"results {job} --rebuild", OTHER)
    assert "only submitters" not in _said(bot, f"results {job}", OTHER)  # reading stays open
    assert not [r for r in caplog.records if r.name == "gtbot.audit"]
    _said(bot, f"results {job} --rebuild", SUBMITTER)
    (record,) = [r for r in caplog.records if r.name == "gtbot.audit"]
    assert record.audit == {  # type: ignore[attr-defined]
        "action": "results",
        "user": SUBMITTER,
        "channel": CHANNEL,
        "args": [job],
        "options": {"rebuild": True},
    }


def test_jobs_limit_must_be_a_sensible_number(bot: Harness) -> None:
    for limit in ("-5", "0", "100000"):
        assert "--limit must be from 1 to 500" in _said(bot, f"jobs --limit {limit}", OTHER)
    assert bot.aws_calls("ListLabelingJobs") == []


def test_channel_messages_never_show_paths_on_the_bots_host(bot: Harness) -> None:
    broken = bot.projects_dir / "broken"
    broken.mkdir()
    (broken / "project-config.yml").write_text("species: [mouse\n")
    seen = _said(bot, "setup broken", SUBMITTER)
    assert "…/broken/project-config.yml, line 2" in seen
    assert "Created project fresh" in _said(bot, "init fresh --region us-east-2", SUBMITTER)
    said = "\n".join(json.dumps(c.params, ensure_ascii=False) for c in bot.stub.calls)
    assert str(bot.projects_dir) not in said and str(bot.projects_dir.parent) not in said


def test_a_database_error_after_launch_shows_the_card_and_the_truth(
    bot: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = bot.running.deps.store
    plan_id, ts = bot.submit_plan(user=SUBMITTER)

    def down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("INSERT INTO gtbot_watches", {}, Exception("disk full"))

    for name in ("add_watch", "update_watch"):
        monkeypatch.setattr(store, name, down)
    click = bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=ts)
    seen = texts(bot.wait_responses(click))
    plan = store.get_plan(plan_id)
    assert plan is not None
    assert f"Launched {plan.job_name}" in seen and "could not record the launch" in seen
    assert "Nothing more was done" not in seen
    cards = [
        c.params
        for c in bot.stub.of("chat.update")
        if c.params.get("ts") == ts and blocks.STOP_ACTION in json.dumps(c.params["blocks"])
    ]
    assert len(cards) == 1 and plan.job_name in json.dumps(cards[0]["blocks"])
    assert bot.emu.job_names() == [plan.job_name]

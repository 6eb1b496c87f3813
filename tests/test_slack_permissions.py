"""Who may do what, where, through the real HTTP endpoint: commands and card buttons.

Reading commands are open in the allowed channels; commands that spend money or change AWS need
a submitter (a user id or a member of a user group in GTBOT_SUBMITTERS) or an admin; nothing
answers outside GTBOT_CHANNELS. A refusal is ephemeral and changes nothing: no AWS call at the
emulator, no bucket, no message in the channel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_harness import (
    ADMIN,
    CHANNEL,
    ELSEWHERE,
    OTHER,
    SUBMITTER,
    Harness,
    RecordingStub,
    Sent,
    start_harness,
    texts,
)

from aws.emulator.moto_s3 import LocalS3
from bot.commands import COMMANDS
from handlers import blocks

GROUP = "SLABELERS"
GROUP_MEMBER = "UGROUPIE"
NO_JOB = "demo-20000101000000"

ROLES = {
    "admin": (ADMIN, CHANNEL),
    "submitter": (SUBMITTER, CHANNEL),
    "group member": (GROUP_MEMBER, CHANNEL),
    "other user": (OTHER, CHANNEL),
    "disallowed channel": (ADMIN, ELSEWHERE),
}
# (command, text, spends)
TABLE = [
    ("help", "help", False),
    ("status", "status", False),
    ("jobs", "jobs", False),
    ("results", f"results {NO_JOB}", False),
    ("setup", "setup demo", True),
    ("template", "template demo", True),
    ("upload", "upload demo", True),
    ("manifest", "manifest demo", True),
    ("submit", "submit demo", True),
    ("stop", f"stop {NO_JOB}", True),
    ("watch", f"watch {NO_JOB}", False),
    ("unwatch", f"unwatch {NO_JOB}", False),
    ("init", "init fresh-project", True),
    ("frames", "frames demo --count 5", True),
    ("consolidate", "consolidate s3://demo-frames-output/demo/x.manifest --project demo", True),
]
REFUSALS = ("does not answer in this channel", "only submitters may run it", "no one may run it")


def _allowed(role: str, spends: bool) -> bool:
    if role == "disallowed channel":
        return False
    return not spends or role != "other user"


def _start(
    workdir: Path, server: LocalS3, mp: pytest.MonkeyPatch, *, admins: str = ADMIN, submitters: str
) -> Iterator[Harness]:
    server.reset()
    stub = RecordingStub()
    stub.groups[GROUP] = [GROUP_MEMBER]
    harness = start_harness(
        workdir, server.url, stub=stub, setenv=mp.setenv, admins=admins, submitters=submitters
    )
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory, local_s3_server: LocalS3) -> Iterator[Harness]:
    """One bot for the whole matrix: every case checks its own effects as deltas."""
    with pytest.MonkeyPatch.context() as mp:
        yield from _start(
            tmp_path_factory.mktemp("perm"),
            local_s3_server,
            mp,
            submitters=f"{SUBMITTER},{GROUP}",
        )


def _channel_posts(bot: Harness) -> int:
    return sum(1 for c in bot.stub.api_calls() if c.method.startswith("chat."))


def _finish(bot: Harness, sent: Sent, command: str, text: str, before: int) -> str:
    """Wait for the command's last visible effect and return what its caller read: a refusal
    (or a failed quick check) through response_url, a long command's answer in the thread of
    its progress message (a plan card for submit). `before`: its progress messages before."""
    if not COMMANDS[command].long:
        return texts(bot.wait_responses(sent))

    def said() -> str | None:
        if responses := bot.stub.responses(sent.response_id):
            return texts(responses)
        posted = bot.progress_messages(text)
        if len(posted) <= before:
            return None
        if command == "submit":
            return "plan card" if bot.plan_cards() else None
        replies = bot.replies(posted[-1])
        ended = any(w in bot.progress_now(text) for w in ("finished in", "failed after"))
        return texts(replies) if replies and ended else None

    return str(bot.wait_for(said, 30, f"the answer to /gt {text}"))


def test_the_table_matches_the_router() -> None:
    assert {name: COMMANDS[name].spends for name, _, _ in TABLE} == {
        name: spends for name, _, spends in TABLE
    }


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize(("command", "text", "spends"), TABLE, ids=[t[0] for t in TABLE])
def test_command_permissions(
    bot: Harness, role: str, command: str, text: str, spends: bool
) -> None:
    user, channel = ROLES[role]
    allowed = _allowed(role, spends)
    aws_before, buckets_before, posts_before = (
        len(bot.emu.calls),
        bot.buckets(),
        _channel_posts(bot),
    )
    progress_before = len(bot.progress_messages(text))
    sent = bot.command(text, user=user, channel=channel)
    assert sent.status == 200
    seen = _finish(bot, sent, command, text, progress_before)
    refused = any(r in seen for r in REFUSALS)
    assert refused == (not allowed), seen
    if refused:
        replies = bot.stub.responses(sent.response_id)
        assert len(replies) == 1 and replies[0]["response_type"] == "ephemeral"
        assert len(bot.emu.calls) == aws_before
        assert bot.buckets() == buckets_before
        assert _channel_posts(bot) == posts_before
        if role == "other user":
            assert "GTBOT_SUBMITTERS" in seen  # says how to get the right
    if command == "submit" and allowed:
        time.sleep(1.0)  # job names carry the second: the next submit needs a new one


@pytest.fixture
def nobody_bot(tmp_path: Path, local_s3_server: LocalS3) -> Iterator[Harness]:
    with pytest.MonkeyPatch.context() as mp:
        yield from _start(tmp_path, local_s3_server, mp, admins="", submitters="")


def test_without_submitters_spending_is_refused_with_how_to_configure(
    nobody_bot: Harness,
) -> None:
    bot = nobody_bot
    for command, text, spends in TABLE:
        posts_before = _channel_posts(bot)
        sent = bot.command(text, user=OTHER)
        seen = _finish(bot, sent, command, text, 0)
        if spends:
            assert "no one may run it yet" in seen, seen
            assert "GTBOT_SUBMITTERS" in seen and "GTBOT_ADMINS" in seen
            assert _channel_posts(bot) == posts_before  # a refusal posts nothing
        else:
            assert not any(r in seen for r in REFUSALS), seen
    assert bot.aws_calls("CreateLabelingJob") == [] and bot.aws_calls("StopLabelingJob") == []
    assert bot.buckets() == []


def test_unknown_command_elsewhere_says_nothing_but_the_channel(bot: Harness) -> None:
    """Outside GTBOT_CHANNELS even a typo gets only "not here", not the command list."""
    sent = bot.command("frobnicate", user=ADMIN, channel=ELSEWHERE)
    seen = texts(bot.wait_responses(sent))
    assert "does not answer in this channel" in seen
    assert "Commands:" not in seen


# --------------------------------------------------------------------------- buttons


@pytest.fixture
def button_bot(tmp_path: Path, local_s3_server: LocalS3) -> Iterator[Harness]:
    with pytest.MonkeyPatch.context() as mp:
        yield from _start(tmp_path, local_s3_server, mp, submitters=f"{SUBMITTER},{OTHER},{GROUP}")


def _click_answer(bot: Harness, sent: Sent) -> str:
    assert sent.status == 200
    return texts(bot.wait_responses(sent))


@pytest.mark.slow
def test_only_the_requester_or_an_admin_may_press_the_buttons(button_bot: Harness) -> None:
    bot = button_bot
    store = bot.running.deps.store
    # Plan 1, asked for by SUBMITTER: another submitter may neither launch nor cancel it.
    plan_id, ts = bot.submit_plan(user=SUBMITTER)
    updates = len(bot.stub.of("chat.update"))
    for action in (blocks.LAUNCH_ACTION, blocks.CANCEL_ACTION):
        seen = _click_answer(bot, bot.click(action, plan_id, user=OTHER, message_ts=ts))
        assert "Only the person who asked for this plan, or an admin" in seen
        seen = _click_answer(
            bot, bot.click(action, plan_id, user=ADMIN, channel=ELSEWHERE, message_ts=ts)
        )
        assert "does not answer in this channel" in seen
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.state == "pending"
    assert bot.aws_calls("CreateLabelingJob") == []
    assert len(bot.stub.of("chat.update")) == updates
    # ...an admin may cancel it.
    bot.click(blocks.CANCEL_ACTION, plan_id, user=ADMIN, message_ts=ts)
    bot.wait_for(lambda: len(bot.stub.of("chat.update")) > updates, 10, "the cancelled card")
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.state == "cancelled" and plan.decided_by == ADMIN
    assert "Plan cancelled" in bot.stub.of("chat.update")[-1].params["text"]

    # Plan 2: an admin may launch someone else's plan; its Stop belongs to the requester.
    time.sleep(1.0)
    plan_id, ts = bot.submit_plan(user=SUBMITTER)
    bot.click(blocks.LAUNCH_ACTION, plan_id, user=ADMIN, message_ts=ts)
    bot.wait_for(lambda: bot.aws_calls("CreateLabelingJob"), 10, "the launch")
    bot.wait_for(lambda: (p := store.get_plan(plan_id)) and p.state == "launched", 10, "launched")
    plan = store.get_plan(plan_id)
    assert plan is not None
    job = plan.job_name
    for user, channel in ((OTHER, CHANNEL), (GROUP_MEMBER, CHANNEL), (SUBMITTER, ELSEWHERE)):
        seen = _click_answer(
            bot, bot.click(blocks.STOP_ACTION, job, user=user, channel=channel, message_ts=ts)
        )
        assert "Only the person who launched this job, or an admin" in seen or (
            channel == ELSEWHERE and "does not answer in this channel" in seen
        )
    assert bot.aws_calls("StopLabelingJob") == []
    seen = _click_answer(bot, bot.click(blocks.STOP_ACTION, job, user=SUBMITTER, message_ts=ts))
    assert f"Stopping {job}" in seen
    assert bot.aws_calls("StopLabelingJob") == ["StopLabelingJob"]


def test_user_group_is_resolved_through_slack(button_bot: Harness) -> None:
    bot = button_bot
    bot.command("setup demo", user=GROUP_MEMBER)
    assert "Buckets ready" in texts([bot.long_reply("setup demo")])
    lookups = bot.stub.of("usergroups.users.list")
    assert [c.params.get("usergroup") for c in lookups] == [GROUP]

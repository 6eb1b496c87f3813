"""The Slack app over real HTTP: signatures, the submit → Launch flow, races, errors, ack time.

Each test starts the bot with `start_bot` on 127.0.0.1:0 and sends it requests signed as Slack
signs them; Slack's Web API is a recording stub, AWS is moto S3 plus the Ground Truth emulator.
What Slack would show is read back from the stub, what AWS was asked from the emulator's log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from slack_harness import (
    ADMIN,
    CHANNEL,
    SECRET,
    SUBMITTER,
    TOKEN,
    Harness,
    signature_headers,
    start_harness,
    texts,
)

from handlers import blocks


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(tmp_path, s3_endpoint, setenv=monkeypatch.setenv)
    yield harness
    harness.stop()


# --------------------------------------------------------------------------- health


def test_healthz_answers_json(bot: Harness) -> None:
    with urllib.request.urlopen(bot.url + "/healthz", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == {"ok": True, "holds_lease": False}  # no watcher


# --------------------------------------------------------------------------- signatures


def _assert_untouched(bot: Harness) -> None:
    """A rejected request reaches nothing: no Slack call, no AWS call, no bucket."""
    time.sleep(0.3)  # anything the request had set off would have started by now
    assert bot.stub.calls == []
    assert bot.emu.calls == []
    assert bot.buckets() == []


@pytest.mark.parametrize(
    "tamper",
    ["bad-signature", "wrong-secret", "stale-timestamp", "no-headers", "no-signature", "no-ts"],
)
def test_unsigned_or_stale_requests_are_refused(bot: Harness, tamper: str) -> None:
    rid = "refused"
    body = bot.command_body("submit demo", user=ADMIN, channel=CHANNEL, response_id=rid)
    headers = signature_headers(body)
    if tamper == "bad-signature":
        headers["X-Slack-Signature"] = headers["X-Slack-Signature"][:-4] + "0000"
    elif tamper == "wrong-secret":
        headers = signature_headers(body, secret="not-the-secret")
    elif tamper == "stale-timestamp":
        headers = signature_headers(body, ts=int(time.time()) - 6 * 60)
    elif tamper == "no-headers":
        headers = {}
    elif tamper == "no-signature":
        del headers["X-Slack-Signature"]
    elif tamper == "no-ts":
        del headers["X-Slack-Request-Timestamp"]
    sent = bot.deliver(body, headers=headers, signed=False, response_id=rid)
    assert sent.status == 401
    _assert_untouched(bot)


def test_signature_covers_the_body(bot: Harness) -> None:
    """A signature made for one body does not carry over to another (e.g. a changed user)."""
    body = bot.command_body("help", user=SUBMITTER, channel=CHANNEL, response_id="a")
    headers = signature_headers(body)
    forged = bot.command_body("submit demo", user=ADMIN, channel=CHANNEL, response_id="a")
    assert bot.deliver(forged, headers=headers, signed=False).status == 401
    _assert_untouched(bot)


# --------------------------------------------------------------------------- full flow


def _job_card_updates(bot: Harness) -> list[dict[str, Any]]:
    return [
        c.params
        for c in bot.stub.of("chat.update")
        if "Labeling job" in json.dumps(c.params.get("blocks"))
    ]


@pytest.mark.slow
def test_submit_then_launch_creates_one_job_and_turns_the_card(bot: Harness) -> None:
    sent = bot.command("submit demo", user=SUBMITTER)
    assert sent.status == 200
    # A long command: a progress message in the channel, then the plan card; no response_url.
    progress = bot.wait_for(lambda: bot.progress_message("submit demo"), 10, "the progress")
    # Posted "starting", maybe already updated to "started" (the stub keeps messages as edited).
    assert progress["text"].startswith(":hourglass") and "start" in progress["text"]

    bot.wait_for(lambda: bot.plan_cards(), 30, "the plan card")
    bot.wait_for(
        lambda: "the plan card is below" in bot.progress_now("submit demo"),
        10,
        "the progress message's last state",
    )
    assert bot.stub.responses(sent.response_id) == []
    card = bot.plan_cards()[0].params
    assert card["channel"] == CHANNEL
    actions = [e.get("action_id") for b in card["blocks"] for e in b.get("elements") or []]
    assert blocks.LAUNCH_ACTION in actions and blocks.CANCEL_ACTION in actions
    assert "3 images" in card["text"]
    assert bot.aws_calls("CreateLabelingJob") == []  # nothing is spent before Launch
    assert bot.buckets() == ["demo-frames", "demo-frames-output", "demo-ui"]

    plan_id, ts = bot.plan_at(0)
    click = bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=ts)
    assert click.status == 200
    bot.wait_for(lambda: _job_card_updates(bot), 15, "the job card")
    update = _job_card_updates(bot)[0]
    assert update["ts"] == ts and update["channel"] == CHANNEL
    plan = bot.running.deps.store.get_plan(plan_id)
    assert plan is not None and plan.state == "launched"
    assert plan.job_name in json.dumps(update["blocks"])
    stop = [e for b in update["blocks"] for e in b.get("elements") or []]
    assert [e["action_id"] for e in stop if "action_id" in e] == [blocks.STOP_ACTION]
    assert bot.aws_calls("CreateLabelingJob") == ["CreateLabelingJob"]
    assert bot.emu.job_names() == [plan.job_name]
    watch = bot.running.deps.store.get_watch(plan.job_name)
    assert watch is not None and watch.message_ts == ts and watch.owner == SUBMITTER


# --------------------------------------------------------------------------- races


def _settled(bot: Harness, plan_id: str) -> str:
    plan = bot.running.deps.store.get_plan(plan_id)
    assert plan is not None
    return plan.state


@pytest.mark.slow
def test_twenty_concurrent_launches_and_retries_create_one_job(bot: Harness) -> None:
    plan_id, ts = bot.submit_plan(user=SUBMITTER)
    deliveries: list[tuple[str, int | None]] = [(SUBMITTER, None), (ADMIN, None)] * 10
    deliveries += [(SUBMITTER, 1), (SUBMITTER, 2), (ADMIN, 1), (ADMIN, 2)]
    with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
        sent = list(
            pool.map(
                lambda d: bot.click(
                    blocks.LAUNCH_ACTION, plan_id, user=d[0], message_ts=ts, retry=d[1]
                ),
                deliveries,
            )
        )
    assert [s.status for s in sent] == [200] * len(sent)
    # The winner's answer is the card turning into a job card; every other first delivery gets
    # an ephemeral "already"; retries are dropped before any work.
    firsts = [s for s, d in zip(sent, deliveries, strict=True) if d[1] is None]
    bot.wait_for(lambda: _job_card_updates(bot), 15, "the job card")
    bot.wait_for(
        lambda: sum(1 for s in firsts if bot.stub.responses(s.response_id)) >= len(firsts) - 1,
        15,
        "the losers' answers",
    )
    time.sleep(0.3)
    for s, d in zip(sent, deliveries, strict=True):
        if d[1] is not None:
            assert bot.stub.responses(s.response_id) == []
    assert bot.aws_calls("CreateLabelingJob") == ["CreateLabelingJob"]
    assert len(bot.emu.job_names()) == 1
    assert _settled(bot, plan_id) == "launched"
    assert len(_job_card_updates(bot)) == 1  # the card turned once, not twenty times
    answers = [r[0]["text"] for s in firsts if (r := bot.stub.responses(s.response_id))]
    assert len(answers) == len(firsts) - 1
    assert all(a.startswith("This plan ") for a in answers), answers


@pytest.mark.slow
def test_cancel_racing_launch_has_exactly_one_winner(bot: Harness) -> None:
    outcomes = []
    for _ in range(2):
        plan_id, ts = bot.submit_plan(user=SUBMITTER)
        before = len(bot.aws_calls("CreateLabelingJob"))
        clicks = [blocks.LAUNCH_ACTION, blocks.CANCEL_ACTION] * 5
        with ThreadPoolExecutor(max_workers=len(clicks)) as pool:
            sent = list(
                pool.map(
                    lambda a: bot.click(a, plan_id, user=SUBMITTER, message_ts=ts),  # noqa: B023
                    clicks,
                )
            )
        # A winning Launch answers by turning the card; every other click answers ephemerally.
        bot.wait_for(
            lambda: sum(1 for s in sent if bot.stub.responses(s.response_id)) >= len(sent) - 1,  # noqa: B023
            15,
            "the clicks' answers",
        )
        time.sleep(0.3)
        answers = [r[0]["text"] for s in sent if (r := bot.stub.responses(s.response_id))]
        launched_card = len(answers) == len(sent) - 1
        wins = [a for a in answers if a.startswith("Plan cancelled")] + ["card"] * launched_card
        assert len(wins) == 1, answers
        # A winning Launch re-reads the plan's manifest before CreateLabelingJob: wait for it.
        bot.wait_for(lambda: _settled(bot, plan_id) != "launching", 15, "the launch to settle")  # noqa: B023
        state = _settled(bot, plan_id)
        launched = len(bot.aws_calls("CreateLabelingJob")) - before
        assert (state, launched) in (("launched", 1), ("cancelled", 0))
        outcomes.append(state)
        time.sleep(1.0)  # job names carry the second: the next submit needs a new one
    assert set(outcomes) <= {"launched", "cancelled"}


def _launched_job(bot: Harness, user: str = SUBMITTER) -> tuple[str, str]:
    """A plan launched through the buttons: (job name, card ts)."""
    plan_id, ts = bot.submit_plan(user=user)
    bot.click(blocks.LAUNCH_ACTION, plan_id, user=user, message_ts=ts)
    bot.wait_for(lambda: _settled(bot, plan_id) == "launched", 15, "the launch")
    plan = bot.running.deps.store.get_plan(plan_id)
    assert plan is not None
    return plan.job_name, ts


# --------------------------------------------------------------------------- ack timing

ACK_BOUND = 1.5  # Slack gives 3 s; an ack that needs AWS would take >= 2 s here
BURST_BOUND = 1.0  # a connection dropped from the listen backlog comes back after >= 1 s


@pytest.mark.slow
def test_acks_stay_fast_when_aws_is_slow(bot: Harness) -> None:
    job, _ = _launched_job(bot)
    time.sleep(1.0)  # the next submit must name a new job
    bot.emu.settings.delay_seconds = 2.0
    sequential = [
        bot.command(text, user=SUBMITTER)
        for text in ("submit demo", f"status {job}", "jobs", f"stop {job}")
    ]
    # A burst: more slow commands at once than Bolt has listener threads (5) and than
    # socketserver's default listen backlog (5, where TCP retries a dropped SYN after 1 s).
    with ThreadPoolExecutor(max_workers=30) as pool:
        burst = list(pool.map(lambda _: bot.command(f"status {job}", user=SUBMITTER), range(30)))
    for sent in sequential + burst:
        assert sent.status == 200
    assert max(s.seconds for s in sequential) < ACK_BOUND, [s.seconds for s in sequential]
    assert max(s.seconds for s in burst) < BURST_BOUND, sorted(s.seconds for s in burst)
    # ...and the work behind them still happens (AWS fast again, so the queue drains quickly).
    bot.emu.settings.delay_seconds = 0.0
    for sent in burst:
        assert job in texts(bot.wait_responses(sent, timeout=30))


# --------------------------------------------------------------------------- errors


def _everything_said(bot: Harness) -> str:
    """All text gtbot sent toward Slack: response_url posts and Web API calls alike."""
    return "\n".join(json.dumps(c.params, ensure_ascii=False) for c in bot.stub.calls)


def test_expected_error_is_ephemeral_and_says_what_to_do(bot: Harness) -> None:
    sent = bot.command("status", user=SUBMITTER)  # warm up: nothing to do with the error
    bot.wait_responses(sent)
    sent = bot.command("submit nosuch", user=SUBMITTER)
    # A long command's quick checks run before it queues: the answer is at once, ephemeral,
    # and nothing is posted in the channel.
    replies = bot.wait_responses(sent)
    assert all(r["response_type"] == "ephemeral" for r in replies)
    error = replies[0]["text"]
    assert "nosuch" in error and "init nosuch" in error, error
    assert "trace id" not in error
    assert bot.progress_message("submit nosuch") is None
    sent = bot.command("stop", user=SUBMITTER)
    assert "stop needs &lt;job&gt;. Usage: stop &lt;job&gt;" in bot.wait_responses(sent)[0]["text"]
    assert bot.plan_cards() == []


def test_unexpected_error_is_an_apology_with_a_trace_id_in_the_log(
    bot: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bot import recipe
    from bot.jobs import launcher

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError(f"database password hunter2, token {TOKEN}")

    monkeypatch.setattr(recipe, "recent_jobs", explode)
    caplog.set_level(logging.ERROR, logger="gtbot")
    sent = bot.command("jobs", user=SUBMITTER)
    reply = bot.wait_responses(sent)[0]
    assert reply["response_type"] == "ephemeral"
    match = re.search(r"trace id `([0-9a-f]{12})`", reply["text"])
    assert match is not None, reply
    assert reply["text"].startswith("Sorry, something went wrong")
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])  # the details are for the log...

    # ...and the same holds on a button.
    monkeypatch.setattr(launcher, "launch_plan", explode)
    click = bot.click(blocks.LAUNCH_ACTION, "any-plan", user=SUBMITTER)
    assert "trace id `" in bot.wait_responses(click)[0]["text"]

    said = _everything_said(bot)
    for secret in ("hunter2", TOKEN, SECRET, "Traceback", "RuntimeError", 'File "'):
        assert secret not in said


def test_user_text_is_escaped_for_mrkdwn(bot: Harness) -> None:
    for text in (
        "submit <!channel>",
        "status <!here|here>",
        "results <@U0BOSS>",
        "jobs <!channel>",
    ):
        sent = bot.command(text, user=SUBMITTER)
        if text.startswith("results"):  # a long command: its answer is a message
            bot.long_reply(text)
        else:
            bot.wait_responses(sent)
    said = _everything_said(bot)
    assert "&lt;!channel&gt;" in said
    for raw in ("<!channel>", "<!here", "<@U0BOSS>"):
        assert raw not in said, said


def _replies(bot: Harness) -> list[dict[str, Any]]:
    """Thread replies in the channel: long commands' answers."""
    return [m for m in bot.stub.messages.get(CHANNEL, []) if m.get("thread_ts")]


def test_two_submits_in_one_second_do_not_crash(bot: Harness) -> None:
    """Job names carry the second; the second plan for the same name is refused, politely."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: bot.command("submit demo", user=SUBMITTER), range(2)))
    bot.wait_for(
        lambda: (
            len(bot.plan_cards())
            + sum("made a moment ago" in texts(m.get("blocks")) for m in _replies(bot))
            == 2
        ),
        30,
        "both submits to finish",
    )
    assert "trace id" not in _everything_said(bot)

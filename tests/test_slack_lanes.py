"""The lanes through the real HTTP endpoint: a quick command is answered while long ones hold
every long slot; a long command queued behind others says how many are ahead, then runs; its
answer reaches the asker however the channel fares; `watch --notify`; log lines name the user
and the command."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_harness import ADMIN, CHANNEL, OTHER, SUBMITTER, Harness, start_harness, texts

from bot import logs
from bot.commands import COMMANDS, Invocation, Reply


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(
        tmp_path, s3_endpoint, setenv=monkeypatch.setenv, settings_env={"GTBOT_LONG_JOBS": "1"}
    )
    yield harness
    harness.stop()


class Held:
    """`upload` replaced by work that counts a little, then waits until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, inv: Invocation) -> Reply:
        self.calls += 1
        task = inv.ctx.progress.task("Uploading frames", 10, "frames")
        task.advance(3)
        assert self.release.wait(30)
        task.advance(7)
        task.close()
        return Reply(f"Frames in s3://demo-frames/: 10 uploaded (call {self.calls}).")


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    gate = Held()
    monkeypatch.setitem(COMMANDS, "upload", dataclasses.replace(COMMANDS["upload"], func=gate))
    yield gate
    gate.release.set()


def test_quick_answers_while_long_work_holds_every_slot_and_the_queue_is_told(
    bot: Harness, held: Held
) -> None:
    first = bot.command("upload demo", user=SUBMITTER)
    bot.wait_for(lambda: "started" in bot.progress_now("upload demo"), 10, "the start")
    second = bot.command("upload demo", user=ADMIN)
    bot.wait_for(lambda: len(bot.progress_messages("upload demo")) == 2, 10, "the second")
    queued = bot.progress_messages("upload demo")[1]["text"]
    assert "`/gt upload demo`: queued, 1 ahead (1 long command run at a time" in queued

    # The one long slot is taken and a command waits for it: a quick command is answered.
    assert "Commands" in texts(bot.wait_responses(bot.command("help", user=OTHER)))
    assert held.calls == 1 and not held.release.is_set()

    held.release.set()
    replies = [bot.replies(m) for m in bot.progress_messages("upload demo")]
    bot.wait_for(
        lambda: all(bot.replies(m) for m in bot.progress_messages("upload demo")), 15, "answers"
    )
    replies = [bot.replies(m)[0] for m in bot.progress_messages("upload demo")]
    assert replies[0]["text"].startswith(f"<@{SUBMITTER}> `/gt upload demo` finished:")
    assert replies[1]["text"].startswith(f"<@{ADMIN}> `/gt upload demo` finished:")
    assert "10 uploaded (call 1)" in texts([replies[0]])
    assert "10 uploaded (call 2)" in texts([replies[1]])
    # Long work answers through messages: response_url (5 posts in 30 min) is left alone.
    assert bot.stub.responses(first.response_id) == bot.stub.responses(second.response_id) == []
    second_ts = bot.progress_messages("upload demo")[1]["ts"]
    said = [c.params["text"] for c in bot.stub.of("chat.update") if c.params["ts"] == second_ts]
    assert said[0].endswith("`/gt upload demo`: started")  # from queued straight to running
    bot.wait_for(
        lambda: any(
            "finished in" in c.params["text"]
            for c in bot.stub.of("chat.update")
            if c.params["ts"] == second_ts
        ),
        10,
        "the second's end",
    )


def test_the_answer_reaches_the_asker_when_the_channel_is_gone(bot: Harness, held: Held) -> None:
    """An upload outlives its channel: the answer goes to the asker's direct messages."""
    bot.command("upload demo", user=SUBMITTER)
    bot.wait_for(lambda: "started" in bot.progress_now("upload demo"), 10, "the start")
    bot.stub.gone_channels.add(CHANNEL)
    held.release.set()
    dm = f"D{SUBMITTER}"
    answer = bot.wait_for(lambda: bot.stub.messages.get(dm), 15, "the answer in a DM")[0]
    assert answer["text"].startswith(f"<@{SUBMITTER}> `/gt upload demo` finished:")
    assert [c.params["users"] for c in bot.stub.of("conversations.open")] == [SUBMITTER]


@pytest.mark.slow
def test_watch_notify_subscribes_once_without_a_second_card(bot: Harness) -> None:
    from bot import recipe
    from bot.context import Context

    ctx = Context(settings=bot.running.deps.ctx.settings)
    job = recipe.launch(ctx, recipe.prepare_submission(ctx, ctx.project("demo")))
    store = bot.running.deps.store
    seen = bot.said(f"watch {job.name} --notify", user=OTHER)
    assert f"Now watching {job.name} here" in seen and "You will be mentioned when it ends" in seen
    bot.wait_for(lambda: bot.stub.of("chat.postMessage"), 10, "the card")
    seen = bot.said(f"watch {job.name} --notify", user=ADMIN)
    assert f"You will be mentioned in the thread of {job.name}'s card here" in seen
    assert store.subscribers(job.name) == [OTHER, ADMIN]
    assert len(bot.stub.of("chat.postMessage")) == 1  # one card


def test_log_lines_name_the_trace_the_user_and_the_command(
    bot: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import recipe

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(recipe, "recent_jobs", explode)
    stream = io.StringIO()
    handler = logs.json_handler(stream)
    logger = logging.getLogger("gtbot")
    logger.addHandler(handler)
    try:
        reply = texts(bot.wait_responses(bot.command("jobs --limit 5", user=SUBMITTER)))
    finally:
        logger.removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    (error,) = [r for r in records if r["message"].startswith("unexpected error")]
    assert error["user"] == SUBMITTER and error["command"] == "jobs"
    assert error["trace_id"] in reply and "--limit" not in json.dumps(error)

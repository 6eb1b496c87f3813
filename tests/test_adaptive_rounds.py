"""Automatic rounds end to end: a project with an adaptive policy, launched from its plan card
over real HTTP, then the job watcher (the real Watcher and SlackNotifier, ticked here instead of
by APScheduler, with the after-tick hook `gtbot serve` installs) on the Ground Truth emulator's
public crowd. Each round's end is told, the next round is planned and launched within the
budget and said once in the job's thread, whatever retries, crashes and replicas do; a person
can stop the rounds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_harness import ADMIN, SUBMITTER, TOKEN, Harness, start_harness

from aws.emulator.groundtruth import EmulatorSettings
from bot.job_results import completion_results
from bot.jobs.relabel import advance_chains
from bot.jobs.watcher import Watcher
from bot.synthetic import draw_frames
from handlers import blocks
from handlers.slack import SlackNotifier, web_client

PUBLIC = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"
FRAMES = 8


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(
        tmp_path,
        s3_endpoint,
        setenv=monkeypatch.setenv,
        emulator=EmulatorSettings(seed=5, rate=400.0),
        frames=0,
    )
    project = harness.projects_dir / "demo"
    config = yaml.safe_load((project / "project-config.yml").read_text())
    # 8 frames x 2 workers x $0.036 = $0.576; round 2: 4 frames, $0.144; round 3 has $0.08
    # left of the $0.80 budget: 2 frames.
    config["job"].update(
        workteam_arn=PUBLIC,
        price_usd=0.036,
        workers_per_image=2,
        adaptive={
            "select": "worst 50%",
            "workers_per_round": 1,
            "max_rounds": 3,
            "budget_usd": 0.80,
        },
    )
    (project / "project-config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    raw = project / "annotation-data" / "raw-images"
    draw_frames(raw, FRAMES, seed=12, width=512, height=300)
    yield harness
    harness.stop()


def _watcher(bot: Harness, holder: str) -> Watcher:
    """The watcher as `gtbot serve` builds it, on the bot's database and the stub."""
    deps = bot.running.deps
    notifier = SlackNotifier(web_client(TOKEN, deps.ctx.settings.slack_api_url))

    def rounds(watcher: Watcher) -> None:
        advance_chains(watcher.ctx, watcher.store, watcher.tell, deps.auth.is_submitter)

    return Watcher(
        deps.ctx,
        deps.store,
        notifier,
        holder=holder,
        lease_seconds=30,
        results=completion_results,
        after_tick=rounds,
    )


def _tick_until(watcher: Watcher, done: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        watcher.tick()
        value = done()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _read(call: Any) -> str:
    """What a post says: its sections' text (a long text is split across them), else its text."""
    blocks = call.params.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    sections = [b["text"]["text"] for b in blocks or () if b.get("type") == "section"]
    return "\n".join(sections) if sections else str(call.params.get("text"))


def _thread_texts(bot: Harness, thread: str) -> list[str]:
    return [
        _read(c) for c in bot.stub.of("chat.postMessage") if c.params.get("thread_ts") == thread
    ]


def _launch_first_round(bot: Harness) -> tuple[str, str]:
    plan_id, ts = bot.submit_plan(user=SUBMITTER)
    card = json.dumps(bot.plan_cards()[-1].params["blocks"])
    assert "Adaptive rounds:" in card and "up to 3 rounds" in card and "$0.80 in all" in card
    bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=ts)
    store = bot.running.deps.store
    plan = bot.wait_for(
        lambda: (p := store.get_plan(plan_id)) and p.state == "launched" and p, 30, "the launch"
    )
    chain = store.get_chain(plan.job_name)
    assert chain is not None and chain.state == "active" and chain.launched_by == SUBMITTER
    assert chain.thread_ts == ts and chain.policy["budget_usd"] == "0.80"
    return str(plan.job_name), ts


@pytest.mark.slow
def test_rounds_run_to_the_last_within_the_budget_each_told_once_in_the_thread(
    bot: Harness,
) -> None:
    job, card_ts = _launch_first_round(bot)
    store = bot.running.deps.store
    watcher = _watcher(bot, "replica-a")
    chain = _tick_until(
        watcher,
        lambda: (c := store.get_chain(job)) and c.state != "active" and c,
        "the automatic rounds to end",
    )
    assert chain.state == "done" and chain.reason == "all 3 rounds have run"
    r2, r3 = store.plan_for_job(f"{job}-r2"), store.plan_for_job(f"{job}-r3")
    assert r2 is not None and r3 is not None
    assert r2.summary["images"] == 4 and r2.summary["workers_per_image"] == 1
    assert r3.summary["images"] == 2  # what $0.80 - $0.72 pays for
    assert bot.aws_calls("CreateLabelingJob").count("CreateLabelingJob") == 3
    # Let the last round's end be told too, then nothing more happens, however often it ticks.
    _tick_until(
        watcher,
        lambda: (a := store.get_announcement(f"{job}-r3")) and a.state == "done",
        "round 3's end",
    )
    before = len(bot.stub.calls)
    for _ in range(3):
        watcher.tick()
    assert len(bot.stub.calls) == before

    posts = _thread_texts(bot, card_ts)
    launched = [p for p in posts if p.startswith("Automatic round")]
    assert [p.split(" launched")[0] for p in launched] == [
        f"Automatic round 2 of {job}",
        f"Automatic round 3 of {job}",
    ]
    assert "1 more worker(s) on 4 frames" in launched[0] and "Why: 4 of 8 frames" in launched[0]
    assert "Worker pay so far $0.72 of the $0.80 budget" in launched[0]
    assert "the budget left pays for 2 of the 4 it picked" in launched[1]
    assert "--stop" in launched[0]
    ends = [p for p in posts if p.startswith("No further automatic round")]
    assert len(ends) == 1 and "all 3 rounds have run" in ends[0]
    # Every round's card and end went into the first round's thread; the merged results too.
    cards = [  # a round's card starts with its job's name, as a change of status does
        c
        for c in bot.stub.of("chat.postMessage")
        if c.params.get("thread_ts") == card_ts
        and str(c.params["text"]).startswith(f"{job}-r")
        and "→" not in str(c.params["text"])
    ]
    assert sorted(str(c.params["text"]).split(":")[0] for c in cards) == [
        f"{job}-r2",
        f"{job}-r3",
    ]
    completions = [p for p in posts if "Counts:" in p]
    assert len(completions) == 3
    assert f"Follow-up rounds merged: {job}-r2 (4 frames), {job}-r3 (2 frames)." in completions[2]


class Killed(BaseException):
    """The process died here (kill -9): nothing after this line ran."""


class DiesAfterPosting(SlackNotifier):
    """The real notifier, except that the process dies right after Slack accepted a post."""

    def post_thread(
        self, channel: str, thread_ts: str | None, text: str, key: str | None = None, **how: Any
    ) -> str:
        super().post_thread(channel, thread_ts, text, key, **how)
        raise Killed


@pytest.mark.slow
def test_a_round_is_launched_and_told_once_by_racing_replicas_and_through_crashes(
    bot: Harness,
) -> None:
    job, card_ts = _launch_first_round(bot)
    store = bot.running.deps.store
    a, b = _watcher(bot, "replica-a"), _watcher(bot, "replica-b")
    a.after_tick = None  # the rounds' ends are told by a; the rounds are stepped below

    def told(name: str) -> Callable[[], Any]:
        return lambda: (x := store.get_announcement(name)) and x.state == "done"

    def automatic_posts(round_: int) -> list[str]:
        return [
            p for p in _thread_texts(bot, card_ts) if p.startswith(f"Automatic round {round_} of")
        ]

    def creates() -> int:
        return bot.aws_calls("CreateLabelingJob").count("CreateLabelingJob")

    _tick_until(a, told(job), "the first round's end")
    # Two replicas whose leases overlap take the same step at the same moment: one plan, one
    # job, one post.
    errors: list[BaseException] = []

    def replica(watcher: Watcher) -> None:
        try:
            advance_chains(watcher.ctx, watcher.store, watcher.tell, None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(w,)) for w in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert creates() == 2 and len(automatic_posts(2)) == 1
    assert [p.job_name for p in store.follow_up_plans(job)] == [f"{job}-r2"]

    _tick_until(a, told(f"{job}-r2"), "the second round's end")

    def dies_before_telling(key: str, channel: str, thread: str | None, text: str) -> None:
        raise Killed

    # The process dies right after AWS created round 3: launched, nothing said yet.
    with pytest.raises(Killed):
        advance_chains(a.ctx, a.store, dies_before_telling, None)
    assert creates() == 3 and automatic_posts(3) == []
    assert (chain := store.get_chain(job)) is not None and chain.state == "active"
    # The next one posts, and dies before it can note that Slack took the post (its claim on
    # the post is let go as it dies, as a lapsed one would be).
    c = _watcher(bot, "replica-c")
    c.notifier = DiesAfterPosting(web_client(TOKEN, c.ctx.settings.slack_api_url))
    with pytest.raises(Killed):
        advance_chains(c.ctx, c.store, c.tell, None)
    assert len(automatic_posts(3)) == 1
    # The next reads the post back from the thread: no second post, no second job.
    advance_chains(b.ctx, b.store, b.tell, None)
    assert len(automatic_posts(3)) == 1 and creates() == 3
    assert [p.round for p in store.follow_up_plans(job)] == [2, 3]


@pytest.mark.slow
def test_a_person_stops_the_rounds_and_the_running_round_finishes(bot: Harness) -> None:
    job, card_ts = _launch_first_round(bot)
    store = bot.running.deps.store
    # Manual rounds are refused while the automatic ones are on.
    manual = bot.said(f"relabel {job}", user=SUBMITTER)
    assert "has automatic rounds" in manual
    stopped = bot.said(f"relabel {job} --stop", user=ADMIN)
    assert f"Stopped the automatic rounds of {job}" in stopped
    chain = store.get_chain(job)
    assert chain is not None and chain.state == "stopped" and chain.stopped_by == ADMIN
    watcher = _watcher(bot, "replica-a")
    _tick_until(
        watcher,
        lambda: (x := store.get_announcement(job)) and x.state == "done",
        "the first round's end",
    )
    for _ in range(3):
        watcher.tick()
    assert bot.aws_calls("CreateLabelingJob").count("CreateLabelingJob") == 1
    assert not [p for p in _thread_texts(bot, card_ts) if p.startswith("Automatic round")]
    again = bot.said(f"relabel {job} --stop", user=ADMIN)
    assert "had already ended (stopped: stopped by &lt;@UADMIN&gt;)" in again

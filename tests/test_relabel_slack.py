"""`/gt relabel` end to end: the bot over real HTTP, the Ground Truth emulator with public-crowd
noise on synthetic frames, moto S3 and the Slack stub. A finished job's least certain frames
get a follow-up plan card in the job's thread; Launch creates `<job>-r2` with its own pinned
manifest, tags and thread; `results <job>` then merges both rounds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from slack_harness import ADMIN, CHANNEL, OTHER, SUBMITTER, Harness, start_harness, texts

from aws.emulator.groundtruth import EmulatorSettings
from bot.synthetic import draw_frames
from handlers import blocks

FRAMES = 8


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(
        tmp_path,
        s3_endpoint,
        setenv=monkeypatch.setenv,
        emulator=EmulatorSettings(seed=4, rate=400.0),
        frames=0,
    )
    raw = harness.projects_dir / "demo" / "annotation-data" / "raw-images"
    draw_frames(raw, FRAMES, seed=6, width=512, height=300, truth_path=tmp_path / "truth.json")
    yield harness
    harness.stop()


def _sagemaker(bot: Harness) -> Any:
    return boto3.client("sagemaker", region_name="us-east-2", endpoint_url=bot.emu.url)


def _wait_completed(bot: Harness, job: str) -> None:
    sm = _sagemaker(bot)
    bot.wait_for(
        lambda: sm.describe_labeling_job(LabelingJobName=job)["LabelingJobStatus"] == "Completed",
        40,
        f"{job} to complete",
    )


def _text(call: Any) -> str:
    """All a message says: its fallback text and its blocks (a long one is split across them)."""
    return texts([{"text": call.params.get("text"), "blocks": call.params.get("blocks")}])


def _follow_up_cards(bot: Harness) -> list[Any]:
    return [c for c in bot.plan_cards() if "Follow-up labeling plan" in json.dumps(c.params)]


@pytest.mark.slow
def test_relabel_plans_in_the_jobs_thread_launches_once_and_results_merge(bot: Harness) -> None:
    job, card_ts = bot.launch()
    _wait_completed(bot, job)

    # Reading is open to all, but relabel spends: a non-submitter is refused, nothing planned.
    refused = texts(bot.wait_responses(bot.command(f"relabel {job}", user=OTHER)))
    assert "submitter" in refused.lower() and not _follow_up_cards(bot)
    assert "`--worst` takes" not in refused
    # A typo is answered at once, to the asker alone, before anything is queued.
    bad = texts(bot.wait_responses(bot.command(f"relabel {job} --worst 3 --spread 5")))
    assert "not both" in bad

    bot.command(f"relabel {job} --worst 3 --workers 2", user=SUBMITTER)
    card = bot.wait_for(lambda: _follow_up_cards(bot), 40, "the follow-up plan card")[0].params
    assert card["channel"] == CHANNEL and card["thread_ts"] == card_ts
    shown = json.dumps(card["blocks"])
    assert f"`{job}`, round 2" in shown and f"`{job}-r2`" in shown
    assert "3 of 8 frames, the 3 least certain frames" in shown
    assert '"*Images*\\n3"' in shown and '"*Workers per image*\\n2"' in shown

    # The same round again is refused while its plan stands.
    again = bot.said(f"relabel {job} --worst 3", user=SUBMITTER, timeout=40)
    assert "already has a plan" in again

    plan_id, plan_ts = bot.plan_at(bot.plan_cards().index(_follow_up_cards(bot)[0]))
    store = bot.running.deps.store
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.parent == job and plan.round == 2 and plan.thread_ts == card_ts
    bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=plan_ts)
    bot.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=plan_ts)  # double click
    bot.wait_for(
        lambda: (p := store.get_plan(plan_id)) is not None and p.state == "launched",
        30,
        "the follow-up launch",
    )
    follow = f"{job}-r2"
    assert bot.aws_calls("CreateLabelingJob").count("CreateLabelingJob") == 2  # job and r2
    described = _sagemaker(bot).describe_labeling_job(LabelingJobName=follow)
    assert described["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 2
    emulated = bot.emu.store.find("us-east-2", follow)
    assert emulated is not None
    tags = {t["Key"]: t["Value"] for t in emulated.request["Tags"]}
    assert tags["gtbot:parent"] == job and tags["gtbot:round"] == "2"
    manifest = described["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    bucket, _, key = manifest.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", region_name="us-east-2", endpoint_url=bot.s3_url)
    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert len(lines) == 3 and key.startswith(f"demo/manifests/{follow}-")
    watch = store.get_watch(follow)
    assert watch is not None and watch.channel == CHANNEL and watch.thread_ts == card_ts
    assert watch.message_ts == plan_ts  # the plan card in the thread became the job card

    _wait_completed(bot, follow)
    bot.stub.clear()
    bot.said(f"results {follow}", user=ADMIN, timeout=60)  # any round names the whole job
    post = [c for c in bot.stub.of("chat.postMessage") if "frames consolidated" in _text(c)][0]
    assert post.params["thread_ts"] == card_ts
    text = _text(post)
    assert f"Follow-up rounds merged: {follow} (3 frames)" in text
    assert "Workers per frame: 5-7 workers a frame (5 with 5, 3 with 7" in text
    assert "Consensus: robust" in text and "frames.csv" in text
    frames_csv = bot.projects_dir / "demo" / "annotation-data" / "results" / job / "frames.csv"
    rows = frames_csv.read_text().splitlines()[1:]
    assert sorted(int(r.split(",")[2]) for r in rows) == [5] * 5 + [7] * 3

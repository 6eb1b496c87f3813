"""Results, progress and host paths in Slack: pictures in the job's thread, one updated message."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from slack_harness import ADMIN, CHANNEL, SUBMITTER, Harness, start_harness, texts
from slack_stub import Call

from aws.emulator.groundtruth import EmulatorSettings


def _text(call: Call) -> str:
    """All a message says: its fallback text and its blocks (JSON, escapes as sent)."""
    return texts([{"text": call.params.get("text"), "blocks": call.params.get("blocks")}])


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(
        tmp_path,
        s3_endpoint,
        setenv=monkeypatch.setenv,
        emulator=EmulatorSettings(seed=2, rate=200.0),
        frames=4,
    )
    yield harness
    harness.stop()


@pytest.mark.slow
def test_results_go_to_the_jobs_thread_with_pictures(bot: Harness) -> None:
    job, card_ts = bot.launch()
    bot.wait_for(
        lambda: "Completed" in texts(bot.wait_responses(bot.command(f"status {job}"))),
        30,
        "the job to complete",
    )
    bot.stub.clear()
    seen = bot.said(f"results {job}", user=ADMIN)
    assert f"&lt;@{ADMIN}&gt;" not in seen and f"<@{ADMIN}>" in seen  # the asker, mentioned
    assert f"The results of {job} are in the thread of its card." in seen

    posts = [c for c in bot.stub.of("chat.postMessage") if "frames consolidated" in _text(c)]
    assert posts[0].params["channel"] == CHANNEL and posts[0].params["thread_ts"] == card_ts
    text = _text(posts[0])
    assert "4 frames consolidated, 0 skipped." in text
    # The links are names, not the 9 raw presigned URLs of before.
    assert "|coco-keypoints.json>" in text and "valid for 24 h" in text
    shown = re.sub(r"<https?://[^|>]+\|([^>]+)>", r"\1", text)  # what a reader sees
    assert "X-Amz" not in shown and "coco-keypoints.json" in shown
    # The per-worker report: ranked, and who to review (or that nobody stands out).
    assert "Workers, furthest from the consensus first" in text and "  1. " in text
    assert "Workers to review" in text or "No worker stands out for review." in text
    assert "CollectedData_gtbot.csv" in text and "problems.csv" in text
    complete = bot.wait_for(lambda: bot.stub.of("files.completeUploadExternal"), 15, "the upload")
    assert (
        complete[0].params["channel_id"] == CHANNEL and complete[0].params["thread_ts"] == card_ts
    )
    # The contact sheet, the per-keypoint chart and the per-worker chart.
    assert [f["title"] for f in complete[0].params["files"]] == [
        "preview.png",
        "agreement.png",
        "workers.png",
    ]
    assert len(bot.stub.uploads) == 3
    assert all(body.startswith(b"\x89PNG") for body in bot.stub.uploads.values())

    # An output manifest with nothing usable (here: input-manifest lines) is said plainly.
    s3 = boto3.client("s3", endpoint_url=bot.s3_url, region_name="us-east-2")
    bucket = next(b for b in bot.buckets() if b.endswith("-output"))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    manifest = next(k for k in keys if k.endswith(f"{job}/manifests/output/output.manifest"))
    s3.put_object(Bucket=bucket, Key=manifest, Body=b'{"source-ref": "s3://b/f.jpg"}\n')
    seen = bot.said(f"results {job} --rebuild", user=ADMIN)
    assert f"Results of {job} are unavailable because consolidating its output failed" in seen
    assert "input manifest" in seen


def test_progress_is_one_message_kept_updated(bot: Harness) -> None:
    """A long command: one progress message from start to end, its answer in the thread
    (mentioning the asker), and nothing through response_url."""
    assert "Buckets ready" in bot.said("setup demo", user=SUBMITTER)
    bot.stub.clear()
    sent = bot.command("upload demo", user=SUBMITTER)
    answer = bot.long_reply("upload demo")
    assert "4 uploaded" in texts([answer]) and f"<@{SUBMITTER}>" in answer["text"]
    assert [c.params["text"] for c in bot.stub.of("chat.postMessage")][0] == (
        ":hourglass: `/gt upload demo`: starting"
    )
    bot.wait_for(lambda: "finished in" in bot.progress_now("upload demo"), 10, "the end")
    lines = bot.progress_lines("upload demo")
    assert len(bot.progress_messages("upload demo")) == 1
    assert lines[1] == ":hourglass_flowing_sand: `/gt upload demo`: started"
    assert lines[-1].startswith(":white_check_mark: `/gt upload demo`: finished in ")
    assert lines[-1].endswith("; the answer is in the thread.")
    assert bot.stub.responses(sent.response_id) == []


@pytest.mark.parametrize(
    "text",
    [
        "consolidate /etc/passwd --project demo",
        "consolidate s3://demo-frames-output/x.manifest --project demo --out /tmp/anywhere",
        "frames demo --from /home",
    ],
)
def test_paths_on_the_bots_machine_are_refused_from_slack(bot: Harness, text: str) -> None:
    sent = bot.command(text, user=ADMIN)
    seen = texts(bot.wait_responses(sent))
    assert "paths on the bot's machine can only be used from a terminal" in seen
    assert not (Path("/tmp/anywhere")).exists()


def test_watch_attaches_a_job_the_bot_did_not_launch_and_unwatch_detaches(bot: Harness) -> None:
    from bot import recipe
    from bot.context import Context

    ctx = Context(settings=bot.running.deps.ctx.settings)
    job = recipe.launch(ctx, recipe.prepare_submission(ctx, ctx.project("demo")))  # a terminal
    bot.stub.clear()

    sent = bot.command(f"watch {job.name}", user=ADMIN)
    assert f"Now watching {job.name} here" in texts(bot.wait_responses(sent))
    cards = bot.wait_for(lambda: bot.stub.of("chat.postMessage"), 10, "the job card")
    assert cards[0].params["channel"] == CHANNEL
    assert job.name in str(cards[0].params["blocks"])
    watch = bot.running.deps.store.get_watch(job.name)
    assert watch is not None and watch.channel == CHANNEL and watch.message_ts
    assert watch.thread_ts == watch.message_ts and watch.owner == ADMIN

    gone = bot.command(f"unwatch {job.name}", user=ADMIN)
    assert f"No longer watching {job.name}" in texts(bot.wait_responses(gone))
    assert bot.running.deps.store.get_watch(job.name) is None
    again = bot.command(f"unwatch {job.name}", user=ADMIN)
    assert "is not being watched" in texts(bot.wait_responses(again))


def test_a_channel_the_bot_is_not_in_gets_told_to_invite_it(bot: Harness) -> None:
    bot.stub.gone_channels.add(CHANNEL)
    sent = bot.command("submit demo", user=SUBMITTER)
    seen = texts(bot.wait_responses(sent, timeout=30))
    assert "Invite it with `/invite @gtbot`" in seen
    assert "trace id" not in seen
    time.sleep(0.3)  # the queued work would have started by now: it must not run
    assert bot.aws_calls() == [] and bot.buckets() == []


def test_mentions_get_a_pointer_to_gt_and_url_verification_is_answered(bot: Harness) -> None:
    challenge = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "x"})
    sent = bot.deliver(challenge.encode(), content_type="application/json")
    assert sent.status == 200 and b"c-123" in sent.body
    event = {
        "token": "x",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": "Ev1",
        "event_time": 1,
        "event": {
            "type": "app_mention",
            "user": "U9",
            "text": "<@UBOT> how do I start?",
            "ts": "1700000000.000200",
            "channel": CHANNEL,
        },
    }
    sent = bot.deliver(json.dumps(event).encode(), content_type="application/json")
    assert sent.status == 200
    posts = bot.wait_for(
        lambda: [c for c in bot.stub.of("chat.postMessage") if "/gt help" in str(c.params)],
        10,
        "the reply to the mention",
    )
    assert posts[0].params["channel"] == CHANNEL
    assert posts[0].params["thread_ts"] == "1700000000.000200"

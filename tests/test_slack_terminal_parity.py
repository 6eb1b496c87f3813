"""What the terminal gained, in Slack: policies as files, progress with its rate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_harness import CHANNEL, SUBMITTER, Harness, start_harness, texts

from aws.emulator.groundtruth import EmulatorSettings


@pytest.fixture
def bot(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = start_harness(
        tmp_path, s3_endpoint, setenv=monkeypatch.setenv, emulator=EmulatorSettings(), frames=3
    )
    yield harness
    harness.stop()


def test_policies_come_as_files_and_uploads_show_their_rate(bot: Harness) -> None:
    seen = texts(bot.wait_responses(bot.command("iam-policy demo")))  # reading: anyone may
    assert "IAM policies for demo, attached: gtbot-demo.json" in seen
    complete = bot.wait_for(lambda: bot.stub.of("files.completeUploadExternal"), 15, "the files")
    assert complete[0].params["channel_id"] == CHANNEL and len(complete[0].params["files"]) == 2
    documents = [json.loads(body) for body in bot.stub.uploads.values()]
    actions = {a for d in documents for s in d["Statement"] for a in s["Action"]}
    assert {"iam:PassRole", "s3:PutBucketTagging", "logs:PutLogEvents"} <= actions

    bot.said("setup demo", user=SUBMITTER)
    bot.stub.clear()
    # The count and rate a terminal's bar shows stay in the progress message at its end.
    assert "3 uploaded" in bot.said("upload demo", user=SUBMITTER)
    final = bot.progress_now("upload demo")
    assert final.startswith(":white_check_mark: `/gt upload demo`: finished in ")
    assert "(Uploading frames: 3/3 (100%), " in final and "frames/s, done in" in final

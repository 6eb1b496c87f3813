"""SIGTERM on a real `gtbot serve` (waitress) with work in both states of the long lane: it
stops within 10 s (Docker kills 10 s after `docker stop`), refuses new connections, tells the
asker of the running command that it was interrupted and the asker of the queued one that it
never began, and frees the watcher lease so another replica takes over at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_project
from slack_harness import CHANNEL, SANDBOX_TEAM, SECRET, SUBMITTER, _empty_lab_config, texts
from test_replicas import GTBOT, Replica, ReplicaStub, _free_port

from aws.emulator.groundtruth import GroundTruthEmulator
from bot.jobs.watcher import LEASE_NAME
from bot.state import Store

pytestmark = pytest.mark.slow


@pytest.fixture
def stub() -> ReplicaStub:
    return ReplicaStub()


def test_sigterm_finishes_or_hands_back_its_work_and_frees_the_lease(
    tmp_path: Path,
    s3_endpoint: str,
    stub: ReplicaStub,
    make_emulator: Callable[..., GroundTruthEmulator],
) -> None:
    emu = make_emulator(seed=1, delay_seconds=25)  # every SageMaker call outlasts the stop
    projects = tmp_path / "projects"
    write_project(projects, "demo", frames=1, job_workteam_arn=SANDBOX_TEAM)
    db_url = f"sqlite:///{tmp_path / 'gtbot.db'}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GTBOT_", "SLACK_", "AWS_ENDPOINT_URL"))
    } | {
        "GTBOT_DATABASE_URL": db_url,
        "GTBOT_POLL_SECONDS": "1",
        "GTBOT_LONG_JOBS": "1",
        "GTBOT_PROJECTS_DIR": str(projects),
        "GTBOT_CONFIG": str(_empty_lab_config(tmp_path)),
        "GTBOT_CHANNELS": CHANNEL,
        "SLACK_BOT_TOKEN": "xoxb-stopping",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": stub.api_url,
        "AWS_ENDPOINT_URL_SAGEMAKER": emu.url,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
    }
    port = _free_port()
    with (tmp_path / "bot.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(GTBOT), "serve", "--port", str(port), "--host", "127.0.0.1"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    bot = Replica(
        running=None,  # type: ignore[arg-type]
        stub=stub,
        emu=emu,
        projects_dir=projects,
        s3_url=s3_endpoint,
        proc=proc,
        port=port,
        token="xoxb-stopping",
    )
    try:
        bot.wait_for(lambda: (bot.health() or {}).get("holds_lease"), 30, "the watcher lease")
        running, waiting = "results demo-20000101000000", "results demo-20000101000001"
        bot.command(running, user=SUBMITTER)
        bot.wait_for(lambda: "started" in bot.progress_now(running), 10, "the first to start")
        bot.command(waiting, user=SUBMITTER)
        bot.wait_for(lambda: "queued, 1 ahead" in bot.progress_now(waiting), 10, "the queue")

        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stub.stop()
    log_text = (tmp_path / "bot.log").read_text(errors="replace")
    assert code == 0 and took < 10, (took, log_text[-3000:])
    assert "Traceback" not in log_text, log_text[-3000:]

    (interrupted,) = bot.replies(bot.progress_messages(running)[0])
    assert interrupted["text"].startswith(f"<@{SUBMITTER}> `/gt {running}` interrupted:")
    assert "Run it again" in texts([interrupted])
    (handed_back,) = bot.replies(bot.progress_messages(waiting)[0])
    assert handed_back["text"].startswith(f"<@{SUBMITTER}> `/gt {waiting}` not started:")
    assert bot.progress_now(running).startswith(":warning:")
    assert bot.progress_now(waiting).startswith(":warning:")

    assert Store(db_url).lease_holder(LEASE_NAME) is None  # freed, not left to lapse
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass

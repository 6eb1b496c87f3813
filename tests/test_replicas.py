"""Two `gtbot serve` replicas on one database, as behind a load balancer: concurrent Launch
clicks spread over both make one job; SIGKILL of the watcher lease's holder moves the lease to the
survivor within the stated bound (lease + poll seconds); the job's end is posted once.

Runs on a shared SQLite file and, with GTBOT_TEST_POSTGRES_URL, on PostgreSQL. The replicas are
real processes started together on an empty database (a cold start); each has its own bot token,
so the Slack stub tells which one made each call.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import write_project
from slack_harness import (
    CHANNEL,
    SANDBOX_TEAM,
    SECRET,
    SUBMITTER,
    Harness,
    RecordingStub,
    _action_value,
    _empty_lab_config,
)
from watcher_support import RecordingSlackStub, wait_until

from aws.emulator.groundtruth import GroundTruthEmulator
from bot.jobs.watcher import LEASE_NAME
from bot.state import Store
from handlers import blocks

GTBOT = Path(sys.executable).with_name("gtbot")
POLL, LEASE = 1, 3  # a takeover within LEASE + POLL = 4 s
pytestmark = pytest.mark.slow


class ReplicaStub(RecordingStub, RecordingSlackStub):
    """The Slack stub of both harnesses: response_url paths, bot tokens and answer statuses."""


@pytest.fixture
def stub() -> Iterator[ReplicaStub]:
    server = ReplicaStub()
    yield server
    server.stop()


@dataclass
class Replica(Harness):
    """A `gtbot serve` process, driven with the harness's signed requests."""

    proc: Any = None
    port: int = 0
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return dict(json.loads(response.read()))
        except OSError:
            return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def replicas(
    db_url: str,
    tmp_path: Path,
    s3_endpoint: str,
    stub: ReplicaStub,
    make_emulator: Callable[..., GroundTruthEmulator],
) -> Iterator[list[Replica]]:
    emu = make_emulator(seed=1, rate=0.0)  # jobs wait until the test lets workers start
    projects = tmp_path / "projects"
    write_project(projects, "demo", frames=3, job_workteam_arn=SANDBOX_TEAM)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GTBOT_", "SLACK_", "AWS_ENDPOINT_URL"))
    } | {
        "GTBOT_DATABASE_URL": db_url,
        "GTBOT_POLL_SECONDS": str(POLL),
        "GTBOT_LEASE_SECONDS": str(LEASE),
        "GTBOT_PROJECTS_DIR": str(projects),
        "GTBOT_CONFIG": str(_empty_lab_config(tmp_path)),
        "GTBOT_SUBMITTERS": SUBMITTER,
        "GTBOT_CHANNELS": CHANNEL,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": stub.api_url,
        "AWS_ENDPOINT_URL_SAGEMAKER": emu.url,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
    }
    started = []
    for name in ("a", "b"):
        port, token = _free_port(), f"xoxb-replica-{name}"
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(GTBOT), "serve", "--port", str(port), "--host", "127.0.0.1"],
            env=env | {"SLACK_BOT_TOKEN": token},
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(
            Replica(
                running=None,  # type: ignore[arg-type]
                stub=stub,
                emu=emu,
                projects_dir=projects,
                s3_url=s3_endpoint,
                proc=proc,
                port=port,
                token=token,
            )
        )
    try:
        for replica in started:
            wait_until(
                lambda r=replica: r.health() is not None or r.proc.poll() is not None,  # type: ignore[misc]
                30,
                "the replicas to answer /healthz",
            )
            assert replica.proc.poll() is None, (tmp_path / f"{replica.token[-1]}.log").read_text()
        yield started
    finally:
        for replica in started:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait(timeout=10)


def test_two_replicas_launch_once_survive_a_sigkill_and_announce_once(
    replicas: list[Replica], db_url: str, stub: ReplicaStub
) -> None:
    a, b = replicas
    store = Store(db_url)
    started = time.monotonic()

    # A plan submitted through one replica, launched by ten clicks spread over both.
    a.command("submit demo", user=SUBMITTER)
    card = a.wait_for(lambda: a.plan_cards(), 60, "the plan card")[0]
    plan_id = _action_value(card, blocks.LAUNCH_ACTION)
    assert plan_id is not None
    ts = a.wait_for(lambda: (p := store.get_plan(plan_id)) and p.message_ts, 10, "the card's ts")
    barrier = threading.Barrier(10)

    def click(replica: Replica) -> int:
        barrier.wait()
        return replica.click(blocks.LAUNCH_ACTION, plan_id, user=SUBMITTER, message_ts=ts).status

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(click, [a, b] * 5))
    assert statuses == [200] * 10
    plan = a.wait_for(
        lambda: (p := store.get_plan(plan_id)) and p.state == "launched" and p, 30, "the launch"
    )
    assert a.aws_calls("CreateLabelingJob") == ["CreateLabelingJob"]
    assert a.emu.job_names() == [plan.job_name]

    # One replica watches the job; /healthz says which.
    a.wait_for(
        lambda: (w := store.get_watch(plan.job_name)) and w.last_status == "InProgress",
        15,
        "the watcher to show the job in progress",
    )
    holder = store.lease_holder(LEASE_NAME)
    by_port = {f"{socket.gethostname()}:{r.port}": r for r in replicas}
    assert holder in by_port
    dead = by_port[holder]
    survivor = b if dead is a else a
    assert dead.health() == {"ok": True, "holds_lease": True}
    assert survivor.health() == {"ok": True, "holds_lease": False}

    # SIGKILL: no goodbye, the lease is left to lapse; the survivor takes it within the bound.
    dead.proc.send_signal(signal.SIGKILL)
    dead.proc.wait(timeout=10)
    killed_at = time.monotonic()
    wait_until(
        lambda: (survivor.health() or {}).get("holds_lease") is True,
        3 * (LEASE + POLL),
        "a takeover",
    )
    took_over = time.monotonic() - killed_at
    # The bound the README states (lease + poll), plus a tick's own work and this loop's step.
    assert took_over < LEASE + POLL + 1.5, f"the lease moved after {took_over:.1f} s"

    # The workers finish; the survivor announces the end once, in the card's thread.
    a.emu.settings.update({"rate": 50.0})
    wait_until(lambda: len(stub.completions(CHANNEL)) >= 1, 30, "the completion post")
    time.sleep(2 * POLL + 0.5)  # two more ticks: nothing may follow
    completions = stub.completions(CHANNEL)
    assert len(completions) == 1
    assert completions[0].params["_token"] == survivor.token
    assert completions[0].params["thread_ts"] == ts
    assert [c for c in stub.by_token(dead.token) if c.at > killed_at] == []
    assert a.aws_calls("CreateLabelingJob") == ["CreateLabelingJob"]
    watch = store.get_watch(plan.job_name)
    assert watch is not None and watch.completion_announced and watch.last_status == "Completed"
    print(
        f"takeover {took_over:.1f} s after SIGKILL (bound {LEASE + POLL} s); "
        f"whole run {time.monotonic() - started:.1f} s"
    )

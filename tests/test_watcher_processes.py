"""The watcher inside real `gtbot serve` processes: SIGKILL mid-job, restarts, two replicas.

The database is the truth: a restarted process must neither post a second card nor a second
completion, and of two processes on one SQLite file only the lease holder may post. Each bot
process gets its own bot token, so the Slack stub can tell which process made each call.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watcher_support import JobRig, RecordingSlackStub, card_state, wait_until

from aws.emulator.groundtruth import (
    GroundTruthEmulator,
)
from bot.jobs.watcher import LEASE_NAME
from bot.state import Store

GTBOT = Path(sys.executable).with_name("gtbot")
LEASE = 3  # seconds, at GTBOT_POLL_SECONDS=1: a lease left by a dead process lapses quickly
pytestmark = pytest.mark.slow


@pytest.fixture
def emulator(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    """Workers idle until a test lets them work: a bot process can take many seconds to start
    on a loaded machine, and a job that ran meanwhile would end before the kill it needs."""
    return make_emulator(rate=0.0, initializing_seconds=0.3, seed=9)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bots:
    """Starts `gtbot serve` processes on one database; stops whatever is left at the end."""

    def __init__(self, tmp: Path, stub: RecordingSlackStub, rig: JobRig) -> None:
        self.tmp = tmp
        self.db_url = f"sqlite:///{tmp / 'gtbot.db'}"
        self.store = Store(self.db_url)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GTBOT_", "SLACK_", "AWS_ENDPOINT_URL"))
        } | {
            "GTBOT_DATABASE_URL": self.db_url,
            "GTBOT_POLL_SECONDS": "1",
            "GTBOT_LEASE_SECONDS": str(LEASE),
            "GTBOT_PROJECTS_DIR": str(tmp / "projects"),
            "SLACK_SIGNING_SECRET": "test-secret",
            "SLACK_API_URL": stub.api_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": rig.emulator.url,
            "AWS_ENDPOINT_URL_S3": rig.s3_url,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, token: str, port: int = 0) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{token}.log").open("wb")
        proc = subprocess.Popen(
            [str(GTBOT), "serve", "--port", str(port), "--host", "127.0.0.1"],
            env=self.env | {"SLACK_BOT_TOKEN": token},
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[token] = proc
        return proc

    def kill(self, token: str) -> None:
        proc = self.procs.pop(token)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def log(self, token: str) -> str:
        return (self.tmp / f"{token}.log").read_text(errors="replace")

    def holder_pid(self) -> int | None:
        """The pid in the lease row (holders are host:pid:random), if it has not lapsed."""
        holder = self.store.lease_holder(LEASE_NAME)
        return int(holder.split(":")[1]) if holder else None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()


@pytest.fixture
def bots(tmp_path: Path, stub: RecordingSlackStub, rig: JobRig) -> Iterator[Bots]:
    running = Bots(tmp_path, stub, rig)
    yield running
    running.stop_all()


def _labeled_shown(stub: RecordingSlackStub, channel: str) -> int:
    shown = [card_state(c) for c in stub.cards(channel) + stub.updates(channel)]
    return max((labeled for _, labeled, _ in shown), default=-1)


def _in_progress_shown(stub: RecordingSlackStub, channel: str) -> bool:
    return any(
        card_state(c)[0] == "InProgress" for c in stub.cards(channel) + stub.updates(channel)
    )


def test_sigkill_mid_job_then_restart_resumes_without_duplicates(
    bots: Bots, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """Killed after showing progress, restarted on the same database: the restarted process
    updates the same card, and the completion is posted once."""
    job, channel = "mice-restart", "CRESTART"
    rig.create_job(job, frames=6, workers=2)  # 12 tasks
    bots.store.add_watch(job_name=job, region="us-east-2", channel=channel)
    port = _free_port()
    bots.start("xoxb-first", port)
    wait_until(lambda: _in_progress_shown(stub, channel), 30, "the card of the running job")
    emulator.settings.update({"rate": 1.0})
    wait_until(lambda: _labeled_shown(stub, channel) >= 1, 20, "the card to show progress")
    emulator.settings.update({"rate": 0.0})  # the kill lands mid-job however slow the bot is
    bots.kill("xoxb-first")
    killed_at = time.monotonic()
    assert rig.status(job) == "InProgress", "the kill should land mid-job"
    assert len(stub.cards(channel)) == 1

    # Restarted on its port, the bot is the lease's holder again: it resumes at once rather
    # than after the lease left by a dead process lapses.
    bots.start("xoxb-second", port)
    emulator.settings.update({"rate": 2.0})
    # 30 s as for the first start: the wait includes starting a Python process, which on a
    # loaded 2-core machine takes many seconds (a lapsing lease would cost only LEASE more).
    wait_until(lambda: any(u.at > killed_at for u in stub.updates(channel)), 30, "the resumed card")
    wait_until(lambda: len(stub.completions(channel)) >= 1, 40, "the completion post")
    time.sleep(2.5)  # two more ticks: nothing may follow

    assert len(stub.cards(channel)) == 1, "the restarted bot posted a second card"
    assert len(stub.completions(channel)) == 1
    resumed = [u for u in stub.updates(channel) if u.at > killed_at]
    assert resumed and {u.params["_token"] for u in resumed} == {"xoxb-second"}
    assert {u.params["ts"] for u in stub.updates(channel)} == {
        stub.updates(channel)[0].params["ts"]
    }
    assert card_state(stub.updates(channel)[-1]) == ("Completed", 6, 0)
    assert stub.completions(channel)[0].params["_token"] == "xoxb-second"
    watch = bots.store.get_watch(job)
    assert watch is not None and watch.completion_announced and watch.last_status == "Completed"


def test_two_processes_one_posts_and_the_other_takes_over_after_the_lease(
    bots: Bots, rig: JobRig, stub: RecordingSlackStub, emulator: GroundTruthEmulator
) -> None:
    """Two bots on one SQLite file: only the lease holder posts. Killed, its lease lapses
    (GTBOT_LEASE_SECONDS) and the other completes the job's announcement once."""
    job, channel = "mice-replicas", "CREPLICA"
    rig.create_job(job, frames=8, workers=1)
    bots.store.add_watch(job_name=job, region="us-east-2", channel=channel)
    procs = {bots.start("xoxb-a").pid: "xoxb-a", bots.start("xoxb-b").pid: "xoxb-b"}
    # The workers idle (the fixture's rate 0) until the lease has changed hands: a job that
    # ended while the bots were starting would be announced by the first holder.
    wait_until(lambda: _in_progress_shown(stub, channel), 30, "the card of the running job")
    time.sleep(2.0)
    holder_pid = bots.holder_pid()
    assert holder_pid in procs
    holder, other = procs[holder_pid], next(t for t in procs.values() if t != procs[holder_pid])
    assert stub.by_token(holder) and stub.by_token(other) == [], "both replicas posted"
    assert len(stub.cards(channel)) == 1

    bots.kill(holder)
    killed_at = time.monotonic()
    wait_until(lambda: bots.holder_pid() not in (None, holder_pid), 15, "a new lease holder")
    took_over = time.monotonic() - killed_at
    # Renewed at most one poll before the kill, the lease cannot lapse sooner than this.
    assert took_over > LEASE - 1, f"the lease moved after {took_over:.1f} s, before it lapsed"
    assert stub.by_token(other) == [], "nothing changed, so the new holder had nothing to post"

    emulator.settings.update({"rate": 50.0})
    wait_until(lambda: len(stub.completions(channel)) >= 1, 20, "the completion post")
    time.sleep(2.5)
    assert len(stub.cards(channel)) == 1
    assert len(stub.completions(channel)) == 1
    assert stub.completions(channel)[0].params["_token"] == other
    assert card_state(stub.updates(channel)[-1]) == ("Completed", 8, 0)
    assert [c for c in stub.by_token(holder) if c.at > killed_at] == []
    print(f"lease taken over {took_over:.1f} s after the holder was killed")

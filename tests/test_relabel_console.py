"""`gtbot run "relabel ..."` in a terminal: the plan is shown, launched only with --yes, and
`results` merges the rounds, with no database at all (the link is the name and the tags)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SANDBOX_TEAM, write_project

from aws.emulator.groundtruth import GroundTruthEmulator
from bot.cli import run_text
from bot.context import Context
from bot.errors import UsageError
from bot.settings import Settings
from bot.synthetic import draw_frames


@pytest.fixture
def workforce(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    return make_emulator(rate=400.0, seed=3)


def _until_completed(ctx: Context, job: str) -> None:
    deadline = time.monotonic() + 40
    while "Completed" not in run_text(f"status {job}", ctx).text:
        assert time.monotonic() < deadline, run_text(f"status {job}", ctx).text
        time.sleep(0.2)


@pytest.mark.slow
def test_relabel_in_a_terminal(workforce: GroundTruthEmulator, projects_dir: Path) -> None:
    project = write_project(
        projects_dir, "demo", job_workteam_arn=SANDBOX_TEAM, job_workers_per_image=3
    )
    draw_frames(project / "annotation-data" / "raw-images", 6, seed=3, width=512, height=300)
    ctx = Context(settings=Settings.from_env())
    job = run_text("submit demo --yes", ctx).job
    assert job is not None
    with pytest.raises(UsageError, match="can be ranked once it has ended"):
        run_text(f"relabel {job.name} --worst 2", ctx)
    _until_completed(ctx, job.name)

    shown = run_text(f"relabel {job.name} --worst 2 --workers 2", ctx)
    assert shown.job is None and "Nothing launched" in shown.text
    assert f"Run `relabel {job.name} --worst 2 --workers 2 --yes`" in shown.text
    assert f"Follow-up:         round 2 of {job.name}: 2 of 6 frames" in shown.text
    launched = run_text(f"relabel {job.name} --worst 2 --workers 2 --yes", ctx)
    assert launched.job is not None and launched.job.name == f"{job.name}-r2"
    assert f"Launched round 2 of {job.name}" in launched.text
    with pytest.raises(UsageError, match="Round 2 of .* is (Initializing|InProgress)"):
        run_text(f"relabel {job.name}", ctx)
    _until_completed(ctx, f"{job.name}-r2")

    results = run_text(f"results {job.name}-r2", ctx)
    assert f"Job {job.name}" in results.text
    assert f"Follow-up rounds merged: {job.name}-r2 (2 frames)." in results.text
    assert "Workers per frame: 3-5 workers a frame (4 with 3, 2 with 5;" in results.text
    assert "6 frames consolidated, 0 skipped." in results.text

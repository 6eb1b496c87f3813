"""A restart between the Launch click and the AWS call: settled from AWS's answer, never twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import SANDBOX_TEAM, write_project

from aws.emulator.groundtruth import GroundTruthEmulator
from bot import recipe
from bot.context import Context
from bot.jobs import launcher
from bot.settings import Settings
from bot.state import Store
from bot.synthetic import draw_frames


def demo(projects_dir: Path, tmp_path: Path) -> tuple[Context, Store]:
    """A two-frame project and a fresh database: what a bot has when a click arrives."""
    project = write_project(projects_dir, "demo", job_workteam_arn=SANDBOX_TEAM)
    draw_frames(project / "annotation-data" / "raw-images", 2)
    store = Store(f"sqlite:///{tmp_path / 'gtbot.db'}")
    return Context(settings=Settings.from_env(), store=store), store


def _plan(ctx: Context, store: Store) -> tuple[str, recipe.Plan]:
    plan = recipe.prepare_submission(ctx, ctx.project("demo"))
    plan_id = launcher.record_plan(store, plan, user="U1", channel="C1")
    store.set_plan_message(plan_id, "111.222")
    return plan_id, plan


def test_restart_settles_half_done_launches(
    make_emulator: Callable[..., GroundTruthEmulator], projects_dir: Path, tmp_path: Path
) -> None:
    emu = make_emulator(rate=50.0)
    ctx, store = demo(projects_dir, tmp_path)

    # Crashed after AWS created the job, before the plan row said so.
    reached_id, reached = _plan(ctx, store)
    assert store.transition_plan(reached_id, ("pending",), "launching", by="U1")
    recipe.launch(ctx, reached)
    # Crashed before the call reached AWS.
    time.sleep(1.1)  # job names carry the second
    lost_id, _ = _plan(ctx, store)
    assert store.transition_plan(lost_id, ("pending",), "launching", by="U1")

    settled = {p.id: p.state for p in launcher.recover_launches(ctx, store)}
    assert settled == {reached_id: "launched", lost_id: "pending"}
    watch = store.get_watch(reached.job_name)
    assert watch is not None and watch.thread_ts == "111.222" and watch.owner == "U1"

    # The pending one can be launched again; the launched one cannot launch twice.
    again = launcher.launch_plan(ctx, store, lost_id, user="U1", is_admin=False, is_submitter=True)
    assert again.kind == "launched"
    twice = launcher.launch_plan(
        ctx, store, reached_id, user="U1", is_admin=False, is_submitter=True
    )
    assert twice.kind == "already"
    assert emu.calls.count("CreateLabelingJob") == 2


def test_a_launch_whose_job_already_exists_adopts_it(
    make_emulator: Callable[..., GroundTruthEmulator], projects_dir: Path, tmp_path: Path
) -> None:
    emu = make_emulator(rate=50.0)
    ctx, store = demo(projects_dir, tmp_path)
    plan_id, plan = _plan(ctx, store)
    recipe.launch(ctx, plan)  # e.g. the response was lost on the way back
    decision = launcher.launch_plan(
        ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True
    )
    assert decision.kind == "launched" and decision.job is not None
    assert decision.job.name == plan.job_name
    assert emu.calls.count("CreateLabelingJob") == 2  # the second was refused: ResourceInUse
    assert len(emu.job_names()) == 1


def test_a_launch_in_flight_is_left_alone_until_it_is_stale(
    make_emulator: Callable[..., GroundTruthEmulator],
    projects_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second click while another launch of the plan is under way must not ask AWS: the job
    is not there yet, and settling the plan back to pending would let this click launch too.
    Only a launch older than STALE_LAUNCH (a crashed process) is settled from AWS."""
    emu = make_emulator(rate=50.0)
    ctx, store = demo(projects_dir, tmp_path)
    plan_id, plan = _plan(ctx, store)
    assert store.transition_plan(plan_id, ("pending",), "launching", by="U1")  # click one
    calls = len(emu.calls)

    second = launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True)
    assert second.kind == "already" and "is being launched" in second.message
    assert emu.calls[calls:] == [] and emu.job_names() == []
    assert (store.get_plan(plan_id) or plan).state == "launching"

    later = launcher.utcnow() + launcher.STALE_LAUNCH + timedelta(seconds=5)
    monkeypatch.setattr(launcher, "utcnow", lambda: later)
    third = launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True)
    assert third.kind == "launched" and emu.job_names() == [plan.job_name]
    assert emu.calls[calls:].count("DescribeLabelingJob") >= 1  # asked AWS before relaunching

"""Launch spends only what its plan showed, only for who may spend now, and says the truth.

A plan pins its own manifest object (its frames), their count and a digest; Launch re-checks
them and refuses with "submit again" when they differ, and a plan expires after a day. A
database error after CreateLabelingJob is settled from AWS: the job runs, the answer says so.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SANDBOX_TEAM, write_project

from aws import s3
from aws.emulator.groundtruth import GroundTruthEmulator
from bot import recipe
from bot.context import Context
from bot.jobs import launcher
from bot.settings import Settings
from bot.state import Store, plans, utcnow
from bot.synthetic import draw_frames

T0 = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def emu(make_emulator: Callable[..., GroundTruthEmulator]) -> GroundTruthEmulator:
    return make_emulator(rate=0)


@pytest.fixture
def lab(emu: GroundTruthEmulator, projects_dir: Path, tmp_path: Path) -> tuple[Context, Store]:
    project = write_project(projects_dir, "demo", job_workteam_arn=SANDBOX_TEAM)
    draw_frames(project / "annotation-data" / "raw-images", 2)
    store = Store(f"sqlite:///{tmp_path / 'gtbot.db'}")
    return Context(settings=Settings.from_env(), store=store), store


def _plan(ctx: Context, store: Store, at: datetime = T0) -> tuple[str, recipe.Plan]:
    plan = recipe.prepare_submission(ctx, ctx.project("demo"), now=at)
    plan_id = launcher.record_plan(store, plan, user="U1", channel="C1")
    return plan_id, plan


def _launch(ctx: Context, store: Store, plan_id: str) -> launcher.Decision:
    return launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True)


def _manifest_lines(ctx: Context, uri: str) -> int:
    bucket, key = s3.split_s3_uri(uri)
    return len(s3.get_bytes(ctx.clients.s3("us-east-2"), bucket, key).splitlines())


def test_an_old_plan_launches_the_frames_it_showed(
    lab: tuple[Context, Store], emu: GroundTruthEmulator, projects_dir: Path
) -> None:
    """The adversarial run: a card that said 2 images launched every frame added since."""
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    assert plan.images == 2
    draw_frames(projects_dir / "demo" / "annotation-data" / "raw-images", 5, seed=9)
    recipe.upload_frames(ctx, ctx.project("demo"))
    written = recipe.write_manifest(ctx, ctx.project("demo"))  # `manifest demo`
    assert written.images == 5  # draw_frames names them frame_000000 on: 3 new ones

    decision = _launch(ctx, store, plan_id)
    assert decision.kind == "launched", decision.message
    described = ctx.sagemaker("us-east-2").describe_labeling_job(LabelingJobName=plan.job_name)
    uri = described["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert _manifest_lines(ctx, uri) == 2
    assert uri.endswith(f"/demo/manifests/{plan.job_name}.manifest")
    assert emu.calls.count("CreateLabelingJob") == 1


def test_a_plan_whose_manifest_changed_is_refused(
    lab: tuple[Context, Store], emu: GroundTruthEmulator
) -> None:
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    uri = plan.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    bucket, key = s3.split_s3_uri(uri)
    client = ctx.clients.s3("us-east-2")
    body = s3.get_bytes(client, bucket, key)
    extra = b'{"source-ref": "s3://demo-frames/demo/images/other.jpg"}\n'
    s3.put_bytes(client, bucket, key, body + extra * 34, "application/jsonl")

    decision = _launch(ctx, store, plan_id)
    assert decision.kind == "failed"
    assert "it showed 2 images, its manifest now lists 36" in decision.message
    assert "Nothing was launched; run `submit demo` again" in decision.message
    assert emu.calls.count("CreateLabelingJob") == 0
    again = _launch(ctx, store, plan_id)
    assert again.kind == "already" and emu.calls.count("CreateLabelingJob") == 0


def test_a_plan_expires_after_a_day(lab: tuple[Context, Store], emu: GroundTruthEmulator) -> None:
    ctx, store = lab
    plan_id, _ = _plan(ctx, store)
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(plans)
            .where(plans.c.id == plan_id)
            .values(created_at=utcnow() - launcher.PLAN_TTL - timedelta(minutes=1))
        )
    decision = _launch(ctx, store, plan_id)
    assert decision.kind == "expired" and "submit demo` again" in decision.message
    assert emu.calls.count("CreateLabelingJob") == 0
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.state == "expired"


def test_launch_needs_a_submitter_now(lab: tuple[Context, Store], emu: GroundTruthEmulator) -> None:
    """Rights are those of the clicker at the click, not those of when the plan was made."""
    ctx, store = lab
    plan_id, _ = _plan(ctx, store)
    decision = launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False)
    assert decision.kind == "forbidden" and "GTBOT_SUBMITTERS" in decision.message
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.state == "pending"
    assert emu.calls.count("CreateLabelingJob") == 0


class _DatabaseDown:
    """The store's writes fail from now on, as a full disk or a lost database would."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(*_: object, **__: object) -> None:
            raise sa.exc.OperationalError("UPDATE gtbot_plans", {}, Exception("disk I/O error"))

        for name in ("add_watch", "transition_plan", "update_watch"):
            monkeypatch.setattr(store, name, fail)


def test_a_database_error_after_create_is_settled_and_told_truly(
    lab: tuple[Context, Store], emu: GroundTruthEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    original = store.transition_plan

    def launching_then_down(pid: str, frm: tuple[str, ...], to: str, **kw: object) -> bool:
        result = original(pid, frm, to, **kw)  # type: ignore[arg-type]
        if to == "launching":
            _DatabaseDown(store, monkeypatch)
        return result

    monkeypatch.setattr(store, "transition_plan", launching_then_down)
    decision = _launch(ctx, store, plan_id)
    assert decision.kind == "launched" and not decision.recorded
    assert decision.job is not None and decision.job.name == plan.job_name
    assert f"Launched {plan.job_name}" in decision.message
    assert "could not record the launch" in decision.message and "trace id" in decision.message
    assert "Nothing more was done" not in decision.message
    assert emu.job_names() == [plan.job_name]

    monkeypatch.undo()  # the database is back; gtbot restarts and settles from AWS
    settled = {p.id: p.state for p in launcher.recover_launches(ctx, store)}
    assert settled == {plan_id: "launched"}
    watch = store.get_watch(plan.job_name)
    assert watch is not None and watch.owner == "U1"
    assert emu.calls.count("CreateLabelingJob") == 1

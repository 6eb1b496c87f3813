"""Launch spends only what its plan showed, only for who may spend now, and says the truth.

A plan pins its own manifest object (its frames), their count and a digest; Launch re-checks
them and refuses with "submit again" when they differ, and a plan expires after a day. A
database error after CreateLabelingJob is settled from AWS: the job runs, the answer says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError, ReadTimeoutError
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


def _rewrite_manifest(ctx: Context, plan: recipe.Plan, change: Callable[[bytes], bytes]) -> None:
    """Someone edits the plan's manifest object in S3 after the card was shown."""
    uri = plan.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    bucket, key = s3.split_s3_uri(uri)
    client = ctx.clients.s3("us-east-2")
    s3.put_bytes(client, bucket, key, change(s3.get_bytes(client, bucket, key)), "text/plain")


def test_a_plan_whose_manifest_changed_is_refused(
    lab: tuple[Context, Store], emu: GroundTruthEmulator
) -> None:
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    extra = b'{"source-ref": "s3://demo-frames/demo/images/other.jpg"}\n'
    _rewrite_manifest(ctx, plan, lambda body: body + extra * 34)

    decision = _launch(ctx, store, plan_id)
    assert decision.kind == "failed"
    assert "it showed 2 images, its manifest now lists 36" in decision.message
    assert "Nothing was launched; run `submit demo` again" in decision.message
    assert emu.calls.count("CreateLabelingJob") == 0
    again = _launch(ctx, store, plan_id)
    assert again.kind == "already" and emu.calls.count("CreateLabelingJob") == 0


def test_a_plan_whose_frames_were_swapped_for_as_many_others_is_refused(
    lab: tuple[Context, Store], emu: GroundTruthEmulator
) -> None:
    """The count alone would let a card that showed 2 frames launch 2 other ones."""
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    _rewrite_manifest(ctx, plan, lambda body: body.replace(b"frame_000001", b"frame_000009"))

    decision = _launch(ctx, store, plan_id)
    assert (decision.kind, decision.message) == (
        "failed",
        "The frames changed since this plan was made: it showed 2 images, its manifest now "
        "lists as many, but not the same ones. Nothing was launched; run `submit demo` again "
        "for a new plan and cost.",
    )
    assert emu.calls.count("CreateLabelingJob") == 0


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


class _LostAnswer:
    """SageMaker whose answer to CreateLabelingJob never arrives (a read timeout): the request
    reached AWS (`made`) or did not. DescribeLabelingJob works, or fails with `describe`."""

    def __init__(self, real: Any, *, made: bool, describe: str | None = None) -> None:
        self.real, self.made, self.describe = real, made, describe

    def create_labeling_job(self, **request: Any) -> dict[str, Any]:
        if self.made:
            self.real.create_labeling_job(**request)
        raise ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-2.amazonaws.com/")

    def describe_labeling_job(self, **kwargs: Any) -> dict[str, Any]:
        if self.describe:
            error = {"Error": {"Code": self.describe, "Message": "said AWS"}}
            raise ClientError(error, "DescribeLabelingJob")  # type: ignore[arg-type]
        return self.real.describe_labeling_job(**kwargs)  # type: ignore[no-any-return]


class _Clients:
    """The clients of one region; `regions` is every region a client was asked for."""

    def __init__(self, real: Any, sagemaker: _LostAnswer) -> None:
        self.real, self._sagemaker = real, sagemaker
        self.regions: set[str | None] = set()

    def sagemaker(self, region: str) -> _LostAnswer:
        self.regions.add(region)
        return self._sagemaker

    def s3(self, region: str) -> Any:
        self.regions.add(region)
        return self.real.s3("us-east-2")


def _losing_answers(ctx: Context, **how: Any) -> Context:
    lost = _LostAnswer(ctx.clients.sagemaker("us-east-2"), **how)
    return Context(settings=ctx.settings, clients=_Clients(ctx.clients, lost), store=ctx.store)  # type: ignore[arg-type]


TIMEOUT = 'Read timeout on endpoint URL: "https://api.sagemaker.us-east-2.amazonaws.com/"'


def test_a_launch_whose_answer_was_lost_but_made_the_job_is_that_job(
    lab: tuple[Context, Store], emu: GroundTruthEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """An error is not a refusal: AWS is asked whether the job exists, and it does."""
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    lossy = _losing_answers(ctx, made=True)
    with caplog.at_level(logging.INFO, logger="gtbot.launch"):
        decision = _launch(lossy, store, plan_id)
    assert [r.getMessage() for r in caplog.records] == [
        f"launched job={plan.job_name} project=demo by=U1"
    ]
    assert (decision.kind, decision.message) == ("launched", f"Launched {plan.job_name}.")
    assert lossy.clients.regions == {"us-east-2"}  # type: ignore[attr-defined]  # the plan's
    assert decision.recorded and decision.job is not None
    assert decision.job.name == plan.job_name
    assert decision.plan is not None and decision.plan.state == "launched"
    assert store.get_watch(plan.job_name) is not None
    assert emu.calls.count("CreateLabelingJob") == 1
    assert emu.job_names() == [plan.job_name]


def test_a_launch_whose_request_never_reached_aws_fails_and_says_why(
    lab: tuple[Context, Store], emu: GroundTruthEmulator
) -> None:
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    decision = _launch(_losing_answers(ctx, made=False), store, plan_id)
    message = f"Could not create labeling job {plan.job_name}: {TIMEOUT}"
    assert (decision.kind, decision.message) == ("failed", message)
    assert decision.plan is not None
    assert (decision.plan.state, decision.plan.error) == ("failed", message)
    assert store.get_watch(plan.job_name) is None and emu.job_names() == []
    assert _launch(ctx, store, plan_id).kind == "already"  # a failed plan stays failed


def test_a_launch_aws_cannot_be_asked_about_is_left_for_the_restart(
    lab: tuple[Context, Store], emu: GroundTruthEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither launched nor failed: saying either could be a lie that costs money (a second
    plan) or data (a job nobody watches). The plan stays launching until AWS can be asked."""
    ctx, store = lab
    plan_id, plan = _plan(ctx, store)
    unsure = _losing_answers(ctx, made=True, describe="AccessDeniedException")
    with caplog.at_level(logging.INFO, logger="gtbot.launch"):
        decision = _launch(unsure, store, plan_id)
    assert [r.getMessage() for r in caplog.records] == [
        f"launch of {plan.job_name}: unsettled (Could not describe labeling job {plan.job_name}: "
        "the credentials in use are not allowed to do this. Check the IAM policy of the user or "
        "role gtbot runs as (see the README's 'AWS permissions').)"
    ]
    assert decision.kind == "unknown"
    assert decision.message == (
        f"Could not launch {plan.job_name} for sure: Could not create labeling job "
        f"{plan.job_name}: {TIMEOUT} AWS could not be asked whether the job exists (Could not "
        f"describe labeling job {plan.job_name}: the credentials in use are not allowed to do "
        "this. Check the IAM policy of the user or role gtbot runs as (see the README's 'AWS "
        f"permissions').). gtbot checks again when it next starts; `status {plan.job_name}` "
        "tells you now."
    )
    assert decision.plan is not None and decision.plan.id == plan_id
    assert store.get_plan(plan_id).state == "launching"  # type: ignore[union-attr]
    assert _launch(ctx, store, plan_id).kind == "already"  # a second click spends nothing
    assert emu.calls.count("CreateLabelingJob") == 1

    settled = {p.id: p.state for p in launcher.recover_launches(ctx, store)}  # the restart
    assert settled == {plan_id: "launched"}
    assert store.get_watch(plan.job_name) is not None
    assert emu.calls.count("CreateLabelingJob") == 1

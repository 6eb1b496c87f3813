"""The launcher's decisions without AWS: what a plan card records, who may press its buttons,
and what each refusal says. Launches against the emulator are in test_launcher and
test_launch_guards."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from aws.groundtruth import JobInfo
from bot.context import Context
from bot.errors import AwsError, NameInUseError
from bot.jobs import launcher
from bot.jobs.adaptive import AdaptivePolicy, FrameRule
from bot.recipe import Plan
from bot.settings import Settings
from bot.state import Store, plans, utcnow

TEAM = "arn:aws:sagemaker:us-east-2:394669845002:workteam/public-crowd/default"
REQUEST = {"InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": "s3://b/m"}}}}


def _plan(**changes: object) -> Plan:
    fields: dict[str, object] = {
        "project": "mice",
        "region": "us-east-2",
        "job_name": "mice-20261130120000",
        "images": 40,
        "workers_per_image": 3,
        "workteam_kind": "public",
        "workteam_arn": TEAM,
        "price_usd": Decimal("0.036"),
        "request": REQUEST,
        "prepared": ("frames uploaded",),
        "manifest_sha256": "ab" * 32,
    }
    return Plan(**(fields | changes))  # type: ignore[arg-type]


@pytest.fixture
def lab(tmp_path: Path) -> tuple[Context, Store]:
    store = Store(f"sqlite:///{tmp_path / 'gtbot.db'}")
    settings = Settings(projects_dir=tmp_path, database_url="", lab_config_path=None)
    return Context(settings=settings, store=store), store


def test_what_a_plan_card_records() -> None:
    assert launcher.plan_summary(_plan()) == {
        "project": "mice",
        "region": "us-east-2",
        "job_name": "mice-20261130120000",
        "images": 40,
        "workers_per_image": 3,
        "workteam_kind": "public",
        "workteam": "default",
        "price": "$0.036 per task",
        "cost": _plan().cost_text(),
        "cost_usd": "4.32",
        "prepared": ["frames uploaded"],
    }
    policy = AdaptivePolicy(FrameRule("worst", 25.0, True), 1, 3, Decimal("40.00"))
    follow_up = launcher.plan_summary(
        _plan(
            workteam_kind="private",
            price_usd=None,
            parent="mice-1",
            round=2,
            reason="the 10 least certain frames",
            adaptive=policy.as_dict(),
        )
    )
    assert follow_up["cost_usd"] is None and follow_up["price"] == "none (private team)"
    assert (follow_up["parent"], follow_up["round"], follow_up["reason"]) == (
        "mice-1",
        2,
        "the 10 least certain frames",
    )
    assert follow_up["adaptive"] == policy.as_dict()
    assert follow_up["adaptive_text"] == policy.text()


def test_a_second_plan_of_the_same_job_name_is_refused_word_for_word(
    lab: tuple[Context, Store],
) -> None:
    _, store = lab
    launcher.record_plan(store, _plan(), user="U1", channel="C1")
    with pytest.raises(NameInUseError) as info:
        launcher.record_plan(store, _plan(), user="U2", channel="C1")
    assert info.value.user_message == (
        "A plan for mice was made a moment ago with the same job name (mice-20261130120000): "
        "use that plan's card, or run submit again in a second."
    )
    round_two = _plan(job_name="mice-1-r2", parent="mice-1", round=2)
    plan_id = launcher.record_plan(store, round_two, user="U1", channel="C1", thread_ts="1.2")
    stored = store.get_plan(plan_id)
    assert stored is not None and (stored.parent, stored.round, stored.thread_ts) == (
        "mice-1",
        2,
        "1.2",
    )
    with pytest.raises(NameInUseError) as info:
        launcher.record_plan(store, round_two, user="U1", channel="C1")
    assert info.value.user_message == (
        "Round 2 of mice-1 (mice-1-r2) already has a plan: use that plan's card. Once that "
        "round has ended, `relabel` plans the next."
    )


def test_who_may_press_a_plans_buttons_word_for_word(lab: tuple[Context, Store]) -> None:
    ctx, store = lab
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    gone = launcher.launch_plan(ctx, store, "nope", user="U1", is_admin=True)
    assert (gone.kind, gone.message) == ("failed", "This plan no longer exists; run submit again.")
    other = launcher.cancel_plan(store, plan_id, user="U2", is_admin=False)
    assert (other.kind, other.message) == (
        "forbidden",
        "Only the person who asked for this plan, or an admin, may cancel it.",
    )
    assert other.plan is not None and other.plan.id == plan_id  # the card is drawn again
    other = launcher.launch_plan(ctx, store, plan_id, user="U2", is_admin=False, is_submitter=True)
    assert other.message == "Only the person who asked for this plan, or an admin, may launch it."
    assert other.plan is not None and other.plan.id == plan_id
    no_longer = launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False)
    assert (no_longer.kind, no_longer.message) == (
        "forbidden",
        "Launching spends money and only submitters may do it; you are not (or no longer) one. "
        "Ask an admin to add you (or your user group) to GTBOT_SUBMITTERS.",
    )
    assert no_longer.plan is not None and no_longer.plan.id == plan_id
    assert store.get_plan(plan_id).state == "pending"  # type: ignore[union-attr]
    # An admin may cancel anyone's plan; then every button says what happened to it.
    cancelled = launcher.cancel_plan(store, plan_id, user="UA", is_admin=True)
    assert (cancelled.kind, cancelled.message) == (
        "cancelled",
        "Plan cancelled; nothing was launched.",
    )
    assert cancelled.plan.state == "cancelled" and cancelled.plan.decided_by == "UA"  # type: ignore[union-attr]
    again = launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True)
    assert (again.kind, again.message) == ("already", "This plan was cancelled.")


@pytest.mark.parametrize(
    ("state", "error", "said"),
    [
        ("launching", None, "This plan is being launched."),
        ("launched", None, "This plan was launched as mice-20261130120000."),
        ("failed", "AWS said no.", "This plan was not launched (AWS said no.)."),
        ("expired", None, "This plan expired; run submit again for a new plan."),
        ("odd", None, "This plan odd."),
    ],
)
def test_a_plan_that_was_decided_says_how(
    lab: tuple[Context, Store], state: str, error: str | None, said: str
) -> None:
    _, store = lab
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    assert store.transition_plan(plan_id, ("pending",), state, error=error)
    decision = launcher.cancel_plan(store, plan_id, user="U1", is_admin=False)
    assert (decision.kind, decision.message) == ("already", said)
    assert decision.plan is not None and decision.plan.state == state


def test_a_plan_that_did_not_pin_its_frames_is_not_launched(lab: tuple[Context, Store]) -> None:
    ctx, store = lab
    plan_id = launcher.record_plan(store, _plan(manifest_sha256=""), user="U1", channel="C1")
    decision = launcher.launch_plan(
        ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True
    )
    assert (decision.kind, decision.message) == (
        "failed",
        "This plan was made by an older gtbot that did not pin its frames. Nothing was "
        "launched; run `submit mice` again for a new plan and cost.",
    )
    assert decision.plan is not None and decision.plan.state == "failed"
    assert decision.plan.error == decision.message and decision.plan.decided_by == "U1"


CREATED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class FakeSageMaker:
    """DescribeLabelingJob as SageMaker answers it: a job, or the error given for its name."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        self.asked: list[str] = []

    def describe_labeling_job(self, *, LabelingJobName: str) -> dict[str, Any]:  # noqa: N803
        self.asked.append(LabelingJobName)
        if LabelingJobName in self.errors:
            code = self.errors[LabelingJobName]
            raise ClientError({"Error": {"Code": code, "Message": "said AWS"}}, "Describe")
        return {
            "LabelingJobName": LabelingJobName,
            "LabelingJobArn": f"arn:job/{LabelingJobName}",
            "LabelingJobStatus": "InProgress",
            "CreationTime": CREATED,
        }


class FakeS3:
    """GetObject refused with `error` (an S3 error code), as S3 refuses it."""

    def __init__(self, region: str, error: str | None, asked: list[tuple[str, str, str]]) -> None:
        self.region, self.error, self.asked = region, error, asked

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        self.asked.append((self.region, Bucket, Key))
        raise ClientError({"Error": {"Code": self.error or "NoSuchKey", "Message": "no"}}, "Get")


class FakeClients:
    def __init__(self, sagemaker: FakeSageMaker, s3_error: str | None = None) -> None:
        self._sagemaker = sagemaker
        self.regions: list[str] = []
        self.s3_error = s3_error
        self.s3_asked: list[tuple[str, str, str]] = []

    def sagemaker(self, region: str) -> FakeSageMaker:
        self.regions.append(region)
        return self._sagemaker

    def s3(self, region: str) -> FakeS3:
        return FakeS3(region, self.s3_error, self.s3_asked)


def _with_aws(
    ctx: Context, errors: dict[str, str], s3_error: str | None = None
) -> tuple[Context, FakeSageMaker]:
    fake = FakeSageMaker(errors)
    clients = FakeClients(fake, s3_error)
    return Context(settings=ctx.settings, clients=clients, store=ctx.store), fake  # type: ignore[arg-type]


def test_a_restart_settles_each_launch_it_can_and_leaves_the_others(
    lab: tuple[Context, Store], caplog: pytest.LogCaptureFixture
) -> None:
    ctx, store = lab
    ids = {}
    for job in ("mice-a", "mice-b", "mice-c"):  # a: AWS cannot be asked; b: never made; c: made
        ids[job] = launcher.record_plan(store, _plan(job_name=job), user="U1", channel="C1")
        store.set_plan_message(ids[job], f"{job}.ts")
        assert store.transition_plan(ids[job], ("pending",), "launching", by="UA")
    ctx, fake = _with_aws(ctx, {"mice-a": "AccessDeniedException", "mice-b": "ResourceNotFound"})
    with caplog.at_level(logging.WARNING, logger="gtbot.launch"):
        settled = launcher.recover_launches(ctx, store)
    assert sorted((p.job_name, p.state) for p in settled) == [
        ("mice-b", "pending"),
        ("mice-c", "launched"),
    ]
    assert sorted(fake.asked) == ["mice-a", "mice-b", "mice-c"]
    assert ctx.clients.regions == ["us-east-2"] * 3  # type: ignore[attr-defined]  # the plans'
    assert store.get_plan(ids["mice-a"]).state == "launching"  # type: ignore[union-attr]
    assert [r.getMessage() for r in caplog.records] == [
        f"could not settle plan {ids['mice-a']}: Could not describe labeling job mice-a: the "
        "credentials in use are not allowed to do this. Check the IAM policy of the user or role "
        "gtbot runs as (see the README's 'AWS permissions')."
    ]
    watch = store.get_watch("mice-c")
    assert watch is not None and (watch.owner, watch.thread_ts) == ("U1", "mice-c.ts")
    assert store.get_watch("mice-b") is None


def test_a_launch_is_recorded_as_the_clicker_made_it(
    lab: tuple[Context, Store], caplog: pytest.LogCaptureFixture
) -> None:
    """The watch and the adaptive chain are written from the plan as stored after the click:
    an admin who launches someone's plan is the one the automatic rounds answer to."""
    ctx, store = lab
    policy = AdaptivePolicy(FrameRule("worst", 25.0, True), 1, 3, None)
    plan_id = launcher.record_plan(
        store, _plan(adaptive=policy.as_dict()), user="U1", channel="C1", thread_ts="9.9"
    )
    store.set_plan_message(plan_id, "1.1")
    assert store.transition_plan(plan_id, ("pending",), "launching", by="UA")
    clicked = store.get_plan(plan_id)
    assert clicked is not None
    stale = launcher.PlanRow(**{**clicked.__dict__, "decided_by": None})  # as read before
    job = JobInfo("mice-20261130120000", "arn:job", "InProgress", CREATED)
    with caplog.at_level(logging.INFO, logger="gtbot.launch"):
        decision = launcher._record_launch(ctx, store, stale, job, "UA")
    assert [r.getMessage() for r in caplog.records] == [
        "launched job=mice-20261130120000 project=mice by=UA"  # the audit trail of spending
    ]
    assert (decision.kind, decision.message) == ("launched", "Launched mice-20261130120000.")
    assert decision.plan is not None and decision.plan.state == "launched"
    assert decision.job is job and decision.recorded
    watch = store.get_watch("mice-20261130120000")
    assert watch is not None
    assert (watch.owner, watch.channel, watch.message_ts, watch.thread_ts) == (
        "U1",
        "C1",
        "1.1",
        "9.9",
    )
    assert (watch.project, watch.region, watch.job_created) == ("mice", "us-east-2", CREATED)
    chain = store.get_chain("mice-20261130120000")
    assert chain is not None and chain.launched_by == "UA" and chain.thread_ts == "9.9"
    assert chain.policy == policy.as_dict()


class DatabaseDown(Store):
    """Writes after the launch fail, as a full disk would."""

    def add_watch(self, **_: object) -> bool:
        raise sa.exc.OperationalError("INSERT INTO gtbot_watches", {}, Exception("disk full"))


@pytest.mark.parametrize("describe", ["works", "fails"])
def test_a_launch_the_database_could_not_record_is_told_truly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, describe: str
) -> None:
    store = DatabaseDown(f"sqlite:///{tmp_path / 'gtbot.db'}")
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    plan = store.get_plan(plan_id)
    assert plan is not None
    settings = Settings(projects_dir=tmp_path, database_url="", lab_config_path=None)
    errors = {} if describe == "works" else {"mice-20261130120000": "ThrottlingException"}
    ctx, _ = _with_aws(Context(settings=settings, store=store), errors)
    made = JobInfo("mice-20261130120000", "arn:job", "Initializing", None)
    with caplog.at_level(logging.INFO, logger="gtbot.launch"):
        decision = launcher._record_launch(ctx, store, plan, made, "U1")
    trace = caplog.records[0].getMessage().rsplit(" ", 1)[-1]
    assert re.fullmatch("[0-9a-f]{12}", trace)  # what an admin greps the logs for
    assert ctx.clients.regions == ["us-east-2"]  # type: ignore[attr-defined]  # the plan's
    assert caplog.records[0].getMessage() == (
        f"launched mice-20261130120000 but could not record it, trace id {trace}"
    )
    status = "InProgress" if describe == "works" else "Initializing"
    assert decision.message == (
        f"Launched mice-20261130120000 (now {status}). gtbot could not record the launch in its "
        f"database (trace id {trace}), so the card will not update until an admin fixes the "
        "database; gtbot settles the launch from AWS when it next starts."
    )
    assert decision.kind == "launched" and decision.recorded is False
    assert decision.plan == plan and decision.job is not None and decision.job.status == status
    if describe == "fails":
        assert caplog.records[1].getMessage() == (
            "could not describe mice-20261130120000 after launching it: Could not describe "
            "labeling job mice-20261130120000: AWS is throttling requests even after retries. "
            "Wait a minute and try again."
        )
    assert len(caplog.records) == (1 if describe == "works" else 2)


class RacingStore(Store):
    """Another click wins the plan between this click's read and its write."""

    def transition_plan(self, plan_id: str, *args: Any, **kwargs: Any) -> bool:
        if args[1] == "cancelled":
            super().transition_plan(plan_id, ("pending",), "launching", by="U2")
        if args[1] == "launching" and kwargs.get("by") != "U2":
            super().transition_plan(plan_id, ("pending",), "cancelled", by="U2")
        return super().transition_plan(plan_id, *args, **kwargs)


def test_a_cancel_that_loses_the_race_says_what_won(tmp_path: Path) -> None:
    store = RacingStore(f"sqlite:///{tmp_path / 'gtbot.db'}")
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    decision = launcher.cancel_plan(store, plan_id, user="U1", is_admin=False)
    assert (decision.kind, decision.message) == ("already", "This plan is being launched.")


def test_a_launch_that_loses_the_race_says_what_won(tmp_path: Path) -> None:
    store = RacingStore(f"sqlite:///{tmp_path / 'gtbot.db'}")
    settings = Settings(projects_dir=tmp_path, database_url="", lab_config_path=None)
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    ctx, fake = _with_aws(Context(settings=settings, store=store), {})
    decision = launcher.launch_plan(
        ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True
    )
    assert (decision.kind, decision.message) == ("already", "This plan was cancelled.")
    assert decision.plan is not None and decision.plan.decided_by == "U2"
    assert fake.asked == [] and ctx.clients.s3_asked == []  # type: ignore[attr-defined]


def test_a_launch_whose_frames_s3_cannot_show_stays_launchable(
    lab: tuple[Context, Store],
) -> None:
    """Nothing was spent, so the plan is pending again for the next click, and the error is
    the caller's to show."""
    ctx, store = lab
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    ctx, fake = _with_aws(ctx, {}, s3_error="AccessDenied")
    with pytest.raises(AwsError) as info:
        launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True)
    assert info.value.user_message.startswith("Could not read s3://b/m: ")
    assert ctx.clients.s3_asked == [("us-east-2", "b", "m")]  # type: ignore[attr-defined]
    plan = store.get_plan(plan_id)
    assert plan is not None and plan.state == "pending" and fake.asked == []


def _crashed_launch(store: Store, *, days_old: int = 0) -> str:
    """A plan a replica clicked, then died before it could record what AWS did."""
    plan_id = launcher.record_plan(store, _plan(), user="U1", channel="C1")
    store.set_plan_message(plan_id, "1.1")
    assert store.transition_plan(plan_id, ("pending",), "launching", by="UA")
    stale = utcnow() - launcher.STALE_LAUNCH - timedelta(minutes=1)
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(plans)
            .where(plans.c.id == plan_id)
            .values(updated_at=stale, created_at=stale - timedelta(days=days_old))
        )
    return plan_id


def test_a_click_on_a_crashed_launch_that_made_its_job_records_that_job(
    lab: tuple[Context, Store],
) -> None:
    ctx, store = lab
    plan_id = _crashed_launch(store)
    ctx, fake = _with_aws(ctx, {})
    decision = launcher.launch_plan(
        ctx, store, plan_id, user="U1", is_admin=False, is_submitter=True
    )
    assert (decision.kind, decision.message) == (
        "already",
        "This plan was launched as mice-20261130120000.",
    )
    assert decision.plan is not None and decision.plan.state == "launched"
    assert fake.asked == ["mice-20261130120000"]
    assert ctx.clients.regions == ["us-east-2"]  # type: ignore[attr-defined]
    watch = store.get_watch("mice-20261130120000")
    assert watch is not None
    assert (watch.owner, watch.channel, watch.message_ts, watch.region) == (
        "U1",
        "C1",
        "1.1",
        "us-east-2",
    )


def test_a_click_on_a_crashed_launch_that_made_nothing_still_expires_the_old_plan(
    lab: tuple[Context, Store],
) -> None:
    """AWS has no job, so the plan is pending again; but it is two days old, and a pending
    plan that old is not launched (its frames and cost may no longer hold)."""
    ctx, store = lab
    plan_id = _crashed_launch(store, days_old=2)
    ctx, fake = _with_aws(ctx, {"mice-20261130120000": "ResourceNotFound"})
    decision = launcher.launch_plan(ctx, store, plan_id, user="UB", is_admin=True)  # an admin
    assert (decision.kind, decision.message) == (
        "expired",
        "This plan is more than 24 h old: its frames and cost may no longer hold. Nothing was "
        "launched; run `submit mice` again for a new plan.",
    )
    assert decision.plan is not None and decision.plan.state == "expired"
    assert decision.plan.decided_by == "UB"
    assert fake.asked == ["mice-20261130120000"] and store.get_watch("mice-20261130120000") is None

"""The launcher's decisions without AWS: what a plan card records, who may press its buttons,
and what each refusal says. Launches against the emulator are in test_launcher and
test_launch_guards."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bot.context import Context
from bot.errors import NameInUseError
from bot.jobs import launcher
from bot.jobs.adaptive import AdaptivePolicy, FrameRule
from bot.recipe import Plan
from bot.settings import Settings
from bot.state import Store

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
    assert store.get_plan(plan_id).thread_ts == "1.2"  # type: ignore[union-attr]
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
    other = launcher.launch_plan(ctx, store, plan_id, user="U2", is_admin=False, is_submitter=True)
    assert other.message == "Only the person who asked for this plan, or an admin, may launch it."
    no_longer = launcher.launch_plan(ctx, store, plan_id, user="U1", is_admin=False)
    assert (no_longer.kind, no_longer.message) == (
        "forbidden",
        "Launching spends money and only submitters may do it; you are not (or no longer) one. "
        "Ask an admin to add you (or your user group) to GTBOT_SUBMITTERS.",
    )
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

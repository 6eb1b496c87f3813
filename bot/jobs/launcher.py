"""Plans and Launch: the one path that spends worker money, guarded against spending twice.

A plan's job name is fixed when the plan is made, so even a launch that crashed half way cannot
create a second job: the plan row is compare-and-set (pending → launching → launched), and Ground
Truth itself refuses a second job with the same name.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from aws import groundtruth as gt
from aws import s3
from bot import logs
from bot.context import Context
from bot.errors import GtBotError, NameInUseError, NotFoundError
from bot.jobs.adaptive import AdaptivePolicy
from bot.recipe import Plan, manifest_digest
from bot.state import PlanRow, Store, utcnow

log = logging.getLogger("gtbot.launch")
STALE_LAUNCH = timedelta(minutes=2)
# A plan shows a cost and a set of frames as they were when it was made; a day later the lab's
# mind (and its frames) may have moved on.
PLAN_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Decision:
    """What became of a click: `kind` is launched, cancelled, already, forbidden, expired,
    failed or unknown (the job may or may not exist; settled later from AWS).

    `recorded` is False when the job was created but the database could not say so: the
    message then tells the truth about both."""

    kind: str
    message: str
    plan: PlanRow | None = None
    job: gt.JobInfo | None = None
    recorded: bool = True


def plan_summary(plan: Plan) -> dict[str, object]:
    cost = plan.estimated_worker_cost_usd
    summary: dict[str, object] = {
        "project": plan.project,
        "region": plan.region,
        "job_name": plan.job_name,
        "images": plan.images,
        "workers_per_image": plan.workers_per_image,
        "workteam_kind": plan.workteam_kind,
        "workteam": plan.workteam_arn.rsplit("/", 1)[-1],
        "price": plan.price_text(),
        "cost": plan.cost_text(),
        "cost_usd": None if cost is None else str(cost),
        "prepared": list(plan.prepared),
    }
    if plan.parent is not None:
        summary.update(parent=plan.parent, round=plan.round, reason=plan.reason)
    if plan.adaptive is not None:
        summary["adaptive"] = plan.adaptive
        summary["adaptive_text"] = AdaptivePolicy.from_dict(plan.adaptive).text()
    return summary


def record_plan(
    store: Store, plan: Plan, *, user: str, channel: str, thread_ts: str | None = None
) -> str:
    """Store a pending plan. Job names carry the second, so a second submit of the same project
    within that second (a double-typed command, two people at once) names a job that already
    has a plan: that is the user's to retry, not a crash. A follow-up round's name is fixed
    (`<parent>-r<round>`), so a second plan of the same round is refused the same way.
    `thread_ts`: the thread the card goes in (a follow-up's, its parent's)."""
    plan_id = uuid.uuid4().hex
    try:
        store.add_plan(
            plan_id=plan_id,
            project=plan.project,
            region=plan.region,
            job_name=plan.job_name,
            requested_by=user,
            channel=channel,
            summary=plan_summary(plan),
            request=plan.request,
            manifest_sha256=plan.manifest_sha256,
            parent=plan.parent,
            round=plan.round,
            thread_ts=thread_ts,
        )
    except sa.exc.IntegrityError:
        if plan.parent is not None:
            raise NameInUseError(
                f"Round {plan.round} of {plan.parent} ({plan.job_name}) already has a plan: "
                "use that plan's card. Once that round has ended, `relabel` plans the next."
            ) from None
        raise NameInUseError(
            f"A plan for {plan.project} was made a moment ago with the same job name "
            f"({plan.job_name}): use that plan's card, or run submit again in a second."
        ) from None
    return plan_id


def _already(plan: PlanRow) -> Decision:
    words = {
        "launching": "is being launched",
        "launched": f"was launched as {plan.job_name}",
        "cancelled": "was cancelled",
        "failed": f"was not launched ({plan.error})",
        "expired": "expired; run submit again for a new plan",
    }
    return Decision("already", f"This plan {words.get(plan.state, plan.state)}.", plan)


def _reconcile(ctx: Context, store: Store, plan: PlanRow) -> PlanRow:
    """A launch left half done (a crash between click and call): ask AWS what happened."""
    if plan.state != "launching" or utcnow() - plan.updated_at < STALE_LAUNCH:
        return plan
    try:
        gt.describe_labeling_job(ctx.sagemaker(plan.region), plan.job_name)
    except NotFoundError:
        store.transition_plan(plan.id, ("launching",), "pending")
    else:
        if store.transition_plan(plan.id, ("launching",), "launched"):
            _watch_launched(store, plan, None)
    return store.get_plan(plan.id) or plan


def _decidable(
    store: Store, plan_id: str, user: str, is_admin: bool, verb: str
) -> PlanRow | Decision:
    """The plan if this user may press its buttons, else the refusal to show them."""
    plan = store.get_plan(plan_id)
    if plan is None:
        return Decision("failed", "This plan no longer exists; run submit again.")
    if not (is_admin or plan.requested_by == user):
        return Decision(
            "forbidden",
            f"Only the person who asked for this plan, or an admin, may {verb} it.",
            plan,
        )
    return plan


def launch_plan(
    ctx: Context,
    store: Store,
    plan_id: str,
    *,
    user: str,
    is_admin: bool,
    is_submitter: bool = False,
) -> Decision:
    """Launch a stored plan: only as it was shown, only by who may, and at most once.

    `is_admin` and `is_submitter` are the clicker's rights now (the settings may have changed
    since the plan was made, or since a restart)."""
    plan = _decidable(store, plan_id, user, is_admin, "launch")
    if isinstance(plan, Decision):
        return plan
    if not (is_admin or is_submitter):
        return Decision(
            "forbidden",
            "Launching spends money and only submitters may do it; you are not (or no longer) "
            "one. Ask an admin to add you (or your user group) to GTBOT_SUBMITTERS.",
            plan,
        )
    plan = _reconcile(ctx, store, plan)
    if plan.state == "pending" and utcnow() - plan.created_at > PLAN_TTL:
        hours = int(PLAN_TTL.total_seconds() // 3600)
        if store.transition_plan(plan_id, ("pending",), "expired", by=user):
            return Decision(
                "expired",
                f"This plan is more than {hours} h old: its frames and cost may no longer hold. "
                f"Nothing was launched; run `submit {plan.project}` again for a new plan.",
                store.get_plan(plan_id),
            )
    if not store.transition_plan(plan_id, ("pending",), "launching", by=user):
        return _already(store.get_plan(plan_id) or plan)
    try:
        changed = _what_changed(ctx, plan)
    except GtBotError:  # S3 could not be asked: nothing was spent, the plan stays launchable
        store.transition_plan(plan_id, ("launching",), "pending")
        raise
    if changed:
        store.transition_plan(plan_id, ("launching",), "failed", error=changed)
        return Decision("failed", changed, store.get_plan(plan_id))
    client = ctx.sagemaker(plan.region)
    try:
        job = gt.create_labeling_job(client, plan.request)
    except NameInUseError:
        # An earlier attempt reached AWS before we could record it: that job is this plan's.
        job = gt.describe_labeling_job(client, plan.job_name)
    except GtBotError as exc:
        # An error may still mean AWS made the job (a timeout after the request went out):
        # what AWS has, not the error, says what happened.
        try:
            job = gt.describe_labeling_job(client, plan.job_name)
        except NotFoundError:
            store.transition_plan(plan_id, ("launching",), "failed", error=exc.user_message)
            return Decision("failed", exc.user_message, store.get_plan(plan_id))
        except GtBotError as unknown:
            log.warning("launch of %s: unsettled (%s)", plan.job_name, unknown.user_message)
            return Decision(
                "unknown",
                f"Could not launch {plan.job_name} for sure: {exc.user_message} AWS could not "
                f"be asked whether the job exists ({unknown.user_message}). gtbot checks again "
                f"when it next starts; `status {plan.job_name}` tells you now.",
                plan,
            )
    return _record_launch(ctx, store, plan, job, user)


def _record_launch(
    ctx: Context, store: Store, plan: PlanRow, job: gt.JobInfo, user: str
) -> Decision:
    """The job exists: note it (watch, then plan state). If the database fails, say so truly:
    the job runs, and `recover_launches` settles the plan from AWS at the next start."""
    try:
        # As stored now: `decided_by` says who launched it.
        _watch_launched(store, store.get_plan(plan.id) or plan, job)
        store.transition_plan(plan.id, ("launching",), "launched")
    except sa.exc.SQLAlchemyError:
        trace = logs.trace_id()
        log.exception("launched %s but could not record it, trace id %s", plan.job_name, trace)
        try:
            job = gt.describe_labeling_job(ctx.sagemaker(plan.region), plan.job_name)
        except GtBotError as exc:
            log.warning("could not describe %s after launching it: %s", plan.job_name, exc)
        return Decision(
            "launched",
            f"Launched {plan.job_name} (now {job.status}). gtbot could not record the launch "
            f"in its database (trace id {trace}), so the card will not update until an admin "
            "fixes the database; gtbot settles the launch from AWS when it next starts.",
            plan,
            job,
            recorded=False,
        )
    log.info("launched job=%s project=%s by=%s", plan.job_name, plan.project, user)
    return Decision("launched", f"Launched {plan.job_name}.", store.get_plan(plan.id), job)


def _what_changed(ctx: Context, plan: PlanRow) -> str | None:
    """Why this plan no longer launches what it showed, or None: its manifest object must
    still hold the frames it counted, byte for byte."""
    uri = plan.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    again = f"Nothing was launched; run `submit {plan.project}` again for a new plan and cost."
    if not plan.manifest_sha256:
        return f"This plan was made by an older gtbot that did not pin its frames. {again}"
    bucket, key = s3.split_s3_uri(uri)
    try:
        body = s3.get_bytes(ctx.clients.s3(plan.region), bucket, key)
    except NotFoundError:
        return f"The plan's manifest {uri} is gone. {again}"
    digest, images = manifest_digest(body)
    shown = plan.summary.get("images")
    if digest != plan.manifest_sha256 or images != shown:
        now = f"{images}" if images != shown else "as many, but not the same ones"
        return (
            f"The frames changed since this plan was made: it showed {shown} images, its "
            f"manifest now lists {now}. {again}"
        )
    return None


def _watch_launched(store: Store, plan: PlanRow, job: gt.JobInfo | None) -> None:
    """The plan card becomes the job card, and its thread (a follow-up's: its parent's) carries
    the job's news. A plan with an adaptive policy starts its chain of automatic rounds, on
    the authority of whoever launched it (bot/jobs/relabel.py)."""
    store.add_watch(
        job_name=plan.job_name,
        region=plan.region,
        channel=plan.channel,
        project=plan.project,
        message_ts=plan.message_ts,
        thread_ts=plan.thread_ts or plan.message_ts,
        owner=plan.requested_by,
        job_created=job.created if job else None,
    )
    policy = plan.summary.get("adaptive")
    if isinstance(policy, dict):
        store.add_chain(
            root=plan.job_name,
            project=plan.project,
            region=plan.region,
            policy=policy,
            launched_by=plan.decided_by or plan.requested_by,
            channel=plan.channel,
            thread_ts=plan.thread_ts or plan.message_ts,
        )


def cancel_plan(store: Store, plan_id: str, *, user: str, is_admin: bool) -> Decision:
    plan = _decidable(store, plan_id, user, is_admin, "cancel")
    if isinstance(plan, Decision):
        return plan
    if not store.transition_plan(plan_id, ("pending",), "cancelled", by=user):
        return _already(store.get_plan(plan_id) or plan)
    return Decision("cancelled", "Plan cancelled; nothing was launched.", store.get_plan(plan_id))


def recover_launches(ctx: Context, store: Store) -> list[PlanRow]:
    """At start: settle plans a previous process left in `launching`, whatever their age."""
    settled = []
    for plan in store.plans_in_state("launching"):
        try:
            gt.describe_labeling_job(ctx.sagemaker(plan.region), plan.job_name)
        except NotFoundError:
            store.transition_plan(plan.id, ("launching",), "pending")
        except GtBotError as exc:
            log.warning("could not settle plan %s: %s", plan.id, exc.user_message)
            continue
        else:
            if store.transition_plan(plan.id, ("launching",), "launched"):
                _watch_launched(store, plan, None)
        settled.append(store.get_plan(plan.id) or plan)
    return settled

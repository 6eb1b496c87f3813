"""Follow-up rounds: more workers on the frames whose consensus is least certain.

A job's first round asks every frame's workers once. `relabel <job>` plans a follow-up job on
the frames its results rank least certain (`frames.csv`, bot/results/robust.py), with K more
workers each, through the same plan card, cost and Launch as `submit`; `results <job>` then
merges every round. A project with an adaptive policy (`job: adaptive:`, bot/jobs/adaptive.py) has
gtbot launch the rounds itself: when a round has ended and its end was told in the job's
thread, `advance_chains` (run by the job watcher on each tick) plans and launches the next one
within the budget, and says in the thread what it did and why.

How a follow-up is tied to its parent:
- its name, `<parent>-r<round>` (a hash keeps long names within Ground Truth's 63 characters);
- its tags, `gtbot:parent` and `gtbot:round`;
- its plan row (`parent`, `round`, the thread of the parent's card, where it is watched).

Exactly once, across retries, restarts and replicas, the same way as Launch: a round's job name
is fixed before anything is spent; its plan is one row (a second insert of the same name fails
and the existing plan is used); Launch is the plan's compare-and-set, and a job AWS already has
(ResourceInUse) is adopted; what gtbot posts is an announcement, each done once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from aws import groundtruth as gt
from aws import s3
from bot import recipe
from bot.context import Context
from bot.errors import GtBotError, NameInUseError, NotFoundError, UsageError
from bot.jobs import launcher
from bot.jobs.adaptive import MAX_WORKERS_PER_FRAME, AdaptivePolicy, FrameRule
from bot.state import ChainRow, PlanRow, Store

log = logging.getLogger("gtbot.relabel")

# Who an automatic round is launched by, in plan rows and the log.
AUTOMATIC = "gtbot (automatic round)"
# frames.csv rows read at most: a job has at most 100,000 frames.
MAX_FRAME_ROWS = 200_000
# Tells a chain's posts: (root, round) -> text, posted once (bot/jobs/watcher.Watcher.tell).
Tell = Callable[[str, str, str | None, str], None]
MaySpend = Callable[[str], bool]


class NothingToRelabelError(GtBotError):
    """No frame qualifies for another round (or the budget pays for none)."""


def followup_name(root: str, round_: int) -> str:
    """`<root>-r<round>`; a root too long for that keeps its start and a hash of the whole,
    so every root has its own follow-up names within Ground Truth's 63 characters."""
    suffix = f"-r{round_}"
    if len(root) + len(suffix) <= 63:
        return root + suffix
    digest = hashlib.sha256(root.encode()).hexdigest()[:6]
    return f"{root[: 63 - len(suffix) - 7].rstrip('-')}-{digest}{suffix}"


def root_of(ctx: Context, name: str) -> str:
    """The first round of the chain `name` belongs to (itself if it is one)."""
    if ctx.store is not None:
        plan = ctx.store.plan_for_job(name)
        if plan is not None and plan.parent:
            return plan.parent
    match = re.fullmatch(r"(.+)-r([0-9]{1,3})", name)
    if match is None or int(match[2]) < 2 or followup_name(match[1], int(match[2])) != name:
        return name
    try:
        gt.describe_labeling_job(ctx.sagemaker(recipe.region_for_job(ctx, name)), match[1])
    except NotFoundError:
        return name  # a job of its own that happens to end in -r<n>
    return match[1]


def follow_up_jobs(client: Any, root: str) -> list[tuple[int, gt.JobInfo]]:
    """(round, job) of every follow-up of `root` AWS has, first round first: one listing,
    whichever process or person launched them."""
    stem = followup_name(root, 2)[:-1]
    found = []
    for job in gt.iter_labeling_jobs(client, name_contains=stem):
        match = re.fullmatch(re.escape(stem) + r"([0-9]{1,3})", job.name)
        if match and int(match[1]) >= 2 and followup_name(root, int(match[1])) == job.name:
            found.append((int(match[1]), job))
    return sorted(found, key=lambda item: item[0])


# --------------------------------------------------------------------------- choosing frames


@dataclass(frozen=True)
class FrameRow:
    """One line of frames.csv."""

    source_ref: str
    image_id: int
    workers: int
    uncertainty: float  # NaN from the median consensus
    spread: float


def read_frames(path: Path) -> list[FrameRow]:
    """frames.csv of a job's results (bot/results/exports.FrameRows)."""
    if not path.is_file():
        raise NotFoundError(f"{path.name} is missing from the results; `results <job> --rebuild`.")
    rows: list[FrameRow] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            if len(rows) >= MAX_FRAME_ROWS:
                break
            try:
                rows.append(
                    FrameRow(
                        source_ref=_plain(record["frame"]),
                        image_id=int(record["image_id"]),
                        workers=int(record["n_workers"]),
                        uncertainty=_number(record["uncertainty"]),
                        spread=_number(record["spread"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
    return rows


def _plain(cell: str) -> str:
    """A frames.csv cell as the frame was named (a leading `'` guards formulas)."""
    return cell[1:] if cell.startswith("'") and cell[1:2] in ("=", "+", "-", "@") else cell


def _number(cell: str) -> float:
    return float(cell) if cell else math.nan


@dataclass(frozen=True)
class Selection:
    frames: tuple[FrameRow, ...]  # in the parent's order
    reason: str


def choose(
    rows: Sequence[FrameRow], rule: FrameRule, workers: int, most: int | None = None
) -> Selection:
    """The frames `rule` picks, least certain first, and why, in words. Ranks by the robust
    consensus's expected error, or by spread when the results used the median. `most` caps the
    count (what a budget pays for); frames that would pass `MAX_WORKERS_PER_FRAME` answers are
    left out."""
    by_error = any(not math.isnan(r.uncertainty) for r in rows)

    def score(row: FrameRow) -> float:
        value = row.uncertainty if by_error else row.spread
        return -math.inf if math.isnan(value) else value

    ranked = sorted(rows, key=lambda r: (-score(r), r.image_id))
    if rule.kind == "spread":
        picked = [r for r in ranked if not math.isnan(r.spread) and r.spread >= rule.value]
    else:
        picked = ranked[: rule.count(len(rows)) or 0]
    room = [r for r in picked if r.workers + workers <= MAX_WORKERS_PER_FRAME]
    full = len(picked) - len(room)
    capped = room[:most] if most is not None else room
    if not capped:
        if picked and full == len(picked):
            raise NothingToRelabelError(
                f"the frames picked ({rule.describe()}) already have as many answers as gtbot "
                f"uses per frame ({MAX_WORKERS_PER_FRAME}) or nearly"
            )
        if picked:
            raise NothingToRelabelError(
                "the budget left does not pay for one more task on the least certain frame"
            )
        if rule.kind == "spread":
            raise NothingToRelabelError(
                f"no frame has a keypoint whose workers are {rule.value:g} px apart or more"
            )
        raise NothingToRelabelError("the job has no consolidated frame to choose from")
    chosen = {r.image_id for r in capped}
    rest = [r for r in rows if r.image_id not in chosen]
    measure = "expected error" if by_error else "spread"

    def mean(values: Sequence[FrameRow]) -> str:
        numbers = [
            (r.uncertainty if by_error else r.spread)
            for r in values
            if not math.isnan(r.uncertainty if by_error else r.spread)
        ]
        return f"{sum(numbers) / len(numbers):.1f} px" if numbers else "n/a"

    reason = (
        f"{len(capped)} of {len(rows)} frames, {rule.describe()}: their mean {measure} is "
        f"{mean(capped)}, the other frames' {mean(rest)}"
    )
    if full:
        reason += f"; {full} frame(s) left out, as they already have the most answers gtbot uses"
    if most is not None and len(room) > most:
        reason += f"; the budget left pays for {most} of the {len(room)} it picked"
    return Selection(tuple(sorted(capped, key=lambda r: r.image_id)), reason)


# --------------------------------------------------------------------------- planning


def plan_follow_up(
    ctx: Context,
    name: str,
    *,
    rule: FrameRule,
    workers: int,
    budget_left: Decimal | None = None,
    requester: str | None = None,
) -> recipe.Plan:
    """The plan of `name`'s next round: its frames chosen from the results of every round so
    far, its own manifest object (pinned, as a submit's), the project's job settings with
    `workers` workers per frame. Nothing here costs worker money. `requester` (who asked)
    is tagged on the job as a submit's is."""
    from bot.job_results import job_results, project_of_job

    if not 1 <= workers <= 9:
        raise UsageError(f"--workers must be from 1 to 9 (Ground Truth's limit), got {workers}.")
    project = project_of_job(ctx, name)
    client = ctx.sagemaker(project.region)
    root = root_of(ctx, name)
    first = gt.describe_labeling_job(client, root)
    if first.status not in ("Completed", "Stopped"):
        raise UsageError(
            f"{root} is {first.status}: its frames can be ranked once it has ended "
            f"(`status {root}`)."
        )
    rounds = follow_up_jobs(client, root)
    for number, job in rounds:
        if not job.terminal:
            raise UsageError(
                f"Round {number} of {root} ({job.name}) is {job.status}: plan the next round "
                f"when it has ended (`status {job.name}`)."
            )
    ctx.progress(f"Consolidating every round of {root} ...")
    results = job_results(ctx, root)
    rows = read_frames(results.out_dir / "frames.csv")
    price = project.job.price_usd if project.job.workteam_kind == "public" else None
    most = None
    if budget_left is not None and price is not None:
        most = max(0, int(budget_left // (price * workers)))
    selection = choose(rows, rule, workers, most)
    number = max((n for n, _ in rounds), default=1) + 1
    job_name = followup_name(root, number)
    template = recipe.publish_template(ctx, project)
    body = "".join(
        json.dumps({"source-ref": row.source_ref}) + "\n" for row in selection.frames
    ).encode()
    digest, images = recipe.manifest_digest(body)
    # The digest in the key: two planners of one round (replicas, a retry) never overwrite
    # each other's manifest, and a plan keeps pointing at what it counted.
    key = f"{project.name}/manifests/{job_name}-{digest[:12]}.manifest"
    uri = s3.put_bytes(ctx.s3(project), project.data_bucket, key, body, "application/jsonl")
    spec, request = recipe.job_request(
        project,
        job_name=job_name,
        manifest_uri=uri,
        template_uri=template.template_uri,
        workers=workers,
        tags=(("gtbot:parent", root), ("gtbot:round", str(number))),
        requester=requester,
    )
    return recipe.Plan(
        project=project.name,
        region=project.region,
        job_name=job_name,
        images=images,
        workers_per_image=workers,
        workteam_kind=project.job.workteam_kind,
        workteam_arn=spec.workteam_arn,
        price_usd=spec.price_usd,
        request=request,
        prepared=(
            f"results of {1 + len(rounds)} round(s) consolidated",
            f"manifest with {images} frames",
            "annotation interface uploaded",
        ),
        manifest_sha256=digest,
        parent=root,
        round=number,
        reason=selection.reason,
    )


# --------------------------------------------------------------------------- stopping


def stop_chain(ctx: Context, name: str, user: str) -> str:
    """Stop a job's automatic rounds; the round running now goes on (`stop <job>` stops it)."""
    store = ctx.store
    if store is None:
        raise UsageError(
            "Automatic rounds are run by gtbot's watcher (`gtbot serve` or `gtbot socket`), "
            "and stopped in Slack: `/gt relabel <job> --stop`."
        )
    root = root_of(ctx, name)
    chain = store.get_chain(root)
    if chain is None:
        raise NotFoundError(f"{root} has no automatic rounds (its project had no adaptive policy).")
    if not store.end_chain(root, "stopped", f"stopped by <@{user}>", by=user):
        chain = store.get_chain(root) or chain
        return f"The automatic rounds of {root} had already ended ({chain.state}: {chain.reason})."
    return (
        f"Stopped the automatic rounds of {root}: no further round will be launched. A round "
        f"already running goes on; `stop <job>` stops it, `results {root}` merges every round."
    )


# --------------------------------------------------------------------------- automatic rounds


def spent_usd(store: Store, chain: ChainRow) -> Decimal:
    """Worker pay of every launched round of the chain, as its plan estimated it."""
    plans = [store.plan_for_job(chain.root), *store.follow_up_plans(chain.root)]
    total = Decimal(0)
    for plan in plans:
        if plan is not None and plan.state == "launched":
            cost = plan.summary.get("cost_usd")
            total += Decimal(str(cost)) if cost is not None else Decimal(0)
    return total


def advance_chains(
    ctx: Context, store: Store, tell: Tell, may_spend: MaySpend | None = None
) -> None:
    """One step of every active chain; called by the watcher on the lease holder's ticks. A
    failure that may pass (AWS, S3, Slack) leaves the chain as it is for the next tick, which
    takes the step again: every step is idempotent."""
    for chain in store.active_chains():
        try:
            _advance(ctx, store, chain, tell, may_spend)
        except GtBotError as exc:
            log.warning("automatic rounds of %s: %s (will retry)", chain.root, exc.user_message)
        except Exception:
            log.exception("automatic rounds of %s failed this tick (will retry)", chain.root)


def _where(store: Store, chain: ChainRow) -> tuple[str, str | None]:
    """The root's card's channel and thread now (it may have been moved with `watch`)."""
    watch = store.get_watch(chain.root)
    if watch is not None and watch.thread_ts:
        return watch.channel, watch.thread_ts
    return chain.channel, chain.thread_ts


def _key(chain: ChainRow, what: str) -> str:
    """An announcement key no job name can be (a colon), unique per chain and step."""
    return f"{what}:{hashlib.sha256(chain.root.encode()).hexdigest()[:40]}"


def _end(store: Store, chain: ChainRow, tell: Tell, state: str, why: str) -> None:
    """Say once in the thread why the rounds end, then end the chain (compare-and-set). Told
    first: a chain that has ended is not looked at again, so a post that failed would be lost;
    a crash in between makes the next tick decide the same and find the post done."""
    channel, thread = _where(store, chain)
    tell(
        _key(chain, "end"),
        channel,
        thread,
        f"No further automatic round of {chain.root}: {why}. "
        f"`/gt results {chain.root}` merges every round.",
    )
    if store.end_chain(chain.root, state, why):
        log.info("automatic rounds of %s ended (%s): %s", chain.root, state, why)


def _advance(
    ctx: Context, store: Store, chain: ChainRow, tell: Tell, may_spend: MaySpend | None
) -> None:
    from bot.job_results import ResultsUnavailableError

    policy = AdaptivePolicy.from_dict(chain.policy)
    plans = store.follow_up_plans(chain.root)
    latest = plans[-1] if plans else None
    if latest is not None:
        if latest.state in ("pending", "launching"):
            _launch(ctx, store, chain, latest, tell, may_spend)
            return
        if latest.state != "launched":
            why = f"round {latest.round} was not launched ({latest.error or latest.state})"
            _end(store, chain, tell, "failed", why)
            return
        _tell_launched(store, chain, latest, tell)  # again, if its post failed before
    current = latest.job_name if latest is not None else chain.root
    number = (latest.round or 2) if latest is not None else 1
    told = store.get_announcement(current)
    if told is None or told.state != "done":
        return  # the round runs, or its end is not told yet: its results come first
    job = gt.describe_labeling_job(ctx.sagemaker(chain.region), current)
    if job.status != "Completed":
        _end(store, chain, tell, "done", f"round {number} ({current}) ended {job.status}")
        return
    if number >= policy.max_rounds:
        _end(store, chain, tell, "done", f"all {policy.max_rounds} rounds have run")
        return
    name = followup_name(chain.root, number + 1)
    plan = store.plan_for_job(name)
    if plan is None:
        budget_left = None
        if policy.budget_usd is not None:
            budget_left = policy.budget_usd - spent_usd(store, chain)
        try:
            planned = plan_follow_up(
                ctx,
                chain.root,
                rule=policy.select,
                workers=policy.workers_per_round,
                budget_left=budget_left,
            )
        except NothingToRelabelError as exc:
            _end(store, chain, tell, "done", exc.user_message)
            return
        except ResultsUnavailableError as exc:
            # Said and ended rather than retried unseen on every tick; a person can go on by
            # hand once the results build (`results`, then `relabel`).
            _end(
                store,
                chain,
                tell,
                "failed",
                f"the results of the rounds so far are unavailable ({exc.reason.rstrip('.')}); "
                f"`/gt results {chain.root}` tries again and `/gt relabel {chain.root}` plans a "
                "round by hand",
            )
            return
        if planned.job_name != name:  # a round launched elsewhere took this number
            _end(store, chain, tell, "failed", f"{planned.job_name} exists already, not by gtbot")
            return
        channel, thread = _where(store, chain)
        # NameInUseError: another replica recorded this round a moment ago; its plan is the one.
        with contextlib.suppress(NameInUseError):
            launcher.record_plan(
                store, planned, user=chain.launched_by, channel=channel, thread_ts=thread
            )
        plan = store.plan_for_job(name)
        if plan is None:
            return
    _launch(ctx, store, chain, plan, tell, may_spend)


def _launch(
    ctx: Context,
    store: Store,
    chain: ChainRow,
    plan: PlanRow,
    tell: Tell,
    may_spend: MaySpend | None,
) -> None:
    """Launch a round's plan as the chain's launcher would, with their rights as they are now."""
    if plan.state in ("pending", "launching"):
        decision = launcher.launch_plan(
            ctx,
            store,
            plan.id,
            user=plan.requested_by,
            is_admin=False,
            is_submitter=may_spend is None or may_spend(chain.launched_by),
        )
        if decision.kind == "forbidden":
            store.transition_plan(plan.id, ("pending",), "cancelled", by=AUTOMATIC)
            why = f"<@{chain.launched_by}>, who launched it, may no longer launch jobs"
            _end(store, chain, tell, "stopped", why)
            return
        if decision.kind in ("failed", "expired"):
            why = f"round {plan.round} was not launched: {decision.message}"
            _end(store, chain, tell, "failed", why)
            return
        plan = store.get_plan(plan.id) or plan
        if plan.state != "launched":
            return  # AWS could not say, or another holder is launching: the next tick sees
    _tell_launched(store, chain, plan, tell)


def _tell_launched(store: Store, chain: ChainRow, plan: PlanRow, tell: Tell) -> None:
    """What was launched and why, once in the chain's thread."""
    key = _key(chain, f"r{plan.round}")
    done = store.get_announcement(key)
    if done is not None and done.state == "done":
        return
    policy = AdaptivePolicy.from_dict(chain.policy)
    summary = plan.summary
    money = ""
    if policy.budget_usd is not None:
        money = f" Worker pay so far ${spent_usd(store, chain)} of the ${policy.budget_usd} budget."
    channel, thread = _where(store, chain)
    tell(
        key,
        channel,
        thread,
        f"Automatic round {plan.round} of {chain.root} launched as {plan.job_name}: "
        f"{summary.get('workers_per_image')} more worker(s) on {summary.get('images')} frames, "
        f"{summary.get('cost')}. Why: {summary.get('reason')}.{money} Policy: {policy.text()}. "
        f"Stop further rounds with `/gt relabel {chain.root} --stop`.",
    )

"""The `job:` section: workforce, role, limits, texts, price, consensus (lab defaults merged).

Each check reads its settings through `_JobValues` (the project's value, else the lab default,
with where it came from for the message) and puts what passed into `out`, the keyword arguments of
the `JobConfig`; anything that failed is left at the dataclass default and reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.project.adaptive_settings import validate_adaptive
from bot.project.aws_rules import (
    KEYWORD_RE,
    LAMBDA_ARN_RE,
    PUBLIC_AVAILABILITY_MAX,
    PUBLIC_CROWD_PRICES,
    ROLE_ARN_RE,
    TEAM_AVAILABILITY_MAX,
    WORKTEAM_ARN_RE,
)
from bot.project.model import CONSENSUS_METHODS, JobConfig
from bot.project.problems import (
    EXAMPLES,
    ConfigProblems,
    as_str_list,
    check_known_keys,
    is_int,
)

JOB_KEYS = {
    "workteam_arn", "role_arn", "workers_per_image", "task_time_limit_seconds",
    "task_availability_seconds", "max_concurrent_tasks", "title", "description", "keywords",
    "price_usd", "pre_lambda_arn", "consolidation_lambda_arn", "consensus", "adaptive",
}  # fmt: skip

_LAB_DEFAULT_SOURCES = {"role_arn": "GTBOT_ROLE_ARN", "workteam_arn": "GTBOT_WORKTEAM_ARN"}


@dataclass(frozen=True)
class _JobValues:
    raw: Mapping[str, Any]
    lab_defaults: Mapping[str, Any]

    def get(self, key: str) -> tuple[Any, str | None]:
        """The value and, when it came from the lab defaults, where (for the message)."""
        if key in self.raw:
            return self.raw[key], None
        if key in self.lab_defaults:
            env = _LAB_DEFAULT_SOURCES.get(key)
            return self.lab_defaults[key], f"lab default ({env + ' or ' if env else ''}gtbot.yml)"
        return None, None


def validate_job(
    raw: Any, lab_defaults: Mapping[str, Any], region: str, p: ConfigProblems
) -> JobConfig:
    """`region` is the project's when valid, else "" (the workteam's region is not compared)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        p.add(
            "job", f"must be a mapping of job settings, found {raw!r}. See `init` for an example."
        )
        raw = {}
    check_known_keys(raw, JOB_KEYS, "job", "unknown job setting.", p)
    values = _JobValues(raw, lab_defaults)
    out: dict[str, Any] = {}
    _check_limits(values, p, out)
    _check_identity(values, region, p, out)
    _check_texts(values, p, out)
    kind = (
        JobConfig(workteam_arn=out["workteam_arn"]).workteam_kind if "workteam_arn" in out else None
    )
    _check_pay(values, kind, p, out)
    _check_consensus(values, p, out)
    adaptive, src = values.get("adaptive")
    if adaptive is not None:
        policy = validate_adaptive(adaptive, kind, out.get("workers_per_image", 5), p, src)
        if policy is not None:
            out["adaptive"] = policy
    # Pre-annotation and consolidation Lambdas are independently optional (botocore >= 1.35.26
    # model: neither is required in HumanTaskConfig), so either may be set alone.
    return JobConfig(**out)


def _check_limits(values: _JobValues, p: ConfigProblems, out: dict[str, Any]) -> None:
    """Workers per frame, time per task, how long a task is on offer, tasks at once."""
    for key, lo, hi, fix in (
        ("workers_per_image", 1, 9, "Write a number from 1 to 9 (MARS recommends 5)."),
        (
            "task_time_limit_seconds",
            30,
            28800,
            "Write seconds from 30 to 28800 (8 hours), e.g. 300.",
        ),
        (
            "task_availability_seconds",
            60,
            TEAM_AVAILABILITY_MAX,
            "Write seconds from 60 to 2592000 (30 days; the public crowd allows at most 43200, "
            "12 hours), or remove the key for the workforce's default.",
        ),
        (
            "max_concurrent_tasks",
            1,
            5000,
            "Write a number from 1 to 5000 (above 1000 needs AWS Support), or remove the key.",
        ),
    ):
        v, src = values.get(key)
        if v is None:
            continue
        if not is_int(v):
            p.add(f"job.{key}", f"must be a whole number, found {v!r}. {fix}", source=src)
        elif not lo <= v <= hi:
            p.add(f"job.{key}", f"{v} is outside {lo}..{hi}. {fix}", source=src)
        else:
            out[key] = v


def _check_identity(
    values: _JobValues, region: str, p: ConfigProblems, out: dict[str, Any]
) -> None:
    """The ARNs of the workteam, the execution role and the Lambdas, and the team's region."""
    arns: tuple[tuple[str, re.Pattern[str], str], ...] = (
        (
            "workteam_arn",
            WORKTEAM_ARN_RE,
            "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/my-team",
        ),
        (
            "role_arn",
            ROLE_ARN_RE,
            "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole",
        ),
        ("pre_lambda_arn", LAMBDA_ARN_RE, "arn:aws:lambda:us-east-1:123456789012:function:gt-pre"),
        (
            "consolidation_lambda_arn",
            LAMBDA_ARN_RE,
            "arn:aws:lambda:us-east-1:123456789012:function:gt-post",
        ),
    )
    for key, pattern, example in arns:
        v, src = values.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or not pattern.match(v.strip()):
            p.add(
                f"job.{key}",
                f"{v!r} is not an ARN of the right form. Expected e.g. `{example}`.",
                source=src,
            )
        else:
            out[key] = v.strip()

    workteam = out.get("workteam_arn")
    if workteam and region:
        team_region = WORKTEAM_ARN_RE.match(workteam).group("region")  # type: ignore[union-attr]
        if team_region != region:
            p.add(
                "job.workteam_arn",
                f"the workteam is in {team_region} but the project's region is "
                f"{region}; Ground Truth needs both in the same region.",
                source=values.get("workteam_arn")[1],
            )


def _check_texts(values: _JobValues, p: ConfigProblems, out: dict[str, Any]) -> None:
    """What workers see of the job before they take it: title, description, keywords."""
    for key, limit in (("title", 128), ("description", 255)):
        v, src = values.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or not v.strip():
            p.add(
                f"job.{key}",
                f"must be non-empty text. Example: `{EXAMPLES['job.' + key]}`.",
                source=src,
            )
        elif len(v.strip()) > limit:  # what is sent: the text without its outer spaces
            p.add(
                f"job.{key}",
                f"is {len(v.strip())} characters; Ground Truth allows at most {limit}.",
                source=src,
            )
        else:
            out[key] = v.strip()

    kw, src = values.get("keywords")
    if kw is None:
        return
    words = as_str_list(kw)
    if not words or not 1 <= len(words) <= 5:
        p.add(
            "job.keywords",
            f"must be a list of 1 to 5 keywords, found {kw!r}. Example: `keywords: [pose, mouse]`.",
            source=src,
        )
        return
    bad = [w for w in words if len(w) > 30 or not KEYWORD_RE.match(w)]
    if bad:
        p.add(
            "job.keywords",
            f"{bad[0]!r} is not allowed: keywords are letters, digits and single "
            "spaces, at most 30 characters.",
            source=src,
        )
    else:
        out["keywords"] = tuple(words)


def _check_pay(
    values: _JobValues, kind: str | None, p: ConfigProblems, out: dict[str, Any]
) -> None:
    """The price per task and the offer time, both of which depend on the kind of workforce."""
    price, src = values.get("price_usd")
    if price is not None:
        try:
            dec = Decimal(str(price))
        except InvalidOperation:
            dec = None
        if isinstance(price, bool) or dec is None:
            p.add("job.price_usd", f"must be a number of US dollars, found {price!r}.", source=src)
        elif kind in ("private", "vendor"):
            p.add(
                "job.price_usd",
                f"a {kind} workteam takes no price per task; remove `price_usd`.",
                source=src,
            )
        elif not any(dec == allowed for allowed in PUBLIC_CROWD_PRICES):
            allowed = ", ".join(str(a) for a in PUBLIC_CROWD_PRICES)
            nearest = min(PUBLIC_CROWD_PRICES, key=lambda a: abs(a - dec))  # type: ignore[operator]
            p.add(
                "job.price_usd",
                f"{price} is not a price the public crowd accepts. Use one of: {allowed} "
                f"(nearest: {nearest}).",
                source=src,
            )
        else:
            out["price_usd"] = next(a for a in PUBLIC_CROWD_PRICES if a == dec)
    elif kind == "public":
        p.add("job.price_usd", "the public crowd needs a price per task, e.g. `price_usd: 0.036`.")

    availability = out.get("task_availability_seconds")
    if kind == "public" and availability is not None and availability > PUBLIC_AVAILABILITY_MAX:
        p.add(
            "job.task_availability_seconds",
            f"{availability} is too long for the public crowd, which allows at most 43200 "
            "(12 hours). Write 43200 or less, or remove the key.",
            source=values.get("task_availability_seconds")[1],
        )


def _check_consensus(values: _JobValues, p: ConfigProblems, out: dict[str, Any]) -> None:
    consensus, src = values.get("consensus")
    if consensus is None:
        return
    if consensus not in CONSENSUS_METHODS:
        p.add(
            "job.consensus",
            f"must be `median` (MARS's per-keypoint median) or `robust` (gtbot's, which "
            f"weighs each click by how believable it is), found {consensus!r}.",
            source=src,
        )
    else:
        out["consensus"] = consensus

"""The `job: adaptive:` section: automatic follow-up rounds (bot/jobs/adaptive.py)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from bot.errors import UsageError
from bot.jobs.adaptive import (
    DEFAULT_MAX_ROUNDS,
    DEFAULT_SELECT,
    DEFAULT_WORKERS_PER_ROUND,
    MAX_ROUNDS,
    MAX_WORKERS_PER_FRAME,
    AdaptivePolicy,
    FrameRule,
)
from bot.project.problems import ConfigProblems, check_known_keys, is_int

ADAPTIVE_KEYS = {"select", "workers_per_round", "max_rounds", "budget_usd"}


def validate_adaptive(
    raw: Any, kind: str | None, first_workers: int, p: ConfigProblems, src: str | None
) -> AdaptivePolicy | None:
    """The policy, or None when the section has any problem (each one reported).

    `kind` is the workforce kind (it decides whether a budget is needed or possible),
    `first_workers` the first round's workers per frame, `src` where the section came from.
    """
    if not isinstance(raw, dict):
        p.add(
            "job.adaptive",
            f"must be a mapping, found {raw!r}. Example: `adaptive: {{select: worst 25%, "
            "workers_per_round: 1, max_rounds: 3, budget_usd: 40}`.",
            source=src,
        )
        return None
    count = len(p.items)
    check_known_keys(raw, ADAPTIVE_KEYS, "job.adaptive", "unknown setting.", p, source=src)
    if kind == "vendor":
        p.add(
            "job.adaptive",
            "a vendor workforce sets its own price, which gtbot cannot see, so it cannot keep "
            "automatic rounds within a budget. Remove `adaptive` and run `relabel <job>` when "
            "you want another round.",
            source=src,
        )
    select = _check_select(raw, p, src)
    numbers = _check_rounds(raw, first_workers, p, src)
    budget = _check_budget(raw, kind, p, src)
    if len(p.items) > count or select is None:
        return None
    return AdaptivePolicy(
        select=select,
        workers_per_round=numbers["workers_per_round"],
        max_rounds=numbers["max_rounds"],
        budget_usd=budget,
    )


def _check_select(raw: dict[str, Any], p: ConfigProblems, src: str | None) -> FrameRule | None:
    """Which frames each follow-up round takes again."""
    try:
        return FrameRule.parse(raw.get("select", DEFAULT_SELECT), "`select`")
    except UsageError as exc:
        p.add("job.adaptive.select", exc.user_message, source=src)
        return None


def _check_rounds(
    raw: dict[str, Any], first_workers: int, p: ConfigProblems, src: str | None
) -> dict[str, int]:
    """Workers per round and rounds, each in range and together within answers per frame."""
    numbers: dict[str, int] = {}
    for key, lo, hi, default in (
        ("workers_per_round", 1, 9, DEFAULT_WORKERS_PER_ROUND),
        ("max_rounds", 2, MAX_ROUNDS, DEFAULT_MAX_ROUNDS),
    ):
        v = raw.get(key, default)
        if not is_int(v) or not lo <= v <= hi:
            p.add(
                f"job.adaptive.{key}",
                f"must be a whole number from {lo} to {hi}, found {v!r}.",
                source=src,
            )
        else:
            numbers[key] = v
    if len(numbers) == 2:
        most = first_workers + (numbers["max_rounds"] - 1) * numbers["workers_per_round"]
        if most > MAX_WORKERS_PER_FRAME:
            p.add(
                "job.adaptive",
                f"a frame could get {most} answers in all ({first_workers} + "
                f"{numbers['max_rounds'] - 1} rounds x {numbers['workers_per_round']}); gtbot "
                f"uses at most {MAX_WORKERS_PER_FRAME} a frame. Lower max_rounds or "
                "workers_per_round.",
                source=src,
            )
    return numbers


def _check_budget(
    raw: dict[str, Any], kind: str | None, p: ConfigProblems, src: str | None
) -> Decimal | None:
    """The cap on worker pay for all rounds: needed on the public crowd, void on a private team."""
    raw_budget = raw.get("budget_usd")
    if raw_budget is None:
        if kind == "public":
            p.add(
                "job.adaptive.budget_usd",
                "automatic rounds on the public crowd spend money without anyone clicking "
                "Launch, so they need a cap: add e.g. `budget_usd: 40` (US dollars of worker pay "
                "for all rounds together, the first included).",
                source=src,
            )
        return None
    try:
        budget: Decimal | None = Decimal(str(raw_budget))
    except InvalidOperation:
        budget = None
    if isinstance(raw_budget, bool) or budget is None or not budget.is_finite() or budget <= 0:
        p.add(
            "job.adaptive.budget_usd",
            f"must be a positive number of US dollars, found {raw_budget!r}.",
            source=src,
        )
    elif kind == "private":
        p.add(
            "job.adaptive.budget_usd",
            "a private team takes no price per task, so there is no worker pay to cap; "
            "rounds are bounded by `max_rounds`. Remove `budget_usd`.",
            source=src,
        )
    elif budget > Decimal(10_000_000):
        p.add("job.adaptive.budget_usd", f"{raw_budget} is not a plausible budget.", source=src)
    else:
        # Whole cents, never above what was written.
        return budget.quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    return None

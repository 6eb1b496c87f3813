"""The adaptive re-labeling policy of a project: what the `job: adaptive:` section says.

A first round asks `workers_per_image` workers about every frame; each later round asks
`workers_per_round` more about the frames whose consensus is least certain (`select`), up to
`max_rounds` rounds in all and, for the public crowd, `budget_usd` of worker pay in all. The
defaults are the ones bench/relabel.py measured best (bench/README.md): one more worker on the
least certain quarter of the frames, in up to three rounds.

This module is only the policy's model and its parsing (the project model and the `relabel`
command share it); bot/jobs/relabel.py plans and launches the rounds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from bot.errors import UsageError

DEFAULT_SELECT = "worst 25%"
DEFAULT_WORKERS_PER_ROUND = 1
DEFAULT_MAX_ROUNDS = 3
MAX_ROUNDS = 5
# One frame's answers over all rounds: what the results reader uses at most per frame.
MAX_WORKERS_PER_FRAME = 32
MAX_SPREAD_PX = 100_000.0
MAX_FRAMES = 100_000

_RULE = re.compile(
    r"^\s*(?P<kind>worst|spread)\s+(?P<value>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>%|px)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FrameRule:
    """Which frames a round asks about: the `worst` N (or N %) by expected error of their
    consensus, or those whose least agreed keypoint has a `spread` of at least N px."""

    kind: str  # worst | spread
    value: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str, where: str = "the frame rule") -> FrameRule:
        """From "worst 25%", "worst 100" or "spread 12" (px); `where` names the setting in
        the message."""
        match = _RULE.match(text) if isinstance(text, str) else None
        if match is None:
            raise UsageError(
                f"{where} is {text!r}; write `worst N` (the N least certain frames), "
                "`worst N%` (that share of them) or `spread PX` (frames with a keypoint whose "
                "workers are PX pixels apart or more), e.g. `worst 25%`."
            )
        kind, value, unit = match["kind"].lower(), float(match["value"]), match["unit"]
        percent = unit == "%"
        if kind == "worst":
            if unit == "px":
                raise UsageError(f"{where}: `worst` takes a number of frames or a %, not px.")
            if percent and not 0 < value <= 100:
                raise UsageError(
                    f"{where}: `worst {match['value']}%` must be above 0 and at most 100 %."
                )
            if not percent and (value != int(value) or not 1 <= value <= MAX_FRAMES):
                raise UsageError(
                    f"{where}: `worst {match['value']}` must be a whole number of frames from 1 "
                    f"to {MAX_FRAMES:,}."
                )
        else:
            if percent:
                raise UsageError(f"{where}: `spread` takes pixels, not a %.")
            if not 0 < value <= MAX_SPREAD_PX:
                raise UsageError(f"{where}: `spread {match['value']}` must be above 0 px.")
        return cls(kind, value, percent)

    def text(self) -> str:
        if self.kind == "spread":
            return f"spread {self.value:g} px"
        return f"worst {self.value:g}{'%' if self.percent else ''}"

    def describe(self) -> str:
        """For people: what this rule picks."""
        if self.kind == "spread":
            return f"frames with a keypoint whose workers are {self.value:g} px apart or more"
        if self.percent:
            return f"the least certain {self.value:g} % of frames"
        return f"the {int(self.value)} least certain frames"

    def count(self, frames: int) -> int | None:
        """How many frames `worst` asks for out of `frames`; None for `spread`."""
        if self.kind == "spread":
            return None
        if self.percent:
            return max(1, math.ceil(frames * self.value / 100.0)) if frames else 0
        return min(int(self.value), frames)


@dataclass(frozen=True)
class AdaptivePolicy:
    """The `job: adaptive:` section, validated (bot/project/adaptive_settings.py)."""

    select: FrameRule
    workers_per_round: int = DEFAULT_WORKERS_PER_ROUND
    max_rounds: int = DEFAULT_MAX_ROUNDS
    budget_usd: Decimal | None = None

    def as_dict(self) -> dict[str, object]:
        """What a launch stores: the policy as the person who launched saw it."""
        return {
            "select": self.select.text(),
            "workers_per_round": self.workers_per_round,
            "max_rounds": self.max_rounds,
            "budget_usd": None if self.budget_usd is None else str(self.budget_usd),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AdaptivePolicy:
        budget = data.get("budget_usd")
        return cls(
            select=FrameRule.parse(str(data["select"])),
            workers_per_round=int(str(data["workers_per_round"])),
            max_rounds=int(str(data["max_rounds"])),
            budget_usd=None if budget is None else Decimal(str(budget)),
        )

    def text(self) -> str:
        """One line for plan cards and messages."""
        budget = "" if self.budget_usd is None else f", at most ${self.budget_usd} in all"
        return (
            f"up to {self.max_rounds} rounds: then {self.workers_per_round} more worker"
            f"{'s' if self.workers_per_round > 1 else ''} on {self.select.describe()} each "
            f"round{budget}"
        )

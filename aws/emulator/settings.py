"""Knobs of the Ground Truth emulator, changeable while it runs (in-process or over HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class EmulatorSettings:
    """Live settings: the server and the workforce read them on every call and every tick.

    rate: human tasks (one worker answering one object) per second across the whole workforce.
    throttle_fraction / error_fraction: share of SageMaker calls answered ThrottlingException or
    HTTP 500 InternalFailure, to prove the bot's retries and error paths.
    delay_seconds: sleep before answering each SageMaker call, to prove the Slack ack stays fast
    when AWS is slow.
    seed: makes workers, their answers and injected faults repeatable.
    initializing_seconds / stopping_seconds: how long a job lingers in Initializing and Stopping,
    so watchers can observe those states (the real service takes minutes).
    noise_px, swap_fraction, miss_fraction, outlier_fraction: the average worker's pixel noise and
    how often a worker swaps a left/right pair, skips a keypoint, or clicks somewhere wrong.
    """

    rate: float = 5.0
    throttle_fraction: float = 0.0
    error_fraction: float = 0.0
    delay_seconds: float = 0.0
    seed: int = 0
    initializing_seconds: float = 0.0
    stopping_seconds: float = 0.2
    noise_px: float = 3.0
    swap_fraction: float = 0.05
    miss_fraction: float = 0.03
    outlier_fraction: float = 0.01

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` all-or-nothing, so a typo from another process changes nothing."""
        fields = {field.name: field for field in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(fields))}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"setting {name!r} must be a number, got {value!r}")
            if name == "seed":
                if not isinstance(value, int):
                    raise ValueError("setting 'seed' must be an integer")
                checked[name] = value
                continue
            number = float(value)
            if number < 0:
                raise ValueError(f"setting {name!r} must not be negative, got {value!r}")
            if name.endswith("_fraction") and number > 1:
                raise ValueError(f"setting {name!r} is a fraction between 0 and 1, got {value!r}")
            checked[name] = number
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

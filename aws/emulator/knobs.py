"""Knobs of the Ground Truth emulator, changeable while it runs (in-process or over HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# How noisy the emulated workers are, by workforce. "public-crowd" is calibrated on real
# public-crowd MARS jobs (shared/DESIGN.md: on 1250 px wide frames with 6 workers, a click's
# median distance to the per-keypoint median was 16-22 px, about 1.5 % of the width; the 90th
# percentile 70-80 px; 13-17 % of clicks over 60 px away; about 20 % of left/right pairs
# swapped); tests/test_emulator.py checks the emulated figures against those ranges. The figures
# are for a mix of frames as bot/synthetic.py draws them, a quarter with huddled animals: the
# rates below are those of an easy frame, and hard frames multiply them (`difficulty`).
# "private-team" is a trained lab team: a quarter of the scatter, few swaps or wild clicks.
PROFILES: dict[str, dict[str, float]] = {
    "public-crowd": {
        "noise_fraction": 0.0098,
        "swap_fraction": 0.085,
        "miss_fraction": 0.03,
        "outlier_fraction": 0.115,
    },
    "private-team": {
        "noise_fraction": 0.003,
        "swap_fraction": 0.03,
        "miss_fraction": 0.01,
        "outlier_fraction": 0.005,
    },
}
DEFAULT_PROFILE = "public-crowd"


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
    profile: "public-crowd" (the default) or "private-team"; setting it sets the four knobs
    below to that workforce's figures (PROFILES).
    noise_fraction: the average worker's click scatter (standard deviation per axis) as a share
    of the frame's width; noise_px, when above 0, replaces it with a fixed number of pixels.
    swap_fraction, miss_fraction, outlier_fraction: how often a worker swaps a left/right pair,
    skips a keypoint, or clicks somewhere wrong (4.5-10 % of the width away).
    difficulty: how much harder hard frames are (synthetic frames say which keypoints another
    animal hides and whether the animals are huddled; workforce.py has the multipliers): 1 as
    calibrated, 0 for frames all alike, more for harder ones.
    identity_fraction: in a huddled frame, how often a worker takes one animal for the other
    (at difficulty 1, for a worker of average carelessness).
    """

    rate: float = 5.0
    throttle_fraction: float = 0.0
    error_fraction: float = 0.0
    delay_seconds: float = 0.0
    seed: int = 0
    initializing_seconds: float = 0.0
    stopping_seconds: float = 0.2
    profile: str = DEFAULT_PROFILE
    noise_fraction: float = PROFILES[DEFAULT_PROFILE]["noise_fraction"]
    noise_px: float = 0.0
    swap_fraction: float = PROFILES[DEFAULT_PROFILE]["swap_fraction"]
    miss_fraction: float = PROFILES[DEFAULT_PROFILE]["miss_fraction"]
    outlier_fraction: float = PROFILES[DEFAULT_PROFILE]["outlier_fraction"]
    difficulty: float = 1.0
    identity_fraction: float = 0.04

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; known: {', '.join(PROFILES)}")

    @classmethod
    def for_profile(cls, profile: str, **changes: Any) -> EmulatorSettings:
        """Settings with one workforce's noise; `changes` win over the profile's figures."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        return cls(**({"profile": profile} | PROFILES[profile] | changes))

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` all-or-nothing, so a typo from another process changes nothing.

        A `profile` comes first, so `{"profile": "private-team", "swap_fraction": 0.1}` means
        the private team's figures with more swaps.
        """
        fields = {field.name: field for field in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(fields))}")
            if name == "profile":
                if value not in PROFILES:
                    raise ValueError(
                        f"setting 'profile' must be one of {', '.join(PROFILES)}, got {value!r}"
                    )
                checked = {"profile": value} | PROFILES[value] | checked
                continue
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

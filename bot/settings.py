"""Deployment settings: environment variables first, then an optional lab-wide `gtbot.yml`.

Secrets live only in the environment; `gtbot.yml` holds lab-wide job defaults (role, workteam)
so that each project's `project-config.yml` can stay short.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import yamlio
from bot.errors import ConfigError


def _split_ids(value: str | None) -> frozenset[str]:
    return frozenset(
        part.strip() for part in (value or "").replace(";", ",").split(",") if part.strip()
    )


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its surroundings, read once at start."""

    projects_dir: Path
    database_url: str
    lab_config_path: Path | None
    lab_job_defaults: Mapping[str, Any] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()
    submitters: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    poll_seconds: int = 60
    # The watcher lease; None: lease_default(poll_seconds). A replica that dies is replaced as
    # the watcher within lease + poll seconds.
    lease_seconds: int | None = None
    link_hours: int = 24
    slack_api_url: str | None = None
    bind_address: str = "0.0.0.0"
    # Long commands (upload, frames, submit, results, consolidate, ...) running at once; more
    # wait their turn, told how many are ahead.
    long_jobs: int = 2
    # A running job whose counts have not moved for this long is "stalled": told once.
    stall_hours: float = 6.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        projects_dir = Path(env.get("GTBOT_PROJECTS_DIR", "./projects")).expanduser()
        lab_path_text = env.get("GTBOT_CONFIG")
        lab_path = Path(lab_path_text).expanduser() if lab_path_text else Path("gtbot.yml")
        defaults: dict[str, Any] = {}
        if lab_path.exists():
            defaults = dict(load_lab_config(lab_path).get("job") or {})
        elif lab_path_text:
            raise ConfigError(
                f"GTBOT_CONFIG points at {lab_path}, which does not exist. "
                "Create it or unset GTBOT_CONFIG."
            )
        # The environment wins over gtbot.yml: a deployment can override the lab file.
        if env.get("GTBOT_ROLE_ARN"):
            defaults["role_arn"] = env["GTBOT_ROLE_ARN"]
        if env.get("GTBOT_WORKTEAM_ARN"):
            defaults["workteam_arn"] = env["GTBOT_WORKTEAM_ARN"]
        poll_seconds = _positive_int(env, "GTBOT_POLL_SECONDS", 60)
        return cls(
            projects_dir=projects_dir,
            database_url=env.get("GTBOT_DATABASE_URL", "sqlite:///gtbot.db"),
            lab_config_path=lab_path if lab_path.exists() else None,
            lab_job_defaults=defaults,
            admins=_split_ids(env.get("GTBOT_ADMINS")),
            submitters=_split_ids(env.get("GTBOT_SUBMITTERS")),
            channels=_split_ids(env.get("GTBOT_CHANNELS")),
            poll_seconds=poll_seconds,
            lease_seconds=_lease_seconds(env, poll_seconds),
            link_hours=_positive_int(env, "GTBOT_LINK_HOURS", 24, most=168),
            slack_api_url=env.get("SLACK_API_URL") or None,
            bind_address=env.get("GTBOT_BIND", "0.0.0.0"),
            long_jobs=_positive_int(env, "GTBOT_LONG_JOBS", 2, most=16),
            stall_hours=_positive_hours(env, "GTBOT_STALL_HOURS", 6.0),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int, most: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number. Write e.g. {name}={default}."
        ) from None
    if value < 1:
        raise ConfigError(f"{name}={raw} must be at least 1. Write e.g. {name}={default}.")
    if most is not None and value > most:
        # S3 refuses presigned links that live longer than 7 days.
        raise ConfigError(f"{name}={raw} is more than {most}. Write e.g. {name}={default}.")
    return value


def _positive_hours(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    # A stall is worth telling after minutes at the least; a year is as good as never.
    if not 0.01 <= value <= 8760:
        raise ConfigError(
            f"{name}={raw!r} is not a number of hours from 0.01 to 8760. Write e.g. "
            f"{name}={default:g} (fractions allowed: 0.5 is half an hour)."
        )
    return value


def takeover_bound(settings: Settings) -> tuple[int, int]:
    """(lease, bound): the watcher lease in seconds, and how long after its holder dies another
    replica has taken it at the latest. The holder last renewed it no later than its death, so
    it lapses within `lease` seconds of that; every other replica tries to take it at each of
    its own ticks, one poll apart."""
    lease = settings.lease_seconds or lease_default(settings.poll_seconds)
    return lease, lease + settings.poll_seconds


def lease_default(poll_seconds: int) -> int:
    """Three polls, and at least 30 s: the holder renews the lease at every tick (and during a
    long one), so a lease of three polls survives a late tick or two without changing hands."""
    return max(30, 3 * poll_seconds)


def _lease_seconds(env: Mapping[str, str], poll_seconds: int) -> int:
    default = lease_default(poll_seconds)
    value = _positive_int(env, "GTBOT_LEASE_SECONDS", default)
    if value < 2 * poll_seconds:
        raise ConfigError(
            f"GTBOT_LEASE_SECONDS={value} is less than two polls (GTBOT_POLL_SECONDS="
            f"{poll_seconds}): the watcher renews its lease once a poll, so it would lapse "
            f"between renewals. Write e.g. GTBOT_LEASE_SECONDS={default}."
        )
    return value


def load_lab_config(path: Path) -> dict[str, Any]:
    """Read `gtbot.yml`: only a `job:` section of lab-wide defaults is understood."""
    data = yamlio.load_file(path)[1] or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a `job:` section.")
    unknown = sorted(set(data) - {"job"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}. gtbot.yml holds only a `job:` section "
            "with lab-wide defaults such as role_arn and workteam_arn."
        )
    if data.get("job") is not None and not isinstance(data["job"], dict):
        raise ConfigError(f"{path}: `job:` must be a mapping, e.g. `job: {{role_arn: arn:...}}`.")
    return data

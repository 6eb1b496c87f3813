"""The watcher lease: its length and the takeover bound follow the poll interval (or
GTBOT_LEASE_SECONDS), and a standby replica takes over within that bound once the holder stops,
on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from bot.context import Context
from bot.errors import ConfigError
from bot.jobs.watcher import Watcher
from bot.settings import Settings, takeover_bound
from bot.state import Store


@pytest.mark.parametrize(
    ("env", "lease", "bound"),
    [
        ({}, 180, 240),  # the default poll of 60 s: three polls, taken over within four
        ({"GTBOT_POLL_SECONDS": "20"}, 60, 80),
        ({"GTBOT_POLL_SECONDS": "1"}, 30, 31),  # never under 30 s unless asked
        ({"GTBOT_POLL_SECONDS": "1", "GTBOT_LEASE_SECONDS": "3"}, 3, 4),
        ({"GTBOT_LEASE_SECONDS": "600"}, 600, 660),
    ],
)
def test_the_takeover_bound_is_the_lease_plus_a_poll(
    env: dict[str, str], lease: int, bound: int
) -> None:
    assert takeover_bound(Settings.from_env(env)) == (lease, bound)


def test_a_lease_shorter_than_two_polls_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"GTBOT_LEASE_SECONDS=90 is less than two polls") as e:
        Settings.from_env({"GTBOT_LEASE_SECONDS": "90"})
    assert "GTBOT_LEASE_SECONDS=180" in e.value.user_message  # the fix for the default poll
    with pytest.raises(ConfigError, match="GTBOT_LEASE_SECONDS='soon' is not a whole number"):
        Settings.from_env({"GTBOT_LEASE_SECONDS": "soon"})


def test_a_standby_takes_over_within_the_bound_once_the_holder_stops(db_url: str) -> None:
    """Each replica ticks every poll; the holder stops ticking (killed) right after renewing.
    The standby holds the lease no later than lease + poll seconds after that."""
    poll = 0.25
    env = {"GTBOT_DATABASE_URL": db_url, "GTBOT_POLL_SECONDS": "1", "GTBOT_LEASE_SECONDS": "2"}
    settings = Settings.from_env(env)
    store = Store(db_url)
    ctx = Context(settings=settings, store=store)
    holder = Watcher(ctx, store, notifier=None, holder="a:3000", lease_seconds=1.0)  # type: ignore[arg-type]
    standby = Watcher(ctx, store, notifier=None, holder="b:3000")  # type: ignore[arg-type]
    assert standby.lease_seconds == 2  # from the settings
    assert holder.tick().held_lease and holder.holds_lease()
    assert not standby.tick().held_lease and not standby.holds_lease()
    stopped = time.monotonic()
    while not standby.tick().held_lease:
        assert time.monotonic() - stopped < 1.0 + poll + 0.5, "no takeover within the bound"
        time.sleep(poll)
    took = time.monotonic() - stopped
    assert took > 1.0 - poll, f"taken after {took:.2f} s, before the lease lapsed"
    assert standby.holds_lease() and not holder.holds_lease()
    assert not holder.tick().held_lease  # back from the dead, it stands by

"""The database is the truth: compare-and-set plans, one completion, leases.

Each test runs on SQLite and, when GTBOT_TEST_POSTGRES_URL is set, on PostgreSQL (`db_url`);
schema upgrades are in test_schema_upgrades.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.errors import ConfigError
from bot.settings import Settings
from bot.state import ClaimLost, Store, announcements, utcnow


def _store(url: str) -> Store:
    return Store(url)


def test_announcement_claim_is_exclusive_and_a_dead_claim_goes_stale(db_url: str) -> None:
    store = _store(db_url)
    where = {"channel": "C1", "thread_ts": "1.0"}
    first = store.claim_announcement("job-1", "a", 30, **where)
    assert first is not None and first.steps is None and first.channel == "C1"
    assert store.claim_announcement("job-1", "b", 30, **where) is None
    assert store.claim_announcement("job-1", "a", 30, **where) is not None  # a restart of "a"
    store.save_steps("job-1", "a", [{"kind": "text", "state": "attempted"}])
    # "a" died mid-step: after the lease its claim, and the steps it recorded, are taken over.
    with store.engine.begin() as conn:
        conn.execute(sa.update(announcements).values(claimed_at=utcnow() - timedelta(seconds=31)))
    taken = store.claim_announcement("job-1", "b", 30, channel="C2", thread_ts=None)
    assert taken is not None and taken.steps == [{"kind": "text", "state": "attempted"}]
    assert taken.channel == "C1"  # the destination stays the one the first claim fixed
    with pytest.raises(ClaimLost):  # "a" came back: it may no longer write
        store.save_steps("job-1", "a", [])
    store.add_watch(job_name="job-1", region="us-east-2", channel="C1")
    store.finish_announcement("job-1", "b")
    assert store.claim_announcement("job-1", "c", 0, **where) is None
    assert store.active_watches() == []
    # The record outlives the watch: watching the job again finds it done.
    store.remove_watch("job-1")
    announcement = store.get_announcement("job-1")
    assert announcement is not None and announcement.state == "done"


def test_a_released_claim_is_taken_up_at_once(db_url: str) -> None:
    store = _store(db_url)
    assert store.claim_announcement("job-1", "a", 30, channel="C1", thread_ts=None)
    store.release_announcement("job-1", "a")
    assert store.claim_announcement("job-1", "b", 30, channel="C1", thread_ts=None)


def test_plan_launch_is_a_compare_and_set(db_url: str) -> None:
    store = _store(db_url)
    store.add_plan(
        plan_id="p1",
        project="demo",
        region="us-east-2",
        job_name="demo-1",
        requested_by="U1",
        channel="C1",
        summary={},
        request={"LabelingJobName": "demo-1"},
    )
    assert store.transition_plan("p1", ("pending",), "launching", by="U1")
    assert not store.transition_plan("p1", ("pending",), "launching", by="U2")
    assert not store.transition_plan("p1", ("pending",), "cancelled", by="U1")
    plan = store.get_plan("p1")
    assert plan is not None and plan.state == "launching" and plan.decided_by == "U1"


def test_lease_has_one_holder_until_it_lapses(db_url: str) -> None:
    store = _store(db_url)
    assert store.acquire_lease("watcher", "a", 30)
    assert store.acquire_lease("watcher", "a", 30)  # renewal
    assert not store.acquire_lease("watcher", "b", 30)
    assert store.lease_holder("watcher") == "a"
    assert store.acquire_lease("watcher", "a", -1)  # expire it
    assert store.acquire_lease("watcher", "b", 30)
    store.release_lease("watcher", "b")
    assert store.lease_holder("watcher") is None


def test_bad_database_url_and_link_hours_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GTBOT_DATABASE_URL"):
        Store("not a url")
    with pytest.raises(ConfigError, match="GTBOT_LINK_HOURS=200 is more than 168"):
        Settings.from_env({"GTBOT_LINK_HOURS": "200"})
    assert Settings.from_env({"GTBOT_LINK_HOURS": "168"}).link_hours == 168

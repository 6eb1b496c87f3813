"""The database is the truth: compare-and-set plans, one completion, leases, schema upgrades."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.errors import ConfigError
from bot.settings import Settings
from bot.state import ClaimLost, Store, announcements, utcnow

# SQLite always; PostgreSQL too when GTBOT_TEST_POSTGRES_URL names an empty database to use.
BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("GTBOT_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gtbot.db'}"
        return
    url = os.environ["GTBOT_TEST_POSTGRES_URL"]
    yield url
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("gtbot_plans", "gtbot_watches", "gtbot_leases", "gtbot_schema_version"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


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


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE gtbot_schema_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"
            )
        )
        conn.execute(sa.text("INSERT INTO gtbot_schema_version VALUES (1, 1)"))
        conn.execute(
            sa.text(
                "CREATE TABLE gtbot_watches (job_name VARCHAR(63) PRIMARY KEY, region VARCHAR(32) NOT NULL,"
                " project VARCHAR(64), channel VARCHAR(64) NOT NULL, message_ts VARCHAR(32),"
                " thread_ts VARCHAR(32), owner VARCHAR(64), job_created TIMESTAMP,"
                " last_status VARCHAR(32), last_counters TEXT, completion_announced BOOLEAN NOT NULL,"
                " parked BOOLEAN NOT NULL, park_reason TEXT, created_at TIMESTAMP NOT NULL,"
                " updated_at TIMESTAMP NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO gtbot_watches VALUES ('old-job', 'us-east-2', NULL, 'C1', '1.0', '1.0',"
                " NULL, NULL, 'InProgress', NULL, 0, 0, NULL, '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
            )
        )
    store = Store(f"sqlite:///{path}")
    assert [w.job_name for w in store.active_watches()] == ["old-job"]
    assert store.claim_announcement("old-job", "a", 30, channel="C1", thread_ts="1.0")
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM gtbot_schema_version")).scalar() == 3


def test_a_version_2_database_keeps_what_it_announced(tmp_path: Path) -> None:
    """Version 3 keeps announcements apart from watches; one announced under version 2 stays
    announced, and a pending plan of version 2 (no manifest digest) is read as unpinned."""
    url = f"sqlite:///{tmp_path / 'v2.db'}"
    store = Store(url)
    store.add_watch(job_name="told", region="us-east-2", channel="C1", thread_ts="1.0")
    store.add_watch(job_name="running", region="us-east-2", channel="C1")
    store.update_watch("told", completion_announced=True)
    with store.engine.begin() as conn:  # back to what gtbot wrote at version 2
        conn.execute(sa.text("DROP TABLE gtbot_announcements"))
        conn.execute(sa.text("ALTER TABLE gtbot_plans DROP COLUMN manifest_sha256"))
        conn.execute(sa.text("UPDATE gtbot_schema_version SET version = 2"))
        conn.execute(
            sa.text(
                "INSERT INTO gtbot_plans (id, project, region, job_name, requested_by, channel,"
                " state, summary, request, created_at, updated_at) VALUES ('p', 'demo',"
                " 'us-east-2', 'demo-1', 'U1', 'C1', 'pending', '{}', '{}',"
                " '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
            )
        )
    store.engine.dispose()
    upgraded = Store(url)
    told = upgraded.get_announcement("told")
    assert told is not None and told.state == "done" and told.thread_ts == "1.0"
    assert upgraded.get_announcement("running") is None
    plan = upgraded.get_plan("p")
    assert plan is not None and plan.manifest_sha256 is None


def test_a_database_from_a_newer_gtbot_is_refused(db_url: str) -> None:
    store = _store(db_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE gtbot_schema_version SET version = 99"))
    with pytest.raises(ConfigError, match="newer gtbot"):
        _store(db_url)


def test_bad_database_url_and_link_hours_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GTBOT_DATABASE_URL"):
        Store("not a url")
    with pytest.raises(ConfigError, match="GTBOT_LINK_HOURS=200 is more than 168"):
        Settings.from_env({"GTBOT_LINK_HOURS": "200"})
    assert Settings.from_env({"GTBOT_LINK_HOURS": "168"}).link_hours == 168

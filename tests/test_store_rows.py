"""The store's rows as written and read back, field by field, and the queries that pick them:
what every other part of gtbot trusts the database to say. SQLite and, in CI, PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from db_support import needs_postgres, postgres_database

from bot.errors import ConfigError
from bot.state import (
    ChainRow,
    ClaimLost,
    Store,
    announcements,
    leases,
    plans,
    schema_version,
    utcnow,
    watches,
)


def _add_plan(store: Store, plan_id: str, job: str, **extra: object) -> None:
    store.add_plan(
        plan_id=plan_id,
        project="mice",
        region="us-east-2",
        job_name=job,
        requested_by="U1",
        channel="C1",
        summary={"images": 4, "cost": "$1"},
        request={"LabelingJobName": job},
        **extra,  # type: ignore[arg-type]
    )


def test_plans_read_back_as_written(db_url: str) -> None:
    store = Store(db_url)
    before = utcnow()
    _add_plan(store, "p1", "mice-1", manifest_sha256="ab" * 32)
    _add_plan(store, "p3", "mice-1-r3", parent="mice-1", round=3, thread_ts="9.1")
    _add_plan(store, "p2", "mice-1-r2", parent="mice-1", round=2)
    store.set_plan_message("p1", "111.222")
    plan = store.get_plan("p1")
    assert plan is not None
    assert (plan.id, plan.project, plan.region, plan.job_name) == (
        "p1",
        "mice",
        "us-east-2",
        "mice-1",
    )
    assert (plan.requested_by, plan.channel, plan.message_ts, plan.state) == (
        "U1",
        "C1",
        "111.222",
        "pending",
    )
    assert plan.summary == {"images": 4, "cost": "$1"}
    assert plan.request == {"LabelingJobName": "mice-1"}
    assert (plan.decided_by, plan.error, plan.manifest_sha256) == (None, None, "ab" * 32)
    assert (plan.parent, plan.round, plan.thread_ts) == (None, None, None)
    assert before <= plan.created_at <= utcnow() and plan.created_at.tzinfo is not None
    assert plan.updated_at.tzinfo is not None
    third = store.get_plan("p3")
    assert third is not None and (third.parent, third.round, third.thread_ts) == (
        "mice-1",
        3,
        "9.1",
    )
    assert store.get_plan("nope") is None
    assert store.plan_for_job("mice-1-r2").id == "p2"  # type: ignore[union-attr]
    assert store.plan_for_job("mice-2") is None
    assert [p.id for p in store.follow_up_plans("mice-1")] == ["p2", "p3"]
    assert store.follow_up_plans("mice-1-r2") == []
    assert store.transition_plan("p2", ("pending",), "failed", by="U2", error="no")
    failed = store.get_plan("p2")
    assert failed is not None and (failed.state, failed.decided_by, failed.error) == (
        "failed",
        "U2",
        "no",
    )
    assert failed.updated_at >= failed.created_at
    assert sorted(p.id for p in store.plans_in_state("pending")) == ["p1", "p3"]
    assert [p.id for p in store.plans_in_state("failed")] == ["p2"]


def test_chains_start_once_and_end_once(db_url: str) -> None:
    store = Store(db_url)
    fields = {
        "root": "mice-1",
        "project": "mice",
        "region": "us-east-2",
        "policy": {"select": "worst 25%", "max_rounds": 3},
        "launched_by": "U1",
        "channel": "C1",
        "thread_ts": "1.2",
    }
    assert store.add_chain(**fields)  # type: ignore[arg-type]
    assert not store.add_chain(**{**fields, "launched_by": "U2"})  # type: ignore[arg-type]
    assert store.add_chain(**{**fields, "root": "rats-1", "thread_ts": None})  # type: ignore[arg-type]
    assert store.get_chain("mice-1") == ChainRow(
        **fields,
        state="active",
        reason=None,
        stopped_by=None,  # type: ignore[arg-type]
    )
    assert store.get_chain("nope") is None
    assert sorted(c.root for c in store.active_chains()) == ["mice-1", "rats-1"]
    assert store.end_chain("mice-1", "stopped", "asked to", by="U3")
    assert not store.end_chain("mice-1", "done", "again")
    ended = store.get_chain("mice-1")
    assert ended is not None
    assert (ended.state, ended.reason, ended.stopped_by) == ("stopped", "asked to", "U3")
    assert [c.root for c in store.active_chains()] == ["rats-1"]


def test_watches_read_back_and_a_second_watch_moves_the_card(db_url: str) -> None:
    store = Store(db_url)
    created = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert store.add_watch(
        job_name="mice-1",
        region="us-east-2",
        channel="C1",
        project="mice",
        message_ts="1.1",
        thread_ts="1.0",
        owner="U1",
        job_created=created,
    )
    watch = store.get_watch("mice-1")
    assert watch is not None
    assert (watch.job_name, watch.region, watch.project, watch.channel) == (
        "mice-1",
        "us-east-2",
        "mice",
        "C1",
    )
    assert (watch.message_ts, watch.thread_ts, watch.owner, watch.job_created) == (
        "1.1",
        "1.0",
        "U1",
        created,
    )
    assert (watch.last_status, watch.last_counters, watch.park_reason) == (None, None, None)
    assert (watch.completion_announced, watch.parked, watch.dm_only) == (False, False, False)
    assert (watch.progress_at, watch.stall_told_at) == (None, None)
    assert watch.created_at.tzinfo is not None
    store.update_watch(
        "mice-1",
        last_status="InProgress",
        last_counters={"done": 3, "total": 9},
        parked=True,
        park_reason="gone",
        dm_only=True,
    )
    changed = store.get_watch("mice-1")
    assert changed is not None and changed.last_counters == {"done": 3, "total": 9}
    assert (changed.last_status, changed.parked, changed.park_reason, changed.dm_only) == (
        "InProgress",
        True,
        "gone",
        True,
    )
    assert store.active_watches() == [] and [w.job_name for w in store.iter_all_watches()] == [
        "mice-1"
    ]
    # Watching it again (elsewhere) moves the card and starts over; who and what stay.
    assert not store.add_watch(
        job_name="mice-1", region="eu-west-1", channel="C2", message_ts="2.1", owner="U9"
    )
    moved = store.get_watch("mice-1")
    assert moved is not None
    assert (moved.channel, moved.message_ts, moved.thread_ts) == ("C2", "2.1", None)
    assert (moved.parked, moved.park_reason, moved.dm_only) == (False, None, False)
    assert (moved.last_status, moved.last_counters) == (None, None)
    assert (moved.region, moved.owner, moved.project, moved.job_created) == (
        "us-east-2",
        "U1",
        "mice",
        created,
    )
    assert [w.job_name for w in store.active_watches()] == ["mice-1"]
    store.update_watch("mice-1", completion_announced=True)
    assert store.active_watches() == []
    assert store.remove_watch("mice-1") and not store.remove_watch("mice-1")
    assert store.get_watch("mice-1") is None


def test_subscribers_in_order_once_and_a_stall_told_once(db_url: str) -> None:
    store = Store(db_url)
    store.add_watch(job_name="mice-1", region="us-east-2", channel="C1")
    for user in ("U2", "U1", "U2"):
        store.add_subscriber("mice-1", user)
    store.add_subscriber("rats-1", "U3")
    assert store.subscribers("mice-1") == ["U2", "U1"]
    assert store.subscribers("nope") == []
    assert store.claim_stall("mice-1") and not store.claim_stall("mice-1")
    told = store.get_watch("mice-1")
    assert told is not None and told.stall_told_at is not None
    assert told.stall_told_at.tzinfo is not None
    store.update_watch("mice-1", stall_told_at=None, progress_at=utcnow())  # counts moved
    assert store.claim_stall("mice-1")
    assert not store.claim_stall("nope")


def test_a_lease_lapses_and_only_its_holder_releases_it(db_url: str) -> None:
    store = Store(db_url)
    assert store.lease_holder("watcher") is None
    assert store.acquire_lease("watcher", "a", 60)
    assert store.acquire_lease("watcher", "a", 60)  # renewed
    assert not store.acquire_lease("watcher", "b", 60)
    store.release_lease("watcher", "b")  # not b's to release
    assert store.lease_holder("watcher") == "a"
    with store.engine.begin() as conn:
        conn.execute(sa.update(leases).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert store.lease_holder("watcher") is None
    assert store.acquire_lease("watcher", "b", 60) and store.lease_holder("watcher") == "b"
    store.release_lease("watcher", "b")
    assert store.lease_holder("watcher") is None and store.acquire_lease("watcher", "c", 60)
    assert store.acquire_lease("other", "a", 60)  # leases are per name


def test_each_write_of_a_claim_renews_it(db_url: str) -> None:
    """A holder that keeps writing (steps, heartbeats) is alive: its claim must not go stale
    and be taken over while it works, however long ago it first claimed."""
    store = Store(db_url)
    where = {"channel": "C1", "thread_ts": None}

    def age(seconds: int) -> None:
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(announcements).values(claimed_at=utcnow() - timedelta(seconds=seconds))
            )

    assert store.claim_announcement("mice-1", "a", 30, **where) is not None
    for write in (
        lambda: store.renew_announcement("mice-1", "a"),
        lambda: store.save_steps("mice-1", "a", [{"kind": "text", "state": "done"}]),
    ):
        age(31)
        write()
        assert store.claim_announcement("mice-1", "b", 30, **where) is None
    age(31)  # no write for longer than the lease: taken over
    taken = store.claim_announcement("mice-1", "b", 30, **where)
    assert taken is not None and taken.claimed_by == "b"
    assert taken.steps == [{"kind": "text", "state": "done"}]
    store.add_watch(job_name="mice-1", region="us-east-2", channel="C1")
    store.finish_announcement("mice-1", "b")
    done = store.get_announcement("mice-1")
    assert done is not None and (done.state, done.claimed_by) == ("done", None)
    assert store.get_watch("mice-1").completion_announced  # type: ignore[union-attr]


def test_a_health_check_write_waits_its_timeout_then_gives_up(tmp_path: Path) -> None:
    """check_writable is what /healthz asks: it waits for another writer up to its timeout,
    fails after it, and leaves the store's own writes their usual patience."""
    path = tmp_path / "gtbot.db"
    store = Store(f"sqlite:///{path}")
    store.check_writable(0.2)

    def hold(seconds: float) -> threading.Thread:
        other = sqlite3.connect(path, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        held = threading.Event()

        def release() -> None:
            held.set()
            time.sleep(seconds)
            other.rollback()
            other.close()

        thread = threading.Thread(target=release)
        thread.start()
        held.wait()
        return thread

    thread = hold(0.5)
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        store.check_writable(0.1)
    assert time.monotonic() - started < 0.45  # gave up before the other writer finished
    store.check_writable(3.0)  # waited for it
    assert time.monotonic() - started >= 0.45
    thread.join()
    store.check_writable(0.1)  # its short patience is its own, not the connection's after it
    thread = hold(0.5)
    assert store.add_watch(job_name="mice-1", region="us-east-2", channel="C1")  # waits
    thread.join()


@needs_postgres
def test_a_postgres_health_check_waits_its_timeout_then_gives_up() -> None:
    """On PostgreSQL another writer holds the row the health check writes: the check gives up
    after its own timeout, and the pooled connection keeps no timeout afterwards."""
    with postgres_database() as url:
        store = Store(url)
        store.check_writable(0.2)
        other = sa.create_engine(url)
        try:
            with other.connect() as conn:
                conn.execute(
                    sa.update(schema_version)
                    .where(schema_version.c.id == 1)
                    .values(version=schema_version.c.version)
                )  # the row is locked until this transaction ends
                started = time.monotonic()
                with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                    store.check_writable(0.1)
                assert time.monotonic() - started < 0.45
                conn.rollback()
            store.check_writable(0.1)
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
        finally:
            other.dispose()
            store.engine.dispose()


def _write_marker(store: Store) -> object:
    """What changes when someone commits a write to the health check's row."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            return conn.exec_driver_sql("PRAGMA data_version").scalar()
        return conn.execute(
            sa.select(sa.column("xmin")).select_from(schema_version).where(schema_version.c.id == 1)
        ).scalar()


def test_a_health_check_really_writes(db_url: str) -> None:
    """A write that changes no row would pass on a full disk: the check must commit one."""
    store = Store(db_url)
    watcher = Store(db_url)  # SQLite's data_version moves for another connection's commits
    before = _write_marker(watcher)
    with store.engine.connect() as conn:
        version = conn.execute(sa.select(schema_version.c.version)).scalar()
    store.check_writable(0.5)
    assert _write_marker(watcher) != before
    with store.engine.connect() as conn:  # and leaves the schema's version as it was
        assert conn.execute(sa.select(schema_version.c.version)).scalar() == version


def test_a_read_only_database_fails_the_health_check(tmp_path: Path) -> None:
    path = tmp_path / "gtbot.db"
    Store(f"sqlite:///{path}")
    read_only = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        read_only.check_writable(0.2)


@needs_postgres
def test_two_replicas_inserting_the_first_lease_row_at_once_get_one_holder() -> None:
    """PostgreSQL: an UPDATE that finds no row locks nothing, so both replicas can find no
    lease and insert. The second insert fails on the key; that replica must not hold it."""
    with postgres_database() as url:
        mine, theirs = Store(url), Store(url)
        raced: list[bool] = []

        @sa.event.listens_for(mine.engine, "before_cursor_execute")
        def _the_other_inserts_first(*args: object) -> None:
            statement = str(args[2])
            if statement.startswith("INSERT INTO gtbot_leases") and not raced:
                raced.append(theirs.acquire_lease("watcher", "b", 60))

        try:
            assert mine.acquire_lease("watcher", "a", 60) is False
            assert raced == [True] and mine.lease_holder("watcher") == "b"
            assert mine.acquire_lease("watcher", "a", 60) is False  # still theirs
        finally:
            mine.engine.dispose()
            theirs.engine.dispose()


def test_a_released_claim_is_that_holders_on_that_job_only(db_url: str) -> None:
    store = Store(db_url)
    where = {"channel": "C1", "thread_ts": None}
    assert store.claim_announcement("mice-1", "a", 30, **where)
    assert store.claim_announcement("mice-2", "a", 30, **where)
    store.release_announcement("mice-1", "b")  # not b's
    assert store.get_announcement("mice-1").claimed_by == "a"  # type: ignore[union-attr]
    store.release_announcement("mice-1", "a")
    assert store.get_announcement("mice-1").claimed_by is None  # type: ignore[union-attr]
    assert store.get_announcement("mice-2").claimed_by == "a"  # type: ignore[union-attr]
    assert store.claim_announcement("mice-2", "b", 30, **where) is None
    taken = store.claim_announcement("mice-1", "b", 30, **where)
    assert taken is not None and taken.claimed_by == "b"


def test_claims_and_steps_stay_with_their_job(db_url: str) -> None:
    store = Store(db_url)
    first = store.claim_announcement("mice-1", "a", 30, channel="C1", thread_ts="1.0")
    assert first is not None and (first.job_name, first.thread_ts) == ("mice-1", "1.0")
    assert store.get_announcement("nope") is None
    # A brand-new job is claimed whatever other jobs are claimed.
    assert store.claim_announcement("mice-2", "a", 30, channel="C2", thread_ts=None)
    store.save_steps("mice-1", "a", [{"kind": "text"}])
    assert store.get_announcement("mice-2").steps is None  # type: ignore[union-attr]
    # A holder that claims again (a restart) renews its claim: nobody takes it over.
    with store.engine.begin() as conn:
        conn.execute(sa.update(announcements).values(claimed_at=utcnow() - timedelta(seconds=31)))
    assert store.claim_announcement("mice-1", "a", 30, channel="C1", thread_ts=None)
    assert store.claim_announcement("mice-1", "b", 30, channel="C1", thread_ts=None) is None
    # Taking over one job's stale claim leaves the holder's other jobs alone.
    store.release_announcement("mice-2", "a")
    assert store.claim_announcement("mice-3", "b", 30, channel="C1", thread_ts=None)
    assert store.get_announcement("mice-2").claimed_by is None  # type: ignore[union-attr]
    with pytest.raises(ClaimLost, match="mice-1"):
        store.save_steps("mice-1", "b", [])


def test_stalls_subscribers_and_leases_are_per_job_and_name(db_url: str) -> None:
    store = Store(db_url)
    for job in ("mice-1", "mice-2"):
        store.add_watch(job_name=job, region="us-east-2", channel="C1")
    assert store.claim_stall("mice-1") and store.claim_stall("mice-2")
    store.add_subscriber("mice-1", "U2")
    store.add_subscriber("mice-2", "U2")  # the same person on another job
    assert store.subscribers("mice-2") == ["U2"]
    assert store.acquire_lease("watcher", "a", 60) and store.acquire_lease("other", "a", 60)
    store.release_lease("watcher", "a")
    assert store.lease_holder("other") == "a" and store.lease_holder("watcher") is None


def test_times_read_back_as_stored(db_url: str) -> None:
    store = Store(db_url)
    _add_plan(store, "p1", "mice-1")
    store.add_watch(job_name="mice-1", region="us-east-2", channel="C1", thread_ts="1.0")
    then = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    with store.engine.begin() as conn:
        conn.execute(sa.update(plans).values(updated_at=then, created_at=then))
        conn.execute(sa.update(watches).values(created_at=then))
    plan = store.get_plan("p1")
    assert plan is not None and (plan.created_at, plan.updated_at) == (then, then)
    store.update_watch("mice-1", progress_at=then)
    watch = store.get_watch("mice-1")
    assert watch is not None and (watch.created_at, watch.progress_at) == (then, then)
    # Watching again keeps the thread the card's news goes to, when one is given.
    store.add_watch(job_name="mice-1", region="us-east-2", channel="C2", thread_ts="2.0")
    assert store.get_watch("mice-1").thread_ts == "2.0"  # type: ignore[union-attr]


def test_a_sqlite_store_is_shared_by_threads_whose_writers_wait(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gtbot.db'}"
    store = Store(url)
    assert store.url == url
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    errors: list[BaseException] = []

    def watch(i: int) -> None:
        try:
            store.add_watch(job_name=f"mice-{i}", region="us-east-2", channel="C1")
        except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(list(store.iter_all_watches())) == 8


def test_a_database_url_gtbot_cannot_use_is_explained_word_for_word() -> None:
    with pytest.raises(ConfigError) as info:
        Store("mysql-ish://nowhere")
    message = info.value.user_message
    assert message.startswith("GTBOT_DATABASE_URL='mysql-ish://nowhere' is not a database URL ")
    assert message.endswith(
        "). Example: sqlite:///gtbot.db or postgresql+psycopg://user@host/gtbot"
    )

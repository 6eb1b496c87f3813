"""The schema's Alembic revisions: every database an earlier gtbot made (schemas 1, 2, 3, made
fresh or upgraded in place) comes to the head revision with its rows, on SQLite and PostgreSQL;
every path ends with exactly the tables bot/state.py declares; an upgrade that fails changes
nothing; a database from a newer gtbot is refused."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from db_support import make_legacy_database

from bot import migrations
from bot.errors import ConfigError
from bot.state import Store, metadata


def schema_differences(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match bot/state.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _scalar(store: Store, sql: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_head_is_the_last_revision() -> None:
    assert migrations.script_directory().get_current_head() == migrations.HEAD


def test_the_revisions_build_what_bot_state_declares(db_url: str) -> None:
    store = Store(db_url)
    assert schema_differences(db_url) == []
    assert migrations.current_revisions(store.engine.connect()) == (migrations.HEAD,)
    # Gtbots from before Alembic read this number and work with a schema-3 database.
    assert _scalar(store, "SELECT version FROM gtbot_schema_version") == 3


@pytest.mark.parametrize(
    "history",
    [(1,), (2,), (3,), (1, 2), (1, 2, 3), (2, 3)],
    ids=lambda h: "v" + "-v".join(map(str, h)),
)
def test_a_database_of_an_earlier_gtbot_is_upgraded_with_its_rows(
    db_url: str, history: tuple[int, ...]
) -> None:
    make_legacy_database(db_url, history)
    store = Store(db_url)
    assert schema_differences(db_url) == []
    assert _scalar(store, "SELECT version_num FROM alembic_version") == migrations.HEAD
    assert _scalar(store, "SELECT version FROM gtbot_schema_version") == 3

    plan = store.get_plan("p1")
    assert plan is not None and plan.state == "pending" and plan.manifest_sha256 is None
    assert plan.request == {"LabelingJobName": "demo-1"}
    assert store.transition_plan("p1", ("pending",), "launching", by="U1")
    assert [w.job_name for w in store.active_watches()] == ["running"]
    # What was announced stays announced, whichever version announced it; nothing else is.
    told = store.get_announcement("told")
    assert told is not None and told.state == "done" and told.thread_ts == "1.0"
    assert store.get_announcement("running") is None
    assert store.claim_announcement("running", "a", 30, channel="C1", thread_ts="1.0")
    # The old lease row lapsed long ago: a new holder takes it.
    assert store.lease_holder("watcher") is None
    assert store.acquire_lease("watcher", "new-host:3000", 30)

    Store(db_url)  # opening it again changes nothing
    assert _scalar(store, "SELECT COUNT(*) FROM gtbot_announcements") == 2


def test_a_failed_upgrade_changes_nothing(db_url: str) -> None:
    """Revision 0003 fails half-way (a stray table in its way): the columns it had added, the
    stamp of the old version and the Alembic table are all rolled back, and the message says so."""
    make_legacy_database(db_url, (2,))
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE gtbot_announcements (unrelated INTEGER)"))
    with pytest.raises(ConfigError, match="Nothing was changed") as raised:
        Store(db_url)
    assert "gtbot_announcements" in raised.value.user_message
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert not inspector.has_table("alembic_version")
        assert "manifest_sha256" not in {c["name"] for c in inspector.get_columns("gtbot_plans")}
        assert conn.execute(sa.text("SELECT version FROM gtbot_schema_version")).scalar() == 2
    engine.dispose()


def test_a_database_from_a_newer_gtbot_is_refused(db_url: str) -> None:
    store = Store(db_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(
        ConfigError, match=r"newer gtbot \(revision 0099; this one knows up to"
    ) as e:
        Store(db_url)
    password = sa.make_url(db_url).password
    assert not password or str(password) not in e.value.user_message


def test_a_database_numbered_beyond_the_last_schema_before_alembic_is_refused(
    db_url: str,
) -> None:
    make_legacy_database(db_url, (3,))
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE gtbot_schema_version SET version = 99"))
    engine.dispose()
    with pytest.raises(ConfigError, match=r"newer gtbot \(schema 99"):
        Store(db_url)

"""Databases for the state tests: a fresh SQLite file or a fresh PostgreSQL database per test,
and databases as the gtbots from before Alembic left them (schemas 1, 2 and 3).

PostgreSQL is used when GTBOT_TEST_POSTGRES_URL names a database on a server where that user may
create databases (`.ci/with-postgres` starts a throwaway one); each test gets its own database,
dropped afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get("GTBOT_TEST_POSTGRES_URL", "")
# For a test that is about PostgreSQL only (a race SQLite's locking rules out, say).
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="GTBOT_TEST_POSTGRES_URL is not set (.ci/with-postgres)"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=needs_postgres)]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; its URL."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"gtbot_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def database(backend: str, tmp_dir: os.PathLike[str] | str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{os.path.join(tmp_dir, 'gtbot.db')}"
    else:
        with postgres_database() as url:
            yield url


# ---------------------------------------------------------------------------- before Alembic

WHEN = datetime(2026, 11, 1, tzinfo=UTC)


def _legacy_metadata(version: int, *, claims: bool) -> sa.MetaData:
    """The tables as gtbot's schema `version` declared them (bot/state.py of then); `claims`:
    the watches' claim columns of schema 2 (gone from schema 3's declaration, but still in a
    database upgraded from 2)."""
    md = sa.MetaData()
    sa.Table(
        "gtbot_schema_version",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    plan_columns = [
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False, unique=True),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("error", sa.Text),
    ]
    if version >= 3:
        plan_columns.append(sa.Column("manifest_sha256", sa.String(64)))
    sa.Table(
        "gtbot_plans",
        md,
        *plan_columns,
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    claim_columns = (
        [
            sa.Column("completion_claimed_at", sa.DateTime(timezone=True)),
            sa.Column("completion_claimed_by", sa.String(128)),
        ]
        if claims
        else []
    )
    sa.Table(
        "gtbot_watches",
        md,
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("project", sa.String(64)),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("owner", sa.String(64)),
        sa.Column("job_created", sa.DateTime(timezone=True)),
        sa.Column("last_status", sa.String(32)),
        sa.Column("last_counters", sa.Text),
        sa.Column("completion_announced", sa.Boolean, nullable=False),
        *claim_columns,
        sa.Column("parked", sa.Boolean, nullable=False),
        sa.Column("park_reason", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    if version >= 3:
        sa.Table(
            "gtbot_announcements",
            md,
            sa.Column("job_name", sa.String(63), primary_key=True),
            sa.Column("channel", sa.String(64), nullable=False),
            sa.Column("thread_ts", sa.String(32)),
            sa.Column("steps", sa.Text),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("claimed_at", sa.DateTime(timezone=True)),
            sa.Column("claimed_by", sa.String(128)),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    sa.Table(
        "gtbot_leases",
        md,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    return md


# What the old gtbots ran, in order, to bring a database of one version to the next.
_OLD_UPGRADES = {
    2: (
        "ALTER TABLE gtbot_watches ADD COLUMN completion_claimed_at TIMESTAMP",
        "ALTER TABLE gtbot_watches ADD COLUMN completion_claimed_by VARCHAR(128)",
    ),
    3: (
        "ALTER TABLE gtbot_plans ADD COLUMN manifest_sha256 VARCHAR(64)",
        "INSERT INTO gtbot_announcements (job_name, channel, thread_ts, steps, state,"
        " created_at, updated_at) SELECT job_name, channel, thread_ts, '[]', 'done',"
        " updated_at, updated_at FROM gtbot_watches WHERE completion_announced",
    ),
}


def make_legacy_database(url: str, history: tuple[int, ...]) -> None:
    """A database as the gtbots of `history` left it: made by the first version, upgraded in
    place by each next one the way it did (create_all for new tables, then its ALTERs). Holds a
    pending plan, a running watch, an announced one, and the scheduler lease."""
    engine = sa.create_engine(url)
    first = history[0]
    claims = first == 2
    with engine.begin() as conn:
        _legacy_metadata(first, claims=claims).create_all(conn)
        conn.execute(
            sa.text("INSERT INTO gtbot_schema_version (id, version) VALUES (1, :v)"), {"v": first}
        )
        md = _legacy_metadata(first, claims=claims)
        conn.execute(
            md.tables["gtbot_plans"].insert(),
            {
                "id": "p1",
                "project": "demo",
                "region": "us-east-2",
                "job_name": "demo-1",
                "requested_by": "U1",
                "channel": "C1",
                "state": "pending",
                "summary": "{}",
                "request": '{"LabelingJobName": "demo-1"}',
                "created_at": WHEN,
                "updated_at": WHEN,
            },
        )
        watch = {
            "region": "us-east-2",
            "channel": "C1",
            "thread_ts": "1.0",
            "last_status": "InProgress",
            "parked": False,
            "created_at": WHEN,
            "updated_at": WHEN,
        }
        conn.execute(
            md.tables["gtbot_watches"].insert(),
            [
                {**watch, "job_name": "running", "completion_announced": False},
                {**watch, "job_name": "told", "completion_announced": True},
            ],
        )
        if first >= 3:
            conn.execute(
                md.tables["gtbot_announcements"].insert(),
                {
                    "job_name": "told",
                    "channel": "C1",
                    "thread_ts": "1.0",
                    "steps": "[]",
                    "state": "done",
                    "created_at": WHEN,
                    "updated_at": WHEN,
                },
            )
        conn.execute(
            md.tables["gtbot_leases"].insert(),
            {"name": "watcher", "holder": "old-host:3000", "expires_at": WHEN},
        )
    for version in history[1:]:
        with engine.begin() as conn:
            _legacy_metadata(version, claims=False).create_all(conn)
            for statement in _OLD_UPGRADES[version]:
                conn.execute(sa.text(statement))
            conn.execute(sa.text("UPDATE gtbot_schema_version SET version = :v"), {"v": version})
    engine.dispose()

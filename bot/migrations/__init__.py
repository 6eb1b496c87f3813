"""The database schema's history as Alembic revisions, and `upgrade`, which every gtbot process
runs when it opens the database.

Replicas started together on an empty or older database must not race: PostgreSQL raises
`UniqueViolation` when two sessions create the same table at once, and SQLite answers `table ...
already exists`. So the whole upgrade, from reading the current revision to the last revision's
last statement, runs in one transaction that first takes a lock only one process can hold:

- PostgreSQL: `pg_advisory_xact_lock`, an exclusive advisory lock that a second session waits
  for and that is released when the transaction ends, by commit, rollback or a dead connection
  (https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS). DDL is
  transactional there, so a crash mid-upgrade leaves the schema as it was.
- SQLite: `BEGIN EXCLUSIVE`, which takes the database's write lock at once; other writers wait
  for it (the busy timeout) and then see the committed schema. In WAL mode EXCLUSIVE and
  IMMEDIATE are the same (https://www.sqlite.org/lang_transaction.html). Python's sqlite3 module
  would begin transactions itself and not around DDL, so the connection is put in autocommit
  mode and the BEGIN is ours (SQLAlchemy's "Serializable isolation / Savepoints / Transactional
  DDL" notes for pysqlite, https://docs.sqlalchemy.org/en/20/dialects/sqlite.html).

Alembic runs on that connection (its "connection sharing" recipe, `Config.attributes`:
https://alembic.sqlalchemy.org/en/latest/api/commands.html); `env.py` sees the open transaction
as external and runs every revision inside it.

Revisions 0001-0003 are the schemas gtbot wrote before Alembic (its `gtbot_schema_version`
numbers 1-3). A database from then has no `alembic_version` table: it is stamped at the revision
of its number and upgraded from there, in the same locked transaction. `gtbot_schema_version`
stays, for the gtbots from before Alembic: they refuse to start on a database whose number is
above theirs, so a revision that those gtbots could not work with must raise it
(`set_legacy_version`).

To change the schema, change the tables in `bot/state.py` and add a revision file to `versions/`
(the next number, `down_revision` the last one); `tests/test_schema_upgrades.py` compares the
result of every upgrade path with `bot/state.py` on SQLite and PostgreSQL. gtbot only upgrades:
to go back, restore the backup taken before the upgrade.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger("gtbot.migrations")

# The advisory lock's key: any 64-bit number no other application on the database uses
# ("gtbt" "sch" in ASCII).
ADVISORY_LOCK_KEY = 0x67746274_00736368

# The last revision in versions/ (a test checks it): a database already there is opened without
# importing Alembic, which takes a quarter of a second.
HEAD = "0006"

# gtbot_schema_version numbers from before Alembic, and the revision each one is.
LEGACY_REVISIONS = {1: "0001", 2: "0002", 3: "0003"}


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped with this gtbot (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "bot:migrations")
    config.attributes["connection"] = connection
    return config


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions in the database's `alembic_version` table; () when it has none."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return ()
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    return tuple(sorted(str(row[0]) for row in rows))


def upgrade(engine: Engine) -> None:
    """Bring the database to this gtbot's head revision; safe to call from any number of
    processes at once (they take turns), and a no-op once it is there."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            # The common case, a restart on an up-to-date database, takes no lock.
            if current_revisions(conn) == (HEAD,):
                return
        with _schema_lock(engine) as conn:
            _upgrade_locked(conn, where)
    except sa.exc.DBAPIError as exc:
        undone = (
            " Nothing was changed (the upgrade is one transaction)."
            if engine.dialect.name in ("sqlite", "postgresql")
            else ""
        )
        raise ConfigError(
            f"Could not bring the database at {where} to gtbot's schema (revision {HEAD}): "
            f"{exc.orig}.{undone} Check that GTBOT_DATABASE_URL is right and the database is "
            "reachable and writable; the log has the details."
        ) from exc


def _upgrade_locked(conn: Connection, where: str) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    current = current_revisions(conn)
    config = _config(conn)
    if not current:
        legacy = _legacy_version(conn)
        if legacy is not None:
            if legacy not in LEGACY_REVISIONS:
                raise _newer(where, f"schema {legacy}")
            log.info("adopting the schema %s of %s into Alembic", legacy, where)
            command.stamp(config, LEGACY_REVISIONS[legacy])
    else:
        try:
            script_directory().get_revisions(current)
        except CommandError:
            raise _newer(where, f"revision {', '.join(current)}") from None
    if current_revisions(conn) != (HEAD,):
        log.info("upgrading the schema of %s to revision %s", where, HEAD)
        command.upgrade(config, "head")


def _newer(where: str, what: str) -> ConfigError:
    return ConfigError(
        f"The database at {where} was written by a newer gtbot ({what}; this one knows up to "
        f"revision {HEAD}). Upgrade gtbot, or point GTBOT_DATABASE_URL at another database."
    )


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the schema lock; committed on success."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
            yield conn
        return
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN EXCLUSIVE")  # waits out the busy timeout for its turn
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        return
    # Another database: Alembic's own transaction, without a lock between processes.
    with engine.begin() as conn:
        yield conn


def _legacy_version(conn: Connection) -> int | None:
    """The gtbot_schema_version number of a database from before Alembic, None if empty.

    A gtbot of then created its tables before writing the number; one stopped in between left
    the table empty, and the tables tell which version made them.
    """
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if "gtbot_schema_version" not in tables:
        return None
    row = conn.execute(sa.text("SELECT version FROM gtbot_schema_version WHERE id = 1")).first()
    if row is not None:
        return int(row[0])
    if "gtbot_announcements" in tables:
        version = 3
    elif "completion_claimed_at" in {c["name"] for c in inspector.get_columns("gtbot_watches")}:
        version = 2
    else:
        version = 1
    conn.execute(
        sa.text("INSERT INTO gtbot_schema_version (id, version) VALUES (1, :v)"), {"v": version}
    )
    return version


def set_legacy_version(version: int) -> None:
    """For a revision's `upgrade()`: the number the gtbots from before Alembic compare with."""
    from alembic import op

    op.execute(sa.text("UPDATE gtbot_schema_version SET version = :v").bindparams(v=version))

"""Replicas started at the same moment on one database all come up: on an empty database and on
one an earlier gtbot left, on a shared SQLite file and on PostgreSQL.

Without the schema lock, two processes creating the tables at once fail (`UniqueViolation` on
PostgreSQL, `table ... already exists` on SQLite), and two upgrading at once copy the same rows
twice. Each replica here is its own process with its own connections, all opening the Store in the
same instant, as an orchestrator starting every replica at once does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from db_support import make_legacy_database

from bot import migrations

PROCESSES = 6

# One interpreter imports gtbot, then forks the replicas; they block on a pipe until the parent
# closes it, so all of them open the Store in the same instant (and the test does not pay six
# interpreter start-ups). Prints each replica's exit code; tracebacks go to stderr.
_REPLICAS = """
import json, os, sys, traceback
import alembic.command, alembic.script
from bot.state import Store
url, count = sys.argv[1], int(sys.argv[2])
read, write = os.pipe()
children = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        os.close(write)
        os.read(read, 1)
        try:
            Store(url)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    children.append(pid)
os.close(read)
os.close(write)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))
"""


def _start_together(url: str, cwd: Path, count: int) -> tuple[list[int], str]:
    """Exit codes of `count` processes opening the Store at once, and what they printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GTBOT_")}
    done = subprocess.run(
        [sys.executable, "-c", _REPLICAS, url, str(count)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


@pytest.mark.parametrize("start", ["empty", "schema-2"])
def test_replicas_started_together_all_come_up(db_url: str, tmp_path: Path, start: str) -> None:
    if start == "schema-2":
        make_legacy_database(db_url, (2,))
    codes, errors = _start_together(db_url, tmp_path, PROCESSES)
    assert codes == [0] * PROCESSES, errors
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert migrations.current_revisions(conn) == (migrations.HEAD,)
        assert conn.execute(sa.text("SELECT COUNT(*) FROM gtbot_schema_version")).scalar() == 1
        if start == "schema-2":  # upgraded once: the announced job is recorded once
            told = "SELECT COUNT(*) FROM gtbot_announcements WHERE job_name = 'told'"
            assert conn.execute(sa.text(told)).scalar() == 1
    engine.dispose()

"""Schema 3: a plan pins its manifest's digest; the end of a job is told once, as a record of
steps that outlives the watch (an old completion is not posted again when the job is watched
again). What schema 2 had announced is recorded as done.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

from bot.migrations import set_legacy_version

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gtbot_plans", sa.Column("manifest_sha256", sa.String(64)))
    announcements = op.create_table(
        "gtbot_announcements",
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
    watches = sa.table(
        "gtbot_watches",
        sa.column("job_name", sa.String),
        sa.column("channel", sa.String),
        sa.column("thread_ts", sa.String),
        sa.column("completion_announced", sa.Boolean),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    told = sa.select(
        watches.c.job_name,
        watches.c.channel,
        watches.c.thread_ts,
        sa.literal("[]"),
        sa.literal("done"),
        watches.c.updated_at,
        watches.c.updated_at,
    ).where(watches.c.completion_announced.is_(True))
    columns = ["job_name", "channel", "thread_ts", "steps", "state", "created_at", "updated_at"]
    op.execute(sa.insert(announcements).from_select(columns, told))
    set_legacy_version(3)

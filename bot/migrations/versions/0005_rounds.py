"""Follow-up rounds: a plan may be a follow-up of a parent job (its round and the thread of the
parent's card, where the follow-up is followed), and a job with an adaptive policy has a chain
row: the policy as it was launched, whether the automatic rounds go on, and why they ended.

The new columns are nullable and the new table is gtbot's own, so a gtbot from before this
revision still works on this schema (gtbot_schema_version stays 3).

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gtbot_plans", sa.Column("parent", sa.String(63)))
    op.add_column("gtbot_plans", sa.Column("round", sa.Integer))
    op.add_column("gtbot_plans", sa.Column("thread_ts", sa.String(32)))
    op.create_table(
        "gtbot_chains",
        sa.Column("root", sa.String(63), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("launched_by", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("stopped_by", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )

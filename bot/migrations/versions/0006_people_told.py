"""People told about their jobs: who asked `watch <job> --notify`, when a job's counts last
moved and when its stall was told (so a stall is told once per stall), and whether a watch
whose channel is gone now tells its people in direct messages.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gtbot_subscribers",
        sa.Column("job_name", sa.String(63), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("gtbot_watches", sa.Column("progress_at", sa.DateTime(timezone=True)))
    op.add_column("gtbot_watches", sa.Column("stall_told_at", sa.DateTime(timezone=True)))
    op.add_column(
        "gtbot_watches",
        sa.Column("dm_only", sa.Boolean, nullable=False, server_default=sa.false()),
    )

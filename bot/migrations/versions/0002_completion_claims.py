"""Schema 2: a completion post is claimed on its watch row (replaced by announcements in 3).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

from bot.migrations import set_legacy_version

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gtbot_watches", sa.Column("completion_claimed_at", sa.DateTime(timezone=True)))
    op.add_column("gtbot_watches", sa.Column("completion_claimed_by", sa.String(128)))
    set_legacy_version(2)

"""The watches' claim columns of schema 2, unused since schema 3, are dropped where a database
upgraded from 2 still has them, so every database at this revision has the same tables.

gtbot_schema_version stays 3: a gtbot from before Alembic (schema 3) still works on this schema.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("gtbot_watches")}
    for column in ("completion_claimed_at", "completion_claimed_by"):
        if column in present:
            op.drop_column("gtbot_watches", column)

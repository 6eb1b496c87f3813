"""Alembic's environment for gtbot: the revisions run on the connection gtbot hands over.

gtbot runs Alembic itself (`bot.migrations.upgrade`), on a connection that already holds the
schema lock inside an open transaction; Alembic sees that transaction as external and runs every
revision of one start-up inside it, so they commit or roll back together.
"""

from alembic import context

from bot.state import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "gtbot's schema is upgraded by gtbot itself when it starts (bot.migrations.upgrade), "
        "under a lock that keeps replicas from racing; the alembic command is not used."
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()

"""Alembic's environment for the bureau database: always run programmatically by
bureau/migrations/run.py on the connection the store opened (config.attributes)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# No target metadata: the migrations in versions/ are the schema (each one explicit).
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

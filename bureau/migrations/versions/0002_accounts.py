"""The web portal's accounts (bureau.accounts): users, browser sessions, API tokens and the
audit table.

A SQLite bureau.db that a portal from before migrations already used has these tables
(created by `CREATE TABLE IF NOT EXISTS`, the same columns): they are kept with their rows,
and only missing tables are created. Flags are INTEGER 0/1 on both back ends (as
`reports.alerted`), so the same SQL reads and writes them; times are epoch seconds.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# INTEGER on SQLite (a rowid alias), BIGINT on PostgreSQL (BIGSERIAL with autoincrement).
Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Epoch: sa.Double[float] = sa.Double()


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "users" not in existing:
        op.create_table(
            "users",
            sa.Column("username", sa.Text, primary_key=True),
            sa.Column("role", sa.Text, nullable=False),
            sa.Column("password_hash", sa.Text, nullable=False),
            sa.Column("disabled", sa.Integer, nullable=False, server_default="0"),
            sa.Column("created_at", Epoch, nullable=False),
            sa.CheckConstraint("role IN ('evaluator','admin')", name="users_role"),
        )
    if "sessions" not in existing:
        op.create_table(
            "sessions",
            sa.Column("token_sha256", sa.Text, primary_key=True),
            sa.Column("username", sa.Text, sa.ForeignKey("users.username"), nullable=False),
            sa.Column("csrf_token", sa.Text, nullable=False),
            sa.Column("created_at", Epoch, nullable=False),
            sa.Column("expires_at", Epoch, nullable=False),
        )
        op.create_index("sessions_expiry", "sessions", ["expires_at"])
    if "api_tokens" not in existing:
        op.create_table(
            "api_tokens",
            sa.Column("token_sha256", sa.Text, primary_key=True),
            sa.Column("username", sa.Text, sa.ForeignKey("users.username"), nullable=False),
            sa.Column("created_at", Epoch, nullable=False),
            sa.Column("last_used_at", Epoch),
        )
    if "audit" not in existing:
        op.create_table(
            "audit",
            sa.Column("id", Int64, primary_key=True, autoincrement=True),
            sa.Column("username", sa.Text, nullable=False),
            sa.Column("action", sa.Text, nullable=False),
            sa.Column("target", sa.Text, nullable=False),
            sa.Column("at", Epoch, nullable=False),
            sqlite_autoincrement=True,  # ids never reused, as the old AUTOINCREMENT
        )
        op.create_index("audit_at", "audit", ["at"])


def downgrade() -> None:
    raise NotImplementedError("The bureau keeps its audit: there is no downgrade.")

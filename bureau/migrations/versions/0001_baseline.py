"""Baseline: the bureau schema as it was before migrations (keys, reports, rejections,
rotations, alerts, the transparency log's leaves and head).

A SQLite bureau.db made before migrations has these tables already (created by
`CREATE TABLE IF NOT EXISTS`): this revision keeps every existing table and its rows as they
are, creates only the missing ones, and adds `rotations.effective_from_seq` when the file
predates it. A new database, SQLite or PostgreSQL, gets everything.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# INTEGER on SQLite (a rowid alias for single-column keys), BIGINT on PostgreSQL.
Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Epoch: sa.Double[float] = sa.Double()  # seconds since 1970, with fractions


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "keys" not in existing:
        op.create_table(
            "keys",
            sa.Column("kid", sa.Text, primary_key=True),
            sa.Column("factory_id", sa.Text, nullable=False),
            sa.Column("jwk", sa.Text, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("valid_from", Epoch, nullable=False),
            sa.Column("revoked_at", Epoch),
            sa.Column("retired_at", Epoch),
            sa.CheckConstraint("status IN ('active','retired','revoked')", name="keys_status"),
        )
        op.create_index("keys_factory", "keys", ["factory_id"])
    if "reports" not in existing:
        op.create_table(
            "reports",
            sa.Column("report_id", sa.Text, primary_key=True),
            sa.Column("factory_id", sa.Text, nullable=False),
            sa.Column("seq", Int64, nullable=False),
            sa.Column("period_kind", sa.Text, nullable=False),
            sa.Column("period_key", sa.Text, nullable=False),
            sa.Column("revision", Int64, nullable=False),
            sa.Column("kid", sa.Text, nullable=False),
            sa.Column("payload_sha256", sa.Text, nullable=False),
            sa.Column("prev_sha256", sa.Text, nullable=False),
            sa.Column("jws", sa.Text, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("received_at", Epoch, nullable=False),
            sa.Column("receipt_jws", sa.Text, nullable=False),
            sa.Column("receipt_sha256", sa.Text, nullable=False),
            sa.Column("alerted", sa.Integer, nullable=False, server_default="0"),
            sa.CheckConstraint("state IN ('accepted','pending-link')", name="reports_state"),
            sa.UniqueConstraint("factory_id", "seq", name="reports_factory_seq"),
        )
        op.create_index("reports_period", "reports", ["factory_id", "period_kind", "period_key"])
    if "rejections" not in existing:
        op.create_table(
            "rejections",
            sa.Column("id", Int64, primary_key=True, autoincrement=True),
            sa.Column("factory_id", sa.Text),
            sa.Column("topic", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("report_id", sa.Text),
            sa.Column("period_kind", sa.Text),
            sa.Column("period_key", sa.Text),
            sa.Column("message_sha256", sa.Text, nullable=False),
            sa.Column("size", Int64, nullable=False),
            sa.Column("jws", sa.Text),
            sa.Column("received_at", Epoch, nullable=False),
            sqlite_autoincrement=True,
        )
    if "rotations" not in existing:
        op.create_table(
            "rotations",
            sa.Column("new_kid", sa.Text, primary_key=True),
            sa.Column("rotated_from", sa.Text, nullable=False),
            sa.Column("statement", sa.Text, nullable=False),
            sa.Column("at", Epoch, nullable=False),
            sa.Column("effective_from_seq", Int64),
        )
    else:
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("rotations")}
        if "effective_from_seq" not in columns:
            op.add_column("rotations", sa.Column("effective_from_seq", Int64))
    if "alerts" not in existing:
        op.create_table(
            "alerts",
            sa.Column("id", Int64, primary_key=True, autoincrement=True),
            sa.Column("factory_id", sa.Text),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("at", Epoch, nullable=False),
            sqlite_autoincrement=True,
        )
    if "log_leaves" not in existing:
        op.create_table(
            "log_leaves",
            sa.Column("leaf_index", Int64, primary_key=True, autoincrement=False),
            sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
            sa.Column("report_id", sa.Text, nullable=False),
            sa.Column("factory_id", sa.Text, nullable=False),
            sa.Column("payload_sha256", sa.Text, nullable=False),
            sa.Column("appended_at", Epoch, nullable=False),
        )
        op.create_index("log_leaves_report", "log_leaves", ["report_id"])
        op.create_index("log_leaves_factory", "log_leaves", ["factory_id", "leaf_index"])
    if "log_head" not in existing:
        op.create_table(
            "log_head",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("tree_size", Int64, nullable=False),
            sa.Column("root_hash", sa.Text, nullable=False),
            sa.Column("sth_jws", sa.Text, nullable=False),
            sa.CheckConstraint("id = 1", name="log_head_single_row"),
        )


def downgrade() -> None:
    raise NotImplementedError("The bureau keeps its evidence: there is no downgrade.")

"""Base measures in columns (bureau/measures_table.py): each accepted daily report's
per-device day sums, written in the receiver's transaction, so the annual evaluation reads
numbers instead of a year of report JSON. A database from before this revision gets empty
tables; the evaluation records its older reports from their JWS the first time it needs them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from indicators.columns import COUNT_COLUMNS, MEASURE_COLUMNS

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "measured_reports",
        sa.Column("report_id", sa.Text, primary_key=True),
        sa.Column("factory_id", sa.Text, nullable=False),
        sa.Column("period_key", sa.Text, nullable=False),
        sa.Column("has_samples", sa.Integer, nullable=False),
    )
    op.create_index("measured_reports_factory", "measured_reports", ["factory_id", "period_key"])
    op.create_table(
        "report_measures",
        sa.Column("report_id", sa.Text, primary_key=True),
        sa.Column("device_id", sa.Text, primary_key=True),
        sa.Column("day_start", Int64, primary_key=True, autoincrement=False),
        *(
            sa.Column(name, Int64 if name in COUNT_COLUMNS else sa.Double(), nullable=False)
            for name in MEASURE_COLUMNS
        ),
    )


def downgrade() -> None:
    op.drop_table("report_measures")
    op.drop_index("measured_reports_factory", table_name="measured_reports")
    op.drop_table("measured_reports")

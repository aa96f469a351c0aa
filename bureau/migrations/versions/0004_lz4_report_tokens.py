"""PostgreSQL compresses the stored tokens with lz4 instead of pglz: every report's JWS
(about 16 KB) and its receipt are over the 2 KB TOAST threshold, and pglz cost PostgreSQL
about 0.2 ms of CPU per report, a fifth of its share of ingest (BENCHMARKS.md, issue 18
item 6); lz4 about a tenth of that, the stored value about 8 % larger. Values written before
keep their compression and read the same. A server built without lz4 keeps pglz; SQLite
does not compress.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (("reports", "jws"), ("reports", "receipt_jws"), ("rejections", "jws"))


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _supported(bind, method):
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def _supported(bind: sa.Connection, method: str) -> bool:
    values = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return method in (values or [])

"""Bring the bureau database to the newest migration, at every open.

`upgrade_to_head` runs Alembic's `upgrade head` on the store's own connection, inside one
transaction that holds the migration lock (PostgreSQL: an advisory lock; SQLite: BEGIN
IMMEDIATE), so receivers starting together migrate once. A database already at head costs
one read of `alembic_version`.

Adding a table or column: a new file in versions/ whose `down_revision` is the current head
(`alembic -c /dev/null -x ... revision` is not needed: copy the newest file's header), with
explicit `op.create_table` / `op.add_column` that work on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

if TYPE_CHECKING:
    from bureau.database import Database

log = logging.getLogger("tieragent.bureau")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "bureau:migrations")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade_to_head(db: Database) -> None:
    config = alembic_config()
    head = head_revision()
    with db.transaction():
        db.lock_migrations()
        current = MigrationContext.configure(db.conn).get_current_revision()
        if current == head:
            return
        config.attributes["connection"] = db.conn
        # Alembic's own INFO lines ("Context impl ...") say nothing to an operator.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        command.upgrade(config, "head")
    log.info("Bureau database %s upgraded from schema %s to %s.", db.name, current, head)

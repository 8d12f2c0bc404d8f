"""The pool's version, and what a process keeps of the tables it stands for.

Every decision needs the pool and the shares (the capacity policy) and the
organisations it books for with their ancestors (whose share each one uses). They
change rarely, by an operator's hand, yet reading them took two statements of every
batch of decisions. So triggers give ``capacity_pool.version`` a new number whenever one
of those tables changes in a way that matters:

- ``media_workers``: a worker added or removed, its capacity, node or ``enabled``;
- ``media_nodes``: a node added or removed, or ``enabled`` (not its heartbeat);
- ``quotas``: any change;
- ``organisations``: one added or removed, its name, kind or parent.

A decision reads the version together with its lock on the pool row
(scheduler/booking/transactions.py); the row stays locked (shared) to the end of the decision,
and the trigger's write to it waits for that, so whatever the decision then reads of
those tables is as of that version, and :class:`PoolCache` keeps it under it. Being a
trigger, it also covers writers outside this code: another process, a fix in psql.

The statements run from ``Base.metadata.create_all`` (an ``after_create`` listener in
scheduler/models.py) and from the migration that introduced them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from scheduler.db import PerEngine

T = TypeVar("T")

# (table, the columns whose change matters, or None for every change)
WATCHED = (
    ("media_workers", "node_id, capacity_units, enabled"),
    ("media_nodes", "enabled"),
    ("quotas", None),
    ("organisations", "name, kind, parent_id"),
)

# The pool row may not exist yet in a new database: it is made, then counted up.
_BUMP = ("INSERT INTO capacity_pool (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING; "
         "UPDATE capacity_pool SET version = version + 1 WHERE id = 1;")


def _postgresql() -> list[str]:
    statements = [f"""
CREATE OR REPLACE FUNCTION capacity_pool_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  {_BUMP}
  RETURN NULL;
END $$
"""]
    for table, columns in WATCHED:
        update = f"UPDATE OF {columns}" if columns else "UPDATE"
        statements.append(f"""
CREATE OR REPLACE TRIGGER {table}_capacity_pool AFTER INSERT OR DELETE OR {update} ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION capacity_pool_changed()
""")
    return statements


def _sqlite() -> list[str]:
    statements = []
    for table, columns in WATCHED:  # SQLite has row triggers only, one event each
        for event in ("INSERT", "DELETE", f"UPDATE OF {columns}" if columns else "UPDATE"):
            name = f"{table}_capacity_pool_{event.split()[0].lower()}"
            statements.append(f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} "
                              f"BEGIN {_BUMP} END")
    return statements


def create_triggers(connection: Connection) -> None:
    """Create the triggers on the watched tables for the connection's database (again:
    they are replaced)."""
    statements = _postgresql() if connection.dialect.name == "postgresql" else _sqlite()
    for statement in statements:
        connection.exec_driver_sql(statement)


def drop_triggers(connection: Connection) -> None:
    postgresql = connection.dialect.name == "postgresql"
    for table, _ in WATCHED:
        if postgresql:
            connection.exec_driver_sql(f"DROP TRIGGER {table}_capacity_pool ON {table}")
        else:
            for event in ("insert", "delete", "update"):
                connection.exec_driver_sql(f"DROP TRIGGER {table}_capacity_pool_{event}")
    if postgresql:
        connection.exec_driver_sql("DROP FUNCTION capacity_pool_changed()")


# session.info key: the pool version the session's transaction read with its lock.
POOL_VERSION = "capacity_pool_version"


def locked_version(session: Session) -> int | None:
    """The pool version this session's transaction holds locked (None if none)."""
    return session.info.get(POOL_VERSION)


class PoolCache:
    """Values derived from the watched tables, kept for one pool version (the newest
    seen); a new version forgets them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: int | None = None
        self._values: dict[Hashable, object] = {}

    def get(self, session: Session, key: Hashable, make: Callable[[], T]) -> T:
        """The value for ``key`` as of the version the session has locked, made by
        ``make()`` (in that session) if it is not kept; made every time when the session
        has locked no version."""
        version = locked_version(session)
        if version is None:
            return make()
        with self._lock:
            if self._version == version and key in self._values:
                return self._values[key]  # type: ignore[return-value]
        value = make()
        with self._lock:
            if self._version is None or version > self._version:
                self._version, self._values = version, {}
            if version == self._version:
                self._values[key] = value
        return value


# The process's cache for the database a session works on.
pool_cache = PerEngine(PoolCache)

"""The audit log: every change, who made it and when, written in the change's transaction."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from scheduler.access.permissions import Principal
from scheduler.models import AuditEntry, utcnow


def record(session: Session, actor: Principal | None, action: str, target: str = "",
           details: dict[str, object] | None = None, *, actor_name: str = "",
           at: datetime | None = None) -> None:
    """Add an entry; ``actor`` None is the command line or the system (``actor_name``)."""
    session.add(AuditEntry(at=at or utcnow(), actor_id=actor.user_id if actor else None,
                           actor=actor.name if actor else (actor_name or "cli"),
                           action=action, target=target[:200], details=details or {}))


Entry = tuple[datetime, Principal | None, str, str, dict[str, object]]


# On PostgreSQL a batch's entries go as one JSON document, as a booking batch's rows do
# (scheduler/booking/bookings.py): one statement of fixed text, no per-value adaptation.
_PG_INSERT = text("""
INSERT INTO audit_log (at, actor_id, actor, action, target, details)
SELECT at, actor_id, actor, action, target, details
FROM json_to_recordset(CAST(:rows AS json))
     AS r(at timestamptz, actor_id integer, actor text, action text, target text, details json)
""")


def record_many(session: Session, rows: list[Entry]) -> None:
    """Several entries of one transaction in one statement: (at, actor, action, target,
    details) each."""
    if not rows:
        return
    entries = [{"at": at, "actor_id": actor.user_id if actor else None,
                "actor": actor.name if actor else "cli", "action": action,
                "target": target[:200], "details": details}
               for at, actor, action, target, details in rows]
    if session.get_bind().dialect.name == "postgresql":
        for entry in entries:
            entry["at"] = entry["at"].isoformat()
        session.execute(_PG_INSERT, {"rows": json.dumps(entries)})
    else:
        session.execute(insert(AuditEntry), entries)


def entries(session: Session, *, limit: int = 200, before_id: int | None = None,
            action_prefix: str = "") -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if action_prefix:
        query = query.where(AuditEntry.action.startswith(action_prefix))
    return list(session.scalars(query))

"""The audit log: every change, who made it and when, written in the change's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
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


def entries(session: Session, *, limit: int = 200, before_id: int | None = None,
            action_prefix: str = "") -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if action_prefix:
        query = query.where(AuditEntry.action.startswith(action_prefix))
    return list(session.scalars(query))

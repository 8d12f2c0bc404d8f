"""Users, API tokens and browser sessions: who is calling.

Only hashes are stored: a token or session secret is shown once and cannot be read back.
Passwords and the sign-in form belong to the admin web.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scheduler.access.permissions import ROLES, Principal
from scheduler.errors import InvalidInput, NotFound
from scheduler.models import ApiToken, Organisation, User, UserSession

TOKEN_PREFIX = "mpt_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def principal_of(user: User) -> Principal:
    return Principal(user.id, user.name, user.role, user.organisation_id, user.email)


def create_user(session: Session, name: str, role: str, organisation_id: int | None = None,
                email: str = "") -> User:
    if role not in ROLES:
        raise InvalidInput("invalid_role", f"role must be one of {', '.join(ROLES)}")
    if role != "operator" and role != "coordinator" and organisation_id is None:
        raise InvalidInput("organisation_required", f"a {role} belongs to an organisation")
    if organisation_id is not None and session.get(Organisation, organisation_id) is None:
        raise NotFound("organisation_not_found", f"no organisation {organisation_id}")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise InvalidInput("user_exists", f"a user named {name!r} exists")
    user = User(name=name, role=role, organisation_id=organisation_id, email=email)
    session.add(user)
    session.flush()
    return user


def issue_api_token(session: Session, user_id: int, label: str = "") -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user_id, token_hash=_digest(token), label=label))
    session.flush()
    return token


def authenticate_token(session: Session, token: str) -> Principal | None:
    user = session.scalar(select(User).join(ApiToken, ApiToken.user_id == User.id)
                          .where(ApiToken.token_hash == _digest(token),
                                 ApiToken.revoked.is_(False), User.active.is_(True)))
    return principal_of(user) if user else None


def create_session(session: Session, user_id: int, now: datetime, ttl: timedelta) -> str:
    """A browser session for a user the admin web has signed in; returns the cookie value."""
    secret = secrets.token_urlsafe(32)
    session.add(UserSession(user_id=user_id, secret_hash=_digest(secret), created_at=now,
                            expires_at=now + ttl))
    session.flush()
    return secret


def authenticate_session(session: Session, secret: str, now: datetime) -> Principal | None:
    user = session.scalar(select(User).join(UserSession, UserSession.user_id == User.id)
                          .where(UserSession.secret_hash == _digest(secret),
                                 UserSession.expires_at > now, User.active.is_(True)))
    return principal_of(user) if user else None


def end_other_sessions(session: Session, user_id: int, keep_secret: str | None = None) -> int:
    """End every browser session of ``user_id`` but the one with ``keep_secret``; how many."""
    query = delete(UserSession).where(UserSession.user_id == user_id)
    if keep_secret:
        query = query.where(UserSession.secret_hash != _digest(keep_secret))
    return int(session.execute(query).rowcount or 0)


def end_session(session: Session, secret: str) -> None:
    row = session.scalar(select(UserSession).where(UserSession.secret_hash == _digest(secret)))
    if row is not None:
        session.delete(row)

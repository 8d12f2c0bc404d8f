"""Signed, expiring join tokens (JWT, HS256).

A token names one room and the holder's role there; ``multipoint invite`` and the
scheduler hand them out inside join links.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import jwt

ALGORITHM = "HS256"
AUDIENCE = "multipoint-join"
Role = Literal["host", "guest", "selftest"]
ROLES: tuple[Role, ...] = ("host", "guest", "selftest")


class TokenError(Exception):
    """A token that must not be honoured; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class JoinGrant:
    room: str
    role: Role
    name: str | None = None
    endpoint: str | None = None  # serial of a grant-programme room unit, for self-tests
    # Links of bookings and standing bridges: the scheduler admits each join. Links the
    # operator makes with `multipoint invite` are for ad-hoc rooms outside any booking.
    scheduled: bool = False


def issue_token(secret: str, grant: JoinGrant, ttl_s: float, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + int(ttl_s),
        "room": grant.room,
        "role": grant.role,
    }
    if grant.name:
        claims["name"] = grant.name
    if grant.endpoint:
        claims["endpoint"] = grant.endpoint
    if grant.scheduled:
        claims["scheduled"] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: object) -> JoinGrant:
    if not isinstance(token, str) or not token:
        raise TokenError("bad_token", "a join token is required")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                            options={"require": ["exp", "room", "role"]})
    except jwt.ExpiredSignatureError:
        raise TokenError("token_expired", "the join link has expired; ask for a new one") from None
    except jwt.PyJWTError as exc:
        raise TokenError("bad_token", f"the join token is not valid: {exc}") from None
    room, role = claims.get("room"), claims.get("role")
    if not isinstance(room, str) or not room or role not in ROLES:
        raise TokenError("bad_token", "the join token does not name a room and a role")
    name = claims.get("name")
    endpoint = claims.get("endpoint")
    return JoinGrant(room=room, role=role, name=name if isinstance(name, str) else None,
                     endpoint=endpoint if isinstance(endpoint, str) else None,
                     scheduled=claims.get("scheduled") is True)

"""Join links handed to people: a page URL carrying a signed join token."""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlencode

from signaling.tokens import JoinGrant, Role, issue_token


def join_url(public_url: str, secret: str, room: str, *, role: Role = "guest",
             name: str | None = None, ttl_s: float, scheduled: bool = False) -> str:
    """A join link; ``scheduled`` links (bookings, bridges) are admitted by the scheduler."""
    token = issue_token(secret, JoinGrant(room=room, role=role, name=name, scheduled=scheduled),
                        ttl_s)
    return f"{public_url}/call/{quote(room, safe='')}?{urlencode({'token': token})}"


def selftest_url(public_url: str, secret: str, endpoint: str, *, ttl_s: float) -> str:
    """A self-test link for one room unit: its verdict is stored against ``endpoint``."""
    room = "selftest-" + secrets.token_hex(8)
    token = issue_token(secret, JoinGrant(room=room, role="selftest", endpoint=endpoint), ttl_s)
    return f"{public_url}/selftest?{urlencode({'token': token})}"

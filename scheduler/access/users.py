"""Local accounts for the admin web: passwords (scrypt) and sign-in with a throttle.

Users, roles and browser sessions themselves are in scheduler/access/auth.py; this module adds
the password and :class:`SignInThrottle`, which makes guessing a password online cost
hours, not seconds, without letting anyone lock an account out: wrong passwords block
the pair (account, client address), not the account, and each address may only try so
often. Unknown, wrong and blocked answer alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.access import audit
from scheduler.access.auth import create_user, end_other_sessions, principal_of
from scheduler.access.permissions import Principal
from scheduler.errors import InvalidInput, NotFound
from scheduler.models import Organisation, User

# scrypt with N=2^15, r=8 (32 MiB, ~0.1 s here): OWASP's minimum for scrypt is N=2^17
# with r=8 *or* an equivalent cost; 2^15 keeps a sign-in well under a second on a
# shared 2-core machine. The parameters are stored in the hash, so raising them later
# needs no migration (old hashes still verify).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
# Wrong passwords for one account from one address, and attempts from one address.
FAILURES_PER_ACCOUNT_AND_ADDRESS = "5/15 minutes"
ATTEMPTS_PER_ADDRESS = "20/minute; 200/hour"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=64 * 1024 * 1024, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput("weak_password", f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput("long_password", f"the password may have at most {MAX_PASSWORD} characters")


def create_local_user(session: Session, name: str, role: str, password: str,
                      organisation_id: int | None = None, email: str = "",
                      actor: Principal | None = None) -> User:
    check_password_rules(password)
    user = create_user(session, name, role, organisation_id, email)
    user.password_hash = hash_password(password)
    audit.record(session, actor, "user.create", f"user:{user.name}",
                 {"role": role, "organisation_id": organisation_id})
    return user


def set_password(session: Session, user_id: int, password: str,
                 actor: Principal | None = None, keep_session: str | None = None) -> None:
    """A new password; every session of the user ends but ``keep_session`` (the cookie
    secret of the browser that changed it): a stolen session dies with the old password."""
    check_password_rules(password)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user_not_found", f"no user {user_id}")
    user.password_hash = hash_password(password)
    ended = end_other_sessions(session, user_id, keep_session)
    audit.record(session, actor, "user.password", f"user:{user.name}", {"sessions_ended": ended})


def address_key(address: str) -> str:
    """Whom the sign-in limits count: an IPv4 address, or the /64 of an IPv6 one. Any
    IPv6 client holds a whole /64 (a home line, a server) and can take a fresh address
    for every try: counted one by one, its addresses would never reach a limit."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SignInThrottle:
    """How often sign-ins may be tried, in this process (``limits``, moving windows).

    An address (an IPv6 client's whole /64: :func:`address_key`) may try
    ``ATTEMPTS_PER_ADDRESS`` sign-ins; after
    ``FAILURES_PER_ACCOUNT_AND_ADDRESS`` wrong passwords for one name from one address,
    that address gets the wrong-password answer for that name (the password is not even
    checked) until the window moves on. Others, the account's owner included, sign in as
    before. The current-password check of a password change counts as a sign-in.
    """

    def __init__(self, failures: str = FAILURES_PER_ACCOUNT_AND_ADDRESS,
                 attempts: str = ATTEMPTS_PER_ADDRESS) -> None:
        self._failures = parse_many(failures)
        self._attempts = parse_many(attempts)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def attempt(self, address: str) -> float | None:
        """Count one attempt from ``address``: None, or seconds to wait (answer 429)."""
        address = address_key(address)
        if all(self._limiter.test(item, "attempt", address) for item in self._attempts):
            for item in self._attempts:
                self._limiter.hit(item, "attempt", address)
            return None
        stats = [self._limiter.get_window_stats(item, "attempt", address) for item in self._attempts]
        return max(1.0, max(s.reset_time for s in stats if s.remaining == 0) - time.time())

    def blocked(self, name: str, address: str) -> bool:
        address = address_key(address)
        return not all(self._limiter.test(item, "failure", name.lower(), address)
                       for item in self._failures)

    def failed(self, name: str, address: str) -> bool:
        """Count a wrong password; True when this one blocks the pair."""
        address = address_key(address)
        for item in self._failures:
            self._limiter.hit(item, "failure", name.lower(), address)
        return self.blocked(name, address)


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: a principal, or None (wrong, unknown or blocked
    alike); ``blocked_now`` says this failure blocked the pair (for the audit log)."""

    principal: Principal | None
    blocked_now: bool = False


def sign_in(session: Session, name: str, password: str, address: str,
            throttle: SignInThrottle) -> SignIn:
    user = session.scalar(select(User).where(User.name == name))
    blocked = throttle.blocked(name, address)
    if user is None or not user.active or blocked:
        # Same answer and the same cost as a wrong password: no probing for names or locks.
        verify_password(password, _DUMMY_HASH)
        if not blocked:
            throttle.failed(name, address)
        return SignIn(None)
    if verify_password(password, user.password_hash):
        return SignIn(principal_of(user))
    if throttle.failed(name, address):
        audit.record(session, None, "user.sign_in_blocked", f"user:{user.name}",
                     {"address": address}, actor_name="system")
        return SignIn(None, blocked_now=True)
    return SignIn(None)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def users_with_organisations(session: Session) -> list[tuple[User, str | None]]:
    """Every user, by name, with the name of its organisation (None for central roles)."""
    return [(user, org) for user, org in session.execute(
        select(User, Organisation.name)
        .outerjoin(Organisation, Organisation.id == User.organisation_id).order_by(User.name))]


def password_matches(session: Session, user_id: int, password: str) -> bool:
    account = session.get(User, user_id)
    return account is not None and verify_password(password, account.password_hash)

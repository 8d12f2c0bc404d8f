"""Local accounts for the admin web: passwords (scrypt) and sign-in with lockout.

Users, roles and browser sessions themselves are in scheduler/auth.py; this module adds
the password and the rule that repeated wrong passwords lock an account for a while, so
that guessing a password online costs hours, not seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler import audit
from scheduler.auth import create_user, principal_of
from scheduler.errors import InvalidInput, NotFound
from scheduler.models import SignInFailures, User
from scheduler.permissions import Principal

# scrypt with N=2^15, r=8 (32 MiB, ~0.1 s here): OWASP's minimum for scrypt is N=2^17
# with r=8 *or* an equivalent cost; 2^15 keeps a sign-in well under a second on a
# shared 2-core machine. The parameters are stored in the hash, so raising them later
# needs no migration (old hashes still verify).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)


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
                 actor: Principal | None = None) -> None:
    check_password_rules(password)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user_not_found", f"no user {user_id}")
    user.password_hash = hash_password(password)
    session.query(SignInFailures).filter_by(user_id=user_id).delete()
    audit.record(session, actor, "user.password", f"user:{user.name}", {})


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: a principal, or why not."""

    principal: Principal | None
    reason: str = ""  # "bad_credentials" or "locked"
    locked_until: datetime | None = None


def sign_in(session: Session, name: str, password: str, now: datetime) -> SignIn:
    user = session.scalar(select(User).where(User.name == name))
    if user is None or not user.active:
        # Same answer and the same cost as a wrong password: no probing for names.
        verify_password(password, _DUMMY_HASH)
        return SignIn(None, "bad_credentials")
    failures = session.get(SignInFailures, user.id)
    if failures is not None and failures.locked_until is not None and failures.locked_until > now:
        return SignIn(None, "locked", failures.locked_until)
    if verify_password(password, user.password_hash):
        if failures is not None:
            session.delete(failures)
        return SignIn(principal_of(user))
    if failures is None:
        failures = SignInFailures(user_id=user.id, failures=0)
        session.add(failures)
    if failures.locked_until is not None and failures.locked_until <= now:
        failures.failures, failures.locked_until = 0, None  # the lock ran out: start afresh
    failures.failures += 1
    if failures.failures >= MAX_FAILURES:
        failures.locked_until = now + LOCKOUT
        audit.record(session, None, "user.locked", f"user:{user.name}",
                     {"failures": failures.failures}, actor_name="system")
        return SignIn(None, "locked", failures.locked_until)
    return SignIn(None, "bad_credentials")


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))

"""Time-limited TURN credentials for coturn's `use-auth-secret` (the "TURN REST API").

coturn accepts username ``<unix expiry>:<name>`` with password
``base64(HMAC-SHA1(static-auth-secret, username))`` until the expiry passes. The service
itself only takes a fixed MULTIPOINT_TURN_USERNAME/_PASSWORD, so docker/compose.yaml runs
this at each node's start and exports the pair:

    eval "$(python /opt/multipoint/turn_credentials.py)" && exec multipoint serve ...

TURN_SHARED_SECRET is coturn's static-auth-secret; TURN_CREDENTIAL_TTL_DAYS (default 30)
is how long the pair stays valid, so a node must be restarted within that time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shlex
import time


def turn_credentials(secret: str, name: str, ttl_s: float, now: float | None = None) -> tuple[str, str]:
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def main() -> None:
    secret = os.environ["TURN_SHARED_SECRET"]
    name = os.environ.get("MULTIPOINT_NODE") or "multipoint"
    days = float(os.environ.get("TURN_CREDENTIAL_TTL_DAYS", "30"))
    username, password = turn_credentials(secret, name, days * 86400)
    print(f"export MULTIPOINT_TURN_USERNAME={shlex.quote(username)} "
          f"MULTIPOINT_TURN_PASSWORD={shlex.quote(password)}")


if __name__ == "__main__":
    main()

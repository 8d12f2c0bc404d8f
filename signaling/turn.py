"""Time-limited TURN credentials for coturn's ``use-auth-secret`` (the "TURN REST API").

coturn accepts the username ``<unix expiry>:<name>`` with the password
``base64(HMAC-SHA1(secret, username))`` until the expiry passes, so no password is kept
in coturn or handed out for longer than a call needs. Each participant gets a pair of
its own with ``joined`` (docs/protocol.md), for the TURN URLs the operator configured
(``turn:`` over UDP and TCP, ``turns:`` over TLS on 443 for offices whose firewall lets
out nothing else).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any


def turn_credentials(secret: str, name: str, ttl_s: float,
                     now: float | None = None) -> tuple[str, str]:
    """(username, password) that coturn accepts for ``ttl_s`` seconds from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def page_ice_servers(urls: list[str], secret: str,
                     ttl_s: float) -> Callable[[str], list[dict[str, Any]]]:
    """The ``iceServers`` a participant's page gets, by participant id: the TURN URLs
    with a pair of credentials of its own; none when TURN is not configured."""
    def for_participant(participant: str) -> list[dict[str, Any]]:
        if not urls or not secret:
            return []
        username, credential = turn_credentials(secret, participant, ttl_s)
        return [{"urls": list(urls), "username": username, "credential": credential}]
    return for_participant

"""How often one client may do a thing: joins, signaling messages, self-test results.

Each rule is a ``limits`` rate string ("20/second; 600/minute"); a client is a key (its
IP address, its link's token, its connection). Counting uses a moving window in memory:
the limits belong to this front, like the connections they protect. An attempt that
breaks any of its rules is refused and counts for none of them, so a client that keeps
trying while refused is let in again when its window has moved on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


def parse_rule(rule: str) -> list[RateLimitItem]:
    """``"20/second; 600/minute"`` as rate limits; ValueError names what is wrong."""
    try:
        items = parse_many(rule)
    except ValueError as exc:
        raise ValueError(f"{rule!r} is not a rate such as '20/second; 600/minute': {exc}") from None
    if not items:
        raise ValueError(f"{rule!r} names no rate")
    return items


def address_key(address: str) -> str:
    """A client address as a key: an IPv4 address, or the /64 of an IPv6 one. An IPv6
    client holds a whole /64 and could take a fresh address for every join: counted
    address by address it would never reach a limit. (The admin sign-in throttle counts
    the same way: scheduler/access/users.py.)"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def token_key(token: str) -> str:
    """A link's token as a key: a digest, so the limiter never holds the secret itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RateLimits:
    """Named rules (``action -> rate string``) and the moving windows of their clients."""

    def __init__(self, rules: dict[str, str]) -> None:
        self._rules = {action: parse_rule(rule) for action, rule in rules.items()}
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.refused: dict[str, int] = dict.fromkeys(self._rules, 0)  # for /metrics

    def hit(self, action: str, key: str) -> float | None:
        """Count one ``action`` by ``key``: None if allowed, else seconds until it would be."""
        items = self._rules[action]
        if all(self._limiter.test(item, action, key) for item in items):
            for item in items:
                self._limiter.hit(item, action, key)
            return None
        self.refused[action] += 1
        now = time.time()
        waits = [self._limiter.get_window_stats(item, action, key).reset_time - now
                 for item in items if not self._limiter.test(item, action, key)]
        return max([1.0, *waits])  # every broken rule must have room again

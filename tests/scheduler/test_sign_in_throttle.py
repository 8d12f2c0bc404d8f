"""The sign-in throttle counts an IPv6 client by its /64: fresh addresses of one line do
not buy fresh tries (scheduler/access/users.py)."""

from __future__ import annotations

from scheduler.access.users import SignInThrottle, address_key


def test_addresses_are_counted_by_their_v6_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"


def test_one_v6_line_shares_its_attempts_and_its_block() -> None:
    throttle = SignInThrottle(failures="3/15 minutes", attempts="5/minute")
    waits = [throttle.attempt(f"2001:db8:1:2::{n:x}") for n in range(1, 7)]
    assert waits[:5] == [None] * 5 and waits[5] is not None and waits[5] >= 1
    assert throttle.attempt("2001:db8:1:3::1") is None  # another line

    for n in range(1, 4):  # three wrong passwords, each from a fresh address of one line
        throttle.failed("operator", f"2001:db8:5:6::{n}")
    assert throttle.blocked("operator", "2001:db8:5:6::99")
    assert not throttle.blocked("operator", "2001:db8:5:7::1")
    assert not throttle.blocked("operator", "198.51.100.7")

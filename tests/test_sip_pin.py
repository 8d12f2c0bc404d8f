"""How keys pressed on a room unit make one try at a meeting's PIN (signaling/sip/units.py)."""

from __future__ import annotations

import asyncio

import pytest

from signaling.sip.ua import dtmf_key
from signaling.sip.units import _entry


async def tries(keys: str, length: int = 6) -> list[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    entered = []
    while not queue.empty():
        try:
            entered.append(await asyncio.wait_for(_entry(queue, length), 0.2))
        except TimeoutError:  # keys left that make no try (a # alone): still waiting
            break
    return entered


@pytest.mark.parametrize(("keys", "entered"), [
    ("123456", ["123456"]),  # the PIN's length ends a try
    ("123456#", ["123456"]),  # and the # after it starts no empty one
    ("12#", ["12"]),  # a short try ends at #
    ("#12#", ["12"]),
    ("98*123456", ["123456"]),  # * starts again
    ("111111222222", ["111111", "222222"]),
])
async def test_keys_make_tries(keys: str, entered: list[str]) -> None:
    assert await tries(keys) == entered


async def test_a_try_waits_for_its_keys() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait("1")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_entry(queue, 4), 0.1)


@pytest.mark.parametrize(("content_type", "body", "key"), [
    ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", "5"),
    ("application/dtmf-relay", "signal= *\r\n", "*"),
    ("application/dtmf-relay", "Signal=11\r\nDuration=100\r\n", "#"),  # as some units write #
    ("application/dtmf-relay", "Signal=10", "*"),
    ("application/dtmf-relay", "Duration=160\r\n", None),
    ("application/dtmf-relay", "Signal=12\r\n", None),
    ("application/dtmf", "7\r\n", "7"),
    ("application/dtmf", "d", "D"),
    ("application/dtmf", "77", None),
])
def test_a_key_is_read_from_a_sip_info_body(content_type: str, body: str, key: str | None) -> None:
    assert dtmf_key(content_type, body) == key

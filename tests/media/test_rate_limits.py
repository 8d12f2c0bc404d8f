"""Rate limits per client: joins per address and per link, messages per connection,
self-test pages and results per address and per link (signaling/rate_limits.py)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from multipoint.app import LIVE_ROOMS
from multipoint.settings import Settings, SettingsError, load_settings
from signaling.rate_limits import RateLimits, parse_rule
from signaling.tokens import JoinGrant, issue_token
from tests.media.test_pending_joins import connect_from
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                         secret_key="test-secret-" + "x" * 20, media_inline=True,
                         join_rate_per_ip="3/minute", join_rate_per_link="2/minute",
                         message_rate="5/minute", selftest_rate_per_ip="2/minute",
                         selftest_rate_per_link="1/minute")


def selftest_token(server, room: str) -> str:
    return issue_token(server.settings.signing_secret(), JoinGrant(room=room, role="selftest"), 300)


async def join(server, address: str, token: str) -> dict:
    client = await connect_from(server, address)
    try:
        await client.send({"type": "join", "v": 1, "token": token})
        return await client.next()
    finally:
        await client.close()


async def test_joins_are_limited_per_address_even_with_bad_tokens(server) -> None:
    # Guessing tokens costs joins: the address's rate is counted before the token.
    for _ in range(3):
        assert (await join(server, "127.0.0.2", "forged"))["code"] == "bad_token"
    refused = await join(server, "127.0.0.2", "forged")
    assert refused["code"] == "rate_limited" and refused["retry_after"] >= 1
    assert "address" in refused["message"]
    # Another address is not held back.
    assert (await join(server, "127.0.0.3", "forged"))["code"] == "bad_token"
    refused_counts = server.app[LIVE_ROOMS].signaling.rate_limits.refused
    assert refused_counts["join_per_ip"] == 1


async def test_joins_are_limited_per_link(server) -> None:
    link = selftest_token(server, "selftest-shared")
    assert (await join(server, "127.0.0.4", link))["type"] == "joined"
    assert (await join(server, "127.0.0.5", link))["type"] == "joined"
    refused = await join(server, "127.0.0.6", link)
    assert refused["code"] == "rate_limited" and "link" in refused["message"]
    # Another link from the same address still joins.
    assert (await join(server, "127.0.0.6", selftest_token(server, "selftest-own")))["type"] == "joined"


async def test_messages_are_limited_per_connection_and_it_stays_open(server) -> None:
    noisy = await SignalClient.connect(server.ws_url)
    quiet = await SignalClient.connect(server.ws_url)
    try:
        for _ in range(5):
            await noisy.send({"type": "ping"})
            await noisy.next("pong")
        await noisy.send({"type": "ping"})
        refused = await noisy.next("error")
        assert refused["code"] == "rate_limited" and refused["retry_after"] >= 1
        assert not noisy.ws.closed
        await quiet.send({"type": "ping"})
        await quiet.next("pong")
    finally:
        await noisy.close()
        await quiet.close()


async def test_selftest_pages_and_results_are_limited(server) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(f"{server.url}/selftest") as response:
                assert response.status == 200
        async with http.get(f"{server.url}/selftest") as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            assert "too many self-tests" in await response.text()

    link = selftest_token(server, "selftest-unit")
    body = {"token": link, "passed": True, "problems": [], "figures": {}}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.7", 0))) as http:
        async with http.post(f"{server.url}/selftest/result", json=body) as response:
            assert response.status == 409  # no call behind it: not recorded, but counted
        async with http.post(f"{server.url}/selftest/result", json=body) as response:
            assert response.status == 429
            answer = await response.json()
            assert answer["error"]["code"] == "rate_limited"
            assert "link" in answer["error"]["message"]


def test_a_refused_attempt_counts_for_no_rule() -> None:
    limits = RateLimits({"message": "2/second; 3/minute"})
    assert limits.hit("message", "a") is None
    assert limits.hit("message", "a") is None
    wait = limits.hit("message", "a")  # the second's rule is full
    assert wait is not None and wait >= 1
    assert limits.refused["message"] == 1
    assert limits.hit("message", "b") is None  # keys are apart
    time.sleep(1.05)  # the second's window has moved on; the minute's holds two hits, not three
    assert limits.hit("message", "a") is None
    assert limits.hit("message", "a") is not None


def test_a_bad_rate_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError, match="12 per fortnight"):
        parse_rule("12 per fortnight")
    with pytest.raises(SettingsError, match=r"MULTIPOINT_MESSAGE_RATE.*'lots' is not a rate"):
        load_settings(message_rate="lots")

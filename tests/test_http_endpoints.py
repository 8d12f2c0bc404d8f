"""Health, metrics, pages and the self-test result endpoint over real HTTP."""

from __future__ import annotations

import aiohttp
from sqlalchemy import select

from multipoint.app import DATABASE
from scheduler.models import SelfTestResult
from signaling.links import selftest_url
from signaling.tokens import JoinGrant, issue_token, verify_token


async def test_healthz_and_metrics(server) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(server.url + "/metrics") as response:
            text = await response.text()
            assert response.headers["Content-Type"].startswith("text/plain")
    for name in ("multipoint_peers", "multipoint_packets_forwarded_total",
                 "multipoint_errors_total", "multipoint_packets_malformed_total",
                 "multipoint_pending_joins", "multipoint_answer_timeouts_total",
                 "multipoint_stun_malformed_total", "multipoint_datagrams_dropped_unkeyed_total"):
        assert f"\n{name} " in "\n" + text, name


async def test_selftest_page_carries_a_selftest_token(server) -> None:
    secret = server.settings.signing_secret()
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/selftest?endpoint=FORGED") as response:
            html = await response.text()
        assert 'data-token="' in html and "Test připojení" in html
        token = html.split('data-token="')[1].split('"')[0]
        assert verify_token(secret, token).endpoint is None  # a bare query names no unit
        async with http.get(selftest_url(server.url, secret, "SN-9", ttl_s=60)) as response:
            assert "SN-9" in await response.text()
        host = issue_token(secret, JoinGrant(room="r", role="host"), 60)
        async with http.get(server.url + "/selftest", params={"token": host}) as response:
            assert response.status == 403
        async with http.get(server.url + "/selftest", params={"token": "x"}) as response:
            assert response.status == 401


async def test_selftest_result_is_validated_and_stored(server) -> None:
    secret = server.settings.signing_secret()
    selftest = issue_token(secret, JoinGrant(room="selftest-1", role="selftest", endpoint="SN-7"), 60)
    host = issue_token(secret, JoinGrant(room="r", role="host"), 60)
    url = server.url + "/selftest/result"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data="{oops", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_json"
        async with http.post(url, json={"token": "x", "passed": True}) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "bad_token"
        async with http.post(url, json={"token": host, "passed": True}) as r:
            assert r.status == 403
        async with http.post(url, json={"token": selftest, "passed": "yes"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_message"
        with server.app[DATABASE].session() as session:
            assert session.scalars(select(SelfTestResult)).all() == []
        # Well formed, but no self-test call of this link took place: nothing to judge.
        async with http.post(url, json={"token": selftest, "passed": True}) as r:
            assert r.status == 409 and (await r.json())["error"]["code"] == "no_selftest_call"
    with server.app[DATABASE].session() as session:
        assert session.scalars(select(SelfTestResult)).all() == []
    # A result with a call behind it: tests/media/test_echo_call.py.


async def test_selftest_result_refuses_deep_huge_or_non_text_json(server) -> None:
    secret = server.settings.signing_secret()
    selftest = issue_token(secret, JoinGrant(room="selftest-2", role="selftest"), 60)
    url = server.url + "/selftest/result"
    huge = "9" * 5000
    bodies = ["[" * 100_000,
              f'{{"token": "{selftest}", "passed": true, "figures": {{"a": {huge}}}}}',
              f'{{"token": "{selftest}", "passed": true, "problems": ["\\ud800"]}}',
              # Nested a few hundred deep: within what json.loads takes (it used to
              # raise RecursionError in the text check, a 500).
              f'{{"token": "{selftest}", "passed": true, "figures": {"[" * 600 + "]" * 600}}}']
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(url, data=body,
                                 headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400, body[:80]
                assert (await r.json())["error"]["code"] in ("bad_json", "bad_message")
    with server.app[DATABASE].session() as session:
        assert session.scalars(select(SelfTestResult)).all() == []

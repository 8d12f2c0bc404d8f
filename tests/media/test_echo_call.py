"""The self-test echo call with a real aiortc client over loopback, through signaling."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest
from sqlalchemy import select

from multipoint.app import DATABASE, MEDIA
from scheduler.models import SelfTestResult
from signaling.tokens import JoinGrant, issue_token
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media


def selftest_token(server, room: str = "selftest-echo") -> str:
    return issue_token(server.settings.signing_secret(), JoinGrant(room=room, role="selftest"), 60)


async def test_echo_returns_decodable_video_and_audio(server) -> None:
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack((200, 40, 40)))
    try:
        joined = await client.join_with(peer, selftest_token(server))
        assert joined["role"] == "selftest"
        assert await wait_until(lambda: sum(peer.frames("video").values()) >= 30
                                and sum(peer.frames("audio").values()) >= 30, timeout=20)
        # The echoed picture is our own picture: mostly the colour we sent.
        mid = next(iter(peer.frames("video")))
        image = peer.received[mid].last_frame.to_ndarray(format="rgb24")
        median = np.median(image.reshape(-1, 3), axis=0)
        assert abs(median[0] - 200) < 30 and abs(median[1] - 40) < 30 and abs(median[2] - 40) < 30
        counters = server.app[MEDIA].counters
        assert counters.packets_forwarded > 60
        assert counters.handler_errors == 0
    finally:
        await client.close()


async def post_result(server, token: str, verdict: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
            server.url + "/selftest/result", json={"token": token, **verdict}) as response:
        return response.status, await response.json()


async def test_a_selftest_result_is_the_servers_verdict_once_per_call(server) -> None:
    grant = JoinGrant(room="selftest-sn5", role="selftest", endpoint="SN-5")
    token = issue_token(server.settings.signing_secret(), grant, 60)
    claimed_pass = {"passed": True, "problems": [], "figures": {"rtt_ms": 3}}
    # A unit whose camera gives nothing still claims a pass: the server saw no video.
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack())
    try:
        await client.join_with(peer, token)
        assert await wait_until(lambda: sum(peer.frames("audio").values()) >= 40, timeout=20)
        status, body = await post_result(server, token, claimed_pass)
        assert status == 201 and body["passed"] is False
        assert set(body["problems"]) == {"video_not_received", "video_not_returned"}
        # One result per call: the same call again is refused.
        status, body = await post_result(server, token, claimed_pass)
        assert status == 409 and body["error"]["code"] == "no_selftest_call"
    finally:
        await client.close()
    # A real call with both media, judged after it ended (the page posts as it hangs up).
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    try:
        await client.join_with(peer, token)
        assert await wait_until(lambda: sum(peer.frames("video").values()) >= 20
                                and sum(peer.frames("audio").values()) >= 40, timeout=20)
    finally:
        await client.close()
    status, body = await post_result(server, token, claimed_pass)
    assert status == 201 and body == {"id": body["id"], "passed": True, "problems": []}
    with server.app[DATABASE].session() as session:
        results = session.scalars(select(SelfTestResult).order_by(SelfTestResult.id)).all()
    assert [r.passed for r in results] == [False, True]
    assert all(r.endpoint_serial == "SN-5" for r in results)
    figures = results[1].figures
    assert figures["rtt_ms"] == 3 and figures["server_video_in_packets"] >= 20
    assert figures["server_audio_out_packets"] >= 40

"""The self-test echo call with a real aiortc client over loopback, through signaling."""

from __future__ import annotations

import numpy as np
import pytest

from multipoint.app import MEDIA
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

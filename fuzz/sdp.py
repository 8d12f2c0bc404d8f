"""SDP: a client's answer to the server's offer, as a participant takes it.

mcu/participant.py ``accept_answer`` checks the answer (``check_answer``: fingerprints and
ICE credentials) and hands it to aiortc's ``setRemoteDescription`` on a connection that
waits for it, and answers any exception
with ``bad_sdp``. What must hold for garbage: aiortc returns or raises (no hang, no
crash), and a refused answer leaves the connection waiting for an answer, so the
client can still send a good one. A good answer from a real client is accepted every
so often to show the connection still negotiates.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from mcu import aiortc_adapter

aiortc_adapter.configure_ice(["127.0.0.1"], None)
_loop = asyncio.new_event_loop()
_inputs = 0


async def _offering() -> tuple[RTCPeerConnection, str]:
    """A server-side connection waiting for an answer, and a real client's answer."""
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server.addTransceiver("audio", direction="sendrecv")
    server.addTransceiver("video", direction="sendrecv")
    await server.setLocalDescription(await server.createOffer())
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await client.setRemoteDescription(server.localDescription)
    await client.setLocalDescription(await client.createAnswer())
    answer = client.localDescription.sdp
    await client.close()
    return server, answer


_server, _good_answer = _loop.run_until_complete(_offering())


def _reset() -> None:
    global _server, _good_answer
    _loop.run_until_complete(_server.close())
    _server, _good_answer = _loop.run_until_complete(_offering())


def one_input(data: bytes) -> None:
    global _inputs
    _inputs += 1
    text = data.decode("utf-8", "replace")
    try:
        aiortc_adapter.check_answer(text)  # as Participant.accept_answer does first
        _loop.run_until_complete(
            _server.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer")))
    except Exception:  # the server's bad_sdp
        assert _server.signalingState == "have-local-offer", _server.signalingState
    else:
        _reset()  # taken: negotiate afresh for the next input
        return
    if _inputs % 500 == 0:
        _loop.run_until_complete(
            _server.setRemoteDescription(RTCSessionDescription(sdp=_good_answer, type="answer")))
        assert _server.signalingState == "stable"
        _reset()

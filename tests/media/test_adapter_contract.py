"""Contract tests of mcu/aiortc_adapter.py on real loopback peers (aiortc pinned exactly).

If a new aiortc breaks what the adapter relies on, these fail before anything else does.
"""

from __future__ import annotations

import tracemalloc

import pytest
from mcu._fanout import Sink

from mcu import aiortc_adapter
from mcu.room import MediaWorker
from tests.peers import ClientPeer, ColourTrack, RtcpProbe, ToneTrack, wait_until

pytestmark = pytest.mark.media


@pytest.fixture
async def echo_call():
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    worker = MediaWorker()
    participant = worker.room("contract", echo=True).join("me", "selftest")
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    offer = await participant.create_offer()
    answer = await peer.answer(offer.sdp, offer.publish)
    await participant.accept_answer(answer, offer.revision)
    assert await wait_until(lambda: sum(peer.frames("video").values()) > 5, timeout=20)
    yield worker, participant, peer, offer
    await peer.close()
    await worker.close()


def client_transceiver(peer: ClientPeer, mid: str):
    return next(t for t in peer.pc.getTransceivers() if t.mid == mid)


def leg_mid(offer, source: str) -> str:
    return next(mid for mid, info in offer.tracks.items() if info["source"] == source)


async def test_packets_are_forwarded_and_echoed_video_decodes(echo_call) -> None:
    worker, participant, peer, _ = echo_call
    assert await wait_until(lambda: sum(peer.frames("video").values()) >= 30
                            and sum(peer.frames("audio").values()) >= 30)
    assert worker.counters.packets_forwarded >= 60
    assert participant.producers["camera"].packets > 0
    frame = next(r for r in peer.received.values() if r.track.kind == "video").last_frame
    assert (frame.width, frame.height) == (320, 240)


async def test_keyframe_request_from_subscriber_reaches_publisher(echo_call) -> None:
    _, participant, peer, offer = echo_call
    probe = RtcpProbe(peer)
    camera_slot = client_transceiver(peer, offer.publish["camera"])
    probe.watch_sender(camera_slot)
    echoed = client_transceiver(peer, leg_mid(offer, "camera"))
    consumer = next(c for c in participant.consumers.values() if c.kind == "video")
    await wait_until(lambda: False, timeout=1.1)  # past the one-a-second throttle
    await probe.send_pli(echoed, consumer.ssrc)
    assert await wait_until(lambda: camera_slot.sender._ssrc in probe.keyframe_requests, timeout=5)


async def test_nack_is_answered_from_the_forwarders_history(echo_call) -> None:
    worker, participant, peer, offer = echo_call
    probe = RtcpProbe(peer)
    echoed = client_transceiver(peer, leg_mid(offer, "camera"))
    probe.watch_transport(echoed)
    consumer = next(c for c in participant.consumers.values() if c.kind == "video")
    assert await wait_until(lambda: len([p for p in probe.received if p[1] == consumer.ssrc]) >= 5)
    wanted = [seq for _, ssrc, seq, _ in probe.received if ssrc == consumer.ssrc][-3:]
    await probe.send_nack(echoed, consumer.ssrc, wanted)
    assert consumer.rtx_payload_type is not None
    assert await wait_until(lambda: any(pt == consumer.rtx_payload_type and ssrc == consumer.rtx_ssrc
                                        for pt, ssrc, _, _ in probe.received), timeout=5)
    assert worker.counters.retransmissions >= len(wanted)


async def test_error_in_the_packet_path_never_closes_the_receiving_side(echo_call) -> None:
    worker, participant, peer, _ = echo_call
    microphone = participant.producers["microphone"]
    # The packet path raises on every audio packet (what it finds for the SSRC is no track).
    participant._tracks[microphone.ssrc] = "not a track"
    before = sum(peer.frames("video").values())
    assert await wait_until(lambda: worker.counters.handler_errors > 10)
    assert await wait_until(lambda: sum(peer.frames("video").values()) > before + 20)
    assert participant.pc.connectionState == "connected"

    # A leg whose sink cannot send (here: never bound) is counted, not fatal either.
    audio_leg = next(c for c in participant.consumers.values() if c.kind == "audio")
    participant._tracks[microphone.ssrc] = microphone.track
    audio_leg.leg.sink = Sink()
    errors = worker.counters.send_errors
    assert await wait_until(lambda: worker.counters.send_errors > errors + 5)
    assert participant.pc.connectionState == "connected"


async def test_legs_send_through_a_sink_bound_while_the_transport_is_connected(echo_call) -> None:
    _, participant, _, _ = echo_call
    legs = [c.leg for c in participant.consumers.values()]
    sinks = {id(leg.sink): leg.sink for leg in legs if leg.sink is not None}
    assert legs and len(sinks) == 1  # one BUNDLEd transport: one sink for every leg
    sink = next(iter(sinks.values()))
    # The screen slot shows nothing until a share starts; the camera slot sends.
    showing = [c.leg for c in participant.consumers.values() if c.producer is not None]
    assert sink.bound and all(leg.packets > 0 for leg in showing if leg.video)
    await participant.close()
    assert not sink.bound and all(leg.sink is None for leg in legs)


async def test_once_keyed_the_media_is_read_in_c_and_never_enters_python(echo_call) -> None:
    """The host sockets are ours (a Reader reads them in C); once the SRTP keys exist
    the connection's media goes straight to its Inbound, only STUN and DTLS to aioice."""
    worker, participant, peer, _ = echo_call
    dtls = participant.pc.getTransceivers()[0].receiver.transport
    connection = aiortc_adapter._ice_connection(dtls)
    readers = [p.transport.reader for p in connection._protocols
               if isinstance(p.transport, aiortc_adapter.HostSocketTransport)]
    assert readers and all(r.keyed for r in readers)
    through_python = []
    tapped = connection.data_received
    connection.data_received = lambda data, component: (through_python.append(data), tapped(data, component))
    read, received = sum(r.datagrams for r in readers), worker.counters.packet_path.packets_received
    frames = sum(peer.frames("video").values())
    assert await wait_until(lambda: sum(peer.frames("video").values()) > frames + 20)
    assert worker.counters.packet_path.packets_received > received + 20
    assert sum(r.datagrams for r in readers) > read + 20
    assert not [d for d in through_python if 127 < d[0] < 192]
    # The client's sockets are ours too, never keyed (no Inbound): all through aioice.
    client_dtls = peer.pc.getTransceivers()[0].receiver.transport
    client_readers = [p.transport.reader for p in aiortc_adapter._ice_connection(client_dtls)._protocols]
    assert client_readers and not any(r.keyed for r in client_readers)
    await participant.close()
    assert all(r.closed for r in readers)


async def test_our_rtcp_is_protected_and_sent_in_c_through_the_sink(echo_call) -> None:
    """Keyframe requests and reports go out through the connection's sink (libsrtp's
    srtp_protect_rtcp called from C on aiortc's session), not through pylibsrtp in
    Python; the client's aiortc decrypts them as its own session's."""
    worker, participant, peer, offer = echo_call
    dtls = participant.pc.getTransceivers()[0].receiver.transport
    srtp = dtls._tx_srtp
    through_python: list[bytes] = []
    protect_rtcp = srtp.protect_rtcp
    srtp.protect_rtcp = lambda packet: (through_python.append(packet), protect_rtcp(packet))[1]
    sink = participant._sinks[id(dtls)][0]
    probe = RtcpProbe(peer)
    camera_slot = client_transceiver(peer, offer.publish["camera"])
    probe.watch_sender(camera_slot)
    await wait_until(lambda: False, timeout=1.1)  # past the one-a-second throttle
    requests = worker.counters.keyframe_requests
    participant.producers["camera"].request_keyframe()
    assert worker.counters.keyframe_requests == requests + 1
    assert await wait_until(lambda: camera_slot.sender._ssrc in probe.keyframe_requests, timeout=5)
    participant.send_rtcp()  # the reports of an interval: senders' and receivers'
    assert not through_python and sink.bound and sink.send_errors == 0


async def test_no_decoder_runs_on_the_server(echo_call) -> None:
    _, participant, _, _ = echo_call
    assert not any(aiortc_adapter.decoder_running(t) for t in participant.pc.getTransceivers())


async def test_a_taken_over_transceiver_keeps_none_of_aiortcs_receive_state() -> None:
    """aiortc gives every video receiver a bandwidth estimator of 1,000 rate buckets
    (about 100 KiB) that our packet path never uses; a participant has 16 transceivers."""

    async def allocated_by(connections: int, take_over: bool) -> int:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            made = []
            for _ in range(connections):
                pc = aiortc_adapter.new_peer_connection([])
                for _ in range(13):
                    transceiver = pc.addTransceiver("video", direction="sendonly")
                    if take_over:
                        aiortc_adapter.take_over_transceiver(transceiver, None, None)
                made.append(pc)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        for pc in made:
            await pc.close()
        return held // connections

    kept = await allocated_by(5, take_over=False)
    dropped = await allocated_by(5, take_over=True)
    assert kept > 13 * 50_000  # what aiortc allocates: the reason for dropping it
    assert dropped < kept / 4, (kept, dropped)


def test_internals_are_checked_at_import() -> None:
    aiortc_adapter.check_internals()
    assert aiortc_adapter.aiortc.__version__ == aiortc_adapter.PINNED_AIORTC


async def test_host_candidates_use_the_configured_addresses_and_port_range() -> None:
    aiortc_adapter.configure_ice(["127.0.0.1"], (41000, 41009))
    worker = MediaWorker()
    try:
        participant = worker.room("ports", echo=True).join("me", "selftest")
        peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
        offer = await participant.create_offer()
        candidates = [line.split() for line in offer.sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates
        assert {c[4] for c in candidates} == {"127.0.0.1"}
        assert all(41000 <= int(c[5]) <= 41009 for c in candidates)
        answer = await peer.answer(offer.sdp, offer.publish)
        await participant.accept_answer(answer, offer.revision)
        assert await wait_until(lambda: sum(peer.frames("video").values()) > 5, timeout=20)
        await peer.close()
    finally:
        aiortc_adapter.configure_ice(["127.0.0.1"], None)
        await worker.close()


async def test_with_only_loopback_and_no_addresses_set_media_is_offered_on_loopback(caplog) -> None:
    if aiortc_adapter._original_get_host_addresses(True, True):
        pytest.skip("this machine has an interface besides loopback (the tests' namespace has not)")
    aiortc_adapter.configure_ice([], None)  # MULTIPOINT_MEDIA_ADDRESSES left empty
    worker = MediaWorker()
    try:
        assert "no network interface but loopback" in caplog.text
        offer = await worker.room("alone", echo=True).join("me", "selftest").create_offer()
        hosts = {line.split()[4] for line in offer.sdp.splitlines() if line.startswith("a=candidate:")}
        assert hosts == {"127.0.0.1"}
    finally:
        aiortc_adapter.configure_ice(["127.0.0.1"], None)
        await worker.close()


def test_ice_servers_come_only_from_settings() -> None:
    assert aiortc_adapter.ice_servers([], [], "", "") == []
    servers = aiortc_adapter.ice_servers(["stun:ice.example.gov.cz:3478"],
                                         ["turn:turn.example.gov.cz:3478"], "user", "secret")
    assert [s.urls for s in servers] == ["stun:ice.example.gov.cz:3478", "turn:turn.example.gov.cz:3478"]
    assert servers[1].username == "user" and servers[1].credential == "secret"

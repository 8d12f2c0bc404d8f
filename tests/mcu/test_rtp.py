"""RTP/RTCP wire helpers, checked against aiortc's own parser and serializer."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtcpPacket, RtpPacket, unpack_remb_fci

from mcu import rtp


def aiortc_packet(extensions: bool = True, padding: int = 0) -> bytes:
    packet = RtpPacket(payload_type=96, sequence_number=65535, timestamp=0xFFFFFFF0, ssrc=0x1234)
    packet.marker = 1
    packet.payload = b"\x10\x00hello-vp8"
    packet.padding_size = padding
    extensions_map = None
    if extensions:
        from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
        from aiortc.rtp import HeaderExtensionsMap

        extensions_map = HeaderExtensionsMap()
        extensions_map.configure(RTCRtpParameters(headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            RTCRtpHeaderExtensionParameters(id=2, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        ]))
        packet.extensions.mid = "1"
        packet.extensions.audio_level = (True, 42)
        return packet.serialize(extensions_map)
    return packet.serialize()


def test_parse_reads_what_aiortc_wrote() -> None:
    data = aiortc_packet()
    view = rtp.parse_rtp(data)
    assert (view.payload_type, view.marker, view.sequence_number, view.timestamp, view.ssrc) == \
        (96, True, 65535, 0xFFFFFFF0, 0x1234)
    assert view.payload(data) == b"\x10\x00hello-vp8"
    assert view.extensions[rtp.EXT_MID] == b"1"
    assert view.extensions[rtp.EXT_AUDIO_LEVEL][0] & 0x7F == 42


def test_padding_is_excluded_from_the_payload() -> None:
    data = aiortc_packet(extensions=False, padding=4)
    view = rtp.parse_rtp(data)
    assert view.payload(data) == b"\x10\x00hello-vp8"


@pytest.mark.parametrize("garbage", [
    b"", b"\x80\x60", b"\x40" + bytes(11),  # too short; version 1
    b"\x8f\x60" + bytes(10),  # 15 CSRCs announced, none present
    b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x05",  # extension longer than the packet
    b"\xa0\x60" + bytes(10) + b"\x01\x02\x00",  # zero padding length
    b"\xa0\x60" + bytes(10) + b"\xff",  # padding longer than the packet
    b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x1f\x00\x00\x00",  # element runs past the block
])
def test_malformed_packets_are_rejected(garbage: bytes) -> None:
    with pytest.raises(rtp.MalformedPacket):
        rtp.parse_rtp(garbage)


def test_rebuilt_header_parses_in_aiortc() -> None:
    block = rtp.one_byte_extension_block([(rtp.EXT_AUDIO_LEVEL, b"\x2a")])
    data = rtp.rtp_header(111, True, 7, 1234, 0xABCDEF01, True) + block + b"opus"
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence_number, packet.timestamp, packet.ssrc) \
        == (111, 1, 7, 1234, 0xABCDEF01)
    assert packet.payload == b"opus"
    assert rtp.one_byte_extension_block([]) == b""


def test_rtcp_builders_parse_in_aiortc() -> None:
    sr, rr, pli, nack, remb = (RtcpPacket.parse(p)[0] for p in (
        rtp.rtcp_sender_report(5, (100, 200), 300, 40, 5000),
        rtp.rtcp_receiver_report(6, [(7, 12, 3, 70000, 0, 1, 2)]),
        rtp.rtcp_pli(8, 9),
        rtp.rtcp_nack(10, 11, [100, 101, 116, 117, 200]),
        rtp.rtcp_remb(12, 1_500_000, [13, 14]),
    ))
    assert sr.ssrc == 5 and sr.sender_info.rtp_timestamp == 300 and sr.sender_info.packet_count == 40
    assert rr.reports[0].ssrc == 7 and rr.reports[0].packets_lost == 3
    assert (pli.fmt, pli.ssrc, pli.media_ssrc) == (1, 8, 9)
    assert sorted(nack.lost) == [100, 101, 116, 117, 200]
    bitrate, ssrcs = unpack_remb_fci(remb.fci)
    assert abs(bitrate - 1_500_000) < 1_500_000 * 0.01 and ssrcs == [13, 14]


def test_prebuilt_extension_block_equals_the_general_builder() -> None:
    block = rtp.abs_send_time_block()
    assert block[:5] == rtp.one_byte_extension_block([(rtp.EXT_ABS_SEND_TIME, b"\x00\x00\x00")])[:5]
    assert len(block) == 8


def test_parse_agrees_with_the_packet_path_on_every_malformed_case() -> None:
    # One parser (mcu/_fanout.c): the forwarder drops exactly what parse_rtp refuses.
    from mcu._fanout import RECEIVED_MALFORMED, Counters, Track, receive

    counters = Counters()
    for garbage in (b"\x8f\x60" + bytes(10), b"\xa0\x60" + bytes(10) + b"\x01\x02\x00",
                    b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x1f\x00\x00\x00"):
        assert receive({0: Track(video=False)}, garbage, counters) == RECEIVED_MALFORMED
    assert counters.packets_malformed == 3


def test_a_nack_past_65535_asks_for_the_wrapped_numbers() -> None:
    # PID 65535 with the first two mask bits: 0 and 1 (aiortc gives 65536 and 65537).
    from mcu import aiortc_adapter as adapter

    nack = adapter.parse_rtcp(rtp.rtcp_nack(1, 2, [65535]).replace(b"\xff\xff\x00\x00",
                                                                     b"\xff\xff\x00\x03"))[0]
    assert sorted(adapter.nack_lost(nack)) == [0, 1, 65535]


def test_a_truncated_remb_is_a_value_error() -> None:
    from mcu import aiortc_adapter as adapter

    remb = rtp.rtcp_remb(1, 1_000_000, [5, 6])
    fci = adapter.parse_rtcp(remb)[0].fci
    with pytest.raises(ValueError, match="truncated REMB"):
        adapter.unpack_remb(fci[:-4])  # says two SSRCs, holds one


def test_app_packets_are_read_from_a_compound_and_bad_ones_refused() -> None:
    app = rtp.rtcp_app(3, 77, b"LAYR", (5).to_bytes(4, "big") + (6).to_bytes(4, "big"))
    compound = rtp.rtcp_receiver_report(1, []) + app + rtp.rtcp_pli(1, 2)
    assert rtp.rtcp_app_packets(compound) == [(3, 77, b"LAYR", app[12:])]
    assert rtp.rtcp_app_packets(rtp.rtcp_pli(1, 2)) == []
    # Padded: the padding is not data.
    padded = bytearray(rtp.rtcp_app(0, 9, b"LAYR", b"") + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    padded[3] += 1
    assert rtp.rtcp_app_packets(bytes(padded)) == [(0, 9, b"LAYR", b"")]
    for bad in (app[:-4], app[:8].replace(app[2:4], b"\x00\x01"), b"\x40" + app[1:],
                bytes(padded[:-1]) + b"\x09"):
        with pytest.raises(ValueError):
            rtp.rtcp_app_packets(bad)
    with pytest.raises(ValueError):
        rtp.rtcp_app(0, 1, b"LONGER", b"")

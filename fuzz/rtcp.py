"""RTCP: one decrypted compound packet, as a participant and a pipe read it.

mcu/participant.py ``_on_rtcp`` and mcu/pipe.py ``_on_rtcp`` split the packet with
aiortc's parser (through mcu/aiortc_adapter.py ``parse_rtcp``), read the fields their
handlers use (sender info, report blocks, feedback type and media SSRC, the REMB bitrate
and SSRCs, the NACKed sequence numbers through ``nack_lost``) and look the NACKed numbers
up in a leg's history (C); the pipe reads APP packets (layer reports) with
``rtp.rtcp_app_packets``. Bad input must come back as ValueError (counted as
``rtcp_malformed``), never as another exception or a crash.
"""

from __future__ import annotations

from mcu._fanout import Leg

from mcu import aiortc_adapter as adapter
from mcu import rtp

_leg = Leg(video=True)


def _reports(reports: list) -> None:
    for report in reports:
        assert 0 <= report.ssrc < 2**32 and 0 <= report.fraction_lost < 256


def one_input(data: bytes) -> None:
    try:
        # The pipe reads the APP packets (layer reports) with our own parser.
        for subtype, ssrc, name, payload in rtp.rtcp_app_packets(data):
            assert 0 <= subtype < 32 and 0 <= ssrc < 2**32 and len(name) == 4
            assert len(payload) <= len(data) - 12
    except ValueError:
        pass
    try:
        packets = adapter.parse_rtcp(data)
    except ValueError:
        return
    for packet in packets:
        if isinstance(packet, adapter.RtcpSr):
            info = packet.sender_info
            assert 0 <= info.ntp_timestamp < 2**64 and 0 <= info.rtp_timestamp < 2**32
            _reports(packet.reports)
        elif isinstance(packet, adapter.RtcpRr):
            _reports(packet.reports)
        elif isinstance(packet, adapter.RtcpPsfb):
            assert 0 <= packet.media_ssrc < 2**32
            if packet.fmt == rtp.RTCP_PSFB_REMB:
                try:
                    bitrate, ssrcs = adapter.unpack_remb(packet.fci)
                except ValueError:
                    continue
                assert bitrate >= 0 and all(0 <= s < 2**32 for s in ssrcs)
        elif isinstance(packet, adapter.RtcpRtpfb) and packet.fmt == rtp.RTCP_RTPFB_NACK:
            for seq in adapter.nack_lost(packet):
                assert 0 <= seq < 2**16
                assert _leg.sent(seq) is None  # nothing was sent on this leg

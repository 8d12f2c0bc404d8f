"""RTCP: one decrypted compound packet, as a participant and a pipe read it.

mcu/participant.py ``_on_rtcp`` and mcu/pipe.py ``_on_rtcp`` split the packet with
aiortc's parser (through mcu/aiortc_adapter.py ``parse_rtcp``), read the fields their
handlers use (sender info, report blocks, feedback type and media SSRC, the REMB bitrate
and SSRCs, the NACKed sequence numbers through ``nack_lost``) and look the NACKed numbers
up in a leg's history (C); the pipe reads APP packets (layer reports) with
``rtp.rtcp_app_packets``. Bad input must come back as ValueError (counted as
``rtcp_malformed``), never as another exception or a crash.

Before any of that, a participant's packet passes its connection's ``Inbound`` (C),
which decrypts it and takes the transport-cc feedback out to the estimator: the input
is protected as SRTCP and taken there too, the estimator matching it with packets a
sink stamped. What the Inbound leaves to Python is what ``split_rtcp`` leaves, unless
a feedback packet in it was malformed (then counted, not passed on).
"""

from __future__ import annotations

import os
import socket

import pylibsrtp
from mcu._fanout import Counters, Inbound, Leg, SendSideEstimator, Sink, forward, split_rtcp

from mcu import aiortc_adapter as adapter
from mcu import rtp

_leg = Leg(video=True)

# The Inbound's side: a client's SRTCP session and ours, a sink that stamped 64 packets.
_key = os.urandom(30)
_client = pylibsrtp.Session(pylibsrtp.Policy(key=_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
_ours = pylibsrtp.Session(pylibsrtp.Policy(key=_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
_session = adapter.srtp_session_address(_ours)
_out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_out.bind(("127.0.0.1", 0))
_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_in.bind(("127.0.0.1", 0))
_sink = Sink()
_sink.bind(_out.fileno(), *_in.getsockname(), 0, 0, None)
_sink.transport_cc_id = 3
_stamped = Leg(video=False)
_stamped.sink = _sink
for _seq in range(64):
    forward((_stamped,), b"", b"x" * 100, 0, _seq, _seq * 960, False, False, False, 100)
_sink.unbind()  # stamped and kept in its ring: nothing more is sent
_left: list[bytes] = []
_malformed: list[None] = []
_inbound = Inbound({}, Counters(), None, lambda status, packet: None, _left.append,
                   lambda: _malformed.append(None))
_inbound.set_unprotect(adapter._SRTP_UNPROTECT, adapter._SRTP_UNPROTECT_RTCP)


def _through_inbound(data: bytes) -> None:
    # libsrtp protects nothing shorter than a header and an SSRC; a second byte outside
    # 192-223 is RTP to the Inbound, as to every demultiplexer (RFC 5761).
    if len(data) < 8 or not 192 <= data[1] <= 223:
        return
    try:
        protected = _client.protect_rtcp(data)
    except (pylibsrtp.Error, ValueError):  # longer than pylibsrtp's buffer takes
        return
    _left.clear()
    _malformed.clear()
    _inbound.arm(SendSideEstimator(), _sink)  # fresh: no state carried between inputs
    _inbound.take(_session, protected)
    assert len(_left) <= 1 and all(len(piece) <= len(data) for piece in _left)
    rest, _ = split_rtcp(data)
    if not _malformed:
        assert (_left[0] if _left else b"") == rest


def _reports(reports: list) -> None:
    for report in reports:
        assert 0 <= report.ssrc < 2**32 and 0 <= report.fraction_lost < 256


def one_input(data: bytes) -> None:
    _through_inbound(data)
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

"""RTP and RTCP wire formats as small pure functions over bytes (RFC 3550, 4585, 5285).

The forwarding path reads a few header fields and builds new headers with ``struct``
instead of parsing packets into objects: that is what keeps a forwarded packet cheap.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from mcu import _fanout

RTP_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
ONE_BYTE_PROFILE = 0xBEDE
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

# Header extension IDs the server puts in every offer (aiortc's defaults). The server
# makes the offer on every leg, so these are the same on every connection.
EXT_MID = 1
EXT_AUDIO_LEVEL = 2
EXT_ABS_SEND_TIME = 3

RTCP_SR = 200
RTCP_RR = 201
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTCP_PSFB_PLI = 1
RTCP_PSFB_FIR = 4
RTCP_PSFB_REMB = 15
RTCP_RTPFB_NACK = 1


class MalformedPacket(ValueError):
    """A packet that cannot be RTP; it is dropped and counted, never forwarded."""


@dataclass(slots=True)
class RtpView:
    """The fields of one received RTP packet the forwarder needs, plus where the payload is."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int  # excludes padding
    extensions: dict[int, bytes]

    def payload(self, data: bytes) -> bytes:
        return data[self.payload_start:self.payload_end]


def parse_rtp(data: bytes) -> RtpView:
    """Read an RTP header; raise :class:`MalformedPacket` for anything inconsistent.

    The checks are the C packet path's own (mcu/_fanout.c ``parse_header``): what the
    forwarder drops as malformed is exactly what this refuses.
    """
    fields = _fanout.parse(data)
    if fields is None:
        raise MalformedPacket("not a well-formed RTP packet")
    return RtpView(*fields)


def one_byte_extension_block(elements: list[tuple[int, bytes]]) -> bytes:
    """The extension part of a header (profile, length, elements, padding); empty if none."""
    if not elements:
        return b""
    body = b"".join(bytes([(ext_id << 4) | (len(value) - 1)]) + value for ext_id, value in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", ONE_BYTE_PROFILE, len(body) // 4) + body


_ONE_WORD_BLOCK = struct.pack("!HH", ONE_BYTE_PROFILE, 1)
_ABS_SEND_TIME_ELEMENT = bytes([(EXT_ABS_SEND_TIME << 4) | 2])


def audio_level_block(level: int) -> bytes:
    """The extension part carrying only an RFC 6464 audio level (0-127, -dBov)."""
    return _ONE_WORD_BLOCK + bytes([EXT_AUDIO_LEVEL << 4, level & 0x7F, 0, 0])


def abs_send_time_block() -> bytes:
    """The extension part carrying only abs-send-time, stamped now (the video case)."""
    return _ONE_WORD_BLOCK + _ABS_SEND_TIME_ELEMENT + abs_send_time_now()


def abs_send_time_now() -> bytes:
    """abs-send-time: 24-bit seconds in 6.18 fixed point (only the low 64 s matter)."""
    return (int(time.time() * (1 << 18)) & 0xFFFFFF).to_bytes(3, "big")


def rtp_header(payload_type: int, marker: bool, seq: int, timestamp: int, ssrc: int,
               has_extension: bool, has_padding: bool = False) -> bytes:
    first = 0x80 | (0x10 if has_extension else 0) | (0x20 if has_padding else 0)
    return RTP_HEADER.pack(first, (0x80 if marker else 0) | payload_type, seq, timestamp, ssrc)


# RTCP builders ---------------------------------------------------------------------


def ntp_now() -> tuple[int, int]:
    """Wall-clock time as NTP (seconds, fraction), as RTCP sender reports want it."""
    now = time.time() + NTP_EPOCH_OFFSET
    seconds = int(now)
    return seconds & 0xFFFFFFFF, int((now - seconds) * (1 << 32)) & 0xFFFFFFFF


def rtcp_sender_report(ssrc: int, ntp: tuple[int, int], rtp_timestamp: int, packets: int,
                       octets: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, RTCP_SR, 6, ssrc, ntp[0], ntp[1],
                       rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)


def rtcp_receiver_report(ssrc: int, reports: list[tuple[int, int, int, int, int, int, int]]) -> bytes:
    """``reports``: (ssrc, fraction_lost, cumulative_lost, highest_seq, jitter, lsr, dlsr)."""
    blocks = b"".join(
        struct.pack("!IB", source, fraction & 0xFF)
        + (max(-(1 << 23), min(lost, (1 << 23) - 1)) & 0xFFFFFF).to_bytes(3, "big")
        + struct.pack("!IIII", highest & 0xFFFFFFFF, jitter, lsr, dlsr)
        for source, fraction, lost, highest, jitter, lsr, dlsr in reports[:31]
    )
    count = min(len(reports), 31)
    return struct.pack("!BBHI", 0x80 | count, RTCP_RR, 1 + 6 * count, ssrc) + blocks


def rtcp_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80 | RTCP_PSFB_PLI, RTCP_PSFB, 2, sender_ssrc, media_ssrc)


def rtcp_nack(sender_ssrc: int, media_ssrc: int, lost: list[int]) -> bytes:
    """Generic NACK (RFC 4585 6.2.1): pairs of (first lost, bitmask of the next 16)."""
    items: list[tuple[int, int]] = []
    for seq in sorted(set(lost)):
        if items and (seq - items[-1][0]) & 0xFFFF <= 16:
            first, mask = items[-1]
            items[-1] = (first, mask | 1 << (((seq - first) & 0xFFFF) - 1))
        else:
            items.append((seq, 0))
    body = b"".join(struct.pack("!HH", first, mask) for first, mask in items)
    return struct.pack("!BBHII", 0x80 | RTCP_RTPFB_NACK, RTCP_RTPFB, 2 + len(items),
                       sender_ssrc, media_ssrc) + body


def rtcp_remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    exponent = 0
    mantissa = bitrate
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exponent += 1
    fci = b"REMB" + bytes([len(ssrcs), (exponent << 2) | (mantissa >> 16)]) + \
        (mantissa & 0xFFFF).to_bytes(2, "big") + b"".join(s.to_bytes(4, "big") for s in ssrcs)
    return struct.pack("!BBHII", 0x80 | RTCP_PSFB_REMB, RTCP_PSFB, 2 + len(fci) // 4,
                       sender_ssrc, 0) + fci


def rtcp_app(subtype: int, ssrc: int, name: bytes, data: bytes) -> bytes:
    """An application-defined packet (RFC 3550 6.7): ``name`` is 4 ASCII bytes, ``data``
    a whole number of 32-bit words."""
    if len(name) != 4 or len(data) % 4 or not 0 <= subtype < 32:
        raise ValueError("an RTCP APP packet has a 4-byte name and whole words of data")
    return struct.pack("!BBHI", 0x80 | subtype, RTCP_APP, 2 + len(data) // 4, ssrc) + name + data


def rtcp_app_packets(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """The APP packets of a compound RTCP packet, as (subtype, SSRC, name, data); the
    others are skipped. Raises ValueError when the compound is malformed."""
    found = []
    pos = 0
    while pos < len(data):
        if len(data) < pos + 4 or data[pos] >> 6 != 2:
            raise ValueError("malformed RTCP header")
        end = pos + 4 + 4 * int.from_bytes(data[pos + 2:pos + 4], "big")
        if end > len(data):
            raise ValueError("truncated RTCP packet")
        if data[pos + 1] == RTCP_APP:
            if end - pos < 12:
                raise ValueError("an RTCP APP packet without its SSRC and name")
            padding = data[end - 1] if data[pos] & 0x20 else 0
            if padding > end - pos - 12:
                raise ValueError("bad RTCP padding")
            found.append((data[pos] & 0x1F, int.from_bytes(data[pos + 4:pos + 8], "big"),
                          bytes(data[pos + 8:pos + 12]), bytes(data[pos + 12:end - padding])))
        pos = end
    return found

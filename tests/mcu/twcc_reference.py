"""A Python reading of transport-cc feedback (RTPFB FMT 15), for the tests alone.

The service reads and makes these packets in C (mcu/_fanout.c); this is what the C code
is checked against, byte for byte, on chosen and random inputs (tests/mcu/test_twcc.py).
It was the service's own until that moved to C, and is kept as plain as possible.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mcu.twcc import FMT_TRANSPORT_CC, RTCP_RTPFB

# Packet status symbols.
NOT_RECEIVED = 0
SMALL_DELTA = 1  # received, delta 0..63.75 ms in one byte
LARGE_DELTA = 2  # received, delta -8192..8191.75 ms in two bytes

DELTA_UNIT_US = 250
REFERENCE_UNIT_US = 64_000
MAX_RUN = 0x1FFF  # a run length chunk's 13 bits
MAX_STATUSES = 500  # per feedback packet: it stays well under the path MTU


@dataclass(frozen=True)
class Feedback:
    """One transport-cc feedback packet, decoded.

    ``arrivals``: per sequence number from ``base_seq`` on (wrapping at 65536), the
    arrival time in microseconds on the receiver's clock (its reference time plus the
    deltas; only differences mean anything), or None when it was not received.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time: int  # 24 bits, in 64 ms units
    feedback_count: int
    arrivals: list[int | None]


def _chunks(symbols: list[int]) -> bytes:
    out = bytearray()
    i, n = 0, len(symbols)
    while i < n:
        run = 1
        while i + run < n and symbols[i + run] == symbols[i] and run < MAX_RUN:
            run += 1
        ahead = symbols[i:i + 14]
        one_bit = len(ahead) == 14 and LARGE_DELTA not in ahead
        # A run length chunk (0, the symbol, 13 bits of length) when it says more than
        # the vector that could be used instead.
        if run >= 14 or (run >= 7 and not one_bit):
            out += struct.pack("!H", (symbols[i] << 13) | run)
            i += run
            continue
        if LARGE_DELTA not in ahead:
            # One-bit status vector: 14 symbols, received (small delta) or not.
            value = 0x8000
            for k, symbol in enumerate(ahead):
                value |= symbol << (13 - k)
            out += struct.pack("!H", value)
            i += len(ahead)
        else:
            ahead = symbols[i:i + 7]
            value = 0xC000
            for k, symbol in enumerate(ahead):
                value |= symbol << (12 - 2 * k)
            out += struct.pack("!H", value)
            i += len(ahead)
    return bytes(out)


def build_feedback(sender_ssrc: int, media_ssrc: int, base_seq: int,
                   arrivals: list[int | None], feedback_count: int) -> bytes:
    """One RTPFB FMT 15 packet for ``arrivals`` (as in :class:`Feedback`; microseconds).

    The first entry must be a received one (its time sets the reference time), and no
    two received ones may be further apart than a two-byte delta can say (8 s):
    :class:`FeedbackBuilder` splits packets so.
    """
    first = next((t for t in arrivals if t is not None), None)
    if first is None or arrivals[0] is None:
        raise ValueError("feedback must start with a received packet")
    reference = first // REFERENCE_UNIT_US
    previous = reference * REFERENCE_UNIT_US
    symbols: list[int] = []
    deltas = bytearray()
    for arrival in arrivals:
        if arrival is None:
            symbols.append(NOT_RECEIVED)
            continue
        # Quantised against the last quantised time, so rounding never accumulates.
        ticks = round((arrival - previous) / DELTA_UNIT_US)
        previous += ticks * DELTA_UNIT_US
        if 0 <= ticks <= 0xFF:
            symbols.append(SMALL_DELTA)
            deltas.append(ticks)
        elif -0x8000 <= ticks <= 0x7FFF:
            symbols.append(LARGE_DELTA)
            deltas += struct.pack("!h", ticks)
        else:
            raise ValueError("arrival too far from the previous one for one feedback")
    body = struct.pack("!IIHHI", sender_ssrc, media_ssrc, base_seq & 0xFFFF, len(arrivals),
                       ((reference & 0xFFFFFF) << 8) | (feedback_count & 0xFF))
    body += _chunks(symbols) + deltas
    padding = -len(body) % 4
    first_byte = 0x80 | FMT_TRANSPORT_CC
    if padding:
        first_byte |= 0x20  # the padding's last byte says how long it is (RFC 3550)
        body += bytes(padding - 1) + bytes([padding])
    return struct.pack("!BBH", first_byte, RTCP_RTPFB, len(body) // 4) + body


def parse_feedback(packet: bytes) -> Feedback:
    """Decode one RTPFB FMT 15 packet (header included); ValueError when malformed."""
    if len(packet) < 20 or packet[0] >> 6 != 2 or packet[1] != RTCP_RTPFB \
            or packet[0] & 0x1F != FMT_TRANSPORT_CC:
        raise ValueError("not a transport-cc feedback packet")
    length = 4 + 4 * struct.unpack_from("!H", packet, 2)[0]
    if length > len(packet) or length < 20:  # its length must cover its own fields
        raise ValueError("truncated transport-cc feedback")
    end = length
    if packet[0] & 0x20:
        if packet[end - 1] == 0 or packet[end - 1] > end - 20:
            raise ValueError("bad padding in transport-cc feedback")
        end -= packet[end - 1]
    sender, media, base, count, word = struct.unpack_from("!IIHHI", packet, 4)
    reference, feedback_count = word >> 8, word & 0xFF
    if reference & 0x800000:  # a signed 24-bit number
        reference -= 1 << 24
    symbols: list[int] = []
    at = 20
    while len(symbols) < count:
        if at + 2 > end:
            raise ValueError("transport-cc feedback ends inside its chunks")
        chunk = struct.unpack_from("!H", packet, at)[0]
        at += 2
        if not chunk & 0x8000:
            symbol, run = (chunk >> 13) & 0x3, chunk & 0x1FFF
            symbols += [symbol] * run
        elif not chunk & 0x4000:
            symbols += [(chunk >> (13 - k)) & 1 for k in range(14)]
        else:
            symbols += [(chunk >> (12 - 2 * k)) & 3 for k in range(7)]
    del symbols[count:]  # a vector's last chunk may say more than the count
    time = reference * REFERENCE_UNIT_US
    arrivals: list[int | None] = []
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            arrivals.append(None)
            continue
        if symbol == SMALL_DELTA:
            if at + 1 > end:
                raise ValueError("transport-cc feedback ends inside its deltas")
            time += packet[at] * DELTA_UNIT_US
            at += 1
        elif symbol == LARGE_DELTA:
            if at + 2 > end:
                raise ValueError("transport-cc feedback ends inside its deltas")
            time += struct.unpack_from("!h", packet, at)[0] * DELTA_UNIT_US
            at += 2
        else:
            raise ValueError("reserved packet status symbol")
        arrivals.append(time)
    return Feedback(sender, media, base, reference & 0xFFFFFF, feedback_count, arrivals)


def split_rtcp(data: bytes) -> tuple[bytes, list[bytes]]:
    """A compound RTCP packet's transport-cc feedback packets, and the rest of it.

    aiortc's parser reads FMT 15 as a NACK, and refuses the whole compound packet when
    the feedback is padded (as browsers pad it); so these are taken out before it runs.
    Anything malformed is left in the rest, for that parser to refuse.
    """
    at = 0
    rest: list[bytes] = []
    found: list[bytes] = []
    while at + 4 <= len(data):
        end = at + 4 + 4 * struct.unpack_from("!H", data, at + 2)[0]
        if end > len(data):
            break
        piece = data[at:end]
        if piece[1] == RTCP_RTPFB and piece[0] & 0x1F == FMT_TRANSPORT_CC:
            found.append(piece)
        else:
            rest.append(piece)
        at = end
    if not found:
        return data, []
    return b"".join(rest) + data[at:], found


class FeedbackBuilder:
    """Turns one connection's arrivals into feedback packets (as Arrivals.feedback()).

    Each packet number is reported once: a number not
    there when its range was reported is reported lost, and if it comes later it is
    ignored (the sender has counted it lost by then).
    """

    def __init__(self) -> None:
        self._highest: int | None = None  # the highest number seen, unwrapped
        self._next: int | None = None  # the first number not yet reported, unwrapped
        self._count = 0  # feedback packets sent, mod 256
        self.packets_reported = 0

    def _unwrap(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        unwrapped = self._highest + delta
        self._highest = max(self._highest, unwrapped)
        return unwrapped

    def build(self, arrivals: list[tuple[int, float]], sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """Feedback packets for ``arrivals`` (number, monotonic seconds), in arrival order."""
        received: dict[int, int] = {}
        for seq, at in arrivals:
            number = self._unwrap(seq)
            if self._next is None or number >= self._next:
                received.setdefault(number, int(at * 1_000_000))
        if not received:
            return []
        start = min(received) if self._next is None else self._next
        end = max(received)
        if end - start > 0x7FFF:  # a jump (the sender restarted its count): start over
            start = min(number for number in received if end - number <= 0x7FFF)
        self._next = end + 1
        packets = []
        number = start
        while number <= end:
            # Each packet starts at a received number and spans at most MAX_STATUSES,
            # with no gap between received ones a two-byte delta cannot say.
            while number not in received:
                number += 1
            first = number
            times: list[int | None] = []
            last = received[first]
            while number <= end and len(times) < MAX_STATUSES:
                at = received.get(number)
                if at is not None:
                    if abs(at - last) > 8_000_000:
                        break
                    last = at
                times.append(at)
                number += 1
            while times[-1] is None:  # a packet ends at a received number
                times.pop()
                number -= 1
            packets.append(build_feedback(sender_ssrc, media_ssrc, first, times, self._count))
            self._count = (self._count + 1) & 0xFF
            self.packets_reported += len(times)
        return packets

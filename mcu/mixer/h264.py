"""H.264 sources for the compositor: RTP payloads (RFC 6184, packetization mode 1) joined
into Annex B access units, and a decoder that waits for an IDR picture.

A room forwarding H.264 (mcu/codecs.py) still has a composite for its mixed participants
and its recording: the cameras are decoded here; the composite itself stays VP8
(mcu/mixer/vp8.py), which every mixed participant receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .gated import KeyframeGatedDecoder

START_CODE = b"\x00\x00\x00\x01"
STAP_A = 24
FU_A = 28
IDR = 5
SPS = 7


def nal_types(access_unit: bytes) -> list[int]:
    """The NAL unit types of an Annex B access unit (as :func:`depayload` makes them)."""
    return [access_unit[i + 4] & 0x1F for i in range(len(access_unit) - 4)
            if access_unit[i:i + 4] == START_CODE]


def is_keyframe(access_unit: bytes) -> bool:
    """An IDR picture: a decoder (with the parameter sets before it) can start here."""
    return IDR in nal_types(access_unit)


def depayload(payload: bytes) -> tuple[bytes, bool]:
    """One RTP payload as Annex B bytes, and whether it continues a fragmented NAL unit
    (a FU-A that is not the first fragment: its bytes belong behind the previous one's).

    Raises ValueError for a payload that is empty, malformed or of a packetization
    mode 1 does not allow.
    """
    if not payload:
        raise ValueError("empty H.264 payload")
    nal_type = payload[0] & 0x1F
    if 1 <= nal_type <= 23:
        return START_CODE + payload, False
    if nal_type == STAP_A:
        units, offset = [], 1
        while offset < len(payload):
            if offset + 2 > len(payload):
                raise ValueError("truncated STAP-A size")
            size = int.from_bytes(payload[offset:offset + 2], "big")
            offset += 2
            if size == 0 or offset + size > len(payload):
                raise ValueError("STAP-A unit size past the payload")
            units.append(START_CODE + payload[offset:offset + size])
            offset += size
        if not units:
            raise ValueError("STAP-A without units")
        return b"".join(units), False
    if nal_type == FU_A:
        if len(payload) < 3:
            raise ValueError("truncated FU-A")
        header = payload[1]
        if header & 0x80:  # the first fragment: the NAL header is rebuilt from both bytes
            return START_CODE + bytes([(payload[0] & 0xE0) | (header & 0x1F)]) + payload[2:], False
        return payload[2:], True
    raise ValueError(f"NAL unit type {nal_type} is not used in packetization mode 1")


@dataclass(frozen=True, slots=True)
class H264Frame:
    data: bytes  # Annex B access unit
    timestamp: int  # RTP timestamp, 90 kHz
    keyframe: bool
    after_gap: bool  # a frame before this one was lost: decoding may need a key frame


# NAL unit types that only ever begin an access unit (RFC 6184, H.264 7.4.1.2.3): a
# picture that starts with one is known to be whole from there.
_AU_START = {6, 7, 8, 9}  # SEI, SPS, PPS, access unit delimiter


class H264Depacketizer:
    """Joins a source's RTP payloads into access units (one per timestamp, the marker
    bit ends it), tolerating reordering within a picture. H.264 payloads carry no
    "first packet" flag, so a picture is known whole when its packets run without a hole
    to the marked one from the packet after the previous picture's last, or (the first
    picture, or after a loss) from one that begins with a parameter set or SEI: a
    keyframe, what a decoder needs after a loss anyway. A picture with a hole is
    dropped, never handed on."""

    def __init__(self) -> None:
        self._ts: int | None = None
        self._parts: dict[int, tuple[bytes, bool]] = {}
        self._end: int | None = None
        self._last_end: int | None = None
        self._gap = False
        self._done_ts: int | None = None
        self.dropped_frames = 0
        self.invalid = 0

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> H264Frame | None:
        try:
            part = depayload(payload)
        except ValueError:
            self.invalid += 1
            return None
        seq &= 0xFFFF
        if timestamp == self._done_ts:
            return None  # a duplicate or retransmission of a picture already out
        if timestamp != self._ts:
            if self._parts:
                self.dropped_frames += 1
                self._gap = True
                # The next picture follows what was seen of this one, if nothing else is lost.
                self._last_end = self._end if self._end is not None else self._highest()
            self._ts, self._parts, self._end = timestamp, {}, None
        self._parts[seq] = part
        if marker:
            self._end = seq
        if self._end is None:
            return None
        end = self._end
        start = end  # walk back from the marked packet over the packets we have
        while ((start - 1) & 0xFFFF) in self._parts and ((start - 1) & 0xFFFF) != end:
            start = (start - 1) & 0xFFFF
        count = ((end - start) & 0xFFFF) + 1
        if count < len(self._parts):
            return None  # packets before a hole: wait for what is missing
        follows = self._last_end is not None and (start - self._last_end) & 0xFFFF == 1
        head, continued = self._parts[start]
        if not follows and (continued or head[4] & 0x1F not in _AU_START):
            return None  # whether packets before it belong to this picture is not known
        data = b"".join(self._parts[(start + i) & 0xFFFF][0] for i in range(count))
        gap = self._gap or not follows
        self._last_end, self._done_ts = end, timestamp
        self._parts, self._end, self._gap = {}, None, False
        return H264Frame(data, timestamp, is_keyframe(data), gap)

    def _highest(self) -> int:
        # The newest sequence number of a picture (they may wrap around 65535).
        seqs = list(self._parts)
        return max(seqs, key=lambda s: (s - seqs[0] + 0x8000) & 0xFFFF)


class H264Decoder(KeyframeGatedDecoder):
    """FFmpeg's H.264 decoder that waits for an IDR picture and survives garbage."""

    codec_name = "h264"
    is_keyframe = staticmethod(is_keyframe)


# The composite in H.264, for room units (mcu/unit.py) --------------------------------------

MAX_PAYLOAD = 1200  # as the VP8 packetizer: room under a 1500-byte path with SRTP and headers

# H.264 Table A-1 (ITU-T H.264, Annex A), by level_idc: (MaxFS, the most macroblocks in a
# frame; MaxMBPS, the most macroblocks a second). 9 is level 1b as its own idc; a
# baseline profile-level-id says 1b as level_idc 11 with constraint_set3 set instead.
LEVEL_LIMITS: dict[int, tuple[int, int]] = {
    10: (99, 1485), 9: (99, 1485), 11: (396, 3000), 12: (396, 6000), 13: (396, 11880),
    20: (396, 11880), 21: (792, 19800), 22: (1620, 20250), 30: (1620, 40500),
    31: (3600, 108000), 32: (5120, 216000), 40: (8192, 245760), 41: (8192, 245760),
    42: (8704, 522240), 50: (22080, 589824), 51: (36864, 983040), 52: (36864, 2073600)}


def fits(max_fs: int, max_mbps: int, width: int, height: int, fps: float) -> bool:
    """A decoder of those limits (a level's, or an fmtp's max-fs and max-mbps) takes frames
    of that size at that rate (A.3.1: the frame's macroblocks, their rate, and neither
    side longer than sqrt(8 * MaxFS) macroblocks)."""
    columns, rows = -(-width // 16), -(-height // 16)
    side = (8 * max_fs) ** 0.5
    return columns * rows <= max_fs and columns * rows * fps <= max_mbps and columns <= side and rows <= side


def level_for(width: int, height: int, fps: float) -> int:
    """The lowest level (level_idc) whose decoders take that size at that rate: what our
    SPS says, so a unit that offered a low level is not told the stream needs more."""
    levels = sorted(idc for idc in LEVEL_LIMITS if idc != 9)
    return next((idc for idc in levels if fits(*LEVEL_LIMITS[idc], width, height, fps)), levels[-1])


def split_nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, start codes (3 or 4 bytes) taken off."""
    units, start, i = [], -1, 0
    length = len(access_unit)
    while i + 3 <= length:
        if access_unit[i] == 0 and access_unit[i + 1] == 0 and access_unit[i + 2] == 1:
            if start >= 0:
                units.append(access_unit[start:i].rstrip(b"\x00"))
            start = i + 3
            i += 3
            continue
        i += 1
    if start >= 0:
        units.append(access_unit[start:])
    return [unit for unit in units if unit]


def packetize_h264(access_unit: bytes, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RTP payloads of one access unit (RFC 6184, packetization mode 1): a NAL unit that
    fits goes alone, a bigger one in FU-A fragments."""
    payloads = []
    for unit in split_nal_units(access_unit):
        if len(unit) <= max_payload:
            payloads.append(unit)
            continue
        indicator = (unit[0] & 0xE0) | FU_A
        nal_type = unit[0] & 0x1F
        body = unit[1:]
        step = max_payload - 2
        for offset in range(0, len(body), step):
            first, last = offset == 0, offset + step >= len(body)
            header = (0x80 if first else 0) | (0x40 if last else 0) | nal_type
            payloads.append(bytes([indicator, header]) + body[offset:offset + step])
    return payloads


class H264Encoder:
    """libx264 for the composite a room unit receives: constrained baseline (what every
    unit decodes), real time, one thread, key frames on request only; Annex B out."""

    def __init__(self, width: int, height: int, fps: float = 15.0, bitrate: int | None = None) -> None:
        import fractions

        import av

        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.time_base = fractions.Fraction(1, 90000)
        codec.framerate = fractions.Fraction(fps).limit_denominator(1001)
        codec.bit_rate = bitrate or int(width * height * fps * 0.1)
        codec.gop_size = 3000
        codec.thread_count = 1
        codec.profile = "Constrained Baseline"
        # Every NAL unit (a slice) fits one RTP packet: units in packetization mode 0
        # take nothing else, and mode 1 ones then need no fragments either.
        level = level_for(width, height, fps)
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "level": str(level),
                         "x264-params": "keyint=3000:min-keyint=3000:scenecut=0:repeat-headers=1:"
                                        f"slice-max-size={MAX_PAYLOAD}"}
        self._codec = codec
        self.width, self.height = width, height

    def encode(self, frame: Any, keyframe: bool = False) -> list[tuple[bytes, int, bool]]:
        """(access unit, 90 kHz timestamp, is it a key frame) for each encoded frame."""
        import av

        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return [(bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe))
                for packet in self._codec.encode(frame)]

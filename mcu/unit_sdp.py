"""SDP offer/answer for room units on plain RTP (RFC 3264, 4566, 4568).

A room unit (a SIP video endpoint) offers its media; we answer with what our mixed
room takes from it. Only the subset such units send is read: connection addresses,
m-lines with their payload formats, rtpmap/fmtp, direction, rtcp-mux and ``a=rtcp``,
and SDES crypto lines for SRTP. Anything we cannot use is refused in the answer (port 0)
or, when nothing is usable, with :class:`SdpError`, whose ``code`` says why.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import ipaddress
import re
import time
from dataclasses import dataclass, field

from mcu.mixer.h264 import LEVEL_LIMITS, fits

MAX_SDP_BYTES = 16 * 1024
OPUS = "opus"
TELEPHONE_EVENT = "telephone-event"
# SDES suites pylibsrtp does (RFC 4568 6.2), best first.
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
SRTP_KEY_BYTES = 30  # 16 key + 14 salt
PLAIN, SECURE = "RTP/AVP", "RTP/SAVP"
# The RTP profiles a unit's media may be in: RFC 3551's, and RFC 4585's for RTCP
# feedback (AVPF), which is what we do on RTP/AVP anyway (PLI, FIR, NACK); an answer is
# in the offer's (RFC 3264 6). The SRTP ones: SDES keys (RFC 4568).
SECURE_PROFILES = (SECURE, "RTP/SAVPF")
PROFILES = (PLAIN, "RTP/AVPF", *SECURE_PROFILES)
# RFC 3551's static payload types that units offer without an rtpmap line.
STATIC_TYPES = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}
# The codecs a unit's sound may use, best first: Opus as the room has it, the others
# transcoded at the unit's edge (mcu/unit_audio.py).
AUDIO_CODECS = (("opus", 48000), ("G722", 8000), ("PCMU", 8000), ("PCMA", 8000))
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """The offer cannot be answered: ``code`` is ``bad_sdp`` or ``codec_mismatch``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Crypto:
    tag: str
    suite: str
    key: bytes  # master key and salt


@dataclass
class MediaOffer:
    kind: str  # "audio", "video", or anything else a unit offers
    port: int
    proto: str
    formats: list[str]
    address: str = ""
    rtpmap: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # pt -> (name, rate, channels)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    rtcp_mux: bool = False
    rtcp_port: int | None = None
    rtcp_address: str | None = None
    crypto: list[Crypto] = field(default_factory=list)
    ptime: float | None = None  # milliseconds; RFC 4566 6 allows a fraction (20.0)
    imageattr: dict[str, str] = field(default_factory=dict)  # pt or "*" -> its sets (RFC 6236)
    # pt or "*" -> the RTCP feedback it takes (RFC 4585 a=rtcp-fb: "nack", "nack pli", ...)
    rtcp_fb: dict[str, set[str]] = field(default_factory=dict)

    def feedback(self, payload_type: int) -> set[str]:
        """The RTCP feedback offered (or answered) for ``payload_type``, ``*`` included."""
        return self.rtcp_fb.get(str(payload_type), set()) | self.rtcp_fb.get("*", set())

    def payload_types(self, name: str, rate: int | None = None) -> list[int]:
        return [pt for pt in self._numbered()
                if (encoding := self.rtpmap.get(pt, STATIC_TYPES.get(pt))) is not None
                and encoding[0].lower() == name.lower() and (rate is None or encoding[1] == rate)]

    def _numbered(self) -> list[int]:
        return [int(f) for f in self.formats if f.isdigit() and int(f) < 128]


@dataclass
class SessionOffer:
    address: str
    media: list[MediaOffer]


def parse_offer(sdp: str) -> SessionOffer:
    if len(sdp) > MAX_SDP_BYTES:
        raise SdpError("bad_sdp", "the SDP is too long")
    session_address = ""
    media: list[MediaOffer] = []
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v=0"):
        raise SdpError("bad_sdp", "the SDP does not start with v=0")
    for line in lines:
        kind, _, value = line.partition("=")
        if len(kind) != 1:
            raise SdpError("bad_sdp", f"bad SDP line {line[:40]!r}")
        current = media[-1] if media else None
        if kind == "c":
            address = _connection_address(value)
            if current is None:
                session_address = address
            else:
                current.address = address
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError("bad_sdp", f"bad m-line {line[:60]!r}")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SdpError("bad_sdp", "an m-line port over 65535")
            media.append(MediaOffer(parts[0], port, parts[2].upper(), parts[3:]))
        elif kind == "a" and current is not None:
            _attribute(current, value)
    if not media:
        raise SdpError("bad_sdp", "the SDP offers no media")
    for m in media:
        m.address = m.address or session_address
        if m.port and not m.address:
            raise SdpError("bad_sdp", "no connection address for an m-line")
    return SessionOffer(session_address, media)


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("bad_sdp", f"bad c-line {value[:40]!r}")
    try:
        return str(ipaddress.ip_address(parts[2].split("/")[0]))
    except ValueError:
        raise SdpError("bad_sdp", "the c-line address is not an IP address") from None


def _attribute(m: MediaOffer, value: str) -> None:
    name, _, rest = value.partition(":")
    try:
        if name == "rtpmap":
            pt, _, encoding = rest.partition(" ")
            parts = encoding.strip().split("/")
            channels = int(parts[2]) if len(parts) > 2 else 1
            m.rtpmap[int(pt)] = (parts[0], int(parts[1]), channels)
        elif name == "fmtp":
            pt, _, parameters = rest.partition(" ")
            m.fmtp[int(pt)] = parameters.strip()
        elif name in DIRECTIONS:
            m.direction = name
        elif name == "rtcp-mux":
            m.rtcp_mux = True
        elif name == "rtcp":
            parts = rest.split()
            m.rtcp_port = int(parts[0])
            if len(parts) >= 4:
                m.rtcp_address = _connection_address(" ".join(parts[1:4]))
        elif name == "ptime":
            # We send 20 ms packets whatever it says, so one we cannot read costs no call.
            with contextlib.suppress(ValueError):
                m.ptime = float(rest)
        elif name == "imageattr":
            pt, _, sets = rest.strip().partition(" ")
            m.imageattr[pt] = sets.strip()
        elif name == "rtcp-fb":
            pt, _, value = rest.strip().partition(" ")
            if pt == "*" or pt.isdigit():  # feedback is optional: an odd line costs no call
                m.rtcp_fb.setdefault(pt, set()).add(" ".join(value.split()).lower())
        elif name == "crypto":
            crypto = _crypto(rest)
            if crypto is not None:
                m.crypto.append(crypto)
    except (ValueError, IndexError):
        raise SdpError("bad_sdp", f"bad attribute a={value[:60]!r}") from None


def _crypto(value: str) -> Crypto | None:
    """One a=crypto line (RFC 4568 9.1); None for a suite or key we do not take."""
    parts = value.split()
    if len(parts) < 3 or parts[1] not in SRTP_SUITES or not parts[2].startswith("inline:"):
        return None
    if len(parts) > 3:  # session parameters (UNENCRYPTED_SRTP, KDR...): not ours to honour
        return None
    key_text = parts[2][len("inline:"):].split("|")
    if len(key_text) > 1 and ":" in key_text[-1]:
        return None  # an MKI: libsrtp sessions here take none
    key = base64.b64decode(key_text[0] + "=" * (-len(key_text[0]) % 4), validate=True)
    if len(key) != SRTP_KEY_BYTES:
        raise ValueError("an SRTP key of the wrong length")
    return Crypto(parts[0], parts[1], key)


UNSPECIFIED = ("0.0.0.0", "::")  # a c-line's address that says: send nothing here (as parsed)


@dataclass
class StreamChoice:
    """What we take from one m-line of the unit's SDP (its offer, or its answer to ours)."""

    kind: str  # "audio" or "video"
    index: int  # the m-line's place in the SDP
    payload_type: int
    remote: tuple[str, int]
    remote_rtcp: tuple[str, int]
    rtcp_mux: bool
    crypto: Crypto | None  # the unit's key and suite: SRTP, with a key of our own back
    direction: str  # ours: sendrecv, sendonly (we only send), recvonly, inactive
    codec: str = ""  # audio: "opus", or "G722", "PCMU", "PCMA" (transcoded); video: "h264"
    channels: int = 1  # audio: Opus's rtpmap says 2
    dtmf_payload_type: int | None = None  # audio: RFC 4733 telephone-event
    dtmf_clock: int = 48000  # its rtpmap's rate (units often say 8000 beside Opus)
    packetization_mode: int = 1  # video: H.264's (RFC 6184)
    receive_size: tuple[int, int] = (640, 360)  # video: the composite's size for this unit
    # video: generic NACK (RFC 4585 a=rtcp-fb nack) agreed: we answer the unit's NACKs for
    # the composite and NACK its camera for what browsers miss; without it, neither.
    nack: bool = False
    profile: str = PLAIN  # the m-line's RTP profile (PROFILES), ours the same

    @property
    def we_send(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def we_receive(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _common(kind: str, index: int, m: MediaOffer, payload_type: int) -> StreamChoice:
    crypto = None
    if m.proto in SECURE_PROFILES:
        crypto = next((c for suite in SRTP_SUITES for c in m.crypto if c.suite == suite), None)
        if crypto is None:
            raise SdpError("codec_mismatch", "SRTP offered with no crypto suite we take")
    rtcp = (m.rtcp_address or m.address, m.rtcp_port) if m.rtcp_port else (m.address, m.port + 1)
    direction = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(m.direction, m.direction)
    if m.address in UNSPECIFIED:
        # The address 0.0.0.0: hold as RFC 2543 had it (older room systems), or an
        # address not known yet. Nothing is sent to it, neither RTP nor RTCP (RFC 3264
        # 8.4; _Stream.write); sent there, it reached our own host at the unit's ports.
        direction = {"sendrecv": "recvonly", "sendonly": "inactive"}.get(direction, direction)
    return StreamChoice(kind, index, payload_type, (m.address, m.port),
                        (m.address, m.port) if m.rtcp_mux else rtcp, m.rtcp_mux, crypto, direction,
                        profile=m.proto)


def choose_audio(offer: SessionOffer) -> StreamChoice:
    """The first audio m-line we can take, and how: Opus (what the room forwards and
    mixes) if offered, else G.722, G.711 µ-law or A-law, transcoded at the unit's edge."""
    audio = [(i, m) for i, m in enumerate(offer.media) if m.kind == "audio" and m.port]
    if not audio:
        raise SdpError("codec_mismatch", "the offer has no audio")
    for index, m in audio:
        if m.proto not in PROFILES:
            continue
        found = next(((name, types[0]) for name, rate in AUDIO_CODECS
                      if (types := m.payload_types(name, rate))), None)
        if found is None:
            continue
        name, payload_type = found
        choice = _common("audio", index, m, payload_type)
        choice.codec = name
        choice.channels = m.rtpmap.get(payload_type, STATIC_TYPES.get(payload_type, ("", 0, 1)))[2]
        dtmf = m.payload_types(TELEPHONE_EVENT, 48000) or m.payload_types(TELEPHONE_EVENT)
        if dtmf:
            choice.dtmf_payload_type, choice.dtmf_clock = dtmf[0], m.rtpmap[dtmf[0]][1]
        return choice
    names = sorted({m.rtpmap[pt][0] for _, m in audio for pt in m.rtpmap})
    raise SdpError("codec_mismatch", f"no audio codec in common: offered {', '.join(names) or 'none'}; "
                   "this service takes Opus, G.722, G.711")


def _h264_parameters(fmtp: str) -> dict[str, str]:
    return {name.strip().lower(): value.strip()
            for name, _, value in (part.partition("=") for part in fmtp.split(";")) if name.strip()}


def _h264_rank(fmtp: str) -> int | None:
    """How well an H.264 payload type suits us (lower is better): a baseline profile
    (browsers decode the camera we forward, and our composite is constrained baseline),
    constrained best; packetization mode 1 before 0 (both work: the composite's NAL units
    each fit a packet). None: not one we take (High profile alone, interleaved mode 2)."""
    parameters = _h264_parameters(fmtp)
    mode = parameters.get("packetization-mode", "0")
    profile = parameters.get("profile-level-id", "42e01f").lower()
    if mode not in ("0", "1") or len(profile) != 6 or not profile.startswith("42"):
        return None
    try:
        constrained = int(profile[2:4], 16) & 0x40
    except ValueError:
        return None
    return (0 if constrained else 2) + (0 if mode == "1" else 1)


# The composite's sizes for units, largest first: 16:9 like the composite itself, so a
# size is a scale of the same picture, never a crop. Sizes above MAX_COMPOSITE are not
# made: each size some unit receives is one more libx264 encode a frame (and above the
# room's 640x360 canvas, a compose at that size too, mcu/mixing.py): at 1280x720 up to
# about 15 ms of CPU a frame, 22 % of a core at 15 fps (docs/sip.md), and no room
# system's screen gains much from more than 720p of a grid of cameras. The operator may
# set another (the sip_composite_max setting, mcu.room.MediaConfig.unit_composite_max).
COMPOSITE_SIZES = ((1920, 1080), (1280, 720), (960, 540), (640, 360), (320, 180))
MAX_COMPOSITE = (1280, 720)
COMPOSITE_FPS = 15  # the mixer's video tick (mcu/mixing.py)


def _imageattr_bounds(sets: str) -> tuple[int, int] | None:
    """The widest x and y a unit's ``a=imageattr`` says it receives (its ``recv`` sets:
    single values, ``[a:b]`` or ``[a:step:b]`` ranges, ``[a,b,c]`` lists); None when it
    says nothing we can read or ``recv *`` (anything)."""
    found = re.search(r"\brecv\s+(.*?)(?:\bsend\b|$)", sets)
    if found is None or found.group(1).strip().startswith("*"):
        return None
    widest: dict[str, int] = {}
    for axis, value in re.findall(r"\b([xy])=(\[[^\]]*\]|\d+)", found.group(1)):
        numbers = [int(n) for n in re.findall(r"\d+", value)]
        if numbers:
            widest[axis] = max(widest.get(axis, 0), max(numbers))
    if "x" not in widest or "y" not in widest:
        return None
    return widest["x"], widest["y"]


def composite_size(fmtp: str, imageattr: str = "", fps: float = COMPOSITE_FPS,
                   cap: tuple[int, int] = MAX_COMPOSITE) -> tuple[int, int]:
    """The largest of :data:`COMPOSITE_SIZES`, up to ``cap``, that the unit's decoder takes
    by what its H.264 fmtp says (the level of ``profile-level-id``, or ``max-fs`` and
    ``max-mbps`` when given: RFC 6184 lets them say more than the level) and, if it sends
    one, its ``a=imageattr`` recv bounds. None fits (a decoder below 320x180): the
    smallest, as a unit that takes H.264 at all gets a picture rather than none."""
    parameters = _h264_parameters(fmtp)
    # RFC 6184 8.1: without profile-level-id, a baseline decoder of level 1 is meant.
    profile = parameters.get("profile-level-id", "42000a").lower()
    try:
        level = int(profile[4:6], 16)
        if level == 11 and int(profile[2:4], 16) & 0x10:  # level 1b, baseline's way
            level = 9
        max_fs, max_mbps = LEVEL_LIMITS[level]
        max_fs = int(parameters.get("max-fs", max_fs))
        max_mbps = int(parameters.get("max-mbps", max_mbps))
    except (ValueError, KeyError):
        max_fs, max_mbps = LEVEL_LIMITS[10]  # a level we do not know: the least one
    bounds = _imageattr_bounds(imageattr) if imageattr else None
    for width, height in COMPOSITE_SIZES:
        if width > cap[0] or height > cap[1]:
            continue
        if bounds is not None and (width > bounds[0] or height > bounds[1]):
            continue
        if fits(max_fs, max_mbps, width, height, fps):
            return width, height
    return COMPOSITE_SIZES[-1]


def choose_video(offer: SessionOffer, composite_max: tuple[int, int] = MAX_COMPOSITE) -> StreamChoice | None:
    """The first video m-line with H.264 we take (see :func:`_h264_rank`); None: the
    unit stays audio-only (its video m-lines are refused). ``composite_max``: the largest
    composite it may get, whatever it takes."""
    for index, m in enumerate(offer.media):
        if m.kind != "video" or not m.port or m.proto not in PROFILES:
            continue
        ranked = sorted((rank, position, pt) for position, pt in enumerate(m.payload_types(H264, 90000))
                        if (rank := _h264_rank(m.fmtp.get(pt, ""))) is not None)
        if ranked:
            try:
                choice = _common("video", index, m, ranked[0][2])
            except SdpError:  # SRTP without a suite we take: the call goes on without video
                continue
            fmtp = m.fmtp.get(choice.payload_type, "")
            choice.packetization_mode = int(_h264_parameters(fmtp).get("packetization-mode", "0"))
            imageattr = m.imageattr.get(str(choice.payload_type), m.imageattr.get("*", ""))
            choice.receive_size = composite_size(fmtp, imageattr, cap=composite_max)
            # In an offer: the unit asks for it (we answer with it); in an answer to ours,
            # where we offered it: the unit accepted it (RFC 4585 4.2).
            choice.nack = "nack" in m.feedback(choice.payload_type)
            return choice
    return None


def _stream_lines(choice: StreamChoice, family: str, address: str, rtcp_port: int,
                  key: bytes | None, offer: bool = False) -> list[str]:
    pt = choice.payload_type
    if choice.kind == "audio" and choice.codec not in ("", OPUS):
        lines = [f"a=rtpmap:{pt} {choice.codec}/8000"]
        if choice.dtmf_payload_type is not None:
            lines += [f"a=rtpmap:{choice.dtmf_payload_type} telephone-event/{choice.dtmf_clock}",
                      f"a=fmtp:{choice.dtmf_payload_type} 0-15"]
        lines.append("a=ptime:20")
    elif choice.kind == "audio":
        lines = [f"a=rtpmap:{pt} opus/48000/{choice.channels}", f"a=fmtp:{pt} useinbandfec=1"]
        if choice.dtmf_payload_type is not None:
            lines += [f"a=rtpmap:{choice.dtmf_payload_type} telephone-event/{choice.dtmf_clock}",
                      f"a=fmtp:{choice.dtmf_payload_type} 0-15"]
        lines.append("a=ptime:20")
    else:
        lines = [f"a=rtpmap:{pt} H264/90000",
                 f"a=fmtp:{pt} profile-level-id={H264_PROFILE};"
                 f"packetization-mode={choice.packetization_mode}"]
        if choice.nack or offer:  # never to a unit that did not offer it (RFC 4585 4.2)
            lines.append(f"a=rtcp-fb:{pt} nack")
        lines += [f"a=rtcp-fb:{pt} nack pli", f"a=rtcp-fb:{pt} ccm fir"]
    lines.append(f"a={choice.direction}")
    if choice.rtcp_mux or offer:
        lines.append("a=rtcp-mux")
    if not choice.rtcp_mux or offer:
        lines.append(f"a=rtcp:{rtcp_port} IN {family} {address}")
    if key is not None:
        tag = choice.crypto.tag if choice.crypto is not None else "1"
        suite = choice.crypto.suite if choice.crypto is not None else SRTP_SUITES[0]
        lines.append(f"a=crypto:{tag} {suite} inline:{base64.b64encode(key).decode('ascii')}")
    return lines


H264 = "h264"
H264_PROFILE = "42e01f"  # constrained baseline, level 3.1: what we send and ask for
OFFERED_OPUS, OFFERED_DTMF, OFFERED_H264 = 111, 101, 96
# H.264 in packetization mode 0 as well: units that have only mode 0 (baresip, older
# systems) take our video too; every NAL unit of the composite fits a packet in both.
OFFERED_H264_MODE_0 = 97


@dataclass
class LocalStream:
    """Our side of one m-line: the ports we bound, our SRTP key."""

    rtp_port: int
    rtcp_port: int
    key: bytes | None


def _session_lines(address: str) -> tuple[str, list[str]]:
    family = "IP6" if ":" in address else "IP4"
    version = int(time.time())
    return family, ["v=0", f"o=multipoint {version} {version} IN {family} {address}", "s=multipoint",
                    f"c=IN {family} {address}", "t=0 0"]


def offer_sdp(address: str, streams: dict[str, LocalStream]) -> str:
    """Our offer when we call a unit: Opus and DTMF, and H.264 when ``streams`` has
    video; RTCP muxed or on its own port (the unit picks), SDES-SRTP where a key is given."""
    family, lines = _session_lines(address)
    for kind, local in streams.items():
        pt = OFFERED_OPUS if kind == "audio" else OFFERED_H264
        proto = SECURE if local.key is not None else PLAIN
        # Sound: Opus first, then what older units have (transcoded: mcu/unit_audio.py).
        formats = f"{pt} 9 0 8 {OFFERED_DTMF}" if kind == "audio" else f"{pt} {OFFERED_H264_MODE_0}"
        lines.append(f"m={kind} {local.rtp_port} {proto} {formats}")
        ours = StreamChoice(kind, 0, pt, ("", 0), ("", 0), True, None, "sendrecv", codec=OPUS, channels=2,
                            dtmf_payload_type=OFFERED_DTMF if kind == "audio" else None)
        if kind == "audio":
            lines += ["a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"]
        else:
            mode_0 = OFFERED_H264_MODE_0
            lines += [f"a=rtpmap:{mode_0} H264/90000",
                      f"a=fmtp:{mode_0} profile-level-id={H264_PROFILE};packetization-mode=0",
                      f"a=rtcp-fb:{mode_0} nack", f"a=rtcp-fb:{mode_0} nack pli",
                      f"a=rtcp-fb:{mode_0} ccm fir"]
        lines += _stream_lines(ours, family, address, local.rtcp_port, local.key, offer=True)
    return "\r\n".join(lines) + "\r\n"


def answer(offer: SessionOffer, taken: list[tuple[StreamChoice, LocalStream]], address: str) -> str:
    """The answer: the m-lines we took, every other m-line refused (port 0), in place."""
    family, lines = _session_lines(address)
    by_index = {choice.index: (choice, local) for choice, local in taken}
    for index, m in enumerate(offer.media):
        if index not in by_index:
            lines.append(f"m={m.kind} 0 {m.proto} {m.formats[0]}")
            continue
        choice, local = by_index[index]
        formats = [str(choice.payload_type)]
        if choice.dtmf_payload_type is not None:
            formats.append(str(choice.dtmf_payload_type))
        lines.append(f"m={m.kind} {local.rtp_port} {choice.profile} {' '.join(formats)}")
        lines += _stream_lines(choice, family, address, local.rtcp_port, local.key)
    return "\r\n".join(lines) + "\r\n"


def origin(sdp: str) -> tuple[str, int]:
    """The session id and version of an SDP we made (its ``o=`` line)."""
    for line in sdp.splitlines():
        if line.startswith("o="):
            fields = line[2:].split()
            return fields[1], int(fields[2])
    raise SdpError("bad_sdp", "no o= line")


def with_origin(sdp: str, session_id: str, version: int) -> str:
    """``sdp`` with the session id and version given: a later answer of the same session
    keeps its id and counts its version up (RFC 3264 8)."""
    def reorigin(line: str) -> str:
        if not line.startswith("o="):
            return line
        fields = line[2:].split()
        return "o=" + " ".join([fields[0], session_id, str(version), *fields[3:]])
    return "\r\n".join(reorigin(line) for line in sdp.split("\r\n"))


def rechoose(offer: SessionOffer, current: StreamChoice) -> StreamChoice:
    """What a unit's new offer in a re-INVITE (RFC 3264 8) makes of a stream it has:
    where it sends and takes RTCP, which way media flows (hold and resume), its SRTP key.
    The m-line must be where it was, with the codec (and payload type), RTP profile,
    SRTP suite and RTCP muxing it had: a change of those is refused (SdpError); the
    call then goes on as it was."""
    index, kind = current.index, current.kind
    if index >= len(offer.media) or offer.media[index].kind != kind:
        raise SdpError("bad_sdp", f"the {kind} m-line is not where it was")
    m = offer.media[index]
    if not m.port:  # the unit stopped this stream: nothing flows either way
        return dataclasses.replace(current, direction="inactive")
    if m.proto != current.profile:
        raise SdpError("codec_mismatch", f"the {kind} stream cannot change its RTP profile in a call")
    encoding = m.rtpmap.get(current.payload_type, STATIC_TYPES.get(current.payload_type))
    codec = current.codec if kind == "audio" else H264
    if str(current.payload_type) not in m.formats or encoding is None or encoding[0].lower() != codec.lower():
        raise SdpError("codec_mismatch", f"the {kind} codec cannot change in a call "
                                         f"({codec} on payload type {current.payload_type})")
    updated = _common(kind, index, m, current.payload_type)
    suite = updated.crypto.suite if updated.crypto is not None else None
    if current.crypto is not None and suite != current.crypto.suite:
        raise SdpError("codec_mismatch", "the SRTP suite cannot change in a call")
    if updated.rtcp_mux != current.rtcp_mux:
        raise SdpError("bad_sdp", "RTCP muxing cannot change in a call")
    return dataclasses.replace(current, remote=updated.remote, remote_rtcp=updated.remote_rtcp,
                               crypto=updated.crypto, direction=updated.direction)

"""Which video codec a room forwards, and which one each participant's video uses.

Forwarding never transcodes, so a publisher's video reaches only subscribers whose legs
were negotiated for the same codec. A room therefore has one forwarding codec (chosen by
the front, signaling/server.py, at its first join: :func:`room_codec`), and each
participant's video m-lines are offered exactly one codec (:func:`participant_codec`):
the room's when it can do it, else one it can. See docs/codecs.md.

Names are the protocol's (``"vp8"``, ``"h264"``); :data:`C_CODECS` maps them onto the C
packet path's constants, :data:`MIME_TYPES` onto SDP.
"""

from __future__ import annotations

from collections.abc import Iterable

from mcu._fanout import CODEC_H264, CODEC_VP8

VP8 = "vp8"
H264 = "h264"
VIDEO_CODECS = (VP8, H264)
# How the room's codec is chosen (MULTIPOINT_VIDEO_CODEC): fixed, or ``auto``.
AUTO = "auto"
CHOICES = (AUTO, *VIDEO_CODECS)

C_CODECS = {VP8: CODEC_VP8, H264: CODEC_H264}
C_NAMES = {value: name for name, value in C_CODECS.items()}
MIME_TYPES = {VP8: "video/vp8", H264: "video/h264"}
# H.264 as the server offers it: constrained baseline (what every WebRTC H.264 encoder,
# hardware ones included, can send and decode), level 3.1, non-interleaved packetization
# (FU-A and STAP-A; mode 0 could not carry a frame bigger than one packet).
H264_PROFILE_LEVEL_ID = "42e01f"
H264_PACKETIZATION_MODE = "1"


def supported_codecs(names: Iterable[str] | None) -> list[str]:
    """A client's ``video_codecs`` (its order of preference) cut to those we forward.

    A client that says nothing (an older page) or names none we know can do VP8: every
    WebRTC endpoint must (RFC 7742), and it is what this server always offered.
    """
    known = [name for name in dict.fromkeys(names or ()) if name in VIDEO_CODECS]
    return known or [VP8]


def room_codec(setting: str, first_joiner: list[str]) -> str:
    """The forwarding codec of a room, chosen when its first participant joins.

    ``setting`` fixes it (``vp8``/``h264``), or with ``auto`` the first participant's
    preferred codec is taken (a room started from Safari or an H.264 room unit forwards
    H.264; one started from Chrome or Firefox, VP8). It then stays until the room is
    empty: changing it would mean a new offer for everybody.
    """
    if setting in VIDEO_CODECS:
        return setting
    return supported_codecs(first_joiner)[0]


def participant_codec(room: str, supported: list[str], mode: str = "forwarded") -> str:
    """The one video codec offered on a participant's video m-lines: its publish slots
    (``mode`` forwarded) or its receive slots (its mode).

    The room's when the participant can do it. A ``mixed`` participant receives the
    composite, which the mixer encodes in VP8: VP8 for its receive slots whenever it can
    (it still publishes in the room's codec). Otherwise its own preferred codec: it can
    then see and be seen by those of that codec only (docs/codecs.md says what the page
    shows).
    """
    supported = supported_codecs(supported)
    if mode == "mixed" and VP8 in supported:
        return VP8
    if room in supported:
        return room
    return supported[0]


def codec_of_mime(mime_type: str) -> str | None:
    """``video/H264`` -> ``h264``; None for a codec we do not forward."""
    for name, mime in MIME_TYPES.items():
        if mime == mime_type.lower():
            return name
    return None

"""Simulcast: a camera published as three layers, each subscriber given the one that fits.

The server asks for the layers in its offer (RFC 8853: ``a=rid`` and ``a=simulcast``
on the camera's publish slot); the browser sends each as a stream of its own, named by
the RID header extension on its packets. Every layer is a producer of its own
(:class:`mcu.forwarding.Producer`, with the camera's producer as their group), and each
receive slot showing that camera takes one layer: the highest that fits both the tile
the subscriber shows it in and the subscriber's bandwidth estimate. A slot moves to
another layer at that layer's keyframe (mcu/_fanout.c, ``Leg.target``), so the
subscriber sees one stream. Layers nobody takes are paused at the publisher.

This module holds the offer and answer text and the choice of layers: pure functions
over plain values, tested without media.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

# The codecs whose cameras are asked for layers. H.264 as VP8: Chrome (OpenH264) sends
# three constrained-baseline layers; the C path switches an H.264 leg at the keyframe
# packet with the new layer's SPS, and rewrites no picture IDs in H.264 payloads.
CODECS = ("vp8", "h264")
RIDS = ("q", "h", "f")  # quarter, half and full resolution, low to high
SCALE_DOWN = (4, 2, 1)  # each layer's resolution divisor (the page's sendEncodings)
# The layers' heights for the page's camera (960x540: Chrome sends three layers only
# from about that size up): a tile up to this tall is served by that layer.
LAYER_HEIGHTS = (135, 270, 540)
PROBE_S = 8.0  # a subscriber's layers step up (a probe) after this long without a change
EXT_RID = 10
EXT_REPAIRED_RID = 11
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"


def offer_layers(sdp: str, mid: str) -> str:
    """The offer ``sdp`` asking for the three layers on the (receive-only) m-line ``mid``."""
    sections = _sections(sdp)
    for index, section in enumerate(sections):
        if f"a=mid:{mid}" not in section.splitlines():
            continue
        lines = section.rstrip("\r\n").split("\r\n")
        lines += [f"a=extmap:{EXT_RID} {URI_RID}", f"a=extmap:{EXT_REPAIRED_RID} {URI_REPAIRED_RID}"]
        lines += [f"a=rid:{rid} recv" for rid in RIDS]
        lines.append("a=simulcast:recv " + ";".join(RIDS))
        sections[index] = "\r\n".join(lines) + "\r\n"
    return "".join(sections)


def answered_layers(sdp: str, mid: str) -> list[str]:
    """The RIDs the answer will send on ``mid``, low to high (empty: no simulcast)."""
    for section in _sections(sdp):
        lines = section.splitlines()
        if f"a=mid:{mid}" not in lines:
            continue
        for line in lines:
            if line.startswith("a=simulcast:send "):
                # Alternatives are split by "," and streams by ";"; "~" marks one paused.
                named = {rid.lstrip("~") for rid in re.split("[;,]", line.split(" ", 1)[1].strip())}
                return [rid for rid in RIDS if rid in named]
    return []


def _sections(sdp: str) -> list[str]:
    """The session part, then one string per m-line, each with its CRLF line ends."""
    text = sdp.replace("\r\n", "\n").replace("\n", "\r\n")
    parts = re.split(r"(?=^m=)", text, flags=re.MULTILINE)
    return [part for part in parts if part]


def layer_for_height(height: float | None, available: int) -> int:
    """The lowest of ``available`` layers that is at least ``height`` pixels tall (a tile
    of no known size gets the top one; a hidden tile the lowest)."""
    top = available - 1
    if height is None:
        return top
    for index, layer_height in enumerate(LAYER_HEIGHTS[:available]):
        if layer_height >= height * 0.9:  # a few pixels of upscaling are not worth a layer
            return index
    return top


class LayeredVideo(NamedTuple):
    """One video a subscriber receives, as the layer choice sees it."""

    consumer_id: str
    layer: int  # the layer it gets now (the one it is moving to, if any)
    wanted: int  # the highest its tile can use
    layer_bps: Sequence[float]  # each layer's bitrate now, low to high
    # Per layer: it can be had (it arrives, or we paused it and can ask for it again).
    # One the publisher stopped on its own (its uplink's estimate) cannot.
    available: Sequence[bool] = (True, True, True)


def step_layers(videos: list[LayeredVideo], estimate_bps: float | None, congested: bool,
                may_probe: bool, up_by_estimate: bool = True) -> dict[str, int]:
    """The layer each video should move to now: at most one step for one video per call.

    ``videos`` in order of importance (the first matters most). Congested: the least
    important video above the lowest layer steps down, a layer or, when the estimate
    says the next one down does not fit either, more (before any video is paused:
    mcu/lastn.py pauses only when nothing can step down). Otherwise a video below what
    its tile wants steps up, the most important first, when the estimate has room for
    the higher layer (unless not ``up_by_estimate``: a padding probe decides, see
    mcu/room.py) or, as a probe, when ``may_probe``; a video above what its tile wants
    steps down at once (a tile that shrank).
    """
    changes: dict[str, int] = {}
    for video in videos:
        if not _can_have(video, video.layer):  # the publisher dropped it: the best left, at once
            below = [index for index in range(video.wanted + 1) if _can_have(video, index)]
            above = [index for index in range(len(video.layer_bps)) if _can_have(video, index)]
            best = max(below) if below else min(above) if above else video.layer
            if best != video.layer:
                changes[video.consumer_id] = best
        elif video.layer > video.wanted:  # a tile that shrank frees bandwidth at once
            changes[video.consumer_id] = video.wanted
    if changes:
        return changes
    if congested:
        carried = sum(_bps(video, video.layer) for video in videos)
        for video in reversed(videos):
            if video.layer > 0:
                # At least one layer down; further while the estimate shows that the next
                # one down does not fit either (one keyframe and one switch, not two).
                layer = video.layer - 1
                others = carried - _bps(video, video.layer)
                while estimate_bps is not None and layer > 0 and \
                        others + _bps(video, layer) > ESTIMATE_SHARE * estimate_bps:
                    layer -= 1
                return {video.consumer_id: layer}
        return {}
    step = next_step_up(videos)
    if step is None:
        return {}
    consumer_id, layer, extra = step
    carried = sum(_bps(video, video.layer) for video in videos)
    fits = up_by_estimate and estimate_bps is not None and carried + extra <= ESTIMATE_SHARE * estimate_bps
    return {consumer_id: layer} if fits or may_probe else {}


def next_step_up(videos: list[LayeredVideo]) -> tuple[str, int, float] | None:
    """The next step up, if any: the most important video below what its tile wants
    (no skipping ahead to a cheaper one), the next layer it can have, and what that
    layer costs more than the one it has (bits per second)."""
    for video in videos:
        higher = [index for index in range(video.layer + 1, video.wanted + 1) if _can_have(video, index)]
        if higher:
            return video.consumer_id, higher[0], max(0.0, _bps(video, higher[0]) - _bps(video, video.layer))
    return None


def _can_have(video: LayeredVideo, layer: int) -> bool:
    return layer < len(video.available) and video.available[layer]


def _bps(video: LayeredVideo, layer: int) -> float:
    if layer < len(video.layer_bps) and video.layer_bps[layer] > 0:
        return video.layer_bps[layer]
    return NOMINAL_BPS[min(layer, len(NOMINAL_BPS) - 1)]


# The share of a subscriber's estimate its videos may fill: the rest is audio, RTCP and
# the estimate's own error.
ESTIMATE_SHARE = 0.9

# What a layer costs before it has been measured (the page's maxBitrate per layer).
NOMINAL_BPS = (150_000, 500_000, 1_200_000)

"""Which videos each subscriber gets: last-N speakers, within what its link can take.

Pure functions over plain values, so the policy is tested without media. Audio is
always forwarded; only video is chosen.

Bandwidth comes from the subscriber's REMB messages. A REMB covers the streams it
lists (Chrome: the whole connection; aiortc: one stream each), so each leg belongs to
the group of the last REMB that named it. A receive-side estimate hovers around what
it receives, and cannot see capacity it is not using: so congestion (an estimate well
below what we send) pauses the least important videos at once, while a paused video
comes back only as a probe, one at a time, after a quiet spell.
"""

from __future__ import annotations

from typing import NamedTuple

CONGESTION_RATIO = 0.8  # an estimate below 80 % of what a group carries means congestion


class VideoLeg(NamedTuple):  # a tuple: the room builds one per leg, twice a second
    producer_id: str
    owner_id: str
    screen: bool
    bitrate_bps: float  # what the publisher sends now
    forwarded: bool  # currently sent to this subscriber
    remb_group: int | None = None  # key into the estimates, or None if never reported


def choose_videos(legs: list[VideoLeg], recent_speakers: list[str], last_n: int,
                  estimates: dict[int, int], may_probe: bool) -> set[str]:
    """The producer ids whose video this subscriber should receive.

    Priority: screens, then cameras of the most recent speakers, then the rest in the
    order given (join order); at most ``last_n`` cameras.
    """
    rank = {pid: index for index, pid in enumerate(recent_speakers)}
    ordered = [leg for _, leg in sorted(
        enumerate(legs),
        key=lambda item: (not item[1].screen, rank.get(item[1].owner_id, len(rank)), item[0]))]

    wanted: list[VideoLeg] = []
    cameras = 0
    probed = False
    for leg in ordered:
        if not leg.screen:
            if cameras >= last_n:
                continue
            cameras += 1
        if leg.forwarded:
            wanted.append(leg)
        elif may_probe and not probed:
            wanted.append(leg)
            probed = True

    load: dict[int, float] = {}
    chosen: set[str] = set()
    for leg in wanted:
        if leg.remb_group is not None and leg.remb_group in estimates:
            carried = load.get(leg.remb_group, 0.0) + leg.bitrate_bps
            if carried * CONGESTION_RATIO > estimates[leg.remb_group]:
                continue
            load[leg.remb_group] = carried
        chosen.add(leg.producer_id)
    return chosen

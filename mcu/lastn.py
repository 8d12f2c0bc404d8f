"""Which videos each subscriber gets: last-N speakers, within what its link can take.

Pure functions over plain values, so the policy is tested without media. Audio is
always forwarded; only video is chosen.

Bandwidth comes from the subscriber's REMB messages. A REMB covers the streams it
lists (Chrome: the whole connection; aiortc: one stream each), so each leg belongs to
the group of the last REMB that named it. A receive-side estimate hovers around what
it receives, and cannot see capacity it is not using. So congestion is an estimate well
below what a group carries *for a while* (a keyframe burst, such as every publisher
sends when somebody joins, is not); it pauses the least important videos of that group.
A paused video comes back only as a probe, one at a time, after a quiet spell, into a
group that is not congested now: a stale estimate of a group that carries nothing (no
video, so no new REMB for it) is no reason to keep it paused forever.
"""

from __future__ import annotations

from typing import NamedTuple

CONGESTION_RATIO = 0.8  # an estimate below 80 % of what a group carries means congestion
CONGESTION_HOLD_S = 2.0  # ... when it has stayed so this long


class VideoLeg(NamedTuple):  # a tuple: the room builds one per leg, twice a second
    producer_id: str
    owner_id: str
    screen: bool
    bitrate_bps: float  # what the publisher sends now
    forwarded: bool  # currently sent to this subscriber
    remb_group: int | None = None  # key into the estimates, or None if never reported


def groups_over_estimate(legs: list[VideoLeg], estimates: dict[int, int]) -> set[int]:
    """The REMB groups whose forwarded videos add up to more than their estimate allows."""
    carried: dict[int, float] = {}
    for leg in legs:
        if leg.forwarded and leg.remb_group is not None and leg.remb_group in estimates:
            carried[leg.remb_group] = carried.get(leg.remb_group, 0.0) + leg.bitrate_bps
    return {group for group, bps in carried.items() if bps * CONGESTION_RATIO > estimates[group]}


def choose_videos(legs: list[VideoLeg], recent_speakers: list[str], last_n: int,
                  congested: dict[int, int], may_probe: bool) -> set[str]:
    """The producer ids whose video this subscriber should receive.

    Priority: screens, then cameras of the most recent speakers, then the rest in the
    order given (join order); at most ``last_n`` cameras. ``congested``: the estimates
    of the groups that are congested now (see :func:`groups_over_estimate`); the videos
    of such a group are fitted into its estimate, and none of them is probed.
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
        elif may_probe and not probed and leg.remb_group not in congested:
            wanted.append(leg)
            probed = True

    load: dict[int, float] = {}
    chosen: set[str] = set()
    for leg in wanted:
        if leg.remb_group is not None and leg.remb_group in congested:
            carried = load.get(leg.remb_group, 0.0) + leg.bitrate_bps
            if carried * CONGESTION_RATIO > congested[leg.remb_group]:
                continue
            load[leg.remb_group] = carried
        chosen.add(leg.producer_id)
    return chosen

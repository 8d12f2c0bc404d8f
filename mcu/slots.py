"""Which producer each of a subscriber's fixed receive slots shows.

A forwarded subscriber has a fixed set of slots from its first offer: ``audio_slots``
voices, ``last_n`` cameras and one screen share. The room re-points them as speakers
change, so the session (and the server's state per subscriber) does not grow with the
room. Pure functions over plain values, so the policy is tested without media; the
room (mcu/room.py) applies what they return.

Two rules keep the picture calm: a producer that stays wanted keeps its slot (it is
never moved to another one), and a voice is replaced only by someone clearly louder
(a margin over the quietest voice heard, on a smoothed level, so a cough does not
take a slot).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import NamedTuple

from mcu.speaker import SPEAKING_ACTIVITY

VOICE_SWITCH_MARGIN = 1.15  # a challenger must be this much louder than the quietest voice heard
LOUDNESS_SMOOTHING = 0.6  # weight of the newest interval in a voice's smoothed level


class Source(NamedTuple):  # a tuple: the room builds one per producer, twice a second
    producer_id: str
    owner_id: str
    live: bool  # packets arrived lately (receive-only participants send none)
    loudness: float = 0.0  # smoothed audio activity, 0-127 (voices only)


def smooth_loudness(previous: float, activity: float) -> float:
    """One control interval's mean activity folded into a voice's level."""
    return previous + LOUDNESS_SMOOTHING * (activity - previous)


def rank_voices(sources: Sequence[Source]) -> list[str]:
    """Voices loudest first; among equally quiet ones, those sending before the silent,
    then the order given (join order)."""
    order = sorted(range(len(sources)),
                   key=lambda i: (-sources[i].loudness, not sources[i].live, i))
    return [sources[i].producer_id for i in order]


def rank_videos(sources: Sequence[Source], recent_speakers: Sequence[str]) -> list[str]:
    """Cameras (or screens) most important first: those sending before the silent, then
    the most recent speakers, then the order given (join order)."""
    rank = {owner: index for index, owner in enumerate(recent_speakers)}
    order = sorted(range(len(sources)),
                   key=lambda i: (not sources[i].live, rank.get(sources[i].owner_id, len(rank)), i))
    return [sources[i].producer_id for i in order]


def first_except(ranked: Iterable[str], count: int, exclude: str | None) -> list[str]:
    """The first ``count`` of ``ranked`` leaving out ``exclude`` (one's own producer)."""
    return list(islice((pid for pid in ranked if pid != exclude), count))


def fill_slots(current: Sequence[str | None], wanted: Sequence[str]) -> list[str | None]:
    """New contents of the slots, given what they show now and what should be shown.

    What stays wanted stays in its slot; the others' slots go to the newly wanted, in
    the order of ``wanted``; slots nobody needs show nobody (None).
    """
    keep = set(wanted[:len(current)])
    result = [pid if pid in keep else None for pid in current]
    shown = set(result)
    newcomers = (pid for pid in wanted[:len(current)] if pid not in shown)
    for index, pid in enumerate(result):
        if pid is None:
            result[index] = next(newcomers, None)
    return result


def choose_voices(current: Sequence[str | None], ranked: Sequence[str],
                  loudness: Mapping[str, float], exclude: str | None = None) -> list[str | None]:
    """New contents of the voice slots.

    ``ranked`` holds every voice that may be heard, loudest first (:func:`rank_voices`);
    ``loudness`` their smoothed levels. A voice that left frees its slot; free slots go
    to the loudest not heard yet (so in a small room everybody is heard); then someone
    speaking takes the slot of the quietest voice heard, if louder by the margin.
    """
    result = [pid if pid in loudness and pid != exclude else None for pid in current]
    heard = {pid for pid in result if pid is not None}
    challengers = (pid for pid in ranked if pid not in heard and pid != exclude)
    for index, pid in enumerate(result):
        if pid is None:
            newcomer = next(challengers, None)
            if newcomer is None:
                return result
            result[index] = newcomer
            heard.add(newcomer)
    if not result:
        return result
    for pid in challengers:  # loudest first: the first who does not win ends it
        level = loudness[pid]
        quietest = min(range(len(result)), key=lambda i: loudness.get(result[i] or "", 0.0))
        held = result[quietest]
        if level < SPEAKING_ACTIVITY or (held is not None and level < loudness[held] * VOICE_SWITCH_MARGIN):
            break
        result[quietest] = pid
        heard.add(pid)
    return result

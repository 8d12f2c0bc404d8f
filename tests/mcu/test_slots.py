"""What a subscriber's fixed receive slots show, as plain functions (mcu/slots.py)."""

from __future__ import annotations

from mcu.slots import (
    Source,
    choose_voices,
    fill_slots,
    first_except,
    rank_videos,
    rank_voices,
    smooth_loudness,
)

LOUD = 115.0  # 127 - 12 dBov: someone talking
QUIET = 10.0


def test_what_stays_wanted_stays_in_its_slot_and_newcomers_take_the_freed_ones() -> None:
    assert fill_slots([None, None, None], ["a", "b"]) == ["a", "b", None]
    # "a" leaves the wanted set: its slot goes to "c"; "b" does not move.
    assert fill_slots(["a", "b", None], ["b", "c", "d"]) == ["c", "b", "d"]
    # More wanted than slots: the first ones win, the rest are left out.
    assert fill_slots(["x", "y"], ["y", "z", "w"]) == ["z", "y"]
    assert fill_slots(["a", "b"], []) == [None, None]
    assert fill_slots([], ["a"]) == []


def test_videos_rank_sending_cameras_first_then_recent_speakers_then_join_order() -> None:
    sources = [Source("a-camera", "a", live=False), Source("b-camera", "b", live=True),
               Source("c-camera", "c", live=True), Source("d-camera", "d", live=True)]
    assert rank_videos(sources, []) == ["b-camera", "c-camera", "d-camera", "a-camera"]
    assert rank_videos(sources, ["d", "a"]) == ["d-camera", "b-camera", "c-camera", "a-camera"]
    # One's own camera is left out of what one is shown.
    assert first_except(["d-camera", "b-camera", "c-camera"], 2, "d-camera") == ["b-camera", "c-camera"]


def test_small_rooms_hear_everybody_however_quiet() -> None:
    loudness = {"a": 0.0, "b": 0.0, "me": LOUD}
    ranked = rank_voices([Source(p, p, True, level) for p, level in loudness.items()])
    assert choose_voices([None, None, None], ranked, loudness, exclude="me") == ["a", "b", None]


def test_a_voice_keeps_its_slot_until_someone_is_clearly_louder() -> None:
    loudness = {"a": LOUD, "b": LOUD, "c": 60.0, "d": 70.0}
    ranked = rank_voices([Source(p, p, True, level) for p, level in loudness.items()])
    current = ["a", "b", "c"]
    # "d" is louder than "c" but not speaking (below -55 dBov): no change.
    assert choose_voices(current, ranked, loudness) == ["a", "b", "c"]
    # Speaking, but within the margin of the quietest voice heard: no change either.
    loudness = {"a": LOUD, "b": 80.0, "c": 75.0, "d": 80.0}
    ranked = rank_voices([Source(p, p, True, level) for p, level in loudness.items()])
    assert choose_voices(current, ranked, loudness) == ["a", "b", "c"]
    # Clearly louder than the quietest: it takes that slot, the others stay put.
    loudness["d"] = LOUD
    ranked = rank_voices([Source(p, p, True, level) for p, level in loudness.items()])
    assert choose_voices(current, ranked, loudness) == ["a", "b", "d"]


def test_a_voice_that_left_frees_its_slot_and_silent_sites_come_last() -> None:
    sources = [Source("mute", "mute", live=False), Source("b", "b", live=True, loudness=QUIET),
               Source("c", "c", live=True)]
    ranked = rank_voices(sources)
    assert ranked == ["b", "c", "mute"]
    loudness = {s.producer_id: s.loudness for s in sources}
    assert choose_voices(["gone", "c"], ranked, loudness) == ["b", "c"]


def test_a_cough_does_not_reach_the_speaking_level_but_speech_soon_does() -> None:
    level = smooth_loudness(0.0, LOUD)  # one loud interval
    assert level < 127 - 55
    assert smooth_loudness(level, LOUD) >= 127 - 55  # a second one: speaking
    assert smooth_loudness(smooth_loudness(LOUD, 0.0), 0.0) < QUIET * 3

"""Last-N video choice and active speaker detection, as plain functions."""

from __future__ import annotations

from mcu.lastn import VideoLeg, choose_videos, groups_over_estimate
from mcu.speaker import SpeakerDetector


def leg(owner: str, forwarded: bool = True, bitrate: float = 400_000, group: int | None = 1,
        screen: bool = False) -> VideoLeg:
    return VideoLeg(f"{owner}-{'screen' if screen else 'camera'}", owner, screen, bitrate, forwarded,
                    group)


def test_last_n_keeps_the_most_recent_speakers_and_screens() -> None:
    legs = [leg("a"), leg("b"), leg("c"), leg("d"), leg("e", screen=True)]
    chosen = choose_videos(legs, ["d", "b"], last_n=2, congested={}, may_probe=False)
    assert chosen == {"d-camera", "b-camera", "e-screen"}
    # Without speakers, join order decides.
    assert choose_videos(legs[:4], [], 3, {}, False) == {"a-camera", "b-camera", "c-camera"}


def test_congestion_pauses_the_least_important_videos_and_audio_is_not_counted() -> None:
    legs = [leg("a"), leg("b"), leg("c")]
    # 900 kbit/s for three 400 kbit/s videos: the two most recent speakers stay.
    assert choose_videos(legs, ["c", "a"], 9, {1: 900_000}, False) == {"c-camera", "a-camera"}
    # A tiny estimate leaves audio only.
    assert choose_videos(legs, [], 9, {1: 10_000}, False) == set()
    # Estimates per stream (aiortc) judge each stream on its own.
    per_stream = [leg("a", group=1), leg("b", group=2)]
    assert choose_videos(per_stream, [], 9, {1: 500_000, 2: 100_000}, False) == {"a-camera"}


def test_paused_videos_come_back_one_probe_at_a_time() -> None:
    legs = [leg("a", forwarded=False), leg("b", forwarded=False)]
    assert choose_videos(legs, [], 9, {}, may_probe=False) == set()
    assert choose_videos(legs, ["b"], 9, {}, may_probe=True) == {"b-camera"}
    # Not into a group that is congested now.
    mixed = [leg("a"), leg("b", forwarded=False)]
    assert choose_videos(mixed, [], 9, {1: 300_000}, may_probe=True) == set()
    assert choose_videos(mixed, [], 9, {1: 600_000}, may_probe=True) == {"a-camera"}


def test_a_group_that_carries_no_video_is_never_over_its_stale_estimate() -> None:
    # Every video of a group paused: no video, so no new REMB; the last one (low) stays.
    paused = [leg("a", forwarded=False, group=1), leg("b", forwarded=False, group=2)]
    assert groups_over_estimate(paused, {1: 5_000, 2: 5_000}) == set()
    # So the probe goes out, and the estimates that follow it decide.
    assert choose_videos(paused, [], 9, {}, may_probe=True) == {"a-camera"}
    # What the forwarded videos of a group add up to is judged against its estimate.
    sending = [leg("a", group=1), leg("b", group=1), leg("c", group=2, forwarded=False)]
    assert groups_over_estimate(sending, {1: 600_000, 2: 1}) == {1}
    assert groups_over_estimate(sending, {1: 1_000_000, 2: 1}) == set()
    assert groups_over_estimate(sending, {}) == set()  # no estimate yet: not congested


def test_speaker_detection_has_hysteresis() -> None:
    detector = SpeakerDetector()
    assert detector.update({"a": 100, "b": 10})
    assert detector.active == "a" and detector.speaking == {"a"}
    # b is louder for one interval only: a keeps the floor.
    detector.update({"a": 90, "b": 120})
    assert detector.active == "a"
    detector.update({"a": 90, "b": 120})
    assert detector.active == "b"
    assert detector.recent[0] == "b"
    # a leaves: forgotten.
    detector.forget("a")
    assert "a" not in detector.recent
    assert detector.update({"b": 120})  # the set of speakers changed
    assert not detector.update({"b": 110})  # nothing did

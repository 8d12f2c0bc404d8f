"""A unit's test call's video verdict (signaling/sip/testcall.py) from the media counts the
worker reports at the start and the end of the window (mcu/unit.py media_counts)."""

from __future__ import annotations

import pytest

from signaling.sip.testcall import video_problems

START = {"video_in": 10, "video_in_frames": 3, "video_in_keyframes": 1, "video_out": 20, "video_out_lost": 0,
         "video_receiver_reports": 1, "video_width": 320, "video_height": 180}


def at_end(**changes: int) -> dict[str, int]:
    """Eight seconds of a unit at 15 fps both ways, reporting on our stream, with ``changes``."""
    return {**START, "video_in": 130, "video_in_frames": 123, "video_out": 150, "video_receiver_reports": 2,
            **changes}


@pytest.mark.parametrize(("end", "problems"), [
    (at_end(), []),
    (at_end(video_in_frames=10), ["no_video_from_unit"]),  # packets, but hardly a picture decoded
    (at_end(video_receiver_reports=1), ["no_video_at_unit"]),  # no report within the window
    (at_end(video_out=20), ["no_video_at_unit"]),  # we sent it nothing
    (at_end(video_out_lost=100), ["no_video_at_unit"]),  # it reports most of it lost
    (at_end(video_in_frames=3, video_receiver_reports=1), ["no_video_from_unit", "no_video_at_unit"]),
])
def test_video_is_checked_both_ways(end: dict[str, int], problems: list[str]) -> None:
    figures: dict[str, float | None] = {}
    assert video_problems(START, end, 8.0, figures) == problems
    assert figures["video_tested"] == 1
    assert figures["video_from_unit_frames"] == end["video_in_frames"] - 3
    assert (figures["video_to_unit_width"], figures["video_to_unit_height"]) == (320, 180)

"""A room unit's test call from the rollout tracker: we call it and check its media.

The coordinator presses "test call now" on a unit's page: the unit (its SIP URI in the
inventory) is called into a room of its own, and for :data:`MEASURE_S` seconds we count
its sound reaching us (its microphone's packets at the worker) and ours reaching it (the
mix it receives, as its RTCP receiver reports count it). Then we hang up and store the
verdict with its figures like a browser self-test's, which moves a unit that passes to
"tested" in the same transaction (scheduler/grants/rollout.py).

A call that does not come about says why in its problems: ``unreachable``,
``no_answer``, ``busy``, ``declined``, ``codec_mismatch``, ``unknown_unit``; one that
connects but does not carry sound says ``no_audio_from_unit`` or ``no_audio_at_unit``.

A unit that took video is checked both ways too: its camera's pictures decoded by the
room's mixer within the window (at least :data:`MIN_VIDEO_FPS` a second, so a key frame
came and what follows it decodes) and the composite it receives (packets we sent, and its
RTCP receiver reports on them within the window, losing little), else
``no_video_from_unit`` or ``no_video_at_unit``. A unit that took no video passes on
sound alone; its verdict's ``video_tested`` figure is 0 and its video figures null.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from mcu.channel import ChannelError
from signaling.sip.units import DialFailed, RoomUnits

logger = logging.getLogger(__name__)

MEASURE_S = 8.0
PACKETS_PER_S = 50  # Opus every 20 ms, each way
ENOUGH = 0.7  # of the expected packets, each way: sound arrives
# Of the unit's camera, decoded pictures a second: units send 5 to 30, and a picture that
# decodes proves the stream (a key frame and what follows it), whatever its rate.
MIN_VIDEO_FPS = 2
RING_S = 30.0

RecordResult = Callable[[dict[str, Any]], Awaitable[int]]


class UnitTestCalls:
    def __init__(self, units: RoomUnits, record: RecordResult, measure_s: float = MEASURE_S) -> None:
        self.units = units
        self.record = record
        self.measure_s = measure_s
        self.running: dict[str, asyncio.Task[int]] = {}  # serial -> its call, while it runs

    def start(self, serial: str, target: str) -> bool:
        """Run a test call of the unit in the background; False if one is running."""
        if serial in self.running:
            return False
        task = asyncio.ensure_future(self.run(serial, target))
        self.running[serial] = task
        task.add_done_callback(lambda _: self.running.pop(serial, None))
        return True

    async def run(self, serial: str, target: str) -> int:
        """Call, measure, hang up, store: the stored result's id."""
        problems, figures = await self._measure(target)
        result = {"passed": not problems, "problems": problems, "figures": figures,
                  "endpoint_serial": serial, "user_agent": f"SIP test call to {target}"}
        stored = await self.record(result)
        video = "video" if figures.get("video_tested") else "no video"
        logger.info("unit %s: test call %s (%s)", serial, "passed" if not problems else "failed",
                    ", ".join(problems) or f"audio both ways, {video}")
        return stored

    async def _measure(self, target: str) -> tuple[list[str], dict[str, float | None]]:
        room = "unittest-" + secrets.token_hex(6)
        figures: dict[str, float | None] = {"seconds": self.measure_s, "audio_from_unit_packets": None,
                                            "audio_to_unit_packets": None, "audio_to_unit_lost": None,
                                            "video_tested": 0, "video_from_unit_packets": None,
                                            "video_from_unit_frames": None, "video_from_unit_keyframes": None,
                                            "video_to_unit_packets": None, "video_to_unit_lost": None,
                                            "video_receiver_reports": None, "video_to_unit_width": None,
                                            "video_to_unit_height": None}
        try:
            member = await self.units.dial(room, target, name="test call", ring_s=RING_S, scheduled=False)
        except DialFailed as exc:
            figures["sip_status"] = exc.status
            return [exc.outcome], figures
        try:
            before = await self._counts(member)
            await asyncio.sleep(self.measure_s)
            after = await self._counts(member)
        finally:
            await member.end("closed", "test call done")
        if before is None or after is None:
            return ["failed"], figures
        received = after["audio_in"] - before["audio_in"]
        sent = after["audio_out"] - before["audio_out"]
        lost = max(0, after["audio_out_lost"] - before["audio_out_lost"])
        figures.update(audio_from_unit_packets=received, audio_to_unit_packets=sent,
                       audio_to_unit_lost=lost, receiver_reports=after["receiver_reports"])
        expected = PACKETS_PER_S * self.measure_s
        problems = []
        if received < ENOUGH * expected:
            problems.append("no_audio_from_unit")
        # Ours reached it when it reported on them within the window, and lost few.
        if after["receiver_reports"] == before["receiver_reports"] or sent - lost < ENOUGH * expected:
            problems.append("no_audio_at_unit")
        if after.get("video"):
            problems += video_problems(before, after, self.measure_s, figures)
        return problems, figures

    async def _counts(self, member: Any) -> dict[str, int] | None:
        with contextlib.suppress(ChannelError, TimeoutError):
            return await member.request("media_counts", participant=member.participant_id)
        return None


def video_problems(before: dict[str, int], after: dict[str, int], seconds: float,
                   figures: dict[str, float | None]) -> list[str]:
    """The video checks of a unit that took video, from its media counts at the start
    and the end of the window: its problems, and ``figures`` filled in."""
    frames = after["video_in_frames"] - before["video_in_frames"]
    sent = after["video_out"] - before["video_out"]
    lost = max(0, after["video_out_lost"] - before["video_out_lost"])
    reports = after["video_receiver_reports"] - before["video_receiver_reports"]
    # Key frames since the call began: its first one comes as it starts, before the window.
    figures.update(video_tested=1, video_from_unit_packets=after["video_in"] - before["video_in"],
                   video_from_unit_frames=frames, video_from_unit_keyframes=after["video_in_keyframes"],
                   video_to_unit_packets=sent, video_to_unit_lost=lost, video_receiver_reports=reports,
                   video_to_unit_width=after["video_width"], video_to_unit_height=after["video_height"])
    problems = []
    if frames < MIN_VIDEO_FPS * seconds:
        problems.append("no_video_from_unit")
    # As for sound: the unit reported on the composite within the window, and lost little of it.
    if not reports or not sent or sent - lost < ENOUGH * sent:
        problems.append("no_video_at_unit")
    return problems

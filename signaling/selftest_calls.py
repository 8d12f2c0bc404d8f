"""The self-test's verdict as the server saw the call, not as the page claims it.

A self-test result is recorded only for a self-test call that really took place, and
once per call: the front asks the media worker what it received from the participant
and sent back (packets by kind), live while the call runs, else from the counts the
worker reported when the call ended. The page's own verdict (loss, delay, bitrate as
the browser measured them) is kept, but a pass needs the server's figures too. So
nobody records a pass without a call, and no result is written without a call behind
it: results cost as much as the calls they come from.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signaling.server import Signaling

# At least half a second of audio and a few video packets each way. Loss, delay and
# bitrate are the page's measurements; these say that media went both ways at all.
MIN_AUDIO_PACKETS = 25
MIN_VIDEO_PACKETS = 10
REMEMBERED = 1000  # ended calls and judged participants kept (oldest forgotten first)
# The page posts its result as it hangs up: the worker's counts of an ending call may
# arrive a moment after the result; this long the result waits for them.
ENDED_CALL_WAIT_S = 2.0


def server_problems(counts: dict[str, int]) -> list[str]:
    """What is wrong with a self-test call, by what the server received and sent."""
    problems = []
    if counts.get("audio_in", 0) < MIN_AUDIO_PACKETS:
        problems.append("audio_not_received")
    if counts.get("video_in", 0) < MIN_VIDEO_PACKETS:
        problems.append("video_not_received")
    if counts.get("audio_out", 0) < MIN_AUDIO_PACKETS:
        problems.append("audio_not_returned")
    if counts.get("video_out", 0) < MIN_VIDEO_PACKETS:
        problems.append("video_not_returned")
    return problems


class SelfTestCalls:
    """The self-test calls of this front that have not been judged yet."""

    def __init__(self, signaling: Signaling) -> None:
        self._signaling = signaling
        self._ended: OrderedDict[str, tuple[str, dict[str, int]]] = OrderedDict()  # room ->
        self._judged: OrderedDict[str, None] = OrderedDict()  # participant ids

    def call_ended(self, data: dict[str, Any]) -> None:
        """A worker's ``left`` event of a self-test participant, with its counts."""
        participant, media = str(data.get("participant")), data.get("media")
        if participant in self._judged or not isinstance(media, dict):
            return
        room = str(data.get("room"))
        self._ended.pop(room, None)
        self._ended[room] = (participant, {str(k): int(v) for k, v in media.items()})
        while len(self._ended) > REMEMBERED:
            self._ended.popitem(last=False)

    async def take(self, room: str, wait_s: float = ENDED_CALL_WAIT_S) -> dict[str, int] | None:
        """The counts of the room's self-test call not judged yet (the live one first),
        marking it judged; None if there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            channel = self._signaling.channels.get(room)
            if channel is not None and channel.echo:
                for connection in list(channel.connections.values()):
                    participant = connection.participant_id
                    if participant is None or participant in self._judged:
                        continue
                    counts = await self._signaling.pool.request(
                        connection.worker, "media_counts", participant=participant)
                    if counts is not None:
                        self._judge(participant)
                        return counts
            ended = self._ended.pop(room, None)
            if ended is not None:
                self._judge(ended[0])
                return ended[1]
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.1)

    def _judge(self, participant: str) -> None:
        self._judged[participant] = None
        while len(self._judged) > REMEMBERED:
            self._judged.popitem(last=False)

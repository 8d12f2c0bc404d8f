"""Recording as a host, an operator or a failing machine meets it: repeated starts,
folders that cannot be written, a full disk, with real aiortc participants and real files."""

from __future__ import annotations

import asyncio

import av
import pytest

from multipoint.app import MEDIA
from tests.media.test_mixing import GREEN, RED, join
from tests.peers import wait_until

pytestmark = pytest.mark.media


def playable_seconds(path) -> float:
    with av.open(str(path)) as container:
        assert sorted(stream.type for stream in container.streams) == ["audio", "video"]
        return container.duration / 1_000_000


async def test_recordings_started_within_one_second_are_separate_files(server) -> None:
    room = "again-and-again"
    host = await join(server, room, "Host", 440, RED, role="host")
    media = server.app[MEDIA]
    try:
        for _ in range(3):  # start, stop, start ... all within a second or two
            await host.send({"type": "record", "active": True})
            assert await wait_until(lambda: media.rooms[room].recording)
            await asyncio.sleep(0.3)
            await host.send({"type": "record", "active": False})
            assert await wait_until(lambda: not media.rooms[room].recording)
    finally:
        await host.close()
    files = sorted((server.settings.data_dir / "recordings" / room).glob("*.webm"))
    assert len(files) == 3, [f.name for f in files]
    for path in files:
        assert playable_seconds(path) >= 0


async def test_a_recording_that_cannot_be_written_is_refused_clearly_and_the_call_goes_on(server) -> None:
    room = "nowhere-to-write"
    # Something stands where the room's recordings folder would be: it cannot be made
    # (as a read-only or broken volume would not let it be; the tests run as root,
    # whom permissions do not stop).
    recordings = server.settings.data_dir / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    (recordings / room).write_text("not a folder")
    host = await join(server, room, "Host", 440, RED, role="host")
    guest = await join(server, room, "Guest", 1000, GREEN)
    media = server.app[MEDIA]
    try:
        await host.send({"type": "record", "active": True})
        error = await host.next("error")
        assert error["code"] == "recording_failed", error
        assert "record" in error["message"]
        assert not media.rooms[room].recording
        # The mixer it needed for that is gone again: a room of forwarded participants
        # does not go on mixing for nobody.
        assert media.rooms[room].mixer is None
        # The call goes on: the guest still sees the host.
        before = guest.peer.frames("video")
        assert await wait_until(lambda: sum(guest.peer.frames("video").values()) > sum(before.values()) + 10)
        # ... and the host can still record once there is somewhere to write.
        (recordings / room).unlink()
        await host.send({"type": "record", "active": True})
        assert await wait_until(lambda: media.rooms[room].recording)
    finally:
        await host.close()
        await guest.close()

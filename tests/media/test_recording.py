"""Recording as a host, an operator or a failing machine meets it: repeated starts,
folders that cannot be written, a full disk, with real aiortc participants and real files."""

from __future__ import annotations

import asyncio

import av
import pytest

from multipoint.app import MEDIA
from tests.media.test_mixing import RED, join
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

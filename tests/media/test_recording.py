"""Recording as a host, an operator or a failing machine meets it: repeated starts,
folders that cannot be written, a full disk, with real aiortc participants and real files."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from mcu.mixer import Recorder
from multipoint.app import MEDIA, POOL
from tests.conftest import RunningServer, start_process_server
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


@pytest.fixture
async def one_worker(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The service with one media worker process (its limits can be set from here)."""
    server = await start_process_server(tmp_path, 1)
    try:
        yield server
    finally:
        await server.runner.cleanup()


async def test_a_recording_whose_disk_fills_up_stops_and_the_hosts_are_told(one_worker) -> None:
    server = one_worker
    room = "disk-full"
    host = await join(server, room, "Host", 440, RED, role="host")
    guest = await join(server, room, "Guest", 1000, GREEN)
    try:
        await host.send({"type": "record", "active": True})
        assert await wait_until(lambda: any(m.get("recording") for m in host.of_type("participants")))
        (path,) = (server.settings.data_dir / "recordings" / room).glob("*.webm")
        assert await wait_until(lambda: path.stat().st_size > 20_000, timeout=20)
        # The worker's disk fills up: every write past what the file has now fails, as
        # on a full file system (RLIMIT_FSIZE: EFBIG where a full disk gives ENOSPC).
        pid = server.app[POOL].states[0].pid
        limit = path.stat().st_size + 4096
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        error = await host.next("error", timeout=15)
        assert error["code"] == "recording_failed", error
        # Everyone sees the recording stopped; nothing more is written.
        assert await wait_until(lambda: host.of_type("participants")[-1]["recording"] is False)
        assert not guest.of_type("error")  # it is the hosts' business
        assert path.stat().st_size <= limit
        # The call goes on.
        before = sum(guest.peer.frames("video").values())
        assert await wait_until(lambda: sum(guest.peer.frames("video").values()) > before + 10)
        # Room on the disk again: the host records anew.
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await host.send({"type": "record", "active": True})
        assert await wait_until(lambda: host.of_type("participants")[-1]["recording"] is True)
    finally:
        await host.close()
        await guest.close()
    # What was written before the disk filled up plays (its end, cues and duration,
    # could not be written: Recorder.repair makes it a finished file).
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 5
    assert playable_seconds(Recorder.repair(path)) > 0.5


def finished(path: Path) -> bool:
    """A finished recording: its duration and cues written (a player can seek it)."""
    try:
        with av.open(str(path)) as container:
            if container.duration is None:
                return False
            container.seek(500_000)
            return True
    except (av.FFmpegError, OSError):
        return False


async def test_a_recording_whose_worker_dies_is_finished_afterwards(one_worker) -> None:
    server = one_worker
    room = "worker-dies"
    host = await join(server, room, "Host", 440, RED, role="host")
    try:
        await host.send({"type": "record", "active": True})
        assert await wait_until(lambda: any(m.get("recording") for m in host.of_type("participants")))
        (path,) = (server.settings.data_dir / "recordings" / room).glob("*.webm")
        assert await wait_until(lambda: path.stat().st_size > 20_000, timeout=20)
        await asyncio.sleep(1.5)
        os.kill(server.app[POOL].states[0].pid, signal.SIGKILL)
        assert await wait_until(lambda: host.of_type("disconnected"), timeout=10)
    finally:
        await host.close()
    # The file the dead worker left (clusters without cues or duration) is made a
    # finished one, in its place: the host's list shows one recording, and it seeks.
    assert await wait_until(lambda: finished(path), timeout=20)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert playable_seconds(path) > 1.5

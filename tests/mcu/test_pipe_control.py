"""The pipe's control side (mcu/pipe.py) without peers: what it refuses, what it keeps."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from mcu import rtp
from mcu.forwarding import Producer
from mcu.pipe import PipedProducer
from mcu.room import MediaWorker, Room

ORIGIN = ("127.0.0.1", 40000)


def camera(owner: str = "elsewhere-1", ssrc: int = 1234) -> PipedProducer:
    return PipedProducer(f"{owner}-camera", owner, "Starosta", "host", "video", "camera", ssrc, 96, 97)


async def test_a_piped_producer_joins_the_room_as_a_remote_participant_and_leaves_it() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        local = room.join("site", "guest")
        piped = PipedProducer.from_json(json.loads(json.dumps(camera().to_json())))
        pipe.import_producer(room, piped, list(ORIGIN))  # JSON gives lists
        remote = room.remote_participants["elsewhere-1"]
        assert (remote.name, remote.role, remote.mode) == ("Starosta", "host", "forwarded")
        assert remote.origin == ORIGIN
        assert room.publishers() == [local, remote] and room.publisher("elsewhere-1") is remote
        producer = remote.producers["camera"]
        assert (producer.ssrc, producer.payload_type, producer.nacks_upstream) == (1234, 96, True)
        assert [d["id"] for d in room.describe_participants()] == []  # local ones only (none negotiated)
        pipe.import_producer(room, piped, ORIGIN)  # the same again: nothing changes
        assert room.remote_participants["elsewhere-1"].producers["camera"] is producer

        # Its sender reports count only from the worker it comes from.
        report = rtp.rtcp_sender_report(1234, (3_900_000_000, 0), 90_000, 10, 1000)
        pipe.datagram_received(report, ("127.0.0.1", 40001))
        assert producer.sender_report is None and worker.counters.pipe_dropped == 1
        pipe.datagram_received(report, ORIGIN)
        assert producer.sender_report is not None and producer.sender_report[1:] == (3_900_000_000.0, 90_000)

        pipe.stop_import("obec", piped.producer_id)
        assert "elsewhere-1" not in room.remote_participants and room.publishers() == [local]
        pipe.stop_import("obec", piped.producer_id)  # unknown now: nothing to do
        pipe.update_import("obec", piped.producer_id, True)
        pipe.datagram_received(report, ORIGIN)
        assert worker.counters.pipe_dropped == 2
    finally:
        await worker.close()
    assert worker.pipe is None


async def test_what_cannot_be_piped_is_refused() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        local = room.join("site", "guest")
        with pytest.raises(ValueError, match="not a local"):
            pipe.export_producer(Producer("x-camera", "x", "video", "camera", worker.counters), ORIGIN)
        with pytest.raises(ValueError, match="on this worker"):
            pipe.import_producer(room, camera(owner=local.id), ORIGIN)
        with pytest.raises(ValueError, match="cannot be"):
            pipe.import_producer(room, replace(camera(), kind="audio"), ORIGIN)
        with pytest.raises(ValueError, match="not open"):
            pipe.import_producer(Room(worker, "never-opened"), camera(), ORIGIN)
        with pytest.raises(ValueError):
            pipe.import_producer(room, camera(), ("not-an-address", 1))
        pipe.import_producer(room, camera(), ORIGIN)
        with pytest.raises(ValueError, match="SSRC"):
            pipe.import_producer(room, camera(owner="elsewhere-2"), ORIGIN)
        with pytest.raises(RuntimeError, match="already"):
            await type(pipe).open(worker)
    finally:
        await worker.close()


async def test_closing_the_room_drops_its_pipes() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    room = worker.room("obec")
    pipe.import_producer(room, camera(), ORIGIN)
    room.close()
    assert not room.remote_participants and pipe._tracks == {}
    pipe.import_producer(worker.room("obec"), camera(), ORIGIN)  # a new room: the SSRC is free
    await worker.close()
    await asyncio.sleep(0)


async def test_a_piped_screen_is_subscribed_to_only_while_shared() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        room.join("site", "guest")
        screen = replace(camera(), producer_id="elsewhere-1-screen", source="screen", ssrc=99)
        pipe.import_producer(room, camera(), ORIGIN)
        pipe.import_producer(room, screen, ORIGIN)
        remote = room.remote_participants["elsewhere-1"]
        assert not remote.producers["screen"].sharing  # no slot shows it (tests/media/test_pipe.py)
        pipe.update_import("obec", screen.producer_id, True)
        assert remote.producers["screen"].sharing
        pipe.update_import("obec", screen.producer_id, False)
        assert not remote.producers["screen"].sharing
        pipe.import_producer(room, replace(screen, sharing=True), ORIGIN)  # the same, now shared
        assert remote.producers["screen"].sharing
    finally:
        await worker.close()

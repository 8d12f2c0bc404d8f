"""Media worker processes: placement, a worker killed mid-call, and the control channel.

These tests start the real thing: ``python -m mcu.worker`` processes under the front,
aiortc participants on loopback, the SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bench._clients import Pacer, Window
from bench._clients import Participant as BenchParticipant
from bench._media import encode_media
from mcu.channel import HEADER, Channel, ChannelError, encode
from mcu.pool import WorkerPool, WorkerProcess
from mcu.room import MediaWorker
from mcu.worker import WorkerService
from multipoint.app import DATABASE, LIVE_ROOMS, POOL, media_config
from multipoint.settings import Settings
from scheduler.booking.bridges import create_bridge
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.models import CallRecord, Organisation
from scheduler.models import MediaWorker as MediaWorkerRow
from scheduler.organisations import org_info
from scheduler.seed import seed
from signaling.tokens import JoinGrant, issue_token
from tests.conftest import RunningServer, start_process_server
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media


def token(server: RunningServer, room: str, scheduled: bool = False, role: str = "guest") -> str:
    grant = JoinGrant(room=room, role=role, scheduled=scheduled)
    return issue_token(server.settings.signing_secret(), grant, 300)


class Site:
    """An aiortc participant that joins again by itself, with the same link, when the
    server says its media is gone (as the call page does)."""

    def __init__(self, server: RunningServer, link: str, name: str) -> None:
        self.server, self.link, self.name = server, link, name
        self.client: SignalClient | None = None
        self.joins = 0

    async def join(self) -> None:
        self.client = await SignalClient.connect(self.server.ws_url)
        peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
        await self.client.join_with(peer, self.link, name=self.name)
        self.joins += 1

    @property
    def participant(self) -> str:
        assert self.client is not None
        return self.client.of_type("joined")[0]["participant"]

    def receiving_from(self, others: set[str], minimum: int = 5) -> bool:
        if self.client is None or self.client.peer is None:
            return False
        video = self.client.live_frames("video")
        return set(video) >= others and all(video[o] >= minimum for o in others)

    async def rejoin_when_disconnected(self) -> None:
        assert self.client is not None
        while True:
            await asyncio.sleep(0.1)
            if self.client.of_type("disconnected") or self.client.ws.closed:
                await self.client.close()
                for _attempt in range(50):
                    try:
                        await self.join()
                        return
                    except (AssertionError, TimeoutError, ConnectionError):
                        await asyncio.sleep(0.5)  # the worker is still starting
                return

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


async def test_worker_processes_serve_rooms_and_a_new_room_goes_to_the_idle_worker(
        two_workers: RunningServer) -> None:
    pool = two_workers.app[POOL]
    assert all(state.ready and state.pid for state in pool.states)
    first = Site(two_workers, token(two_workers, "porada-a"), "A")
    second = Site(two_workers, token(two_workers, "porada-b"), "B")
    partner = Site(two_workers, token(two_workers, "porada-a"), "A2")
    try:
        await first.join()
        await second.join()
        await partner.join()
        assert await wait_until(lambda: first.receiving_from({partner.participant})
                                and partner.receiving_from({first.participant}), timeout=30)
        rooms = {r["name"]: r for r in await two_workers.app[LIVE_ROOMS].rooms()}
        # Each room on a worker of its own; a room's participants together.
        assert sorted(rooms["porada-a"]["workers"] + rooms["porada-b"]["workers"]) == [0, 1]
        load = two_workers.app[LIVE_ROOMS].load()
        assert [w["ready"] for w in load["workers"]] == [True, True]
        assert await wait_until(lambda: sum(w["participants"] for w in
                                            two_workers.app[LIVE_ROOMS].load()["workers"]) == 3)
    finally:
        for site in (first, second, partner):
            await site.close()


async def test_sites_joining_a_new_room_at_the_same_moment_share_one_worker(
        two_workers: RunningServer) -> None:
    # Each join waits on its worker for a while after placement; a join placed meanwhile
    # must go where the first went, not to the then emptier worker.
    link = token(two_workers, "soucasny-start")
    clients = [await SignalClient.connect(two_workers.ws_url) for _ in range(3)]
    try:
        for number, client in enumerate(clients):
            await client.send({"type": "join", "v": 1, "token": link, "name": f"ORP {number}"})
        joined = await asyncio.gather(*(client.next("joined") for client in clients))
        assert len({message["participant"] for message in joined}) == 3
        (listed,) = [r for r in await two_workers.app[LIVE_ROOMS].rooms()
                     if r["name"] == "soucasny-start"]
        assert len(listed["workers"]) == 1
        assert {p["worker"] for p in listed["participants"]} == set(listed["workers"])
    finally:
        for client in clients:
            await client.close()


async def test_a_room_larger_than_a_worker_spans_two_and_everyone_receives_everyone(
        tmp_path: Path) -> None:
    # A worker takes two HD participants (22 units): four sites fill both workers.
    server = await start_process_server(tmp_path, 2, scheduler_worker_capacity_units=22)
    link = token(server, "krajsky-briefing")
    host = token(server, "krajsky-briefing", role="host")
    sites = [Site(server, host if i == 0 else link, f"ORP {i}") for i in range(4)]
    try:
        for site in sites:
            await site.join()
        ids = {site.participant for site in sites}
        assert await wait_until(lambda: all(s.receiving_from(ids - {s.participant})
                                            for s in sites), timeout=40), \
            [s.client.live_frames("video") for s in sites if s.client]
        for site in sites:  # audio too
            assert await wait_until(lambda s=site: all(
                s.client.live_frames("audio").get(other, 0) > 0
                for other in ids - {s.participant})), site.client.live_frames("audio")
        (listed,) = [r for r in await server.app[LIVE_ROOMS].rooms()
                     if r["name"] == "krajsky-briefing"]
        assert sorted(listed["workers"]) == [0, 1]
        assert sorted(p["worker"] for p in listed["participants"]) == [0, 0, 1, 1]
        # Room-wide, whichever worker: the participant list, chat, the host's moderation.
        assert await wait_until(lambda: all(
            len((s.client.of_type("participants") or [{}])[-1].get("participants", [])) == 4
            for s in sites))
        far = next(s for s in sites if s.participant in
                   {p["id"] for p in listed["participants"] if p["worker"] == 1})
        await far.client.send({"type": "chat", "text": "Dobrý den z druhého procesu"})
        assert await wait_until(lambda: all(s.client.of_type("chat") for s in sites))
        await sites[0].client.send({"type": "mute", "participant": far.participant})
        assert await wait_until(lambda: far.client.of_type("muted"))
        assert await wait_until(lambda: any(
            p["id"] == far.participant and p["audio_muted"]
            for p in sites[0].client.of_type("participants")[-1]["participants"]))
        # A fifth site finds both workers full: refused, the others unharmed.
        late = await SignalClient.connect(server.ws_url)
        try:
            await late.send({"type": "join", "v": 1, "token": link, "name": "ORP 5"})
            assert (await late.next("error"))["code"] == "capacity_full"
        finally:
            await late.close()
        # One side leaves: the other side's subscribers lose exactly those tracks.
        leaving = [s for s in sites if s.participant in
                   {p["id"] for p in listed["participants"] if p["worker"] == 1}]
        for site in leaving:
            await site.close()
        staying = [s for s in sites if s not in leaving]
        assert await wait_until(lambda: all(set(s.client.live_frames("video")) ==
                                            {o.participant for o in staying} - {s.participant}
                                            for s in staying), timeout=20)
    finally:
        for site in sites:
            await site.close()
        await server.runner.cleanup()


async def test_a_simulcast_camera_reaches_the_other_workers_subscribers_in_the_layer_each_tile_wants(
        tmp_path: Path) -> None:
    # Two HD participants fill a worker: the publisher and a thumbnail on the first, a
    # thumbnail and a speaker view on the second (their frames decoded by aiortc).
    server = await start_process_server(tmp_path, 2, scheduler_worker_capacity_units=22)
    link = token(server, "simulcast-pres")
    media = encode_media(seconds=2.0, layers=True)  # 640x360, 320x180, 160x90
    publisher = BenchParticipant("presenter", Window(), media, simulcast=True)
    pacer = Pacer()
    viewers: dict[str, SignalClient] = {}
    try:
        await publisher.join(server.ws_url, link)
        for stream in publisher.sending_streams():
            pacer.add(stream, 0.0)
        pacer.start()
        assert publisher.layers_sent == ["q", "h", "f"]
        for name in ("near-thumbnail", "far-thumbnail", "far-speaker"):
            viewers[name] = await SignalClient.connect(server.ws_url)
            await viewers[name].join_with(ClientPeer(), link, name=name)
        (listed,) = [r for r in await server.app[LIVE_ROOMS].rooms() if r["name"] == "simulcast-pres"]
        worker_of = {p["name"]: p["worker"] for p in listed["participants"]}
        assert worker_of["near-thumbnail"] == worker_of["presenter"]
        assert worker_of["far-thumbnail"] == worker_of["far-speaker"] != worker_of["presenter"]
        owner = publisher.participant_id

        def camera_mid(client: SignalClient) -> str | None:
            return next((mid for mid, info in client.tracks.items()
                         if info["participant"] == owner and info["kind"] == "video"), None)

        assert await wait_until(lambda: all(camera_mid(c) is not None for c in viewers.values()),
                                timeout=30)
        for name, height in (("near-thumbnail", 80), ("far-thumbnail", 80), ("far-speaker", 500)):
            await viewers[name].send({"type": "tiles", "tiles": {camera_mid(viewers[name]): height}})

        def lines(client: SignalClient) -> int | None:
            assert client.peer is not None
            received = client.peer.received.get(camera_mid(client) or "")
            frame = received.last_frame if received is not None else None
            return frame.height if frame is not None else None

        # Each gets the layer its tile wants, whichever worker it is on.
        wanted = {"near-thumbnail": 90, "far-thumbnail": 90, "far-speaker": 360}
        assert await wait_until(lambda: all(lines(viewers[n]) == h for n, h in wanted.items()),
                                timeout=40), {n: lines(c) for n, c in viewers.items()}
        # Nobody anywhere watches the middle layer: the publisher is told to pause it; the
        # top one stays, watched only on the other worker (its reports reach the origin).
        assert await wait_until(lambda: publisher.layers_asked == ["q", "f"], timeout=20), \
            publisher.layers_asked
        pool = server.app[POOL]
        assert pool.workers[worker_of["presenter"]].counters().get("pipe_layer_reports", 0) > 0
        for name, client in viewers.items():  # still flowing, in the same layers
            frames = client.live_frames("video").get(owner, 0)
            assert await wait_until(lambda c=client, f=frames: c.live_frames("video").get(owner, 0) > f + 10)
            assert lines(client) == wanted[name]
    finally:
        pacer.stop()
        for client in viewers.values():
            await client.close()
        await publisher.close()
        await server.runner.cleanup()


async def test_a_booked_room_opens_on_the_worker_the_scheduler_chose(
        two_workers: RunningServer) -> None:
    database = two_workers.app[DATABASE]
    with database.session() as session:
        seed(session, local_workers=2)
        # The scheduler places by the database's capacities: worker 0 is nearly full there,
        # while the front, left to itself, would take worker 0 (both idle, lowest index).
        first_worker = session.scalars(select(MediaWorkerRow).order_by(MediaWorkerRow.index)).first()
        session.execute(update(MediaWorkerRow).where(MediaWorkerRow.id == first_worker.id)
                        .values(capacity_units=60))
        izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
        bridge = create_bridge(session, SchedulerConfig(), org_info(session, izs.id), "Povodně",
                               ParticipantMix(hd=5))
        room = bridge.room_name
    site = Site(two_workers, token(two_workers, room, scheduled=True), "HZS")
    try:
        await site.join()
        (listed,) = [r for r in await two_workers.app[LIVE_ROOMS].rooms() if r["name"] == room]
        assert listed["workers"] == [1]
        with database.session() as session:
            record = session.scalars(select(CallRecord).where(CallRecord.room_name == room)).one()
            chosen = session.get(MediaWorkerRow, record.worker_id)
            assert chosen is not None and chosen.index == 1
    finally:
        await site.close()


async def test_a_killed_worker_is_restarted_and_its_participants_are_back_in_the_call(
        two_workers: RunningServer) -> None:
    database = two_workers.app[DATABASE]
    with database.session() as session:
        seed(session, local_workers=2)
        izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
        bridge = create_bridge(session, SchedulerConfig(), org_info(session, izs.id),
                               "Krizový štáb", ParticipantMix(hd=5))
        room = bridge.room_name
    link = token(two_workers, room, scheduled=True)
    sites = [Site(two_workers, link, name) for name in ("HZS", "Policie", "ZZS")]
    pool = two_workers.app[POOL]
    try:
        for site in sites:
            await site.join()
        ids = {site.participant for site in sites}
        assert await wait_until(lambda: all(s.receiving_from(ids - {s.participant})
                                            for s in sites), timeout=30)
        (listed,) = [r for r in await two_workers.app[LIVE_ROOMS].rooms() if r["name"] == room]
        (hosting,) = listed["workers"]
        worker = pool.workers[hosting]
        assert isinstance(worker, WorkerProcess)
        old_pid = worker.state.pid
        rejoining = [asyncio.ensure_future(site.rejoin_when_disconnected()) for site in sites]
        down: list[dict] = []
        worker.kill()
        # While it is down, the operator sees it down and empty, not its last report.
        assert await wait_until(lambda: not worker.state.ready and not down.append(
            two_workers.app[LIVE_ROOMS].load()["workers"][hosting]), timeout=5, interval=0.01)
        assert (down[-1]["ready"], down[-1]["rooms"], down[-1]["participants"]) == (False, 0, 0)
        await asyncio.wait_for(asyncio.gather(*rejoining), 20)
        ids = {site.participant for site in sites}
        assert await wait_until(lambda: all(s.receiving_from(ids - {s.participant})
                                            for s in sites), timeout=15)
        assert all(site.joins == 2 for site in sites)
        assert await wait_until(lambda: worker.state.ready and worker.state.pid != old_pid)
    finally:
        for site in sites:
            await site.close()
    # The interruption is in the call records: each site's first call ended, a second began.
    assert await wait_until(lambda: _closed_records(database, room) == 6)
    with database.session() as session:
        records = session.scalars(select(CallRecord).where(CallRecord.room_name == room)
                                  .order_by(CallRecord.joined_at)).all()
    assert sorted(r.participant for r in records) == sorted(["HZS", "Policie", "ZZS"] * 2)


def _closed_records(database, room: str) -> int:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return len([r for r in session.scalars(select(CallRecord).where(
            CallRecord.room_name == room)) if r.left_at is not None])


async def test_malformed_and_truncated_control_messages_are_refused_not_fatal() -> None:
    """The front's end of a channel, a real worker service at the other end; garbage
    written in between is logged and refused, and requests still get answered."""
    front_sock, worker_sock = socket.socketpair()
    media = MediaWorker()
    worker_reader, worker_writer = await asyncio.open_unix_connection(sock=worker_sock)
    worker_channel: Channel | None = None
    service = WorkerService(media, lambda event, data: worker_channel and worker_channel.emit(event, data))
    worker_channel = Channel(worker_reader, worker_writer, name="worker", on_request=service.handle)
    events: list[tuple[str, dict]] = []
    reader, writer = await asyncio.open_unix_connection(sock=front_sock)
    front = Channel(reader, writer, name="front", on_event=lambda e, d: events.append((e, d)))
    running = [asyncio.ensure_future(front.run()), asyncio.ensure_future(worker_channel.run())]
    try:
        assert (await front.request("ping"))["pid"] > 0
        # The worker's side sends garbage to the front: bad JSON, not an object, no id.
        for body in (b"{not json", b"[1, 2]", b'{"result": 1}', b"\xff\xfe"):
            worker_writer.write(HEADER.pack(len(body)) + body)
        await worker_writer.drain()
        assert await wait_until(lambda: front.malformed == 4)
        # The front's side sends garbage to the worker: refused, answered where it can be.
        writer.write(encode({"id": 99, "params": {}}))
        writer.write(HEADER.pack(5) + b"nope!")
        await writer.drain()
        assert await wait_until(lambda: worker_channel.malformed == 2)
        with pytest.raises(ChannelError) as refused:
            await front.request("no_such_method")
        assert refused.value.code == "unknown_method"
        with pytest.raises(ChannelError) as bad:
            await front.request("join", {"room": "r"})
        assert bad.value.code == "bad_request"
        assert (await front.request("stats"))["participants"] == 0
    finally:
        for task in running:
            task.cancel()
        front.close()
        await media.close()


async def test_a_frame_cut_off_by_a_dying_worker_fails_the_waiting_requests() -> None:
    front_sock, worker_sock = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=front_sock)
    front = Channel(reader, writer, name="front")
    running = asyncio.ensure_future(front.run())
    pending = asyncio.ensure_future(front.request("ping"))
    await asyncio.sleep(0.05)
    worker_sock.sendall(HEADER.pack(100) + b'{"id": 1, "res')  # then the process dies
    worker_sock.close()
    with pytest.raises(ChannelError) as gone:
        await asyncio.wait_for(pending, 5)
    assert gone.value.code == "worker_gone"
    await asyncio.wait_for(running, 5)
    assert front.closed.is_set()
    with pytest.raises(ChannelError):
        await front.request("ping")


async def test_a_worker_killed_while_a_joins_call_record_is_written_leaves_no_open_record(
        tmp_path: Path) -> None:
    # The join has its place on the worker and its "joined"; its call record is being
    # written (here: the database is held by another writer) when the worker dies. The
    # participant is sent back to rejoin at once, before the record exists: the record
    # must not stay open behind it (it would count in the worker's load for ever).
    server = await start_process_server(tmp_path, 1)
    database = server.app[DATABASE]
    holder = sqlite3.connect(str(server.settings.data_dir / "multipoint.db"), timeout=30,
                             isolation_level=None)
    client = await SignalClient.connect(server.ws_url)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer: the record's insert waits
        await client.send({"type": "join", "v": 1, "token": token(server, "porada"), "name": "A"})
        await client.next("joined")
        worker = server.app[POOL].workers[0]
        assert isinstance(worker, WorkerProcess)
        worker.kill()
        await client.next("disconnected")
        holder.execute("ROLLBACK")  # the record is written now, after its participant left
        assert await wait_until(lambda: _records(database, "porada") >= 1, timeout=10)
        assert await wait_until(lambda: _closed_records(database, "porada") == 1, timeout=5)
    finally:
        with contextlib.suppress(sqlite3.Error):
            holder.execute("ROLLBACK")
        holder.close()
        await client.close()
        await server.runner.cleanup()


def _records(database, room: str) -> int:  # type: ignore[no-untyped-def]
    with database.session() as session:
        return len(session.scalars(select(CallRecord).where(CallRecord.room_name == room)).all())


async def test_a_worker_that_stops_answering_is_replaced_and_its_participants_rejoin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kill -STOP (a hang in C, an endless loop): the process lives and its channel stays
    # open, but its calls are dead. Its silence (no load report) must count as its death.
    monkeypatch.setattr("mcu.pool.HUNG_AFTER_S", 3.0)
    server = await start_process_server(tmp_path, 1)
    link = token(server, "porada")
    sites = [Site(server, link, name) for name in ("A", "B")]
    worker = server.app[POOL].workers[0]
    assert isinstance(worker, WorkerProcess)
    stopped: int | None = None
    try:
        for site in sites:
            await site.join()
        ids = {site.participant for site in sites}
        assert await wait_until(lambda: all(s.receiving_from(ids - {s.participant})
                                            for s in sites), timeout=30)
        rejoining = [asyncio.ensure_future(site.rejoin_when_disconnected()) for site in sites]
        stopped = worker.state.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        await asyncio.wait_for(asyncio.gather(*rejoining), 20)
        assert sites[0].client is not None
        assert sites[0].client.of_type("joined"), "joined again"
        ids = {site.participant for site in sites}
        assert await wait_until(lambda: all(s.receiving_from(ids - {s.participant})
                                            for s in sites), timeout=20)
        assert worker.state.pid != stopped and worker.state.restarts == 1
        assert server.app[LIVE_ROOMS].load()["workers"][0]["ready"]
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        for site in sites:
            await site.close()
        await server.runner.cleanup()


async def test_a_request_to_a_restarting_worker_waits_no_longer_than_its_timeout(
        settings: Settings) -> None:
    """A request to a worker that is not ready (a restart) waits for it, then for the
    answer. Each wait used to have the caller's whole timeout, so a worker that came
    back and then did not answer held the caller nearly twice as long as it asked. Here
    the worker is restarted for real and stopped (SIGSTOP) the moment it is ready."""
    timeout = 6.0
    holding: dict[str, float | None] = {"ready_at": None}
    pool: WorkerPool

    def on_event(index: int, event: str, data: dict) -> None:  # type: ignore[type-arg]
        if event == "ready" and holding["ready_at"] is None and "request_at" in holding:
            holding["ready_at"] = asyncio.get_running_loop().time()
            assert pool.states[0].pid is not None
            os.kill(pool.states[0].pid, signal.SIGSTOP)  # alive, but its answer never comes

    pool = WorkerPool(1, media_config(settings), capacity_units=[100], on_event=on_event,
                      on_lost=lambda index: None)
    await pool.start()
    worker = pool.workers[0]
    assert isinstance(worker, WorkerProcess)
    try:
        old_pid = worker.state.pid
        worker.kill()
        assert await wait_until(lambda: not worker.state.ready, timeout=5, interval=0.01)
        loop = asyncio.get_running_loop()
        holding["request_at"] = started = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request(0, "ping", timeout=timeout)
        waited = loop.time() - started
        assert worker.state.pid != old_pid
        ready_at = holding["ready_at"]
        # It was down a while (the restart's back-off alone is 0.5 s), then up but silent.
        assert ready_at is not None and ready_at - started >= 0.5
        assert waited <= timeout + 0.3, f"waited {waited:.1f} s on a {timeout:g} s timeout"
    finally:
        holding["ready_at"] = 0.0  # the next start is not held
        if worker.state.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.state.pid, signal.SIGCONT)
        await pool.stop()

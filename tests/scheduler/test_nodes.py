"""Several media nodes on one database: leases, labels, reaping, fencing, jobs once.

Each "node" that must act at the same moment as another has its own engine on the same
database, as separate processes on separate machines would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.orm import Session

from scheduler.booking.bridges import create_bridge
from scheduler.booking.calls import reopen_calls
from scheduler.booking.units import ParticipantMix
from scheduler.db import Database
from scheduler.media.leases import NodeLease, reap_dead_nodes, renew_lease
from scheduler.media.nodes import register_node
from scheduler.media.room_signals import RoomSignals, announce_room_change, rooms_to_stop
from scheduler.media.rooms import admit_join, close_room, open_room, worker_loads
from scheduler.models import CallRecord, MediaNode, MediaWorker, Notification, Room, RoomMove
from scheduler.organisations import org_info
from tests.peers import wait_until
from tests.scheduler.conftest import NOW, FakeClock, World, make_world
from tests.scheduler.test_jobs import RecordingRoomControl, book, services
from tests.scheduler.test_pool_version import pool_version

LEASE = timedelta(seconds=10)


def node(db: Database, name: str, *, labels: list[str] | None = None, workers: int = 1,
         at: timedelta = timedelta(0)) -> int:
    return register_node(db, name, workers, 500, NOW + at, labels=labels or [],
                         addresses=[f"https://{name}.multipoint.test"], lease=LEASE)


def workers_of(db: Database, node_id: int) -> set[int]:
    with db.session() as session:
        return set(session.scalars(select(MediaWorker.id).where(MediaWorker.node_id == node_id)))


def node_of_room(db: Database, room: str) -> int | None:
    with db.session() as session:
        return session.scalar(select(MediaWorker.node_id).join(Room, Room.worker_id == MediaWorker.id)
                              .where(Room.name == room))


def open_plain(world: World, name: str, *, at: timedelta = timedelta(0),
               bridge_id: int | None = None) -> int | None:
    with world.db.write_session() as session:
        room = open_room(session, world.config, name, 50, NOW + at, bridge_id=bridge_id)
        return None if room is None else room.worker_id


def bridge(world: World) -> tuple[int, str]:
    with world.db.session() as session:
        org = org_info(session, world.izs)
        assert org is not None
        made = create_bridge(session, world.config, org, "Krizový štáb", ParticipantMix(hd=5))
        return made.id, made.room_name


@pytest.fixture
def bare(db: Database) -> World:
    """Organisations and users, and no worker but those of the nodes a test registers."""
    return make_world(db, workers=0)


def test_registration_records_labels_addresses_and_the_lease(bare: World) -> None:
    node_id = register_node(bare.db, "brno", 2, 500, NOW, labels=["IZS", "general", "izs"],
                            addresses=["https://brno.multipoint.test"], lease=LEASE)
    with bare.db.session() as session:
        row = session.get(MediaNode, node_id)
        assert row is not None
        assert row.labels == ["general", "izs"]
        assert row.addresses == ["https://brno.multipoint.test"]
        assert row.lease_expires_at == NOW + LEASE and row.dead_at is None


def test_renewing_the_lease_leaves_the_pool_version_alone(bare: World) -> None:
    node_id = node(bare.db, "brno")
    before = pool_version(bare.db)
    assert before is not None
    for seconds in (3, 6, 9):
        lease = renew_lease(bare.db, node_id, NOW + timedelta(seconds=seconds), LEASE)
        assert lease.held and lease.moved_rooms == ()
        assert lease.expires_at == NOW + timedelta(seconds=seconds) + LEASE
    assert pool_version(bare.db) == before
    # A node registering again with another worker count does change it (the check has
    # teeth: the triggers are there).
    register_node(bare.db, "brno", 2, 500, NOW, lease=LEASE)
    after = pool_version(bare.db)
    assert after is not None and after > before


def test_rooms_go_only_to_workers_of_live_nodes(bare: World) -> None:
    brno = node(bare.db, "brno")
    ostrava = node(bare.db, "ostrava", at=timedelta(seconds=30))  # registered later
    # At +20 s, Brno's lease (to +10 s) has lapsed though nobody has reaped it yet.
    assert open_plain(bare, "porada-1", at=timedelta(seconds=35)) in workers_of(bare.db, ostrava)
    assert open_plain(bare, "porada-2", at=timedelta(seconds=5)) in workers_of(bare.db, brno)
    # Neither holds a lease at +60 s: no worker.
    assert open_plain(bare, "porada-3", at=timedelta(seconds=60)) is None


def test_izs_rooms_go_to_izs_nodes_and_other_rooms_never_to_izs_only_ones(bare: World) -> None:
    general = node(bare.db, "praha", workers=2)
    izs = node(bare.db, "hzs", labels=["izs"])
    bridge_id, bridge_room = bridge(bare)
    # The IZS node is busier than the general ones, and still gets the bridge.
    open_plain(bare, "zaplneni", bridge_id=bridge_id)  # any IZS room: a second bridge's use
    assert open_plain(bare, bridge_room, bridge_id=bridge_id) in workers_of(bare.db, izs)
    # Ten routine rooms: never on the IZS-only node, even when it is the emptiest.
    for index in range(10):
        assert open_plain(bare, f"porada-{index}") in workers_of(bare.db, general)

    # Only an IZS-only node is live: a routine room has nowhere to go; an IZS room has.
    node(bare.db, "hzs", labels=["izs"], at=timedelta(seconds=20))
    assert open_plain(bare, "porada-pozde", at=timedelta(seconds=25)) is None
    assert open_plain(bare, "most-pozde", at=timedelta(seconds=25),
                      bridge_id=bridge_id) in workers_of(bare.db, izs)

    # Labelled "izs" and "general": IZS rooms first, and others too.
    both = node(bare.db, "kraj", labels=["izs", "general"], at=timedelta(seconds=20))
    assert open_plain(bare, "porada-kraj", at=timedelta(seconds=25)) in workers_of(bare.db, both)


def test_without_a_live_izs_node_an_izs_room_goes_anywhere(bare: World) -> None:
    general = node(bare.db, "praha")
    node(bare.db, "hzs", labels=["izs"], at=timedelta(seconds=-60))  # lapsed long ago
    bridge_id, bridge_room = bridge(bare)
    assert open_plain(bare, bridge_room, bridge_id=bridge_id) in workers_of(bare.db, general)


def test_reaping_moves_a_dead_nodes_rooms_once_and_fences_it(bare: World) -> None:
    brno = node(bare.db, "brno")
    ostrava = node(bare.db, "ostrava")
    rooms = [f"porada-{index}" for index in range(4)]
    for room in rooms:
        open_plain(bare, room)
    on_brno = sorted(room for room in rooms if node_of_room(bare.db, room) == brno)
    assert on_brno and len(on_brno) < len(rooms), "placement spread them over both"
    with bare.db.write_session() as session:  # a participant in Brno's first room
        worker = session.scalar(select(Room.worker_id).where(Room.name == on_brno[0]))
        session.add(CallRecord(room_name=on_brno[0], participant="Jana", worker_id=worker,
                               joined_at=NOW))

    # Brno stops (SIGSTOP); Ostrava keeps renewing and reaps.
    assert reap_dead_nodes(bare.db, NOW + timedelta(seconds=5), config=bare.config) == []
    later = NOW + timedelta(seconds=12)
    renew_lease(bare.db, ostrava, later, LEASE)
    moved = reap_dead_nodes(bare.db, later, config=bare.config)
    assert sorted(room for room, _ in moved) == on_brno
    assert {worker for _, worker in moved} <= workers_of(bare.db, ostrava)
    assert all(node_of_room(bare.db, room) == ostrava for room in rooms)
    assert reap_dead_nodes(bare.db, later + timedelta(seconds=1), config=bare.config) == []
    with bare.db.session() as session:
        brno_row = session.get(MediaNode, brno)
        assert brno_row is not None and brno_row.dead_at == later, "marked, not deleted"
        assert session.scalar(select(CallRecord.left_at)) == later

    # Brno wakes up: its renewal says it lost the lease and which rooms moved away.
    fenced = renew_lease(bare.db, brno, later + timedelta(seconds=30), LEASE)
    assert not fenced.held and sorted(fenced.moved_rooms) == on_brno
    # It is alive again, without those rooms: they stay where they are.
    again = renew_lease(bare.db, brno, later + timedelta(seconds=33), LEASE)
    assert again.held and again.moved_rooms == ()
    assert all(node_of_room(bare.db, room) == ostrava for room in rooms)
    assert open_plain(bare, "nova", at=timedelta(seconds=45)) is not None


def test_a_lapsed_lease_renewed_before_anyone_reaps_is_still_held(bare: World) -> None:
    brno = node(bare.db, "brno")
    open_plain(bare, "porada")
    lease = renew_lease(bare.db, brno, NOW + timedelta(seconds=25), LEASE)
    assert lease.held and lease.moved_rooms == ()
    assert node_of_room(bare.db, "porada") == brno


def test_a_room_with_nowhere_to_go_waits_for_the_next_reaping(bare: World) -> None:
    brno = node(bare.db, "brno")
    open_plain(bare, "porada")
    assert reap_dead_nodes(bare.db, NOW + timedelta(seconds=11), config=bare.config) == []
    assert node_of_room(bare.db, "porada") == brno  # nobody was live to take it
    ostrava = node(bare.db, "ostrava", at=timedelta(seconds=20))
    moved = reap_dead_nodes(bare.db, NOW + timedelta(seconds=21), config=bare.config)
    assert [room for room, _ in moved] == ["porada"]
    assert node_of_room(bare.db, "porada") == ostrava


def test_two_reapers_at_the_same_moment_move_each_room_once(bare: World, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: two reapers cannot overlap there")
    node(bare.db, "brno", workers=2)
    rooms = [f"porada-{index}" for index in range(6)]
    for room in rooms:
        open_plain(bare, room)
    # Brno dies with nobody live to take its rooms: marked dead, the rooms wait. (Two
    # reapers marking a node dead queue on its row; the rooms that wait are the harder
    # case: nothing but the reapers' own locks keeps them from both moving a room.)
    assert reap_dead_nodes(bare.db, NOW + timedelta(seconds=11), config=bare.config) == []
    for name in ("ostrava", "plzen"):
        node(bare.db, name, at=timedelta(seconds=12))
    later = NOW + timedelta(seconds=15)
    engines = [Database(db_url) for _ in range(2)]
    start = threading.Barrier(len(engines))
    results: list[list[tuple[str, int]]] = [[] for _ in engines]

    def linger(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # Each reaper dwells after reading the rooms it will move: without locks both
        # would read them all before either writes, and move each room twice.
        if statement.lstrip().startswith("SELECT rooms."):
            time.sleep(0.3)

    for engine in engines:
        event.listen(engine.engine, "after_cursor_execute", linger)

    def reap(index: int) -> None:
        start.wait()
        results[index] = reap_dead_nodes(engines[index], later, config=bare.config)

    threads = [threading.Thread(target=reap, args=(index,)) for index in range(len(engines))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for engine in engines:
            engine.dispose()
    moved = sorted(room for result in results for room, _ in result)
    assert moved == sorted(rooms), results
    with bare.db.session() as session:
        assert session.scalar(select(func.count()).select_from(RoomMove)) == len(rooms)


async def test_two_job_runners_on_one_database_act_once(world: World, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: two runners cannot overlap there")
    rooms = [book(world, f"2026-11-30T1{hour}:00", f"2026-11-30T1{hour}:30", hd=1)[1]
             for hour in range(2, 6)]  # 11:00-14:00 UTC starts, each 30 minutes
    clock = FakeClock(NOW)
    controls = [RecordingRoomControl(), RecordingRoomControl()]
    engines = [Database(db_url) for _ in controls]
    try:
        runners = [services(world, clock, control, db=engine).jobs
                   for control, engine in zip(controls, engines, strict=True)]
        for minutes in range(0, 7 * 60, 5):
            clock.now = NOW + timedelta(minutes=minutes)
            await asyncio.gather(*(runner.tick() for runner in runners))
    finally:
        for engine in engines:
            engine.dispose()
    calls = controls[0].calls + controls[1].calls
    for room in rooms:
        assert sorted(kind for kind, name in calls if name == room) == ["close", "open"], calls
    with world.db.session() as session:
        reminders = session.scalar(select(func.count()).select_from(Notification)
                                   .where(Notification.kind == "reminder"))
    assert reminders == len(rooms)


async def test_the_fronts_lease_renews_reaps_and_reports_rooms_that_moved(
        bare: World, db_url: str) -> None:
    brno = node(bare.db, "brno")
    ostrava = node(bare.db, "ostrava")
    open_plain(bare, "porada-1")
    open_plain(bare, "porada-2")
    on_brno = sorted(r for r in ("porada-1", "porada-2") if node_of_room(bare.db, r) == brno)
    clock = FakeClock(NOW + timedelta(seconds=12))
    closed: list[str] = []

    async def rooms_moved(rooms: list[str]) -> None:
        closed.extend(rooms)

    keepers = {node_id: NodeLease(bare.db, bare.config, node_id, LEASE, reap=True,
                                  on_reaped=rooms_moved, clock=clock)
               for node_id in (brno, ostrava)}
    assert keepers[ostrava].lease_valid
    await keepers[ostrava].renew()  # renews, then reaps Brno
    assert closed == [] and all(node_of_room(bare.db, r) == ostrava for r in on_brno)
    await keepers[brno].renew()  # Brno resumes: fenced
    assert sorted(closed) == on_brno
    await keepers[brno].renew()
    assert sorted(closed) == on_brno, "told once"


def test_a_node_stops_the_rooms_closed_or_moved_elsewhere_and_no_other(bare: World) -> None:
    """What a node re-reads on a notice (scheduler/media/room_signals.py): of its live rooms,
    those closed after they began here, and those now open on another node's worker."""
    brno, ostrava = node(bare.db, "brno"), node(bare.db, "ostrava")
    ours, theirs = sorted(workers_of(bare.db, brno)), workers_of(bare.db, ostrava)
    for name in ("porada", "briefing", "stara-porada", "presunuta"):
        open_plain(bare, name)
    with bare.db.write_session() as session:
        rooms = {r.name: r for r in session.scalars(select(Room))}
        for room in rooms.values():
            room.worker_id = ours[0]
        rooms["presunuta"].worker_id = next(iter(theirs))  # moved by a reaper
        close_room(session, "porada", NOW + timedelta(minutes=60))  # its time is over
        close_room(session, "stara-porada", NOW)  # closed before it began here again
    live = {"porada": NOW, "briefing": NOW, "stara-porada": NOW + timedelta(minutes=5),
            "presunuta": NOW, "jen-tady": NOW}  # the last has no row: an ad-hoc room
    with bare.db.read_session() as session:
        assert rooms_to_stop(session, ours, live) == {
            "porada": "room_closed", "presunuta": "room_moved"}
        assert rooms_to_stop(session, ours, {}) == {}


async def test_room_notices_wake_a_node_and_a_lost_connection_costs_a_re_read(bare: World) -> None:
    if bare.db.engine.dialect.name != "postgresql":
        pytest.skip("notices between nodes are PostgreSQL's LISTEN/NOTIFY")
    checks: list[int] = []

    async def check() -> None:
        checks.append(signals.notices)

    signals = RoomSignals(bare.db.url, check, resync_s=3600, retry_s=0.1)
    signals.start()
    try:
        assert await wait_until(lambda: len(checks) == 1)  # listening: read once
        with bare.db.write_session() as session:
            announce_room_change(session, "porada")
        with bare.db.write_session() as session:  # rolled back: never announced
            announce_room_change(session, "nikdy")
            session.rollback()
        assert await wait_until(lambda: signals.notices >= 1 and len(checks) >= 2)
        # Its connection is cut (a database restart, a network cut): it reconnects and,
        # since notices sent meanwhile are lost, reads again.
        before = len(checks)
        with bare.db.session() as session:
            # Its own connection alone: other nodes' listeners on this server (another
            # test run beside this one) are not this test's to cut.
            cut = session.scalars(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE query = 'LISTEN multipoint_rooms' AND pid = :pid"),
                                  {"pid": signals.backend_pid}).all()
        assert cut == [True]
        assert await wait_until(lambda: len(checks) > before)
    finally:
        await signals.stop()


def _left_at(db: Database, participant: str):  # type: ignore[no-untyped-def]
    with db.session() as session:
        return session.scalar(select(CallRecord.left_at).where(CallRecord.participant == participant))


def _in_call(db: Database, room: str, participant: str, worker: int) -> None:
    with db.write_session() as session:
        session.add(CallRecord(room_name=room, participant=participant, worker_id=worker,
                               joined_at=NOW))


def test_a_node_that_starts_again_ends_the_calls_its_killed_process_held(bare: World) -> None:
    # kill -9 of a front (its workers go with it) and a restart within its lease: nobody
    # reaps it, so only its own start can end what its previous process held.
    brno = node(bare.db, "brno")
    ostrava = node(bare.db, "ostrava")
    _in_call(bare.db, "porada", "Jana", min(workers_of(bare.db, brno)))
    _in_call(bare.db, "jinde", "Petr", min(workers_of(bare.db, ostrava)))
    renew_lease(bare.db, brno, NOW + timedelta(seconds=3), LEASE)  # last heard of at +3 s
    node(bare.db, "brno", at=timedelta(seconds=5))
    assert _left_at(bare.db, "Jana") == NOW + timedelta(seconds=3)
    assert _left_at(bare.db, "Petr") is None, "another node's call goes on"
    with bare.db.session() as session:  # its worker's live load is empty again
        loads = {w.worker_id: w.live for w in worker_loads(session, bare.config.unit_costs)}
    assert all(loads[w] == 0 for w in workers_of(bare.db, brno))


def test_reaping_ends_every_call_on_the_dead_nodes_workers_not_only_its_rooms(bare: World) -> None:
    # A room living on Ostrava, spread to Brno (scheduler/media/spread.py): Brno's part
    # moves nowhere when Brno dies, but its participants' calls are over.
    brno = node(bare.db, "brno")
    ostrava = node(bare.db, "ostrava")
    assert open_plain(bare, "porada") is not None
    lives_on = min(workers_of(bare.db, ostrava))
    with bare.db.write_session() as session:
        session.execute(update(Room).where(Room.name == "porada").values(worker_id=lives_on))
    _in_call(bare.db, "porada", "Jana", min(workers_of(bare.db, brno)))
    _in_call(bare.db, "porada", "Petr", min(workers_of(bare.db, ostrava)))
    later = NOW + timedelta(seconds=12)
    renew_lease(bare.db, ostrava, later, LEASE)
    assert reap_dead_nodes(bare.db, later, config=bare.config) == []  # no room moved
    assert _left_at(bare.db, "Jana") == later
    assert _left_at(bare.db, "Petr") is None


def test_a_node_that_starts_with_fewer_workers_moves_the_rooms_of_those_it_no_longer_runs(
        bare: World) -> None:
    # The node ran two workers; it starts again with one (a smaller machine, a lower
    # MULTIPOINT_WORKERS). A standing bridge stays open on the worker that is gone: its
    # participants must be admitted on a worker that runs, not sent to one that does not
    # (the front would redirect them to itself for ever).
    local = node(bare.db, "local", workers=2)
    first, second = sorted(workers_of(bare.db, local))
    bridge_id, bridge_room = bridge(bare)
    assert open_plain(bare, "porada") == first
    assert open_plain(bare, bridge_room, bridge_id=bridge_id) == second  # the emptier
    _in_call(bare.db, bridge_room, "Jana", second)
    node(bare.db, "local", workers=1, at=timedelta(seconds=5))
    with bare.db.write_session() as session:
        decision = admit_join(session, bridge_room, NOW + timedelta(seconds=6), config=bare.config)
    assert decision.allowed and decision.worker_id == first
    assert _left_at(bare.db, "Jana") is not None
    with bare.db.session() as session:
        move = session.scalar(select(RoomMove).where(RoomMove.room_name == bridge_room))
        assert move is not None and (move.from_worker_id, move.to_worker_id) == (second, first)
        assert session.scalar(select(Room.worker_id).where(Room.name == "porada")) == first


def test_the_calls_a_reaped_node_still_has_are_recorded_again_from_its_renewal(bare: World) -> None:
    # Brno was paused, not dead: reaped, its calls ended, but Jana is still connected to
    # its part of a room living on Ostrava; Petr joined there after the reaping.
    brno = node(bare.db, "brno")
    ostrava = node(bare.db, "ostrava")
    brno_worker = min(workers_of(bare.db, brno))

    def brno_load(session: Session) -> int:
        return next(w.live for w in worker_loads(session, bare.config.unit_costs)
                    if w.worker_id == brno_worker)

    _in_call(bare.db, "porada", "Jana", brno_worker)
    later = NOW + timedelta(seconds=12)
    renew_lease(bare.db, ostrava, later, LEASE)
    reap_dead_nodes(bare.db, later, config=bare.config)
    _in_call(bare.db, "porada", "Petr", brno_worker)
    with bare.db.session() as session:
        jana, petr = (session.scalar(select(CallRecord).where(CallRecord.participant == name))
                      for name in ("Jana", "Petr"))
        assert jana is not None and petr is not None and jana.left_at == later
    woke = later + timedelta(seconds=20)
    with bare.db.write_session() as session:
        before = brno_load(session)
        reopened = reopen_calls(session, [jana.id, petr.id], woke)
    assert list(reopened) == [jana.id], "Petr's record is still open"
    with bare.db.session() as session:
        again = session.get(CallRecord, reopened[jana.id])
        assert again is not None and again.left_at is None and again.joined_at == woke
        assert (again.room_name, again.participant, again.kind, again.worker_id,
                again.organisation_id) == ("porada", "Jana", jana.kind, brno_worker,
                                           jana.organisation_id)
        assert brno_load(session) > before  # Jana counts in its worker's load again

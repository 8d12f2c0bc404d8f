"""Rooms spread over nodes: what the fronts share in the database
(scheduler/media/spread.py), on SQLite and PostgreSQL, and its notices on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from scheduler.db import Database
from scheduler.media import spread
from scheduler.media.room_signals import RoomSignals
from scheduler.media.rooms import AdmissionDecision, open_room, release_room
from scheduler.models import MediaNode, Room
from tests.peers import wait_until
from tests.scheduler.conftest import NOW, World, make_world
from tests.scheduler.test_nodes import node

AT = NOW + timedelta(seconds=1)  # within every node's lease

KEY = "ab" * 32  # a worker's pipe secret, hex
PRAHA = [["10.0.0.1", 40000, KEY]]
BRNO = [["10.0.0.2", 40000, KEY], ["10.0.0.2", 40001, KEY]]


@pytest.fixture
def bare(db: Database) -> World:
    """No worker but those of the nodes a test registers."""
    return make_world(db, workers=0)


def producer(producer_id: str, owner: str, ssrc: int, sharing: bool = False) -> dict[str, object]:
    return {"producer_id": producer_id, "owner_id": owner, "owner_name": owner, "owner_role": "guest",
            "kind": "video", "source": "camera", "ssrc": ssrc, "payload_type": 96,
            "rtx_payload_type": 97, "sharing": sharing, "codec": "vp8"}


def write(db: Database, change, *args):  # type: ignore[no-untyped-def]
    with db.write_session() as session:
        return change(session, *args)


def read(db: Database, room: str, node_id: int, at=AT) -> spread.SpreadView:  # type: ignore[no-untyped-def]
    with db.read_session() as session:
        return spread.read_room(session, room, node_id, at)


def test_a_node_reads_the_other_parts_and_the_tracks_piped_to_its_own_workers(bare: World) -> None:
    praha, brno, ostrava = node(bare.db, "praha"), node(bare.db, "brno"), node(bare.db, "ostrava")
    write(bare.db, spread.write_part, "stab", praha, PRAHA, [{"id": "p1"}], False, NOW)
    write(bare.db, spread.write_part, "stab", brno, BRNO, [{"id": "b1"}, {"id": "b2"}], True, NOW)
    # Brno's first worker pipes two tracks to Praha's worker, one to Ostrava's (no part).
    write(bare.db, spread.write_pipes, "stab", brno, PRAHA[0], BRNO[0],
          [producer("cam-b1", "b1", 11), producer("cam-b2", "b2", 12)])
    write(bare.db, spread.write_pipes, "stab", brno, ["10.0.0.3", 40000], BRNO[0],
          [producer("cam-b1", "b1", 13)])

    seen = read(bare.db, "stab", praha)
    assert seen.own and not seen.locked
    assert list(seen.parts) == [brno] and seen.parts[brno].recording
    assert seen.parts[brno].workers == [("10.0.0.2", 40000, KEY), ("10.0.0.2", 40001, KEY)]
    assert [p["id"] for p in seen.parts[brno].participants] == ["b1", "b2"]
    assert sorted(seen.pipes) == [("10.0.0.1:40000", "cam-b1"), ("10.0.0.1:40000", "cam-b2")]
    assert seen.pipes[("10.0.0.1:40000", "cam-b1")][:2] == ("10.0.0.2:40000", "b1")
    # Ostrava has no part: it reads the others but imports nothing.
    assert read(bare.db, "stab", ostrava).pipes == {} and not read(bare.db, "stab", ostrava).own

    # A screen share starts, then its owner leaves: the rows follow.
    write(bare.db, spread.set_pipe_sharing, "stab", brno, "cam-b2", True)
    assert read(bare.db, "stab", praha).pipes[("10.0.0.1:40000", "cam-b2")][2]["sharing"] is True
    write(bare.db, spread.drop_owner_pipes, "stab", brno, "b2")
    assert sorted(read(bare.db, "stab", praha).pipes) == [("10.0.0.1:40000", "cam-b1")]

    # A part written by a node whose room was locked before it spread is locked.
    write(bare.db, spread.write_part, "zamceno", brno, BRNO, [], False, NOW, True)
    assert read(bare.db, "zamceno", praha).locked
    # The lock is room-wide; a part that comes later takes it.
    write(bare.db, spread.set_locked, "stab", True)
    write(bare.db, spread.write_part, "stab", ostrava, [["10.0.0.3", 40000, KEY]], [], False,
          NOW)
    assert read(bare.db, "stab", ostrava).locked and read(bare.db, "stab", praha).locked
    with bare.db.read_session() as session:
        assert spread.room_locked(session, "stab") and not spread.room_locked(session, "jina")


def test_a_dead_nodes_part_is_not_read_and_a_restarting_node_clears_its_own(bare: World) -> None:
    praha, brno = node(bare.db, "praha"), node(bare.db, "brno")
    write(bare.db, spread.write_part, "stab", praha, PRAHA, [], False, NOW)
    write(bare.db, spread.write_part, "stab", brno, BRNO, [{"id": "b1"}], False, NOW)
    write(bare.db, spread.write_pipes, "stab", brno, PRAHA[0], BRNO[0], [producer("c", "b1", 1)])
    with bare.db.write_session() as session:  # Brno's lease lapses
        session.execute(text("UPDATE media_nodes SET lease_expires_at = :at WHERE id = :id"),
                        {"at": NOW, "id": brno})
    seen = read(bare.db, "stab", praha)
    assert seen.parts == {} and seen.pipes == {}  # its participants are gone: they rejoin
    # Brno starts again: nothing of its old part is left, nor what it piped.
    assert write(bare.db, spread.clear_node, brno) == ["stab"]
    with bare.db.read_session() as session:
        assert spread.spread_rooms(session, brno) == [] and spread.spread_rooms(session, praha) == ["stab"]
        assert session.scalar(text("SELECT count(*) FROM room_pipes")) == 0


def test_a_part_that_goes_takes_its_pipes_both_ways_and_the_last_one_lets_the_room_go(
        bare: World) -> None:
    praha, brno = node(bare.db, "praha"), node(bare.db, "brno")
    with bare.db.write_session() as session:  # an ad-hoc room, placed at its first join
        assert open_room(session, bare.config, "stab", 0, NOW) is not None
    write(bare.db, spread.write_part, "stab", praha, PRAHA, [], False, NOW)
    write(bare.db, spread.write_part, "stab", brno, BRNO, [], False, NOW)
    write(bare.db, spread.write_pipes, "stab", brno, PRAHA[0], BRNO[0], [producer("c", "b1", 1)])
    write(bare.db, spread.write_pipes, "stab", praha, BRNO[1], PRAHA[0], [producer("d", "p1", 2)])
    # Praha's last participant left first: Brno still has a part, the room stays open.
    assert write(bare.db, spread.drop_part, "stab", praha) == 1
    with bare.db.read_session() as session:
        assert session.scalar(text("SELECT count(*) FROM room_pipes")) == 0
    assert not write(bare.db, release_room, "stab", AT)
    assert write(bare.db, spread.drop_part, "stab", brno) == 0
    assert write(bare.db, release_room, "stab", AT)
    with bare.db.read_session() as session:
        assert session.scalar(select(Room.state).where(Room.name == "stab")) == "closed"


def test_commands_for_a_node_are_taken_once_in_order(bare: World) -> None:
    praha, brno = node(bare.db, "praha"), node(bare.db, "brno")
    for action in ("mute", "remove"):
        write(bare.db, spread.queue_command, "stab", praha,
              {"action": action, "participant": "p1", "by": "Brno"}, NOW)
    write(bare.db, spread.queue_command, "stab", brno, {"action": "chat", "message": {}}, NOW)
    assert [c["action"] for _, c in write(bare.db, spread.take_commands, praha)] == ["mute", "remove"]
    assert write(bare.db, spread.take_commands, praha) == []
    assert write(bare.db, spread.take_commands, brno) == [("stab", {"action": "chat", "message": {}})]


@pytest.mark.parametrize("address", [["", 1], ["10.0.0.1", 0], ["10.0.0.1", 70000]])
def test_a_bad_pipe_address_is_refused(address: list[object]) -> None:
    with pytest.raises(ValueError, match="not a pipe address"):
        spread.pipe_key(address)


@pytest.mark.parametrize("worker", [["10.0.0.1", 40000], ["10.0.0.1", 40000, "ab"],
                                    ["10.0.0.1", 40000, "AB" * 32]])
def test_a_part_without_a_valid_pipe_secret_is_refused(worker: list[object]) -> None:
    # Without it the other nodes could not key the SRTP of the pipes to that worker.
    with pytest.raises(ValueError, match="no valid secret"):
        spread.pipe_entry(worker)


async def test_spread_notices_name_their_rooms_and_a_lost_connection_reads_all(bare: World) -> None:
    if bare.db.engine.dialect.name != "postgresql":
        pytest.skip("notices between nodes are PostgreSQL's LISTEN/NOTIFY")
    praha = node(bare.db, "praha")
    checks: list[frozenset[str] | None] = []

    async def check_rooms(rooms: frozenset[str] | None) -> None:
        checks.append(rooms)

    async def unused() -> None:
        raise AssertionError("the spread notices name their rooms")

    signals = RoomSignals(bare.db.url, unused, resync_s=3600, retry_s=0.1,
                          channel=spread.CHANNEL, check_rooms=check_rooms)
    signals.start()
    try:
        assert await wait_until(lambda: checks == [None])  # listening: every room read once
        write(bare.db, spread.write_part, "stab-notice", praha, PRAHA, [], False, NOW)
        assert await wait_until(lambda: any(c and "stab-notice" in c for c in checks))
        before = len(checks)
        with bare.db.session() as session:
            cut = session.scalars(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       f"WHERE query = 'LISTEN {spread.CHANNEL}'")).all()
        assert cut and all(cut)
        # Notices sent while it was away are lost: after the reconnect it reads every room.
        assert await wait_until(lambda: len(checks) > before and checks[-1] is None)
    finally:
        await signals.stop()
    with bare.db.read_session() as session:
        assert session.scalar(select(MediaNode.name).where(MediaNode.id == praha)) == "praha"


ADMITTED = AdmissionDecision(True, "ok", "admitted", 7)
FULL = AdmissionDecision(False, "worker_full", "the media worker of this room is full", 7)
CLOSED = AdmissionDecision(False, "room_not_open", "the room is not open now", 7)
IZS = AdmissionDecision(True, "ok", "admitted", 7, izs=True)


@pytest.mark.parametrize(("mode", "decision", "labels", "takes"), [
    ("when_full", FULL, [], True),  # refused there: joins here instead
    ("when_full", ADMITTED, [], False),  # redirected there, as before
    ("when_full", CLOSED, [], False),  # refused for another reason: refused
    ("always", ADMITTED, [], True),
    ("always", FULL, [], True),
    ("always", CLOSED, [], False),
    ("never", FULL, [], False),
    ("never", ADMITTED, [], False),
    ("always", ADMITTED, ["izs"], False),  # an IZS-only node: no routine room, not a part
    ("always", IZS, ["izs"], True),
    ("always", ADMITTED, ["izs", "general"], True),
])
def test_when_a_node_takes_part_of_a_room_placed_elsewhere(
        mode: str, decision: AdmissionDecision, labels: list[str], takes: bool) -> None:
    assert spread.takes_part(mode, decision, labels) is takes


def test_an_unknown_spread_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown spread mode"):
        spread.takes_part("sometimes", ADMITTED, [])

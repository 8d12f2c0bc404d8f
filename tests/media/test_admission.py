"""Joins through scheduled links are admitted by the scheduler; every call is recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE, MEDIA, POOL
from scheduler.booking.bridges import create_bridge
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.models import CallRecord, Organisation
from scheduler.organisations import org_info
from scheduler.seed import seed
from signaling.tokens import JoinGrant, issue_token
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media


def link_token(server, room: str, scheduled: bool) -> str:
    grant = JoinGrant(room=room, role="guest", scheduled=scheduled)
    return issue_token(server.settings.signing_secret(), grant, 300)


async def test_scheduled_link_without_a_booking_is_refused(server) -> None:
    client = await SignalClient.connect(server.ws_url)
    try:
        await client.send({"type": "join", "v": 1, "token": link_token(server, "nikde", True)})
        error = await client.next("error")
        assert error["code"] == "room_not_open" and error["message"]
        assert "nikde" not in server.app[MEDIA].rooms
    finally:
        await client.close()


async def test_izs_bridge_admits_and_records_the_call(server) -> None:
    database = server.app[DATABASE]
    with database.session() as session:
        seed(session, local_workers=1, worker_capacity_units=800)
        izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
        bridge = create_bridge(session, SchedulerConfig(), org_info(session, izs.id), "Povodně",
                               ParticipantMix(hd=5))
        room, organisation = bridge.room_name, izs.id
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    try:
        joined = await client.join_with(peer, link_token(server, room, True), name="HZS Vysočina")
        assert joined["room"] == room
        assert await wait_until(lambda: server.app[MEDIA].rooms[room].participants[joined["participant"]]
                                .producers["camera"].packets > 10)
    finally:
        await client.close()
    assert await wait_until(lambda: room not in server.app[MEDIA].rooms)

    def record() -> CallRecord:
        with database.session() as session:
            return session.scalars(select(CallRecord).where(CallRecord.room_name == room)).one()

    assert await wait_until(lambda: record().left_at is not None)
    stored = record()
    assert stored.participant == "HZS Vysočina" and stored.organisation_id == organisation
    assert stored.left_at >= stored.joined_at


async def test_ad_hoc_link_needs_no_booking_and_is_recorded(server) -> None:
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    try:
        await client.join_with(peer, link_token(server, "ad-hoc", False), name="Operátor")
    finally:
        await client.close()
    with server.app[DATABASE].session() as session:
        (stored,) = session.scalars(select(CallRecord).where(CallRecord.room_name == "ad-hoc")).all()
    assert stored.participant == "Operátor"


async def test_the_scheduler_opens_and_closes_rooms_on_the_media_worker(server) -> None:
    from multipoint.app import LIVE_ROOMS
    from scheduler.api import SERVICES

    control = server.app[SERVICES].room_control
    media = server.app[MEDIA]
    await control.open_room("briefing", 1, None)
    assert "briefing" in media.rooms  # ready before anyone joins
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    try:
        await client.join_with(peer, link_token(server, "briefing", False), name="Kraj")
        await control.close_room("briefing", "meeting_over")
        assert await wait_until(lambda: client.of_type("closed"))
        assert client.of_type("closed")[0]["code"] == "meeting_over"
        assert client.of_type("closed")[0]["reason"] == "the booked time is over"
        assert await wait_until(lambda: "briefing" not in media.rooms and client.ws.closed)
        assert await server.app[LIVE_ROOMS].rooms() == []
        await control.close_room("briefing", "meeting_over")  # idempotent
    finally:
        await client.close()


async def test_admission_counts_what_a_participant_really_costs(tmp_path) -> None:
    """A mixed-mode participant is a mixed unit (4) and its room's first also starts the
    room's composite (here 16), a forwarded one an HD unit (11): read before admission,
    recorded as such, and placed by it."""
    from tests.conftest import start_process_server

    # A worker of 30 units: a mixed room (20) and two more mixed participants, or two
    # forwarded participants; not a mixed room and a forwarded participant (31).
    server = await start_process_server(tmp_path, 1, scheduler_worker_capacity_units=30,
                                        scheduler_unit_cost_mixed_room=16)
    pool = server.app[POOL]
    clients = []
    try:
        first = await SignalClient.connect(server.ws_url)
        clients.append(first)
        await first.send({"type": "join", "v": 1, "token": link_token(server, "sal", False),
                          "name": "Jednotka", "mode": "mixed"})
        assert (await first.next("joined"))["room"] == "sal"
        assert pool.states[0].used_units == 4 + 16
        second = await SignalClient.connect(server.ws_url)
        clients.append(second)
        await second.send({"type": "join", "v": 1, "token": link_token(server, "sal", False),
                           "name": "Úředník"})
        refused = await second.next("error")
        assert refused["code"] == "capacity_full"  # 20 + 11 > 30
        other = await SignalClient.connect(server.ws_url)
        clients.append(other)
        await other.send({"type": "join", "v": 1, "token": link_token(server, "sal", False),
                          "name": "Jednotka 2", "mode": "mixed"})
        assert (await other.next("joined"))["room"] == "sal"  # 24: the composite is paid
        assert pool.states[0].used_units == 4 + 4 + 16
        for mixed in (first, other):
            await mixed.close()
            clients.remove(mixed)
        assert await wait_until(lambda: pool.states[0].used_units == 0)  # its composite went too
        third = await SignalClient.connect(server.ws_url)
        clients.append(third)
        await third.send({"type": "join", "v": 1, "token": link_token(server, "sal", False),
                          "name": "Úředník"})
        assert (await third.next("joined"))["room"] == "sal"  # the mixed ones' units are free

        def kinds() -> dict[str, str]:
            with server.app[DATABASE].session() as session:
                return {r.participant: r.kind for r in session.scalars(select(CallRecord))}

        assert await wait_until(lambda: kinds() == {"Jednotka": "mixed", "Jednotka 2": "mixed",
                                                    "Úředník": "hd"})
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_a_participant_switched_to_mixed_is_counted_mixed(tmp_path) -> None:
    """A host switches participants between forwarded and mixed: the scheduler's record of
    each and the units its worker is charged follow (a mixed unit 4 and the room's
    composite 16 from the switch, an HD unit 11 back), and a switch that would fill the
    worker past its capacity is refused and changes nothing."""
    from tests.conftest import start_process_server

    server = await start_process_server(tmp_path, 1, scheduler_worker_capacity_units=30,
                                        scheduler_unit_cost_mixed_room=16)
    pool = server.app[POOL]
    host = await SignalClient.connect(server.ws_url)
    unit = await SignalClient.connect(server.ws_url)
    try:
        grant = JoinGrant(room="sal", role="host", scheduled=False)
        await host.send({"type": "join", "v": 1, "name": "Hostitel",
                         "token": issue_token(server.settings.signing_secret(), grant, 300)})
        participant = (await host.next("joined"))["participant"]

        def kinds() -> dict[str, str]:
            with server.app[DATABASE].session() as session:
                return {r.participant: r.kind for r in session.scalars(select(CallRecord))}

        assert await wait_until(lambda: kinds() == {"Hostitel": "hd"}) and pool.states[0].used_units == 11
        await host.send({"type": "set_mode", "participant": participant, "mode": "mixed"})
        assert await wait_until(lambda: kinds() == {"Hostitel": "mixed"})
        assert pool.states[0].used_units == 4 + 16  # a mixed unit now, and the composite

        await unit.send({"type": "join", "v": 1, "token": link_token(server, "sal", False),
                         "name": "Jednotka", "mode": "mixed"})
        unit_id = (await unit.next("joined"))["participant"]
        assert pool.states[0].used_units == 4 + 4 + 16
        # Its call record is written after "joined" (a loaded CI machine saw it later).
        assert await wait_until(lambda: kinds() == {"Hostitel": "mixed", "Jednotka": "mixed"})
        # Forwarded, the unit would cost 11 instead of 4: 31 units on a worker of 30.
        await host.send({"type": "set_mode", "participant": unit_id, "mode": "forwarded"})
        refused = await host.next("error")
        assert refused["code"] == "capacity_full"
        assert pool.states[0].used_units == 4 + 4 + 16
        assert kinds() == {"Hostitel": "mixed", "Jednotka": "mixed"}

        await unit.close()
        assert await wait_until(lambda: pool.states[0].used_units == 4 + 16)
        await host.send({"type": "set_mode", "participant": participant, "mode": "forwarded"})
        assert await wait_until(lambda: kinds()["Hostitel"] == "hd")
        assert pool.states[0].used_units == 11  # and the composite is no longer paid for
    finally:
        await host.close()
        await unit.close()
        await server.runner.cleanup()

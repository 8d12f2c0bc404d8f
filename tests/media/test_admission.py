"""Joins through scheduled links are admitted by the scheduler; every call is recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from multipoint.app import DATABASE, MEDIA
from scheduler.bridges import create_bridge
from scheduler.config import SchedulerConfig
from scheduler.models import CallRecord, Organisation
from scheduler.organisations import org_info
from scheduler.seed import seed
from scheduler.units import ParticipantMix
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
        await control.close_room("briefing")
        assert await wait_until(lambda: client.of_type("closed"))
        assert client.of_type("closed")[0]["reason"] == "the booked time is over"
        assert await wait_until(lambda: "briefing" not in media.rooms and client.ws.closed)
        assert await server.app[LIVE_ROOMS].rooms() == []
        await control.close_room("briefing")  # idempotent
    finally:
        await client.close()

"""The app factory: wires media, signaling and the scheduler into one aiohttp application."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import uvloop
from aiohttp import web

from admin_web import setup_admin
from mcu import aiortc_adapter
from mcu.room import MediaConfig, MediaWorker
from multipoint.metrics import setup_metrics
from multipoint.settings import Settings
from scheduler.api import SERVICES, setup_api
from scheduler.db import Database, upgrade
from scheduler.rollout import apply_selftest
from scheduler.rooms import RoomInfo
from scheduler.selftests import record_selftest
from scheduler.services import SchedulerServices
from signaling.links import join_url, selftest_url
from signaling.operations import LiveRooms
from signaling.server import Admission, CallLog, SignalingConfig, setup_signaling
from signaling.tokens import JoinGrant

logger = logging.getLogger(__name__)

DATABASE = web.AppKey("database", Database)
MEDIA = web.AppKey("media", MediaWorker)
SETTINGS = web.AppKey("settings", Settings)
LIVE_ROOMS = web.AppKey("live_rooms", LiveRooms)


class SchedulerCallLog(CallLog):
    """Call records of signaling's joins and leaves, kept by the scheduler."""

    def __init__(self, services: SchedulerServices) -> None:
        self.services = services

    async def joined(self, room: str, name: str, mode: str) -> int:
        return await asyncio.to_thread(self.services.record_join, room, participant=name,
                                       kind="mixed" if mode == "mixed" else "hd")

    async def left(self, record: int | None) -> None:
        if record is not None:
            await asyncio.to_thread(self.services.record_leave, record)


class MediaRoomControl:
    """The scheduler's jobs open and close booked rooms on this process's media worker."""

    def __init__(self) -> None:
        self.live_rooms: LiveRooms | None = None  # set once signaling is wired

    async def open_room(self, room: str, worker_id: int, info: RoomInfo) -> None:
        if self.live_rooms is not None:
            self.live_rooms.open(room)

    async def close_room(self, room: str) -> None:
        if self.live_rooms is not None:
            await self.live_rooms.close(room, "the booked time is over")


def create_app(settings: Settings) -> web.Application:
    url = settings.effective_database_url
    upgrade(url)  # embedded SQLite needs nothing else to run: create or update the schema
    database = Database(url)

    aiortc_adapter.configure_ice(settings.media_addresses, settings.udp_port_range)
    media = MediaWorker(MediaConfig(ice_servers=aiortc_adapter.ice_servers(
        settings.stun_servers, settings.turn_servers, settings.turn_username,
        settings.turn_password.get_secret_value())))

    app = web.Application(client_max_size=1024 * 1024)
    app[DATABASE] = database
    app[MEDIA] = media
    app[SETTINGS] = settings

    async def store_selftest(result: dict[str, Any]) -> int:
        def write() -> int:
            with database.session() as session:
                stored = record_selftest(session, **result)
                apply_selftest(session, stored)  # a room unit's passing test: "tested"
                return stored.id
        return await asyncio.to_thread(write)

    # scheduler: wire the booking API here
    room_control = MediaRoomControl()
    services = SchedulerServices(
        database, settings.scheduler_config(), run_jobs=settings.scheduler_jobs,
        room_control=room_control,
        join_link=lambda room, role: join_url(settings.public_url, settings.signing_secret(),
                                              room, role=role, scheduled=True,
                                              ttl_s=settings.invite_ttl_hours * 3600))

    async def admit(grant: JoinGrant) -> Admission:
        decision = await asyncio.to_thread(services.admit_join, grant.room)
        return Admission(decision.allowed, decision.code, decision.message)

    live_rooms = setup_signaling(app, SignalingConfig(secret=settings.signing_secret(),
                                                      max_message_bytes=settings.max_message_bytes,
                                                      selftest_ttl_s=settings.selftest_ttl_minutes * 60,
                                                      recordings_dir=settings.data_dir / "recordings"),
                                 media, store_selftest, admit, SchedulerCallLog(services))
    app[LIVE_ROOMS] = live_rooms
    room_control.live_rooms = live_rooms
    setup_metrics(app, media)
    setup_api(app, services)
    setup_admin(app, services, live_rooms, selftest_link=lambda serial: selftest_url(
        settings.public_url, settings.signing_secret(), serial,
        ttl_s=settings.selftest_ttl_minutes * 60))

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/selftest")

    app.router.add_get("/", index)

    async def shutdown(app: web.Application) -> None:
        await media.close()
        database.dispose()

    app.on_cleanup.append(shutdown)
    return app


def settle_heap() -> None:
    """Leave what start-up allocated (modules, SQLAlchemy's mappers, templates: most of
    the heap) out of every later garbage collection.

    A full collection otherwise walks all of it: 40-70 ms pauses that were most of the
    availability query's p99 (bench/booking.py) and the media path's worst delays.
    """
    gc.collect()
    gc.freeze()


def run_server(settings: Settings) -> None:
    # uvloop: its UDP transport reads and writes in C, which matters on the media path
    # (docs/benchmarks.md); the service runs on the stock loop too (as the tests do).
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    warmed = app[SERVICES].warm_up()  # before settle_heap(): it then leaves these out too
    logger.info("scheduler: %d days of capacity read into memory", warmed)
    settle_heap()
    logger.info("multipoint serving on http://%s:%d (public URL %s)", settings.http_host,
                settings.http_port, settings.public_url)
    web.run_app(app, host=settings.http_host, port=settings.http_port, print=None, loop=loop)

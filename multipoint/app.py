"""The app factory: wires media, signaling and the scheduler into one aiohttp application."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import uvloop
from aiohttp import web
from sqlalchemy import select

from admin_web import setup_admin
from mcu.channel import ChannelError
from mcu.pool import InlineWorker, WorkerPool
from mcu.room import MediaWorker
from multipoint.http_security import (
    RedactedAccessLogger,
    forwarded_middleware,
    security_headers,
    trusted_networks,
)
from multipoint.metrics import setup_metrics
from multipoint.settings import Settings
from scheduler.api import SERVICES, setup_api
from scheduler.booking.dial_in import dial_in
from scheduler.db import Database, upgrade
from scheduler.grants.rollout import apply_selftest
from scheduler.grants.selftests import record_selftest
from scheduler.media.closing import CLOSE_REASONS
from scheduler.media.leases import NodeLease, reap_dead_nodes
from scheduler.media.nodes import front_of_worker, live_fronts, register_node
from scheduler.media.room_signals import RoomSignals, rooms_to_stop
from scheduler.media.rooms import AdmissionDecision, RoomInfo
from scheduler.media.spread import CHANNEL as SPREAD_CHANNEL
from scheduler.media.spread import DatabaseSpreadStore, takes_part
from scheduler.models import MediaWorker as MediaWorkerRow
from scheduler.services import SchedulerServices
from signaling.links import join_url, selftest_url
from signaling.operations import LiveRooms
from signaling.server import Admission, CallLog, Signaling, SignalingConfig, setup_signaling
from signaling.sip.testcall import UnitTestCalls
from signaling.sip.units import RoomUnits
from signaling.spread import SpreadRooms
from signaling.tokens import JoinGrant
from signaling.turn import page_ice_servers, turn_credentials

logger = logging.getLogger(__name__)
# The media path's own TURN pair, when derived from the shared secret: a node is
# restarted (an upgrade, a reboot) well within a year.
MEDIA_TURN_TTL_S = 366 * 86400

DATABASE = web.AppKey("database", Database)
MEDIA = web.AppKey("media", MediaWorker)  # only with MULTIPOINT_MEDIA_INLINE
POOL = web.AppKey("pool", WorkerPool)
SETTINGS = web.AppKey("settings", Settings)
LIVE_ROOMS = web.AppKey("live_rooms", LiveRooms)
NODE_LEASE = web.AppKey("node_lease", NodeLease)
ROOM_SIGNALS = web.AppKey("room_signals", RoomSignals | None)
SPREAD_SIGNALS = web.AppKey("spread_signals", RoomSignals | None)
ROOM_UNITS = web.AppKey("room_units", RoomUnits | None)


class SchedulerCallLog(CallLog):
    """Call records of signaling's joins and leaves, kept by the scheduler."""

    def __init__(self, services: SchedulerServices, worker_ids: list[int]) -> None:
        self.services = services
        self.worker_ids = worker_ids  # database id of each local worker, by index

    async def joined(self, room: str, name: str, mode: str, worker: int) -> int:
        return await asyncio.to_thread(self.services.record_join, room, participant=name,
                                       kind=self._kind(mode), worker_id=self.worker_ids[worker])

    async def left(self, record: int | None) -> None:
        if record is not None:
            await asyncio.to_thread(self.services.record_leave, record)

    async def reopen(self, records: list[int]) -> dict[int, int]:
        """New records for participants still in their calls whose records were ended
        (this node was reaped while only paused): old id -> new id."""
        return await asyncio.to_thread(self.services.reopen_calls, records)

    async def changed_mode(self, record: int | None, mode: str) -> None:
        if record is not None:
            await asyncio.to_thread(self.services.record_kind, record, self._kind(mode))

    @staticmethod
    def _kind(mode: str) -> str:
        """The participant kind the scheduler counts for a mode (docs/scheduler.md)."""
        return "mixed" if mode == "mixed" else "hd"


class MediaRoomControl:
    """The scheduler's jobs open and close booked rooms on this node's media workers."""

    def __init__(self, worker_ids: list[int]) -> None:
        self.live_rooms: LiveRooms | None = None  # set once signaling is wired
        self.worker_ids = worker_ids

    async def open_room(self, room: str, worker_id: int, info: RoomInfo | None) -> None:
        if self.live_rooms is not None and worker_id in self.worker_ids:
            await self.live_rooms.open(room, self.worker_ids.index(worker_id))

    async def call_units(self, room: str, worker_id: int, units: tuple[tuple[str, str], ...]) -> None:
        # Only the node whose worker has the room acts: it is where the room's calls are
        # placed (the jobs ask each node for its own rooms' units).
        if self.live_rooms is not None and worker_id in self.worker_ids:
            # Open already, unless this node started (or took the room) since it opened.
            # Should its worker be restarting, the calls place the room as a join does.
            try:
                await self.live_rooms.open(room, self.worker_ids.index(worker_id))
            except (ChannelError, TimeoutError, ConnectionError) as exc:
                logger.warning("room %s could not be opened ahead of its units' calls: %s", room, exc)
            self.live_rooms.call_booked_units(room, units)

    async def close_room(self, room: str, reason: str) -> None:
        if self.live_rooms is not None:
            await self.live_rooms.close(room, CLOSE_REASONS.get(reason, reason), reason)


def register_workers(database: Database, settings: Settings) -> tuple[int, list[int]]:
    """Record this node (taking its lease) and its workers for the scheduler; the node's
    id and its workers' database ids by index."""
    now = datetime.now(UTC)
    node_id = register_node(database, settings.node_name, settings.worker_count,
                            settings.scheduler_worker_capacity_units, now,
                            labels=settings.node_labels, addresses=[settings.public_url],
                            lease=timedelta(seconds=settings.node_lease_seconds),
                            config=settings.scheduler_config())
    with database.session() as session:
        rows = session.execute(select(MediaWorkerRow.index, MediaWorkerRow.id)
                               .where(MediaWorkerRow.node_id == node_id)).all()
    ids = dict(rows)
    return node_id, [ids[index] for index in range(settings.worker_count)]


def media_config(settings: Settings) -> dict[str, Any]:
    """What each worker process needs to know, as JSON for its command line."""
    username, password = settings.turn_username, settings.turn_password.get_secret_value()
    secret = settings.turn_secret.get_secret_value()
    if secret and not username:  # coturn's shared secret: a pair for the node's lifetime
        username, password = turn_credentials(secret, settings.node_name, MEDIA_TURN_TTL_S)
    return {"media_addresses": settings.all_media_addresses,
            "udp_port_range": settings.udp_port_range,
            "stun_servers": settings.stun_servers, "turn_servers": settings.turn_servers,
            "turn_username": username, "turn_password": password,
            "pipe_host": settings.pipe_host,
            "unit_composite_max": [int(n) for n in settings.sip_composite_max.split("x")]}


def refusal_details(decision: AdmissionDecision) -> dict[str, Any]:
    """The scheduler's detail of a refused join as fields of the error message
    (docs/protocol.md, "Errors"): times in ISO 8601, UTC."""
    if decision.opens_at is None:
        return {}
    return {"opens_at": decision.opens_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def create_app(settings: Settings) -> web.Application:
    url = settings.effective_database_url
    upgrade(url)  # embedded SQLite needs nothing else to run: create or update the schema
    database = Database(url)
    node_id, worker_ids = register_workers(database, settings)
    config = settings.scheduler_config()

    signaling: Signaling | None = None

    def on_event(worker: int, event: str, data: dict[str, Any]) -> None:
        if signaling is not None:
            signaling.on_worker_event(worker, event, data)

    def on_lost(worker: int) -> None:
        if signaling is not None:
            signaling.on_worker_lost(worker)

    pool = WorkerPool(settings.worker_count, media_config(settings),
                      capacity_units=[settings.scheduler_worker_capacity_units] * len(worker_ids),
                      on_event=on_event, on_lost=on_lost, inline=settings.media_inline,
                      mixed_room_units=settings.scheduler_unit_cost_mixed_room)

    # Outermost first: the client as a trusted proxy reports it, then headers on every answer.
    app = web.Application(client_max_size=1024 * 1024, middlewares=[
        forwarded_middleware(trusted_networks(settings.trusted_proxies)), security_headers])
    app[DATABASE] = database
    app[POOL] = pool
    app[SETTINGS] = settings
    if isinstance(pool.workers[0], InlineWorker):
        app[MEDIA] = pool.workers[0].media

    async def store_selftest(result: dict[str, Any]) -> int:
        def write() -> int:
            with database.session() as session:
                stored = record_selftest(session, **result)
                apply_selftest(session, stored)  # a room unit's passing test: "tested"
                return stored.id
        return await asyncio.to_thread(write)

    # scheduler: wire the booking API here
    room_control = MediaRoomControl(worker_ids)
    services = SchedulerServices(
        database, config, run_jobs=settings.scheduler_jobs,
        room_control=room_control, workers=worker_ids,
        join_link=lambda room, role, izs=False: join_url(
            settings.link_base(izs), settings.signing_secret(), room, role=role, scheduled=True,
            ttl_s=settings.invite_ttl_hours * 3600))

    several_nodes = bool(settings.node)
    # Rooms spread over nodes need the shared database's notices (PostgreSQL).
    spreading = several_nodes and settings.spread_rooms != "never" \
        and database.engine.dialect.name == "postgresql"
    spread_store = DatabaseSpreadStore(database, node_id, services.clock) if spreading else None

    async def spread_here(grant: JoinGrant, decision: Any) -> Admission | None:
        """This node takes part of a room that lives on another node's worker (the
        setting says always, or when that worker is full), if its labels allow the
        room; None: it does not (the participant is redirected or refused as before)."""
        if spread_store is None or decision.worker_id is None \
                or decision.worker_id in worker_ids \
                or not takes_part(settings.spread_rooms, decision, settings.node_labels):
            return None
        if grant.role != "host" and await spread_store.room_locked(grant.room):
            return Admission(False, "room_locked", "the room is locked by its host")
        return Admission(True, "ok", "admitted", priority=decision.izs, spread=True)

    async def admit(grant: JoinGrant, kind: str, reaped: bool = False) -> Admission:
        if not grant.scheduled:
            if not several_nodes:  # one node: an ad-hoc room is wherever its front puts it
                return Admission(True)
            decision = await asyncio.to_thread(services.place_room, grant.room)
        else:
            decision = await asyncio.to_thread(services.admit_join, grant.room, kind=kind)
        if decision.worker_id is not None and decision.worker_id not in worker_ids:
            # Placed on another node's worker: this node takes part of the room, or the
            # participant is sent to that front.
            front, live = await asyncio.to_thread(read, front_of_worker, decision.worker_id,
                                                  services.clock())
            spread = await spread_here(grant, decision) if live else None
            if spread is not None:
                return spread
        if decision.allowed and decision.worker_id is not None \
                and decision.worker_id not in worker_ids:
            if not live and not reaped and database.engine.dialect.name == "postgresql":
                # That node's lease has lapsed: move its rooms now (once; any node may)
                # rather than send the participant to a dead front until the next round.
                await asyncio.to_thread(reap_dead_nodes, database, services.clock(),
                                        config=config)
                return await admit(grant, kind, reaped=True)
            return Admission(True, decision.code, decision.message, redirect=front) \
                if front else Admission(False, "room_unreachable",
                                        "the room's media node has no address; try again")
        worker = worker_ids.index(decision.worker_id) \
            if decision.worker_id in worker_ids else None
        return Admission(decision.allowed, decision.code, decision.message, worker, decision.izs,
                         details=refusal_details(decision))

    def read(query: Callable[..., Any], *args: Any) -> Any:
        with database.read_session() as session:
            return query(session, *args)

    async def room_emptied(room: str) -> None:
        # Its placement goes (the next first join places it anew), unless someone has
        # joined it here again meanwhile.
        if several_nodes and signaling is not None and room not in signaling.channels:
            await asyncio.to_thread(services.release_room, room)

    async def fronts() -> list[str]:
        if not several_nodes:  # alone: this front is the only one
            return [settings.public_url]
        return await asyncio.to_thread(read, live_fronts, services.clock(), node_id)

    costs = config.unit_costs
    call_log = SchedulerCallLog(services, worker_ids)
    signaling = setup_signaling(app, SignalingConfig(
        secret=settings.signing_secret(), max_message_bytes=settings.max_message_bytes,
        selftest_ttl_s=settings.selftest_ttl_minutes * 60,
        recordings_dir=settings.data_dir / "recordings",
        units=lambda mode: costs.mixed if mode == "mixed" else costs.hd,
        ice_servers=page_ice_servers(settings.turn_urls, settings.turn_secret.get_secret_value(),
                                     settings.turn_credential_hours * 3600),
        answer_timeout_s=settings.answer_timeout_seconds,
        max_pending_joins_per_ip=settings.max_pending_joins_per_ip,
        max_pending_joins=settings.max_pending_joins,
        send_queue_messages=settings.send_queue_messages,
        send_timeout_s=settings.send_timeout_seconds,
        join_rate_per_ip=settings.join_rate_per_ip,
        join_rate_per_link=settings.join_rate_per_link, message_rate=settings.message_rate,
        selftest_rate_per_ip=settings.selftest_rate_per_ip,
        selftest_rate_per_link=settings.selftest_rate_per_link,
        resume_grace_s=settings.resume_grace_seconds, video_codec=settings.video_codec),
        pool, store_selftest, admit, call_log, fronts,
        room_emptied)
    spread_rooms = SpreadRooms(signaling, spread_store) if spread_store is not None else None
    signaling.spread = spread_rooms
    live_rooms = LiveRooms(signaling, settings.data_dir / "recordings")
    app[LIVE_ROOMS] = live_rooms
    room_control.live_rooms = live_rooms
    if spread_rooms is not None:  # another node's operator closes a room spread over this one
        spread_rooms.close_room = live_rooms.close
    async def meeting_by_number(number: str) -> tuple[str, str] | None:
        found = await asyncio.to_thread(read, dial_in, number)
        return (found.room, found.pin) if found is not None else None

    # Room units calling over SIP (signaling/sip/): members of their rooms like pages.
    room_units = RoomUnits(signaling, settings.unit_media_host, settings.effective_sip_host,
                           dial_in=meeting_by_number) if settings.sip_enabled else None
    app[ROOM_UNITS] = room_units
    live_rooms.units = room_units

    # A room unit's test call from the rollout tracker dials it over SIP.
    unit_tests = UnitTestCalls(room_units, store_selftest) if room_units is not None else None
    setup_metrics(app, live_rooms)
    setup_api(app, services)
    setup_admin(app, services, live_rooms, selftest_link=lambda serial: selftest_url(
        settings.public_url, settings.signing_secret(), serial,
        ttl_s=settings.selftest_ttl_minutes * 60),
        test_call=unit_tests.start if unit_tests is not None else None,
        is_test_calling=lambda serial: unit_tests is not None and serial in unit_tests.running)

    async def reaped(moved: list[str]) -> None:
        # Fencing: this node was reaped while it did not answer (paused, cut off) and
        # these rooms now live on other nodes. Their participants here are disconnected;
        # their pages rejoin and admission routes them to the room's new worker.
        for room in moved:
            await live_rooms.close(room, CLOSE_REASONS["room_moved"], "room_moved")
        # The reaper ended every call record of this node's workers, but the participants
        # of its other rooms (its parts of rooms living elsewhere, rooms with nowhere to
        # go) are still here: their calls go on, counted again in usage and in their
        # workers' load from now on.
        assert signaling is not None
        held = [(connection, connection.call_record)
                for connection in list(signaling.connections.values())
                if connection.call_record is not None]
        reopened = await call_log.reopen([record for _, record in held])
        for connection, old in held:
            new = reopened.get(old)
            if new is None:  # still open: it joined after the reaping
                continue
            if signaling.connections.get(connection.participant_id or "") is connection \
                    and connection.call_record == old:
                connection.call_record = new
            else:  # it left meanwhile, closing its old record: the new one is over too
                await call_log.left(new)

    # Alone on SQLite there is nobody to reap (and nobody to reap this node): it only
    # renews its own lease, which keeps its workers placement candidates.
    node_lease = NodeLease(database, config, node_id,
                           timedelta(seconds=settings.node_lease_seconds),
                           reap=database.engine.dialect.name == "postgresql",
                           on_reaped=reaped, clock=services.clock)
    app[NODE_LEASE] = node_lease

    async def stop_rooms_changed_elsewhere() -> None:
        # Another node closed (the booked time is over, a cancelled booking) or moved a
        # room this node serves: its participants here are told why and disconnected.
        assert signaling is not None
        live = {name: datetime.fromtimestamp(channel.created_at, UTC)
                for name, channel in signaling.channels.items() if not channel.echo}
        if not live:
            return
        for room, reason in (await asyncio.to_thread(read, rooms_to_stop, worker_ids,
                                                     live)).items():
            channel = signaling.channels.get(room)
            if reason == "room_moved" and channel is not None and channel.spread:
                continue  # this node has part of a room living elsewhere: it goes on
            await live_rooms.close(room, CLOSE_REASONS.get(reason, reason), reason)

    room_signals = RoomSignals(url, stop_rooms_changed_elsewhere,
                               resync_s=settings.room_resync_seconds) \
        if several_nodes and database.engine.dialect.name == "postgresql" else None
    app[ROOM_SIGNALS] = room_signals

    async def no_check() -> None:
        return None

    # The spread rooms' own notices: a room's name, whenever another node changed its part.
    spread_signals = RoomSignals(url, no_check, resync_s=settings.room_resync_seconds,
                                 channel=SPREAD_CHANNEL, check_rooms=spread_rooms.check) \
        if spread_rooms is not None else None
    app[SPREAD_SIGNALS] = spread_signals

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/selftest")

    app.router.add_get("/", index)

    async def start_workers(app: web.Application) -> None:
        # The lease first: it runs from registration, and the workers may take longer to
        # start than it lasts (a loaded machine). Renewed only once they were ready, it
        # lapsed, and the other nodes reaped this node at its own start (its rooms moved).
        node_lease.start()
        await pool.start()
        if room_signals is not None:
            room_signals.start()
        if spread_rooms is not None and spread_signals is not None:
            spread_rooms.start()
            spread_signals.start()
        if room_units is not None:
            try:
                await room_units.agent.start(settings.sip_port, settings.sip_port)
            except OSError as exc:
                # Browsers are most of the service: it serves them without SIP rather
                # than not at all (a port in use, or 5060 without the right to bind it).
                logger.error("SIP: cannot listen on %s port %d (%s); room units cannot call in",
                             settings.effective_sip_host, settings.sip_port, exc)
            else:
                logger.info("SIP: listening on %s port %d (UDP) and %d (TCP)",
                            settings.effective_sip_host, room_units.agent.udp_port,
                            room_units.agent.tcp_port)
            if settings.sip_tls_certificate:
                try:
                    await room_units.agent.start_tls(
                        settings.sip_tls_port, settings.sip_tls_certificate,
                        settings.sip_tls_key or settings.sip_tls_certificate,
                        settings.sip_tls_cafile or None)
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    logger.error("SIP: no TLS on port %d (%s)", settings.sip_tls_port, exc)
                else:
                    logger.info("SIP: TLS on port %d", room_units.agent.tls_port)

    async def shutdown(app: web.Application) -> None:
        await live_rooms.stop_dialling()
        if room_units is not None:
            await room_units.agent.close()
        if room_signals is not None:
            await room_signals.stop()
        if spread_rooms is not None and spread_signals is not None:
            await spread_signals.stop()
            await spread_rooms.stop()
        await node_lease.stop()
        await pool.stop()
        database.dispose()

    # Before the scheduler's own start-up hook (setup_api): its first tick may open rooms.
    app.on_startup.insert(0, start_workers)
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
    logger.info("multipoint serving on %s, port %d (public URL %s)",
                ", ".join(settings.listen_hosts), settings.http_port, settings.public_url)
    web.run_app(app, host=settings.listen_hosts, port=settings.http_port, print=None, loop=loop,
                access_log_class=RedactedAccessLogger)

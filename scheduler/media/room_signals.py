"""Telling the other nodes that the database changed under one of their rooms.

A job on one node closes a booked room (its time is over, or it was cancelled) that
lives on another node's worker; a reaper moves a dead node's rooms. The node that
serves the room must stop serving it, and it learns so through PostgreSQL
``LISTEN/NOTIFY`` on :data:`CHANNEL`: the payload is the room's name, the state is in
the ``rooms`` table. A notice only wakes a node up; it then reads which of its live
rooms must stop (:func:`rooms_to_stop`). It reads the same after every reconnect of
its listening connection and every ``resync_s`` besides, so a notice lost in a
network cut costs a later re-read, never a room that goes on after its end.

Why PostgreSQL and not Redis pub/sub: the nodes share the database already, a notice
sent in the transaction that closes the room is delivered only if that transaction
commits (never a notice about a change that was rolled back), and one server fewer
must stay up for the control path to work (docs/workers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from scheduler.media.closing import close_reason
from scheduler.models import Room

log = logging.getLogger(__name__)

CHANNEL = "multipoint_rooms"


def announce_room_change(session: Session, room_name: str) -> None:
    """Wake every node up about this room when this transaction commits (PostgreSQL;
    alone on SQLite there is no other node to tell)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, room_name)))


def rooms_to_stop(session: Session, worker_ids: list[int],
                  live: dict[str, datetime]) -> dict[str, str]:
    """Of this node's live rooms (name -> when it began here), those the database says
    must stop here, each with the reason its participants are told (a key of
    :data:`~scheduler.media.closing.CLOSE_REASONS`: why the row was closed, or
    ``room_moved``).

    A room stops if its row was closed after it began here (a room that began after
    its row was closed is an ad-hoc room of the same name, not one the close was
    about), or if it is open on a worker that is not one of ours (moved away).
    """
    if not live:
        return {}
    stop: dict[str, str] = {}
    for room in session.scalars(select(Room).where(Room.name.in_(list(live)))):
        if room.state == "closed" and room.closed_at is not None \
                and room.closed_at >= live[room.name]:
            # Its true reason, as the node whose job closed it told its own participants.
            stop[room.name] = close_reason(session, room)
        elif room.state == "open" and room.worker_id is not None \
                and room.worker_id not in worker_ids:
            stop[room.name] = "room_moved"
    return stop


class RoomSignals:
    """Listens for room notices and calls ``check`` on each one, after each (re)connect
    and every ``resync_s``; ``check`` reads the database and stops what must stop.

    On another ``channel`` (rooms spread over nodes, scheduler/media/spread.py) it calls
    ``check_rooms`` with the rooms the notices named instead, or None for all of them.
    """

    def __init__(self, database_url: str, check: Callable[[], Awaitable[None]], *,
                 resync_s: float = 30.0, retry_s: float = 1.0, channel: str = CHANNEL,
                 check_rooms: Callable[[frozenset[str] | None], Awaitable[None]] | None = None,
                 ) -> None:
        # psycopg's own URL: the SQLAlchemy one may name a driver ("postgresql+psycopg").
        self._conninfo = make_url(database_url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        self._check = check
        # With ``check_rooms``, the rooms named by the notices since the last check are
        # passed on (None: every room, after a (re)connect or a resync).
        self._check_rooms = check_rooms
        self._named: set[str] | None = None
        self.channel = channel
        self.resync_s = resync_s
        self.retry_s = retry_s
        self.notices = 0  # received, for the tests and /metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.backend_pid: int | None = None  # the listening connection's, while it is up

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen(), name="room-signals-listen"),
                       asyncio.create_task(self._checking(), name="room-signals-check")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _listen(self) -> None:
        failing = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {self.channel}")
                    # Which server process listens (pg_stat_activity.pid), for an operator
                    # tracing a node's notices, and for a test cutting this one alone.
                    self.backend_pid = connection.info.backend_pid
                    if failing:
                        log.info("room notices: listening again")
                    failing = False
                    self._named = None  # whatever was announced while we were not listening
                    self._wake.set()
                    async for notice in connection.notifies():
                        self.notices += 1
                        if self._named is not None:
                            self._named.add(notice.payload)
                        self._wake.set()
            except (psycopg.Error, OSError) as exc:
                if not failing:
                    log.warning("room notices: connection lost (%s); retrying", exc)
                failing = True
                await asyncio.sleep(self.retry_s)

    async def _checking(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # resync_s passed: read anyway
                await asyncio.wait_for(self._wake.wait(), self.resync_s)
            woken = self._wake.is_set()
            self._wake.clear()
            named = frozenset(self._named) if woken and self._named is not None else None
            self._named = set()
            try:
                if self._check_rooms is not None:
                    await self._check_rooms(named)
                else:
                    await self._check()
            except Exception:  # the database is away: the next wake-up or resync retries
                self._named = None  # and reads every room: those named here were not read
                log.exception("room notices: checking the live rooms failed")

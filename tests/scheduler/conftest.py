"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL: MULTIPOINT_TEST_PG_URL (default: the local server over its Unix socket, which
also works inside a loopback-only network namespace). Each test gets its own schema,
dropped afterwards, so tests run in any order and leave nothing behind. Set the variable
to an empty string to run the SQLite half only; an unreachable server is an error, not
a skip, so that CI cannot pass without it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from scheduler.access.auth import create_user
from scheduler.access.permissions import Principal
from scheduler.config import SchedulerConfig, SmtpConfig
from scheduler.db import Base, Database
from scheduler.models import MediaNode, MediaWorker, Organisation, Quota

PG_URL = os.environ.get("MULTIPOINT_TEST_PG_URL",
                        "postgresql+psycopg://postgres@/test?host=/var/run/postgresql")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


def pg_schema_url(schema: str) -> str:
    url = make_url(PG_URL)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}) \
        .render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_schema() -> Iterator[str]:
    """A PostgreSQL schema of its own, dropped afterwards; yields a URL that uses it."""
    schema = "test_" + secrets.token_hex(6)
    admin = create_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"
        return
    with scratch_schema() as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def join_link(room: str, role: str, izs: bool = False) -> str:
    return f"http://multipoint.test/call/{room}?token={role}-token"


@dataclass
class World:
    """A small, known set-up: two regions with shares, an ORP, IZS, one node."""

    db: Database
    config: SchedulerConfig
    region_a: int = 0
    region_b: int = 0
    orp_a: int = 0
    orp_b: int = 0
    izs: int = 0
    central: int = 0
    users: dict[str, Principal] = field(default_factory=dict)

    def principal(self, name: str) -> Principal:
        return self.users[name]


def make_world(db: Database, *, workers: int = 2, capacity: int = 500,
               reserve_percent: int = 20, share_bp: int = 2000,
               smtp: SmtpConfig | None = None) -> World:
    """Pool = workers x capacity; each region gets ``share_bp`` of it."""
    config = SchedulerConfig(worker_capacity_units=capacity, izs_reserve_percent=reserve_percent,
                             smtp=smtp or SmtpConfig())
    world = World(db, config)
    with db.session() as session:
        def org(name: str, kind: str, parent: int | None = None) -> int:
            row = Organisation(name=name, kind=kind, parent_id=parent, code=f"t:{name}")
            session.add(row)
            session.flush()
            return row.id

        world.region_a = org("Region A", "region")
        world.region_b = org("Region B", "region")
        world.orp_a = org("ORP A", "orp", world.region_a)
        world.orp_b = org("ORP B", "orp", world.region_b)
        world.izs = org("HZS A", "izs")
        world.central = org("Ministry", "central")
        for region in (world.region_a, world.region_b):
            session.add(Quota(organisation_id=region, share_bp=share_bp))
        node = MediaNode(name="node-1", enabled=True)
        session.add(node)
        session.flush()
        for index in range(workers):
            session.add(MediaWorker(node_id=node.id, index=index, capacity_units=capacity,
                                    enabled=True))
        for name, role, organisation in (
                ("operator", "operator", None), ("coordinator", "coordinator", None),
                ("admin_a", "org_admin", world.region_a), ("admin_orp_a", "org_admin", world.orp_a),
                ("admin_orp_b", "org_admin", world.orp_b), ("izs", "izs_operator", world.izs)):
            user = create_user(session, name, role, organisation, email=f"{name}@example.cz")
            world.users[name] = Principal(user.id, name, role, organisation, user.email)
    return world


@pytest.fixture
def world(db: Database) -> World:
    return make_world(db)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# A fixed "now": a Monday morning in Prague in winter time.
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

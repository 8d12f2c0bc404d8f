"""Pooled PostgreSQL connections: one that died while idle is replaced, not used."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

import scheduler.db
from scheduler.db import Database
from tests.scheduler.conftest import PG_URL


@pytest.mark.skipif(not PG_URL, reason="MULTIPOINT_TEST_PG_URL is empty: SQLite only")
def test_a_connection_that_died_while_idle_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(PG_URL)
    admin = create_engine(PG_URL)
    try:
        with db.session() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.begin() as connection:  # as a database restart would
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(scheduler.db, "PING_AFTER_IDLE_S", 0.0)  # it has been idle long
        with db.session() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        admin.dispose()
        db.dispose()

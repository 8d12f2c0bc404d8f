"""A scheduler database for the harnesses: SQLite in a temporary file, migrated, seeded.

A handful of rows rather than scheduler/seed.py's ~220 organisations: every branch of
the CSV checks (by code, by name, ambiguous name, programme, existing serial) is there,
and a preview stays fast enough for a million inputs.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

from scheduler.db import Database, upgrade
from scheduler.models import Endpoint, GrantProgramme, Organisation


def seeded_database() -> Database:
    """The schema (alembic ``upgrade``) and a few organisations, once per process."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-db-"))
    atexit.register(shutil.rmtree, folder, True)
    url = f"sqlite:///{folder / 'scheduler.db'}"
    upgrade(url)
    database = Database(url)
    with database.session() as session:
        region = Organisation(name="Středočeský kraj", kind="region", code="CZ020")
        session.add(region)
        session.flush()
        benesov = Organisation(name="Benešov", kind="orp", code="orp:CZ020:Benešov",
                               parent_id=region.id)
        session.add_all([benesov,
                         Organisation(name="Nová Ves", kind="orp", code="orp:CZ020:Nová Ves"),
                         Organisation(name="Nová Ves", kind="orp", code="orp:CZ031:Nová Ves")])
        session.add(GrantProgramme(name="IROP 2027", budget_czk=1_000_000,
                                   call_opens=date(2027, 1, 1), call_closes=date(2027, 3, 31),
                                   deadline=date(2027, 12, 31)))
        session.flush()
        session.add(Endpoint(serial="SN-001", model="Poly X30", organisation_id=benesov.id,
                             status_changed_at=datetime(2026, 1, 1, tzinfo=UTC)))
    return database

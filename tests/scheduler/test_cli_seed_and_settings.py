"""`multipoint seed` on both databases, and the scheduler's settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from multipoint.cli import main
from multipoint.settings import SettingsError, load_settings
from scheduler.db import Database
from scheduler.models import MediaWorker, Organisation


def test_seed_command_is_idempotent(db_url: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIPOINT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MULTIPOINT_DATABASE_URL", db_url)
    assert main(["seed", "--local-workers", "3"]) == 0
    assert main(["seed", "--local-workers", "5"]) == 0
    database = Database(db_url)
    try:
        with database.session() as session:
            kinds = dict(session.execute(select(Organisation.kind, func.count())
                                         .group_by(Organisation.kind)).all())
            workers = session.scalar(select(func.count()).select_from(MediaWorker))
    finally:
        database.dispose()
    assert kinds["region"] == 14 and kinds["orp"] == 205
    assert workers == 3, "a second seed leaves the existing node alone"


def test_scheduler_settings_reach_the_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIPOINT_SCHEDULER_UNIT_COST_HD", "15")
    monkeypatch.setenv("MULTIPOINT_SCHEDULER_BORROW_LEAD_HOURS", "24")
    monkeypatch.setenv("MULTIPOINT_SMTP_HOST", "mail.example.cz")
    config = load_settings().scheduler_config()
    assert config.unit_costs.hd == 15
    assert config.borrow_lead == timedelta(hours=24)
    assert config.smtp.host == "mail.example.cz"


@pytest.mark.parametrize(("variable", "value"), [
    ("MULTIPOINT_SCHEDULER_IZS_RESERVE_PERCENT", "95"),
    ("MULTIPOINT_SCHEDULER_UNIT_COST_AUDIO", "0"),
    ("MULTIPOINT_SMTP_SENDER", "nobody"),
    ("MULTIPOINT_SCHEDULER_MAX_OCCURRENCES", "many"),
])
def test_bad_scheduler_settings_stop_start_up_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert variable in str(error.value)

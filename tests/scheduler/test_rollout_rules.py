"""The rollout pipeline's rules and the account rules, as plain functions."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from scheduler.access.users import hash_password, verify_password
from scheduler.grants.rollout import PIPELINE, allowed_next, decode_csv, status_after_selftest
from scheduler.models import Endpoint, SelfTestResult


def test_nobody_moves_a_unit_to_tested_by_hand() -> None:
    for status in (*PIPELINE, "faulty", "retest_due", "decommissioned"):
        assert "tested" not in allowed_next(status)
    assert allowed_next("installed") == ("faulty", "retest_due", "decommissioned")
    assert allowed_next("tested")[0] == "in_service"
    assert allowed_next("requested") == ("approved", "decommissioned")
    assert allowed_next("decommissioned") == ()


def test_a_passing_selftest_makes_a_unit_that_is_there_tested() -> None:
    assert status_after_selftest("installed", True) == "tested"
    assert status_after_selftest("retest_due", True) == "tested"
    assert status_after_selftest("faulty", True) == "tested"
    assert status_after_selftest("ordered", True) == "ordered"  # not delivered yet
    assert status_after_selftest("in_service", True) == "in_service"
    assert status_after_selftest("installed", False) == "installed"


def test_apply_selftest_records_the_verdict_once(tmp_path) -> None:
    from scheduler.db import Base, Database
    from scheduler.grants.rollout import apply_selftest
    from scheduler.models import Organisation

    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(db.engine)
    with db.session() as session:
        org = Organisation(name="Benešov", kind="orp")
        session.add(org)
        session.flush()
        session.add(Endpoint(serial="SN-1", model="X30", organisation_id=org.id, status="installed"))
        failed = SelfTestResult(endpoint_serial="SN-1", passed=False, problems=["camera"], figures={},
                                created_at=datetime(2026, 1, 1, tzinfo=UTC))
        passed = SelfTestResult(endpoint_serial="SN-1", passed=True, problems=[], figures={},
                                created_at=datetime(2026, 1, 2, tzinfo=UTC))
        session.add_all([failed, passed])
        session.flush()
        endpoint = apply_selftest(session, failed)
        assert endpoint is not None and endpoint.status == "installed"
        assert endpoint.last_selftest_passed is False
        assert apply_selftest(session, passed).status == "tested"  # type: ignore[union-attr]
        apply_selftest(session, failed)  # an older result arriving late changes nothing
        assert endpoint.status == "tested" and endpoint.last_selftest_passed is True
    db.dispose()


def test_passwords_are_salted_and_checked() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("correct horse battery", first)
    assert not verify_password("correct horse batterY", first)
    assert not verify_password("x", None) and not verify_password("x", "md5$abc")


def test_a_csv_from_czech_excel_keeps_its_diacritics() -> None:
    text = ("serial;model;site;organisation\n"
            "SN-1;Poly Studio;Městský úřad Žďár nad Sázavou, zasedací síň;"
            "ORP Žďár nad Sázavou\nSN-2;Cisco Room Kit;Krajský úřad, přízemí;Kraj Vysočina\n")
    for encoding in ("cp1250", "utf-8", "utf-8-sig"):
        assert decode_csv(text.encode(encoding)) == text, encoding


def _preview(tmp_path, text: str):  # type: ignore[no-untyped-def]
    from scheduler.db import Base, Database
    from scheduler.grants.rollout import preview_csv
    from scheduler.models import Organisation

    db = Database(f"sqlite:///{tmp_path / 'csv.db'}")
    Base.metadata.create_all(db.engine)
    with db.session() as session:
        session.add(Organisation(name="Benešov", kind="orp", code="orp:CZ020:Benešov"))
    with db.read_session() as session:
        return preview_csv(session, text)


def test_csv_with_lone_carriage_returns_is_read_line_by_line(tmp_path) -> None:
    # Found by fuzz/csv.py: a lone CR raised csv.Error ("new-line character seen in
    # unquoted field") out of preview_csv, a server error instead of a preview.
    preview = _preview(tmp_path, "serial,model,organisation\rSN-1,X30,Benešov\r")
    assert preview.errors == []
    assert [r.values["serial"] for r in preview.rows] == ["SN-1"]
    assert preview.ok


def test_csv_the_csv_module_refuses_is_a_file_error(tmp_path) -> None:
    # A field over the csv module's size limit (131072 characters) raised csv.Error.
    preview = _preview(tmp_path, 'serial,model,organisation\n"' + "x" * 200_000 + '",X30,Benešov\n')
    assert preview.errors == [("", "bad_csv")]
    assert not preview.ok


def test_units_too_long_or_too_dear_for_their_columns_are_refused_by_field(world) -> None:
    """A coordinator's form or CSV with a serial, model or site longer than its column,
    or a price past the integer column, used to reach the database: SQLite stored it,
    PostgreSQL failed the request (an error 500, the CSV preview having said all is
    well). Each is now refused, with its field, on both."""
    from scheduler.errors import InvalidInput
    from scheduler.grants.rollout import create_endpoint, import_csv, preview_csv

    coordinator, now = world.principal("coordinator"), datetime.now(UTC)
    for serial, model, site, price, field in (
            ("S" * 101, "Poly", "", 0, "serial"), ("SN-1", "M" * 201, "", 0, "model"),
            ("SN-1", "Poly", "s" * 301, 0, "site"), ("SN-1", "Poly", "", 2**31, "price_czk")):
        with world.db.session() as session:
            try:
                create_endpoint(session, coordinator, serial, model, site, world.orp_a, None,
                                price, None, now)
            except InvalidInput as exc:
                assert exc.details.get("field") == field, (field, exc.code)
            else:
                raise AssertionError(f"a unit with a {field} too large was created")
    rows = [("SN-2", "M" * 201, "", ""), ("SN-3", "Poly", "s" * 301, ""),
            ("SN-4", "Poly", "", "99999999999")]
    text = "serial,model,site,organisation,price_czk\n" + "".join(
        f"{serial},{model},{site},t:ORP A,{price}\n" for serial, model, site, price in rows)
    with world.db.read_session() as session:
        preview = preview_csv(session, text)
    assert [row.errors for row in preview.rows] == [
        [("model", "too_long")], [("site", "too_long")], [("price_czk", "too_large")]]
    with world.db.session() as session, contextlib.suppress(InvalidInput):
        import_csv(session, coordinator, text, now)  # refused: it has errors
    # Exactly these limits still fit.
    with world.db.session() as session:
        create_endpoint(session, coordinator, "S" * 100, "M" * 200, "s" * 300, world.orp_a,
                        None, 2**31 - 1, None, now)
    with world.db.read_session() as session:
        assert session.query(Endpoint).count() == 1

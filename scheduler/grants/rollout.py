"""The rollout of the grant programme's room units: programmes, applications, endpoints.

An endpoint moves along a pipeline (requested → approved → ordered → delivered →
installed → tested → in service) with side states (faulty, retest due, decommissioned).
"tested" is reached only by a passing self-test call of the unit itself: nobody can tick
it by hand. The rules are plain functions; the database functions below apply them.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

import charset_normalizer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.access import audit
from scheduler.access.permissions import Principal
from scheduler.errors import InvalidInput, NotFound
from scheduler.grants.csv_cells import neutralise, restore
from scheduler.ids import MAX_ID
from scheduler.models import (
    Endpoint,
    GrantApplication,
    GrantProgramme,
    Organisation,
    SelfTestResult,
)

PIPELINE: tuple[str, ...] = ("requested", "approved", "ordered", "delivered", "installed",
                             "tested", "in_service")
SIDE_STATES: tuple[str, ...] = ("faulty", "retest_due", "decommissioned")
STATUSES: tuple[str, ...] = PIPELINE + SIDE_STATES
# A unit counts as bought (its price spent) from the order on.
SPENT_STATES = frozenset(STATUSES) - {"requested", "approved", "decommissioned"}
DONE_STATES = frozenset({"in_service", "decommissioned"})
# A passing self-test proves a unit that is physically there works.
TESTABLE_STATES = frozenset({"delivered", "installed", "faulty", "retest_due"})
APPLICATION_STATES: tuple[str, ...] = ("submitted", "approved", "rejected")
CSV_COLUMNS: tuple[str, ...] = ("serial", "model", "site", "organisation", "status", "programme",
                                "price_czk", "due_on")
MAX_IMPORT_ROWS = 5000
# The endpoint columns' sizes (scheduler/models.py): longer text or a larger price is
# refused with its field, not stored by SQLite and failed on by PostgreSQL (an error 500).
TEXT_LIMITS = {"serial": 100, "model": 200, "site": 300}
MAX_PRICE_CZK = MAX_ID
CSV_ENCODINGS = ("cp1250", "iso8859_2")  # besides UTF-8: what Czech offices' files come in


def allowed_next(status: str) -> tuple[str, ...]:
    """The states a person may move an endpoint to from ``status`` (never "tested")."""
    if status == "decommissioned":
        return ()
    if status in ("faulty", "retest_due"):
        return tuple(s for s in ("installed", "faulty", "retest_due", "decommissioned")
                     if s != status)
    index = PIPELINE.index(status)
    forward = PIPELINE[index + 1] if index + 1 < len(PIPELINE) else None
    options = [] if forward in (None, "tested") else [forward]
    if index >= PIPELINE.index("delivered"):
        options += ["faulty", "retest_due"]
    return (*options, "decommissioned")


def status_after_selftest(status: str, passed: bool) -> str:
    """A passing self-test moves a unit that is there to "tested"; a failing one changes
    nothing but the recorded verdict (a person decides whether the unit is faulty)."""
    if passed and status in TESTABLE_STATES:
        return "tested"
    return status


# Self-test results -------------------------------------------------------------------


def apply_selftest(session: Session, result: SelfTestResult) -> Endpoint | None:
    """Record a self-test verdict on its endpoint (if the link named one) and move it."""
    if not result.endpoint_serial:
        return None
    endpoint = session.scalar(select(Endpoint).where(Endpoint.serial == result.endpoint_serial))
    if endpoint is None or (endpoint.last_selftest_id or 0) >= result.id:
        return endpoint
    endpoint.last_selftest_id = result.id
    endpoint.last_selftest_at = result.created_at
    endpoint.last_selftest_passed = result.passed
    new = status_after_selftest(endpoint.status, result.passed)
    if new != endpoint.status:
        audit.record(session, None, "endpoint.status", f"endpoint:{endpoint.serial}",
                     {"from": endpoint.status, "to": new, "selftest": result.id},
                     actor_name="self-test", at=result.created_at)
        endpoint.status = new
        endpoint.status_changed_at = result.created_at
    return endpoint


def refresh_endpoint(session: Session, endpoint: Endpoint) -> None:
    """Apply the endpoint's newest self-test if it is not applied yet (a safety net for a
    result stored while the hook could not run)."""
    latest = session.scalar(select(SelfTestResult)
                            .where(SelfTestResult.endpoint_serial == endpoint.serial)
                            .order_by(SelfTestResult.id.desc()).limit(1))
    if latest is not None:
        apply_selftest(session, latest)


def selftests_of(session: Session, serial: str, limit: int = 20) -> list[SelfTestResult]:
    return list(session.scalars(select(SelfTestResult)
                                .where(SelfTestResult.endpoint_serial == serial)
                                .order_by(SelfTestResult.id.desc()).limit(limit)))


# Programmes, applications, endpoints ---------------------------------------------------


def create_programme(session: Session, actor: Principal, name: str, budget_czk: int,
                     call_opens: date, call_closes: date, deadline: date) -> GrantProgramme:
    if call_closes < call_opens:
        raise InvalidInput("call_closes_before_opens", "the call closes before it opens",
                           field="call_closes")
    if deadline < call_closes:
        raise InvalidInput("deadline_before_close", "the deadline is before the call closes",
                           field="deadline")
    if session.scalar(select(GrantProgramme.id).where(GrantProgramme.name == name)):
        raise InvalidInput("programme_exists", "a programme of this name exists", field="name")
    programme = GrantProgramme(name=name, budget_czk=budget_czk, call_opens=call_opens,
                               call_closes=call_closes, deadline=deadline)
    session.add(programme)
    session.flush()
    audit.record(session, actor, "programme.create", f"programme:{programme.id}",
                 {"name": name, "budget_czk": budget_czk})
    return programme


def create_application(session: Session, actor: Principal, programme_id: int,
                       organisation_id: int, submitted_on: date, units_requested: int,
                       amount_czk: int) -> GrantApplication:
    if session.get(GrantProgramme, programme_id) is None:
        raise NotFound("programme_not_found", f"no programme {programme_id}")
    if session.get(Organisation, organisation_id) is None:
        raise NotFound("organisation_not_found", f"no organisation {organisation_id}")
    application = GrantApplication(programme_id=programme_id, organisation_id=organisation_id,
                                   submitted_on=submitted_on, units_requested=units_requested,
                                   amount_czk=amount_czk, status="submitted")
    session.add(application)
    session.flush()
    audit.record(session, actor, "application.create", f"application:{application.id}",
                 {"programme_id": programme_id, "organisation_id": organisation_id,
                  "amount_czk": amount_czk})
    return application


def decide_application(session: Session, actor: Principal, application_id: int, status: str,
                       approved_czk: int, today: date) -> GrantApplication:
    application = session.get(GrantApplication, application_id)
    if application is None:
        raise NotFound("application_not_found", f"no application {application_id}")
    if status not in APPLICATION_STATES:
        raise InvalidInput("invalid_status", f"status is one of {', '.join(APPLICATION_STATES)}")
    application.status = status
    application.approved_czk = approved_czk if status == "approved" else 0
    application.decided_on = today if status != "submitted" else None
    audit.record(session, actor, "application.decide", f"application:{application.id}",
                 {"status": status, "approved_czk": application.approved_czk})
    return application


def create_endpoint(session: Session, actor: Principal, serial: str, model: str, site: str,
                    organisation_id: int, programme_id: int | None, price_czk: int,
                    due_on: date | None, now: datetime) -> Endpoint:
    """One unit, as a coordinator types it in (its status starts at "requested")."""
    for name, value in (("serial", serial), ("model", model), ("site", site)):
        if len(value) > TEXT_LIMITS[name]:
            raise InvalidInput("too_long", f"the {name} is at most {TEXT_LIMITS[name]} "
                               "characters", field=name)
    if not 0 <= price_czk <= MAX_PRICE_CZK:
        raise InvalidInput("invalid_price", "the price is a whole number of crowns, 0 or more",
                           field="price_czk")
    if session.scalar(select(Endpoint.id).where(Endpoint.serial == serial)):
        raise InvalidInput("endpoint_exists", "a unit with this serial number exists", field="serial")
    if session.get(Organisation, organisation_id) is None:
        raise InvalidInput("organisation_not_found", f"no organisation {organisation_id}",
                           field="organisation_id")
    if programme_id is not None and session.get(GrantProgramme, programme_id) is None:
        raise InvalidInput("programme_not_found", f"no programme {programme_id}",
                           field="programme_id")
    endpoint = Endpoint(serial=serial, model=model, site=site, organisation_id=organisation_id,
                        programme_id=programme_id, status="requested", price_czk=price_czk,
                        due_on=due_on, status_changed_at=now, created_at=now)
    session.add(endpoint)
    session.flush()
    audit.record(session, actor, "endpoint.create", f"endpoint:{serial}",
                 {"model": model, "organisation_id": organisation_id})
    return endpoint


def change_status(session: Session, actor: Principal, endpoint_id: int, status: str,
                  now: datetime) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("endpoint_not_found", f"no endpoint {endpoint_id}")
    if status not in allowed_next(endpoint.status):
        raise InvalidInput("invalid_transition",
                           f"an endpoint cannot go from {endpoint.status} to {status}",
                           field="status")
    audit.record(session, actor, "endpoint.status", f"endpoint:{endpoint.serial}",
                 {"from": endpoint.status, "to": status})
    endpoint.status = status
    endpoint.status_changed_at = now
    return endpoint


SIP_URI = re.compile(r"^sips?:[^\s@<>\"]+@[^\s@<>\"]+$", re.IGNORECASE)


def set_sip_uri(session: Session, actor: Principal, endpoint_id: int, uri: str) -> Endpoint:
    """Where the unit takes SIP calls (its test call dials it); empty: none."""
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("endpoint_not_found", f"no endpoint {endpoint_id}")
    uri = uri.strip()
    if uri and (len(uri) > 200 or not SIP_URI.match(uri) or not uri.isprintable()):
        raise InvalidInput("bad_sip_uri", "a SIP address is sip:unit@address", field="sip_uri")
    audit.record(session, actor, "endpoint.sip_uri", f"endpoint:{endpoint.serial}",
                 {"from": endpoint.sip_uri, "to": uri or None})
    endpoint.sip_uri = uri or None
    return endpoint


# CSV import and export ----------------------------------------------------------------


@dataclass
class RowCheck:
    """One CSV row as the import would write it, or the errors that stop it."""

    line: int
    values: dict[str, str]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (column, code)
    action: str = "create"  # or "update"
    organisation_id: int | None = None
    programme_id: int | None = None


@dataclass
class Preview:
    rows: list[RowCheck]
    errors: list[tuple[str, str]] = field(default_factory=list)  # file-level (column, code)

    @property
    def ok(self) -> bool:
        return not self.errors and all(not r.errors for r in self.rows) and bool(self.rows)

    @property
    def error_count(self) -> int:
        return len(self.errors) + sum(len(r.errors) for r in self.rows)


def _organisation_lookup(session: Session) -> tuple[dict[str, int], dict[str, list[int]]]:
    by_code: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for org_id, code, name in session.execute(select(Organisation.id, Organisation.code,
                                                     Organisation.name)):
        if code:
            by_code[code.casefold()] = org_id
        by_name.setdefault(name.casefold(), []).append(org_id)
    return by_code, by_name


def decode_csv(raw: bytes) -> str:
    """An uploaded CSV as text: UTF-8 (with or without Excel's BOM), else what
    charset-normalizer finds among the Czech encodings (Czech Excel saves windows-1250),
    so names keep their diacritics."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(raw, cp_isolation=list(CSV_ENCODINGS)).best()
    return str(best) if best is not None else raw.decode("cp1250", errors="replace")


def preview_csv(session: Session, text: str) -> Preview:
    """Check every row against the database without writing anything."""
    try:
        return _preview_csv(session, text)
    except csv.Error:
        # What the csv module itself refuses (a field over its size limit, ...): the
        # file, not the server, is at fault, and the person is told so.
        return Preview([], [("", "bad_csv")])


def _preview_csv(session: Session, text: str) -> Preview:
    text = text.lstrip("\ufeff")
    sample = text[:2048]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","  # Czech Excel writes ';'
    # newline="": the csv module's own line handling, so that a lone CR (old Mac files,
    # or a stray one) ends a line instead of failing as a "new-line in unquoted field".
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("serial", "model", "organisation") if c not in header]
    if missing:
        return Preview([], [(c, "missing_column") for c in missing])
    by_code, by_name = _organisation_lookup(session)
    programmes = {name.casefold(): pid for pid, name in
                  session.execute(select(GrantProgramme.id, GrantProgramme.name))}
    existing = set(session.scalars(select(Endpoint.serial)))
    seen: set[str] = set()
    rows: list[RowCheck] = []
    for number, raw in enumerate(reader, start=2):
        if len(rows) >= MAX_IMPORT_ROWS:
            return Preview(rows, [("", "too_many_rows")])
        values = {(k or "").strip().lower(): restore((v or "").strip())
                  if isinstance(v, str) else "" for k, v in raw.items()}
        if not any(values.values()):
            continue
        row = RowCheck(number, {c: values.get(c, "") for c in CSV_COLUMNS})
        _check_row(row, by_code, by_name, programmes, seen, existing)
        rows.append(row)
    return Preview(rows, [] if rows else [("", "no_rows")])


def _check_row(row: RowCheck, by_code: dict[str, int], by_name: dict[str, list[int]],
               programmes: dict[str, int], seen: set[str], existing: set[str]) -> None:
    v = row.values
    serial = v["serial"]
    if not serial:
        row.errors.append(("serial", "required"))
    elif len(serial) > TEXT_LIMITS["serial"]:
        row.errors.append(("serial", "too_long"))
    elif serial in seen:
        row.errors.append(("serial", "duplicate_in_file"))
    else:
        seen.add(serial)
        row.action = "update" if serial in existing else "create"
    if not v["model"]:
        row.errors.append(("model", "required"))
    for name in ("model", "site"):
        if len(v[name]) > TEXT_LIMITS[name]:
            row.errors.append((name, "too_long"))
    org = v["organisation"].casefold()
    if not org:
        row.errors.append(("organisation", "required"))
    elif org in by_code:
        row.organisation_id = by_code[org]
    elif len(by_name.get(org, [])) == 1:
        row.organisation_id = by_name[org][0]
    elif by_name.get(org):
        row.errors.append(("organisation", "ambiguous_organisation"))
    else:
        row.errors.append(("organisation", "unknown_organisation"))
    if v["status"] and v["status"] not in STATUSES:
        row.errors.append(("status", "unknown_status"))
    if v["status"] == "tested":
        row.errors.append(("status", "tested_by_selftest_only"))
    if v["programme"]:
        if v["programme"].casefold() in programmes:
            row.programme_id = programmes[v["programme"].casefold()]
        else:
            row.errors.append(("programme", "unknown_programme"))
    if v["price_czk"]:
        try:
            price = int(v["price_czk"].replace(" ", ""))
            if price < 0:
                raise ValueError
            if price > MAX_PRICE_CZK:
                row.errors.append(("price_czk", "too_large"))
        except ValueError:
            row.errors.append(("price_czk", "invalid_number"))
    if v["due_on"]:
        try:
            date.fromisoformat(v["due_on"])
        except ValueError:
            row.errors.append(("due_on", "invalid_date"))


def import_csv(session: Session, actor: Principal, text: str, now: datetime) -> dict[str, int]:
    """Write a CSV that previews clean, all rows or none (the caller's transaction)."""
    preview = preview_csv(session, text)
    if not preview.ok:
        raise InvalidInput("import_has_errors", f"{preview.error_count} error(s): see the preview")
    counts: Counter[str] = Counter()
    for row in preview.rows:
        v = row.values
        endpoint = session.scalar(select(Endpoint).where(Endpoint.serial == v["serial"]))
        if endpoint is None:
            endpoint = Endpoint(serial=v["serial"], status=v["status"] or "requested",
                                status_changed_at=now, created_at=now)
            session.add(endpoint)
        elif v["status"] and v["status"] != endpoint.status:
            endpoint.status, endpoint.status_changed_at = v["status"], now
        endpoint.model = v["model"]
        endpoint.site = v["site"]
        assert row.organisation_id is not None
        endpoint.organisation_id = row.organisation_id
        endpoint.programme_id = row.programme_id
        endpoint.price_czk = int(v["price_czk"].replace(" ", "")) if v["price_czk"] else 0
        endpoint.due_on = date.fromisoformat(v["due_on"]) if v["due_on"] else None
        counts[row.action] += 1
    session.flush()
    audit.record(session, actor, "endpoint.import", "endpoints",
                 {"created": counts["create"], "updated": counts["update"]})
    return {"created": counts["create"], "updated": counts["update"]}


def export_csv(session: Session) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, "last_selftest_at", "last_selftest_passed"])
    orgs = {i: code or name for i, code, name in
            session.execute(select(Organisation.id, Organisation.code, Organisation.name))}
    programmes = dict(session.execute(select(GrantProgramme.id, GrantProgramme.name)).all())
    for e in session.scalars(select(Endpoint).order_by(Endpoint.serial)):
        cells = [e.serial, e.model, e.site, orgs.get(e.organisation_id, ""), e.status,
                 programmes.get(e.programme_id, "") if e.programme_id else "",
                 e.price_czk, e.due_on.isoformat() if e.due_on else "",
                 e.last_selftest_at.isoformat() if e.last_selftest_at else "",
                 "" if e.last_selftest_passed is None else str(e.last_selftest_passed).lower()]
        writer.writerow([neutralise(cell) for cell in cells])  # imported text: no formulas
    return out.getvalue()


# Dashboards ---------------------------------------------------------------------------


def regions_of(session: Session) -> dict[int, str]:
    """Every organisation's region name (itself, or the nearest region above it);
    organisations outside any region (central bodies, national IZS) map to ""."""
    rows = session.execute(select(Organisation.id, Organisation.parent_id, Organisation.kind,
                                  Organisation.name)).all()
    info = {r.id: r for r in rows}
    result: dict[int, str] = {}
    for org_id in info:
        current, hops = info.get(org_id), 0
        while current is not None and current.kind != "region" and hops < 10:
            current = info.get(current.parent_id) if current.parent_id else None
            hops += 1
        result[org_id] = current.name if current is not None and current.kind == "region" else ""
    return result


def is_overdue(endpoint: Endpoint, today: date) -> bool:
    return (endpoint.due_on is not None and endpoint.due_on < today
            and endpoint.status not in DONE_STATES) or endpoint.status == "retest_due"


def dashboard(session: Session, today: date) -> dict[str, object]:
    regions = regions_of(session)
    endpoints = list(session.scalars(select(Endpoint)))
    by_status = Counter(e.status for e in endpoints)
    by_region: dict[str, Counter[str]] = {}
    for e in endpoints:
        by_region.setdefault(regions.get(e.organisation_id, ""), Counter())[e.status] += 1
    overdue = sorted((e for e in endpoints if is_overdue(e, today)),
                     key=lambda e: (e.due_on or today, e.serial))
    late_applications = list(session.scalars(
        select(GrantApplication).join(GrantProgramme,
                                      GrantProgramme.id == GrantApplication.programme_id)
        .where(GrantApplication.status == "submitted", GrantProgramme.call_closes < today)))
    approved = dict(session.execute(
        select(GrantApplication.programme_id, func.sum(GrantApplication.approved_czk))
        .where(GrantApplication.status == "approved")
        .group_by(GrantApplication.programme_id)).all())
    spending = []
    for programme in session.scalars(select(GrantProgramme).order_by(GrantProgramme.call_opens)):
        spent = sum(e.price_czk for e in endpoints
                    if e.programme_id == programme.id and e.status in SPENT_STATES)
        spending.append({"programme": programme, "budget_czk": programme.budget_czk,
                         "approved_czk": int(approved.get(programme.id) or 0),
                         "spent_czk": spent,
                         "overdue": programme.deadline < today and any(
                             e.programme_id == programme.id and e.status not in DONE_STATES
                             for e in endpoints)})
    return {
        "total": len(endpoints),
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "by_region": {region: {s: counts.get(s, 0) for s in STATUSES}
                      for region, counts in sorted(by_region.items())},
        "overdue": overdue,
        "late_applications": late_applications,
        "spending": spending,
    }


# Reads for the coordinators' pages -------------------------------------------------------

def endpoint_rows(session: Session, status: str = "", region: str = "", limit: int = 2000,
                  ) -> tuple[list[tuple[Endpoint, str, str | None, str]], list[str]]:
    """The inventory, by serial: (endpoint, organisation, programme, region) rows, with a
    status and a region to filter by; and every region that has a unit."""
    regions = regions_of(session)
    query = (select(Endpoint, Organisation.name, GrantProgramme.name)
             .join(Organisation, Organisation.id == Endpoint.organisation_id)
             .outerjoin(GrantProgramme, GrantProgramme.id == Endpoint.programme_id)
             .order_by(Endpoint.serial).limit(limit))
    if status:
        query = query.where(Endpoint.status == status)
    rows = [(e, org, prog, regions.get(e.organisation_id, ""))
            for e, org, prog in session.execute(query)]
    if region:
        rows = [r for r in rows if r[3] == region]
    return rows, sorted({r for r in regions.values() if r})


def programme_choices(session: Session) -> list[tuple[int, str]]:
    return [(i, n) for i, n in session.execute(select(GrantProgramme.id, GrantProgramme.name)
                                                 .order_by(GrantProgramme.name))]


def endpoint_view(session: Session, serial: str) -> dict[str, object]:
    """One unit with its organisation, programme, region, tests and next states; a
    result stored while the hook could not apply it is applied on sight."""
    endpoint = session.scalar(select(Endpoint).where(Endpoint.serial == serial))
    if endpoint is None:
        raise NotFound("endpoint_not_found", f"no endpoint {serial}")
    refresh_endpoint(session, endpoint)
    programme = session.get(GrantProgramme, endpoint.programme_id) \
        if endpoint.programme_id else None
    return {"endpoint": endpoint, "organisation": session.get(Organisation, endpoint.organisation_id),
            "programme": programme, "tests": selftests_of(session, serial),
            "next_states": allowed_next(endpoint.status),
            "region": regions_of(session).get(endpoint.organisation_id, "")}


def endpoint_id_of(session: Session, serial: str) -> int:
    endpoint_id = session.scalar(select(Endpoint.id).where(Endpoint.serial == serial))
    if endpoint_id is None:
        raise NotFound("endpoint_not_found", f"no endpoint {serial}")
    return endpoint_id


def programmes_overview(session: Session) -> dict[str, object]:
    """The programmes by call, how many units each funds, and every application."""
    programmes = list(session.scalars(select(GrantProgramme).order_by(GrantProgramme.call_opens)))
    counts = dict(session.execute(select(Endpoint.programme_id, func.count())
                                  .group_by(Endpoint.programme_id)).all())
    applications = session.execute(
        select(GrantApplication, Organisation.name, GrantProgramme.name)
        .join(Organisation, Organisation.id == GrantApplication.organisation_id)
        .join(GrantProgramme, GrantProgramme.id == GrantApplication.programme_id)
        .order_by(Organisation.name, GrantApplication.submitted_on)).all()
    return {"programmes": programmes, "endpoint_counts": counts, "applications": applications}

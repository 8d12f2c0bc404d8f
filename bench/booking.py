"""Booking decisions under load: ``python -m bench.booking --db URL``.

Seeds a year of realistic bookings (100,000 by default, with the real organisations),
then lets 32 concurrent clients make booking decisions for a fixed time, and times
one-week availability queries. Prints one JSON object.

PostgreSQL: everything goes into a fresh schema of the given database, dropped at the
end (--keep keeps it). SQLite: the file must not exist yet.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import secrets
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, func, insert, make_url, select, text

from multipoint.app import settle_heap
from scheduler.access.auth import create_user
from scheduler.access.permissions import Principal
from scheduler.booking.availability import availability
from scheduler.booking.bookings import BookingInput, admission_queue, create_booking, load_policy
from scheduler.booking.occupancy import warm
from scheduler.booking.recurrence import Schedule
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.db import Database, upgrade
from scheduler.errors import CapacityRefused
from scheduler.models import Booking, BookingOccurrence, MediaNode, MediaWorker, Organisation
from scheduler.organisations import org_info, quota_holder
from scheduler.seed import seed

PRAGUE = ZoneInfo("Europe/Prague")
NOW = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)  # the middle of the seeded year
DURATIONS = [30, 60, 60, 60, 90, 90, 120, 180]  # minutes
KIND_WEIGHTS = {"orp": 60, "region": 20, "central": 14, "izs": 6}
BENCH_USER = [0]  # the id of the user the clients book as (each as admin of its organisation)


def _mix(rng: random.Random) -> ParticipantMix:
    # Mostly 3-15 sites; one in twenty a regional briefing of 20-60.
    sites = rng.randint(20, 60) if rng.random() < 0.05 else rng.randint(3, 15)
    audio = sum(rng.random() < 0.15 for _ in range(sites))
    sd = sum(rng.random() < 0.25 for _ in range(sites - audio))
    mixed = 1 if rng.random() < 0.2 else 0
    return ParticipantMix(hd=max(0, sites - audio - sd - mixed), sd=sd, audio=audio, mixed=mixed)


def _slot(rng: random.Random, day: datetime) -> tuple[datetime, datetime]:
    start_local = datetime(day.year, day.month, day.day, rng.randint(7, 16),
                           rng.choice([0, 15, 30, 45]))
    duration = timedelta(minutes=rng.choice(DURATIONS))
    return start_local, start_local + duration


def _working_days(first: datetime, days: int) -> list[datetime]:
    return [first + timedelta(days=i) for i in range(days)
            if (first + timedelta(days=i)).weekday() < 5]


def _organisers(db: Database) -> dict[str, list[int]]:
    with db.session() as session:
        rows = session.execute(select(Organisation.id, Organisation.kind)).all()
    groups: dict[str, list[int]] = {}
    for org, kind in rows:
        groups.setdefault(kind, []).append(org)
    return groups


def _pick(rng: random.Random, groups: dict[str, list[int]]) -> int:
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    return rng.choice(groups[kind])


def seed_bookings(db: Database, config: SchedulerConfig, count: int,
                  rng: random.Random) -> tuple[int, int]:
    """Bulk-insert ``count`` bookings spread over a year; returns (bookings, occurrences).

    The rows are what admitted bookings look like (units, holder, IZS flag); the pool is
    then sized so that the busiest instant is at 70 %, as in a well-provisioned service.
    """
    groups = _organisers(db)
    holders: dict[int, int | None] = {}
    izs_orgs: set[int] = set(groups["izs"])
    with db.session() as session:
        for orgs in groups.values():
            for org in orgs:
                info = org_info(session, org)
                assert info is not None
                holders[org] = quota_holder(session, info)
    days = _working_days(datetime(2026, 1, 1), 365)
    first_id = 1
    bookings, occurrences = [], []
    for index in range(count):
        org = _pick(rng, groups)
        mix = _mix(rng)
        start_local, end_local = _slot(rng, rng.choice(days))
        weekly = rng.random() < 0.05
        units = mix.units(config.unit_costs)
        booking_id = first_id + index
        bookings.append({
            "id": booking_id, "uid": f"bench-{booking_id}@multipoint", "sequence": 0,
            "organisation_id": org, "organiser_email": "", "invitees": [], "title": "Porada",
            "description": "", "priority": "routine", "izs": org in izs_orgs,
            "zone": "Europe/Prague", "local_start": start_local, "local_end": end_local,
            "rrule": "FREQ=WEEKLY;COUNT=4" if weekly else None, "exdates": [],
            "skip_public_holidays": False, "participants": mix.as_dict(), "units": units,
            "room_name": f"bench-{booking_id}", "status": "confirmed",
            "created_at": NOW, "updated_at": NOW})
        for week in range(4 if weekly else 1):
            start = (start_local + timedelta(weeks=week)).replace(tzinfo=PRAGUE).astimezone(UTC)
            end = (end_local + timedelta(weeks=week)).replace(tzinfo=PRAGUE).astimezone(UTC)
            occurrences.append({"booking_id": booking_id, "start_utc": start, "end_utc": end,
                                "units": units, "holder_id": holders[org],
                                "izs": org in izs_orgs, "priority": "routine",
                                "state": "scheduled"})
    with db.session() as session:
        for chunk in range(0, len(bookings), 5000):
            session.execute(insert(Booking), bookings[chunk:chunk + 5000])
        for chunk in range(0, len(occurrences), 10000):
            session.execute(insert(BookingOccurrence), occurrences[chunk:chunk + 10000])
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT setval(pg_get_serial_sequence('bookings', 'id'), "
                                 "(SELECT max(id) FROM bookings))"))
    return len(bookings), len(occurrences)


def peak_units(occurrences: list[tuple[datetime, datetime, int]]) -> int:
    events = sorted([(s, u) for s, _, u in occurrences] + [(e, -u) for _, e, u in occurrences])
    load = peak = 0
    for _, delta in events:
        load += delta
        peak = max(peak, load)
    return peak


def size_pool(db: Database, config: SchedulerConfig) -> int:
    with db.session() as session:
        rows = session.execute(select(BookingOccurrence.start_utc, BookingOccurrence.end_utc,
                                      BookingOccurrence.units)).all()
        peak = peak_units([(r[0], r[1], r[2]) for r in rows])
        workers = -(-int(peak / 0.7) // config.worker_capacity_units)
        node = MediaNode(name="bench", enabled=True)
        session.add(node)
        session.flush()
        session.execute(insert(MediaWorker), [
            {"node_id": node.id, "index": i, "capacity_units": config.worker_capacity_units,
             "enabled": True} for i in range(workers)])
    return workers * config.worker_capacity_units


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run_clients(db: Database, config: SchedulerConfig, clients: int, duration_s: float,
                rng_seed: int, rate: float = 0.0, prefix: str = "") -> dict[str, object]:
    """Clients book as fast as they can (closed loop), or, with ``rate``, together send
    that many requests per second, each client waiting an exponential pause between its
    requests (open loop: latency is the decision's, not the queue's a saturated closed
    loop builds by Little's law)."""
    groups = _organisers(db)
    days = _working_days(datetime(2026, 7, 2), 60)  # book the next two months
    latencies: list[float] = []
    refusals: list[float] = []  # a refusal also computes the nearest free slots
    decided: list[tuple[float, bool, float]] = []  # (when, refused, latency ms)
    outcomes = {"accepted": 0, "refused": 0, "errors": 0}
    lock = threading.Lock()
    stop_at = [0.0]
    began_at = [0.0]

    def start_clock() -> None:  # once every client has drawn its requests
        # The drawn requests (tens of thousands of objects) are the load generator's, in
        # this process only because it runs here: they stay out of the collections the
        # service's threads would otherwise make walk them (as settle_heap() does for
        # start-up's objects).
        gc.collect()
        gc.freeze()
        began_at[0] = time.perf_counter()
        stop_at[0] = began_at[0] + duration_s

    start_barrier = threading.Barrier(clients + 1, action=start_clock)

    def link(room: str, role: str) -> str:
        return f"https://multipoint.example/call/{room}?token={role}"

    def request(rng: random.Random) -> tuple[Principal, BookingInput]:
        org = _pick(rng, groups)
        start_local, end_local = _slot(rng, rng.choice(days))
        weekly = rng.random() < 0.05
        data = BookingInput(organisation_id=org, title="Porada",
                            schedule=Schedule(start_local, end_local,
                                              rrule="FREQ=WEEKLY;COUNT=4" if weekly else None),
                            participants=_mix(rng))
        return Principal(user_id=BENCH_USER[0], name="bench", role="org_admin",
                         organisation_id=org), data

    # The requests are drawn before the clock starts: drawing them is the load
    # generator's work, and in this one process it would take the service's CPU.
    per_client = int(duration_s * (3 * rate / clients if rate else 100)) + 10

    def client(number: int) -> None:
        rng = random.Random(rng_seed * 1000 + number)
        requests = [request(rng) for _ in range(per_client)]
        start_barrier.wait()
        while time.perf_counter() < stop_at[0]:
            if rate:
                pause = rng.expovariate(rate / clients)
                if time.perf_counter() + pause >= stop_at[0]:
                    break
                time.sleep(pause)
            principal, data = requests.pop() if requests else request(rng)
            began = time.perf_counter()
            try:
                create_booking(db, config, principal, data, NOW, link)
                outcome = "accepted"
            except CapacityRefused:
                outcome = "refused"
            except Exception as exc:  # counted and reported, never hidden
                outcome = "errors"
                print(f"bench client error: {exc!r}", file=sys.stderr)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                latencies.append(elapsed)
                outcomes[outcome] += 1
                decided.append((began, outcome == "refused", elapsed))
                if outcome == "refused":
                    refusals.append(elapsed)

    queue = admission_queue(db)
    batches_before, items_before = queue.batches, queue.items
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    start_barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began_at[0]
    figures: dict[str, object] = {
        "clients": clients, "decision_phase_s": round(elapsed, 2),
        "decisions": len(latencies), **outcomes,
        "bookings_per_s": round(len(latencies) / elapsed, 1),
        "booking_p50_ms": round(percentile(latencies, 0.50), 2),
        "booking_p99_ms": round(percentile(latencies, 0.99), 2),
        "booking_max_ms": round(max(latencies, default=0.0), 2),
        "refusal_p50_ms": round(percentile(refusals, 0.50), 2),
        # Bookings decided per transaction (scheduler/booking/group_commit.py).
        "mean_batch": round((queue.items - items_before)
                            / max(1, queue.batches - batches_before), 1),
    }
    # The clients fill the calendar as they go (a saturated closed loop books thousands
    # of meetings a second into the same two months), so refusals, each of which also
    # searches the nearest free slots, grow from few to most: the first and last quarter
    # show how far the load moved during the run.
    quarter = duration_s / 4
    for name, low, high in (("first", 0.0, quarter), ("last", duration_s - quarter, duration_s)):
        part = [(refused, ms) for at, refused, ms in decided
                if low <= at - began_at[0] < high]
        figures[f"refused_share_{name}_quarter"] = round(
            sum(refused for refused, _ in part) / max(1, len(part)), 3)
        figures[f"booking_p99_ms_{name}_quarter"] = round(
            percentile([ms for _, ms in part], 0.99), 2)
    return {prefix + key: value for key, value in figures.items()}


def single_client(db: Database, config: SchedulerConfig, decisions: int,
                  rng_seed: int) -> dict[str, float]:
    """Latency of one decision with nobody else waiting: the cost of the decision itself."""
    groups = _organisers(db)
    rng = random.Random(rng_seed)
    days = _working_days(datetime(2026, 7, 2), 60)
    latencies = []
    for _ in range(decisions):
        org = _pick(rng, groups)
        start_local, end_local = _slot(rng, rng.choice(days))
        data = BookingInput(organisation_id=org, title="Porada",
                            schedule=Schedule(start_local, end_local), participants=_mix(rng))
        began = time.perf_counter()
        with contextlib.suppress(CapacityRefused):
            create_booking(db, config, Principal(BENCH_USER[0], "bench", "org_admin", org),
                           data, NOW, lambda room, role: room)
        latencies.append((time.perf_counter() - began) * 1000)
    return {"single_client_p50_ms": round(percentile(latencies, 0.5), 2),
            "single_client_p99_ms": round(percentile(latencies, 0.99), 2)}


def time_availability(db: Database, config: SchedulerConfig, runs: int,
                      rng: random.Random) -> dict[str, float]:
    groups = _organisers(db)
    timings = []
    for _ in range(runs):
        org_id = _pick(rng, groups)
        start = NOW + timedelta(days=rng.randint(0, 50))
        began = time.perf_counter()
        with db.session() as session:
            org = org_info(session, org_id)
            availability(session, config, org, start, start + timedelta(days=7), NOW)
        timings.append((time.perf_counter() - began) * 1000)
    return {"availability_week_ms": round(statistics.median(timings), 2),
            "availability_week_p99_ms": round(percentile(timings, 0.99), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.booking", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="SQLAlchemy URL (sqlite:///... or "
                        "postgresql+psycopg://...)")
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of the concurrent decision phase (default 20)")
    parser.add_argument("--paced-rate", type=float, default=16.0,
                        help="requests/s of the paced (open-loop) phase, all clients "
                             "together (default 16: each of 32 admins booking every 2 s, "
                             "thousands of times the real load of ~100,000 a year)")
    parser.add_argument("--availability-runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    args = parser.parse_args(argv)

    load_at_start = round(os.getloadavg()[0], 2)
    url, schema, admin = args.db, None, None
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path in ("", ":memory:") or Path(path).exists():
            parser.error("give a SQLite file that does not exist yet")
    else:
        schema = "bench_" + secrets.token_hex(4)
        admin = create_engine(url)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}) \
            .render_as_string(hide_password=False)
    config = SchedulerConfig()
    rng = random.Random(args.seed)
    result: dict[str, object] = {"db": make_url(args.db).get_backend_name()}
    try:
        began = time.perf_counter()
        upgrade(url)
        db = Database(url)
        with db.session() as session:
            seed(session, local_workers=0)
            BENCH_USER[0] = create_user(session, "bench", "operator").id
        seeded, occurrences = seed_bookings(db, config, args.bookings, rng)
        pool = size_pool(db, config)
        with db.engine.begin() as connection:
            connection.execute(text("ANALYZE"))
        # As `multipoint serve` does before it takes requests.
        warm_began = time.perf_counter()
        warm(db, NOW.date(), lambda session: load_policy(session, config),
             config.limits.max_duration)
        result["warm_up_s"] = round(time.perf_counter() - warm_began, 2)
        settle_heap()
        result.update({"bookings_seeded": seeded, "occurrences_seeded": occurrences,
                       "pool_units": pool, "seed_s": round(time.perf_counter() - began, 1)})
        result.update(run_clients(db, config, args.clients, args.duration, args.seed))
        # Then the same clients at a human pace (open loop).
        result["paced_rate_per_s"] = args.paced_rate
        result.update(run_clients(db, config, args.clients, args.duration, args.seed + 1,
                                  rate=args.paced_rate, prefix="paced_"))
        result.update(single_client(db, config, 200, args.seed + 7))
        result.update(time_availability(db, config, args.availability_runs, rng))
        with db.session() as session:
            result["bookings_total"] = session.scalar(select(func.count()).select_from(Booking))
        db.dispose()
    finally:
        if admin is not None:
            if not args.keep:
                with admin.begin() as connection:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    # The machine's load says whether the figures were measured on a quiet machine.
    result.update({"python": platform.python_version(), "cpus": os.cpu_count(),
                   "loadavg_1m_at_start": load_at_start,
                   "loadavg_1m_at_end": round(os.getloadavg()[0], 2)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

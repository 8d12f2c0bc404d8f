"""Media nodes, their workers, and the quotas: changes to what the pool holds.

Each change takes the pool row exclusively (scheduler/booking/transactions.py), so no booking
decision runs on a pool that is changing under it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.access import audit
from scheduler.access.permissions import Principal
from scheduler.booking.bookings import pool_units
from scheduler.booking.calls import end_calls_on_workers
from scheduler.booking.transactions import run_decision
from scheduler.config import SchedulerConfig
from scheduler.db import Database
from scheduler.errors import InvalidInput, NotFound
from scheduler.media.leases import move_rooms
from scheduler.media.rooms import node_is_live, worker_loads
from scheduler.models import MediaNode, MediaWorker, Organisation, Quota, Room

log = logging.getLogger(__name__)

LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def register_node(db: Database, name: str, workers: int, capacity_units: int,
                  now: datetime, *, labels: Sequence[str] | None = None,
                  addresses: Sequence[str] | None = None,
                  lease: timedelta | None = None, actor: Principal | None = None,
                  config: SchedulerConfig | None = None) -> int:
    """Create a node (or refresh its heartbeat and worker count); returns its id.

    ``labels`` and ``addresses`` replace the node's when given. With ``lease`` the node
    takes its lease until ``now + lease`` and is alive again if it had been reaped (a
    node that starts serves none of its old rooms that moved away: it has none in
    memory); without, its lease is left as it is. With ``actor`` (a person, through the
    API) the change is audited in its transaction; a node registering itself is not.

    A node that starts (``lease``) with fewer workers than before runs no more those
    past its count: the rooms still open on them are placed anew on live workers
    (scheduler/media/leases.py), as a dead node's are. Left there, admission would keep
    sending their participants to a worker that no front runs.
    """
    if not 1 <= workers <= 256:
        raise InvalidInput("invalid_workers", "a node has 1 to 256 workers")
    if not 1 <= capacity_units <= 1_000_000:
        raise InvalidInput("invalid_capacity", "a worker's capacity is 1 to 1,000,000 units")
    clean_labels = sorted({label.strip().lower() for label in labels or () if label.strip()})
    for label in clean_labels:
        if not LABEL.match(label):
            raise InvalidInput("invalid_label", f"invalid node label {label!r}: use a-z, "
                               "digits, '-' and '_' (at most 40)")
    if lease is not None and lease <= timedelta(0):
        raise InvalidInput("invalid_lease", "a lease lasts a positive time")

    def decide(session: Session) -> int:
        node = session.scalar(select(MediaNode).where(MediaNode.name == name))
        if node is None:
            node = MediaNode(name=name, enabled=True)
            session.add(node)
            session.flush()
        last_alive, node.heartbeat_at = node.heartbeat_at, now
        if labels is not None:
            node.labels = clean_labels
        if addresses is not None:
            node.addresses = list(addresses)
        existing = {w.index: w for w in session.scalars(
            select(MediaWorker).where(MediaWorker.node_id == node.id))}
        if lease is not None:
            node.lease_expires_at, node.dead_at = now + lease, None
            # The node starts: its previous process (killed, crashed, restarted within its
            # lease, so never reaped) took its participants with it. Their calls ended
            # when it was last heard of; left open they would count in the workers' load
            # and in usage forever.
            end_calls_on_workers(session, [w.id for w in existing.values()],
                                 min(last_alive or now, now))
        for index in range(max(workers, len(existing))):
            worker = existing.get(index)
            if worker is None:
                session.add(MediaWorker(node_id=node.id, index=index,
                                        capacity_units=capacity_units, enabled=True))
            else:
                worker.capacity_units = capacity_units
                worker.enabled = index < workers
        gone = [w.id for w in existing.values() if w.index >= workers]
        if lease is not None and gone:
            session.flush()  # placement sees the node's lease and its workers as they are now
            rooms = session.execute(
                select(Room, MediaWorker.node_id)
                .join(MediaWorker, MediaWorker.id == Room.worker_id)
                .where(Room.state == "open", Room.worker_id.in_(gone)).order_by(Room.id)
                .with_for_update(of=Room)).all()
            for room_name, worker_id in move_rooms(session, config or SchedulerConfig(),
                                                   rooms, now):
                log.warning("room %s moved to worker %s: its worker is no longer run",
                            room_name, worker_id)
        if actor is not None:
            audit.record(session, actor, "node.register", f"node:{name}",
                         {"workers": workers, "capacity_units": capacity_units}, at=now)
        return node.id

    return run_decision(db, [], decide, exclusive_pool=True)


def set_node_enabled(db: Database, node_id: int, enabled: bool,
                     actor: Principal | None = None) -> None:
    def decide(session: Session) -> None:
        node = session.get(MediaNode, node_id)
        if node is None:
            raise NotFound("node_not_found", f"no media node {node_id}")
        node.enabled = enabled
        audit.record(session, actor, "node.enable" if enabled else "node.disable",
                     f"node:{node.name}")

    run_decision(db, [], decide, exclusive_pool=True)


def nodes_json(session: Session, config: SchedulerConfig) -> list[dict[str, object]]:
    loads = {load.worker_id: load for load in worker_loads(session, config.unit_costs)}
    result = []
    for node in session.scalars(select(MediaNode).order_by(MediaNode.id)):
        workers = session.scalars(select(MediaWorker).where(MediaWorker.node_id == node.id)
                                  .order_by(MediaWorker.index))
        result.append({
            "id": node.id, "name": node.name, "enabled": node.enabled,
            "heartbeat_at": node.heartbeat_at.isoformat() if node.heartbeat_at else None,
            "labels": list(node.labels or []), "addresses": list(node.addresses or []),
            "lease_expires_at": iso(node.lease_expires_at), "dead_at": iso(node.dead_at),
            "workers": [{"id": w.id, "index": w.index, "capacity_units": w.capacity_units,
                         "enabled": w.enabled,
                         "booked_units": loads[w.id].booked if w.id in loads else 0,
                         "live_units": loads[w.id].live if w.id in loads else 0}
                        for w in workers],
        })
    return result


def iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant else None


def set_quota(db: Database, config: SchedulerConfig, organisation_id: int,
              share_percent: float, actor: Principal | None = None) -> None:
    """Give an organisation a guaranteed share (0 removes it).

    The shares together with the IZS reserve may not exceed the whole pool.
    """
    if not 0 <= share_percent <= 100:
        raise InvalidInput("invalid_share", "share_percent is between 0 and 100")
    share_bp = round(share_percent * 100)

    def decide(session: Session) -> None:
        if session.get(Organisation, organisation_id) is None:
            raise NotFound("organisation_not_found", f"no organisation {organisation_id}")
        others = sum(q.share_bp for q in session.scalars(select(Quota))
                     if q.organisation_id != organisation_id)
        if others + share_bp + config.izs_reserve_percent * 100 > 10000:
            free = (10000 - others - config.izs_reserve_percent * 100) / 100
            raise InvalidInput("shares_exceed_pool",
                               f"shares and the IZS reserve would exceed the pool; at most "
                               f"{max(0.0, free):.2f} % is left")
        quota = session.get(Quota, organisation_id)
        if share_bp == 0:
            if quota is not None:
                session.delete(quota)
        elif quota is None:
            session.add(Quota(organisation_id=organisation_id, share_bp=share_bp))
        else:
            quota.share_bp = share_bp
        audit.record(session, actor, "quota.set", f"organisation:{organisation_id}",
                     {"share_percent": share_percent})

    run_decision(db, [], decide, exclusive_pool=True)


def quotas_json(session: Session, config: SchedulerConfig) -> dict[str, object]:
    pool = pool_units(session)
    rows = session.execute(select(Quota.organisation_id, Quota.share_bp, Organisation.name)
                           .join(Organisation, Organisation.id == Quota.organisation_id)
                           .order_by(Quota.organisation_id)).all()
    return {
        "pool_units": pool,
        "izs_reserve_percent": config.izs_reserve_percent,
        "izs_reserve_units": pool * config.izs_reserve_percent // 100,
        "borrow_lead_hours": config.borrow_lead.total_seconds() / 3600,
        "quotas": [{"organisation_id": org, "name": name, "share_percent": share / 100,
                    "units": pool * share // 10000} for org, share, name in rows],
    }


def live_fronts(session: Session, now: datetime, first: int | None = None) -> list[str]:
    """The public URLs of the nodes' fronts: ``first``'s own, then those of live nodes,
    then the others that are enabled (a node that is down now may be back when a page
    needs another front: it tries them in this order)."""
    live = set(session.scalars(select(MediaNode.id).where(node_is_live(now))))
    rows = session.execute(select(MediaNode.id, MediaNode.addresses)
                           .where(MediaNode.enabled.is_(True)).order_by(MediaNode.id)).all()
    ordered = sorted(rows, key=lambda row: (row[0] != first, row[0] not in live))
    return [address for _, addresses in ordered for address in addresses or []]


def front_of_worker(session: Session, worker_id: int, now: datetime) -> tuple[str | None, bool]:
    """The public URL of the front of the node that owns ``worker_id`` (None: unknown),
    and whether that node is live at ``now`` (its lease has not lapsed)."""
    row = session.execute(select(MediaNode.addresses, node_is_live(now))
                          .join(MediaWorker, MediaWorker.node_id == MediaNode.id)
                          .where(MediaWorker.id == worker_id)).first()
    if row is None:
        return None, False
    addresses, live = row
    return (addresses[0] if addresses else None), bool(live)

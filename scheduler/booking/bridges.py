"""Standing bridges: IZS rooms that are always available.

A bridge holds no capacity while idle; the IZS reserve, which no ordinary booking may
take, is what guarantees it. Its expected size is used to place it on a worker.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.booking.dial_in import bridge_number
from scheduler.booking.notices import JoinLink
from scheduler.booking.units import ParticipantMix
from scheduler.config import SchedulerConfig
from scheduler.errors import InvalidInput
from scheduler.models import StandingBridge
from scheduler.organisations import OrgInfo


def create_bridge(session: Session, config: SchedulerConfig, org: OrgInfo, name: str,
                  participants: ParticipantMix) -> StandingBridge:
    if not org.izs:
        raise InvalidInput("not_izs", "standing bridges belong to IZS organisations")
    if participants.total < 1:
        raise InvalidInput("no_participants", "a bridge needs at least one participant")
    bridge = StandingBridge(organisation_id=org.id, name=name,
                            room_name="izs-" + secrets.token_hex(6),
                            participants=participants.as_dict(),
                            units=participants.units(config.unit_costs), active=True)
    session.add(bridge)
    session.flush()
    return bridge


def switch_off(session: Session, bridge: StandingBridge) -> None:
    """Switch a bridge off for good: from this commit on nobody joins it (admission says
    ``bridge_inactive``, also to those already in its open room who join again), and the
    job closes its room, if open, at its next run, which this makes due at once
    (:func:`~scheduler.booking.jobs.next_due`): those in it are told why and
    disconnected, as a cancelled meeting's participants are. The caller reschedules the
    job runner (``services.jobs.reschedule()``)."""
    bridge.active = False


def bridges(session: Session, organisation_ids: list[int] | None = None) -> list[StandingBridge]:
    query = select(StandingBridge).where(StandingBridge.active.is_(True)) \
        .order_by(StandingBridge.id)
    if organisation_ids is not None:
        query = query.where(StandingBridge.organisation_id.in_(organisation_ids))
    return list(session.scalars(query))


def bridge_json(bridge: StandingBridge, join_link: JoinLink) -> dict[str, object]:
    links = {role: join_link(bridge.room_name, role, True) for role in ("host", "guest")}
    return {"id": bridge.id, "organisation_id": bridge.organisation_id, "name": bridge.name,
            "room": bridge.room_name, "participants": bridge.participants,
            "dial_in": {"number": bridge_number(bridge.id), "pin": bridge.dial_in_pin},
            "units": bridge.units, "active": bridge.active, "join_links": links}

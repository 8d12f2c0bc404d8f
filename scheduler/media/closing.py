"""Why a room closes: what its participants are told, on whichever node they are."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.models import Booking, BookingOccurrence, Room, StandingBridge

# Why a room closed, by the code its participants are told (the "closed" message,
# docs/protocol.md: the page says it in its own language, and ends the call or joins
# again by it), with the English text of logs and of room units' hang-ups.
CLOSE_REASONS = {
    "meeting_over": "the booked time is over",
    "booking_cancelled": "the meeting was cancelled",
    "booking_displaced": "this occurrence of the meeting gave way to an IZS emergency",
    "bridge_inactive": "the standing bridge was switched off",
    "rescheduled": "the meeting was moved to another time",
    "room_moved": "moved to another node",
    "room_closed": "the room was closed",
    "closed_by_operator": "the operator closed the room",
}


def close_reason(session: Session, room: Room) -> str:
    """Why ``room`` closes, or closed (a key of :data:`CLOSE_REASONS`), read from what
    its row was opened for: the job that closes it and a node that hears of the close
    from another one (:func:`~scheduler.media.room_signals.rooms_to_stop`) say the same."""
    if room.bridge_id is not None:
        active = session.scalar(select(StandingBridge.active)
                                .where(StandingBridge.id == room.bridge_id))
        return "room_closed" if active else "bridge_inactive"
    if room.booking_id is None:
        return "room_closed"  # an ad-hoc room
    if session.scalar(select(Booking.status).where(Booking.id == room.booking_id)) == "cancelled":
        return "booking_cancelled"
    state = session.scalar(select(BookingOccurrence.state)
                           .where(BookingOccurrence.id == room.occurrence_id)) \
        if room.occurrence_id is not None else None
    # Its occurrence cancelled on its own, displaced, or replaced by a change of its time
    # (the room may open again at once for the new one); still scheduled: it is over.
    return {"cancelled": "booking_cancelled", "displaced": "booking_displaced",
            "replaced": "rescheduled"}.get(state or "", "meeting_over")

"""Meetings' numbers for room units: ``sip:NUMBER@multipoint`` and a PIN over DTMF.

Room-system users are used to a numeric conference ID and a PIN keyed in on the remote
(signaling/sip/units.py reads the keys). The number is the booking's (or the IZS
bridge's) id behind a one-digit prefix, so it needs no column, is unique by
construction and stays the same for every occurrence; being guessable, it admits
nobody by itself: the PIN (``dial_in_pin``, six random digits) is what does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from scheduler.models import Booking, StandingBridge

BOOKING_PREFIX = "1"
BRIDGE_PREFIX = "9"  # like the emergency numbers: IZS bridges
ID_DIGITS = 6  # at least; the number grows with the id past a million
MAX_NUMBER_DIGITS = 15


@dataclass(frozen=True)
class DialIn:
    room: str
    pin: str


def booking_number(booking_id: int) -> str:
    return BOOKING_PREFIX + str(booking_id).zfill(ID_DIGITS)


def bridge_number(bridge_id: int) -> str:
    return BRIDGE_PREFIX + str(bridge_id).zfill(ID_DIGITS)


def is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and ID_DIGITS < len(text) <= MAX_NUMBER_DIGITS


def dial_in(session: Session, number: str) -> DialIn | None:
    """The room (and its PIN) a unit reaches at ``number``; None for no such meeting.
    A cancelled booking or an inactive bridge is still found: admission says why it
    is not on, as for its join link."""
    if not is_number(number):
        return None
    prefix, row_id = number[0], int(number[1:])
    row: Booking | StandingBridge | None
    if prefix == BOOKING_PREFIX:
        row = session.get(Booking, row_id)
    elif prefix == BRIDGE_PREFIX:
        row = session.get(StandingBridge, row_id)
    else:
        return None
    if row is None or not row.dial_in_pin:
        return None
    return DialIn(row.room_name, row.dial_in_pin)

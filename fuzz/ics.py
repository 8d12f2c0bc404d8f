"""Invitations: the ICS built for a booking with any RRULE the booking API accepts.

A booking is stored with its RRULE once ``normalise_rrule`` and ``expand`` accept it
(scheduler/booking/bookings.py); scheduler/booking/invitations.py then builds the invitation with
``vRecur.from_ical(booking.rrule)`` and the rule's exceptions. For every such rule the
invitation and a cancellation of one occurrence must be built without an exception and
parse back with icalendar, with the rule in them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar

from scheduler.booking.invitations import cancellation, invitation
from scheduler.booking.recurrence import Limits, RecurrenceError, Schedule, expand, normalise_rrule
from scheduler.models import Booking

ZONE = "Europe/Prague"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
START = datetime(2026, 12, 3, 10, 0)
END = datetime(2026, 12, 3, 11, 0)
LINK = "https://multipoint.example/j/abc"


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")[:500]  # the API's max_length
    try:
        rule = normalise_rrule(text, ZONE)
        if not rule:
            return
        occurrences, _skipped = expand(Schedule(START, END, ZONE, rule), Limits(), NOW)
    except RecurrenceError:
        return  # refused with a clear error: no booking, no invitation
    booking = Booking(uid="fuzz@multipoint", sequence=1, zone=ZONE, local_start=START,
                      local_end=END, title="Porada", description="", organiser_email="a@b.cz",
                      invitees=["c@d.cz"], rrule=rule)
    # Every other occurrence takes place: the rest become EXDATEs.
    active = [o.local_start for o in occurrences[::2]]
    for ics in (invitation(booking, active, NOW, LINK),
                cancellation(booking, NOW, LINK, occurrences[-1].local_start)):
        calendar = Calendar.from_ical(ics)
        events = calendar.walk("VEVENT")
        assert len(events) == 1, ics
    assert "RRULE" in Calendar.from_ical(invitation(booking, active, NOW, LINK)).walk("VEVENT")[0]

"""Invitations as iCalendar (RFC 5545): one event per booking, updated in place.

The booking's UID stays; every change raises SEQUENCE. Changes go out with METHOD
REQUEST, cancellations with METHOD CANCEL, a single displaced occurrence of a series as
a CANCEL carrying its RECURRENCE-ID, so calendars update the event they already hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vRecur

from scheduler.booking.recurrence import rule_instances
from scheduler.models import Booking

PRODID = "-//multipoint//scheduler//CS"


def _calendar(method: str) -> Calendar:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    return calendar


def _event(booking: Booking, now: datetime, join_link: str, status: str) -> Event:
    tz = ZoneInfo(booking.zone)
    event = Event()
    event.add("uid", booking.uid)
    event.add("sequence", booking.sequence)
    event.add("dtstamp", now)
    event.add("dtstart", booking.local_start.replace(tzinfo=tz))
    event.add("dtend", booking.local_end.replace(tzinfo=tz))
    event.add("summary", booking.title)
    description = booking.description + ("\n\n" if booking.description else "")
    event.add("description", f"{description}Připojení / join: {join_link}")
    event.add("location", join_link)
    event.add("url", join_link)
    event.add("status", status)
    if booking.organiser_email:
        event.add("organizer", vCalAddress(f"mailto:{booking.organiser_email}"))
    for address in booking.invitees:
        attendee = vCalAddress(f"mailto:{address}")
        attendee.params["ROLE"] = "REQ-PARTICIPANT"
        event.add("attendee", attendee, encode=0)
    return event


def rule_exceptions(booking: Booking, active_local_starts: Iterable[datetime]) -> list[datetime]:
    """Instances of the booking's rule that do not take place (EXDATE).

    Whatever the reason (an exception the organiser gave, a public holiday skipped, an
    occurrence displaced or cancelled), the calendar must not show it.
    """
    if not booking.rrule:
        return []
    active = set(active_local_starts)
    tz = ZoneInfo(booking.zone)
    return [start.replace(tzinfo=tz)
            for start in rule_instances(booking.rrule, booking.local_start, tz)
            if start not in active]


def invitation(booking: Booking, active_local_starts: Iterable[datetime], now: datetime,
               join_link: str,
               moved: Iterable[tuple[datetime, datetime, datetime]] = ()) -> bytes:
    """METHOD:REQUEST: the booking as it stands (new or changed).

    ``moved``: occurrences moved on their own, as (the series' start they stand for, their
    start, their end) in wall-clock time; each is an event of its own with the UID and a
    RECURRENCE-ID (RFC 5545 3.8.4.4), its series start not an EXDATE.
    """
    calendar = _calendar("REQUEST")
    event = _event(booking, now, join_link, "CONFIRMED")
    moved = sorted(moved)
    if booking.rrule:
        event.add("rrule", vRecur.from_ical(booking.rrule))
        exceptions = rule_exceptions(booking, [*active_local_starts,
                                               *(instance for instance, _, _ in moved)])
        if exceptions:
            event.add("exdate", exceptions)
    calendar.add_component(event)
    tz = ZoneInfo(booking.zone)
    for instance, start, end in moved if booking.rrule else ():
        override = _event(booking, now, join_link, "CONFIRMED")
        del override["dtstart"]
        del override["dtend"]
        override.add("dtstart", start.replace(tzinfo=tz))
        override.add("dtend", end.replace(tzinfo=tz))
        override.add("recurrence-id", instance.replace(tzinfo=tz))
        calendar.add_component(override)
    calendar.add_missing_timezones()
    return calendar.to_ical()


def cancellation(booking: Booking, now: datetime, join_link: str,
                 occurrence_local_start: datetime | None = None,
                 span: tuple[datetime, datetime] | None = None) -> bytes:
    """METHOD:CANCEL: the whole booking, or one occurrence of a series.

    ``occurrence_local_start``: the series' start the occurrence stands for (its
    RECURRENCE-ID, wall-clock); ``span``: when it takes place, if it was moved on its
    own (wall-clock), else at that start for the series' length. A moved occurrence is
    the event with that RECURRENCE-ID in the invitees' calendars, not one at its new time.
    """
    calendar = _calendar("CANCEL")
    event = _event(booking, now, join_link, "CANCELLED")
    if occurrence_local_start is not None and booking.rrule:
        tz = ZoneInfo(booking.zone)
        instance = occurrence_local_start.replace(tzinfo=tz)
        start, end = span or (occurrence_local_start,
                              occurrence_local_start + (booking.local_end - booking.local_start))
        del event["dtstart"]
        del event["dtend"]
        event.add("dtstart", start.replace(tzinfo=tz))
        event.add("dtend", end.replace(tzinfo=tz))
        event.add("recurrence-id", instance)
    calendar.add_component(event)
    calendar.add_missing_timezones()
    return calendar.to_ical()

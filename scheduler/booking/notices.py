"""Notices to people, written to the outbox in the transaction that causes them.

Delivery (scheduler/booking/mail.py) happens after the commit; a notice in the outbox survives
a crash, so no one is "silently dropped" from a displaced meeting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from scheduler.booking import invitations
from scheduler.models import Booking, BookingOccurrence, Notification


class JoinLink(Protocol):
    """The signed link of a room for a role ("host"/"guest"); ``izs`` rooms get links to
    the address on the protected IZS network where the service has one."""

    def __call__(self, room: str, role: str, izs: bool = False) -> str: ...


def _local(booking: Booking, instant: datetime) -> str:
    return instant.astimezone(ZoneInfo(booking.zone)).strftime("%Y-%m-%d %H:%M")


def _queue(session: Session, booking: Booking, kind: str, subject: str, body: str,
           ics: bytes | None, join_link: JoinLink) -> None:
    # The organiser gets the host link, invitees the guest link.
    recipients = [(booking.organiser_email, "host")] + [(a, "guest") for a in booking.invitees]
    # A title may hold line breaks (the API takes any text); a mail's subject may not.
    one_line = " ".join(subject.split())
    seen: set[str] = set()
    for address, role in recipients:
        if not address or address in seen:
            continue
        seen.add(address)
        link = join_link(booking.room_name, role, booking.izs)
        session.add(Notification(kind=kind, booking_id=booking.id, to_address=address,
                                 subject=one_line, body=f"{body}\n\nPřipojení / join: {link}\n",
                                 ics=ics.decode() if ics else None))


def active_local_starts(booking: Booking, occurrences: Iterable[BookingOccurrence]) -> list:
    tz = ZoneInfo(booking.zone)
    return [o.start_utc.astimezone(tz).replace(tzinfo=None) for o in occurrences
            if o.state == "scheduled"]


def moved_occurrences(booking: Booking, occurrences: Iterable[BookingOccurrence],
                      ) -> list[tuple[datetime, datetime, datetime]]:
    """The scheduled occurrences moved on their own, for :func:`invitations.invitation`:
    (the series' start each stands for, its start, its end), wall-clock."""
    tz = ZoneInfo(booking.zone)
    return [(o.instance_local, o.start_utc.astimezone(tz).replace(tzinfo=None),
             o.end_utc.astimezone(tz).replace(tzinfo=None))
            for o in occurrences if o.state == "scheduled" and o.instance_local is not None]


def has_recipients(organiser_email: str, invitees: Sequence[str]) -> bool:
    """Whether a booking's notices reach anyone (the organiser or an invitee)."""
    return bool(organiser_email or invitees)


def render_invitation(booking: Booking, local_starts: Iterable[datetime], now: datetime,
                      join_link: JoinLink) -> bytes:
    """The invitation with the guests' link (milliseconds of work: render it only for a
    booking that :func:`has_recipients`)."""
    return invitations.invitation(booking, local_starts, now,
                                  join_link(booking.room_name, "guest", booking.izs))


def invite(session: Session, booking: Booking, occurrences: Iterable[BookingOccurrence],
           now: datetime, join_link: JoinLink, *, changed: bool = False,
           ics: bytes | None = None) -> None:
    """Queue the invitation (or, with ``changed``, the update) for everyone concerned.

    ``ics``: the invitation already rendered (see :func:`render_invitation`).
    """
    if not has_recipients(booking.organiser_email, booking.invitees):
        return
    if ics is None:
        occurrences = list(occurrences)
        ics = invitations.invitation(booking, active_local_starts(booking, occurrences), now,
                                     join_link(booking.room_name, "guest", booking.izs),
                                     moved_occurrences(booking, occurrences))
    verb = "Změna" if changed else "Pozvánka"
    english = "Changed" if changed else "Invitation"
    _queue(session, booking, "update" if changed else "invitation",
           f"{verb} / {english}: {booking.title}",
           f"{booking.title}\nZačátek / start: {booking.local_start:%Y-%m-%d %H:%M} "
           f"({booking.zone})", ics, join_link)


def cancelled(session: Session, booking: Booking, now: datetime, join_link: JoinLink) -> None:
    if not has_recipients(booking.organiser_email, booking.invitees):
        return
    ics = invitations.cancellation(booking, now, join_link(booking.room_name, "guest", booking.izs))
    _queue(session, booking, "cancel", f"Zrušeno / Cancelled: {booking.title}",
           f"Schůzka {booking.title} byla zrušena. / The meeting was cancelled.", ics, join_link)


def displaced(session: Session, booking: Booking, occurrence: BookingOccurrence,
              emergency_title: str, now: datetime, join_link: JoinLink) -> None:
    tz = ZoneInfo(booking.zone)
    local = occurrence.start_utc.astimezone(tz).replace(tzinfo=None)
    # One moved on its own is known to calendars by the series' start it stands for.
    ics = invitations.cancellation(
        booking, now, join_link(booking.room_name, "guest", booking.izs),
        occurrence_local_start=occurrence.instance_local or local,
        span=(local, occurrence.end_utc.astimezone(tz).replace(tzinfo=None)))
    _queue(session, booking, "displaced",
           f"Uvolněno pro IZS / Displaced by an emergency: {booking.title} {local:%Y-%m-%d %H:%M}",
           f"Termín {local:%Y-%m-%d %H:%M} schůzky {booking.title} byl uvolněn pro mimořádnou "
           f"událost IZS ({emergency_title}). Rezervace zůstává v systému označená jako "
           f"uvolněná; zvolte prosím jiný termín.\n\n"
           f"The occurrence at {local:%Y-%m-%d %H:%M} of {booking.title} was displaced by an "
           f"IZS emergency ({emergency_title}). The booking stays, marked as displaced; please "
           "choose another time.", ics, join_link)


def reminder(session: Session, booking: Booking, occurrence: BookingOccurrence,
             join_link: JoinLink) -> None:
    _queue(session, booking, "reminder",
           f"Připomínka / Reminder: {booking.title} {_local(booking, occurrence.start_utc)}",
           f"{booking.title} začíná / starts {_local(booking, occurrence.start_utc)} "
           f"({booking.zone}).", None, join_link)

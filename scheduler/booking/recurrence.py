"""Occurrences of a booking: local wall-clock times, RRULE, exceptions, Czech holidays.

People enter times in a named time zone (Europe/Prague by default); occurrences keep
their wall-clock time across daylight-saving changes and are stored in UTC.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import holidays
from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrulestr
from icalendar import vRecur

DEFAULT_ZONE = "Europe/Prague"
ALLOWED_FREQUENCIES = {DAILY, WEEKLY, MONTHLY, YEARLY}
# What a range asked for may span (see parse_instant).
INSTANTS = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


class RecurrenceError(ValueError):
    """Input that cannot describe occurrences; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Occurrence:
    start: datetime  # UTC
    end: datetime  # UTC
    local_start: datetime  # wall-clock time in the booking's zone, naive

    def label(self) -> str:
        return self.local_start.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Schedule:
    """What a person asked for, in their zone."""

    start: datetime  # naive wall-clock time
    end: datetime  # naive wall-clock time
    zone: str = DEFAULT_ZONE
    rrule: str | None = None
    exdates: Sequence[datetime] = field(default_factory=tuple)  # naive wall-clock starts
    skip_public_holidays: bool = False


@dataclass(frozen=True)
class Limits:
    max_occurrences: int = 400
    max_duration: timedelta = timedelta(hours=12)
    horizon: timedelta = timedelta(days=2 * 366)


@functools.cache
def _zone_names() -> frozenset[str]:
    """The IANA zones. Not every file ZoneInfo opens is one: ``localtime`` is the
    server's own zone (UTC in a container, something else elsewhere), ``posixrules`` an
    arbitrary one, ``right/...`` count leap seconds; none means the same to a calendar."""
    return frozenset(available_timezones() - {"localtime", "Factory"})


def zone(name: str) -> ZoneInfo:
    if name not in _zone_names():
        raise RecurrenceError("unknown_time_zone", f"unknown time zone {name[:64]!r}")
    return ZoneInfo(name)


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in ``tz`` as UTC; refuses times that do not exist there."""
    aware = local.replace(tzinfo=tz)
    try:
        back = aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    except OverflowError:  # within a day of year 1 or 9999: UTC falls outside datetime
        raise RecurrenceError("invalid_time", f"{local:%Y-%m-%d %H:%M} is out of range") from None
    if back != local:  # in the spring-forward gap: the clock never shows this time
        raise RecurrenceError("impossible_time",
                              f"{local:%Y-%m-%d %H:%M} does not exist in {tz.key} "
                              "(the clocks skip it)")
    return aware.astimezone(UTC)


def _parse_iso(value: object, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise RecurrenceError("invalid_time", f"{field_name} must be an ISO 8601 date-time text")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise RecurrenceError("invalid_time", f"{field_name}: {value!r} is not an ISO 8601 "
                              "date-time such as 2026-12-01T10:00") from None


def parse_instant(value: object, tz: ZoneInfo, field_name: str) -> datetime:
    """An ISO 8601 time from the API as an instant (aware, UTC): the bound of a range
    asked for, not a meeting's time. One with an offset is that instant; one without is
    wall-clock time in ``tz``."""
    parsed = _parse_iso(value, field_name)
    try:
        instant = (parsed if parsed.tzinfo is not None
                   else parsed.replace(tzinfo=tz)).astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00 east of Greenwich: before year 1 in UTC
        instant = INSTANTS[0] - timedelta(microseconds=1)
    # A day's margin at each end: a range is widened by a meeting's length and taken in
    # whole days (the day cache), and a default end is a month after the start.
    if not INSTANTS[0] <= instant < INSTANTS[1]:
        raise RecurrenceError("invalid_time", f"{field_name}: {value!r} is out of range "
                              f"({INSTANTS[0]:%Y-%m-%d} to {INSTANTS[1]:%Y-%m-%d} UTC)")
    return instant


def parse_local(value: object, tz: ZoneInfo, field_name: str) -> datetime:
    """An ISO 8601 time from the API as naive wall-clock time in ``tz``.

    A time with an offset is converted into the zone; one without is taken as written.
    A wall-clock time the clocks show twice (the hour repeated when they go back) means
    the first, as RFC 5545 says of a DTSTART with a TZID: an instant in the second is
    refused, since the booking, its invitation and every later change would put it an
    hour earlier.
    """
    parsed = _parse_iso(value, field_name)
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(tz)
        except OverflowError:  # 0001-01-01T00:00+01:00 and the like: before year 1 in tz
            raise RecurrenceError("invalid_time", f"{field_name}: {value!r} is out of range") from None
        if parsed.fold and parsed.replace(fold=0).utcoffset() != parsed.utcoffset():
            first = parsed.replace(fold=0)
            raise RecurrenceError(
                "ambiguous_time",
                f"{field_name}: {value!r} is the second {parsed:%H:%M} of {parsed:%Y-%m-%d} in "
                f"{tz.key} (the clocks go back and show it twice); a booking keeps wall-clock "
                f"time, where {parsed:%H:%M} is the first ({first.isoformat(timespec='minutes')}): "
                "choose a time outside the repeated hour")
        parsed = parsed.replace(tzinfo=None)
    return parsed.replace(microsecond=0)


def czech_holidays(first: date, last: date) -> set[date]:
    return set(holidays.country_holidays("CZ", years=range(first.year, last.year + 1)))


def expand(schedule: Schedule, limits: Limits, now: datetime) -> tuple[list[Occurrence],
                                                                       list[date]]:
    """Every occurrence of ``schedule`` (and the holiday dates skipped), or an error.

    Refuses: an end not after the start, a meeting longer than ``max_duration``, a rule
    without an end, one with more than ``max_occurrences`` occurrences or reaching past
    ``horizon``, sub-daily frequencies, occurrences that overlap one another, and
    occurrences in a daylight-saving gap.
    """
    tz = zone(schedule.zone)
    duration = schedule.end - schedule.start
    if duration <= timedelta(0):
        raise RecurrenceError("invalid_interval", "the end must be after the start")
    if duration > limits.max_duration:
        raise RecurrenceError("too_long", f"a meeting may last at most {limits.max_duration}")
    horizon = now + limits.horizon
    starts = _rule_starts(schedule, limits, tz, horizon) if schedule.rrule else [schedule.start]
    excluded = set(schedule.exdates)
    # An exception names an occurrence; one that names none would do nothing, silently.
    unmatched = sorted(excluded.difference(starts))
    if unmatched:
        raise RecurrenceError("unmatched_exception",
                              f"recurrence.exdates: {unmatched[0]:%Y-%m-%dT%H:%M} is not an "
                              "occurrence of the schedule (give an occurrence's local start)")
    starts = [start for start in starts if start not in excluded]
    skipped: list[date] = []
    if schedule.skip_public_holidays and starts:
        days_off = czech_holidays(starts[0].date(), starts[-1].date())
        skipped = [start.date() for start in starts if start.date() in days_off]
        starts = [start for start in starts if start.date() not in days_off]
    if not starts:
        raise RecurrenceError("no_occurrences", "the schedule leaves no occurrence")
    occurrences = []
    for start in starts:
        utc_start = to_utc(start, tz)
        utc_end = to_utc(start + duration, tz)
        if utc_start > horizon:
            raise RecurrenceError("too_far", f"bookings may reach at most "
                                  f"{limits.horizon.days} days ahead")
        if occurrences and utc_start < occurrences[-1].end:
            # BYHOUR, BYMINUTE or BYSECOND can put the next one inside the last: one room
            # holds one meeting at a time (as a moved occurrence may not overlap either).
            raise RecurrenceError("occurrence_overlap",
                                  f"the occurrences at {occurrences[-1].label()} and "
                                  f"{start:%Y-%m-%d %H:%M:%S} overlap: the series' room "
                                  "holds one meeting at a time")
        occurrences.append(Occurrence(utc_start, utc_end, start))
    return occurrences, skipped


def normalise_rrule(text: str, zone_name: str) -> str:
    """The rule as RFC 5545 wants it beside a DTSTART with a TZID: UNTIL in UTC.

    People (and some calendars) write UNTIL as a local date or time; it is taken as the
    end of that day, or that wall-clock time, in the booking's zone.
    """
    tz = zone(zone_name)
    text = text.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    if len(text) > 500:
        raise RecurrenceError("invalid_rrule", "the recurrence rule is too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        # One RRULE value, not lines of iCalendar: dateutil would read a "DTSTART:"
        # line as the rule's start (not the booking's), and the invitation cannot carry it.
        raise RecurrenceError("invalid_rrule", "the recurrence rule must be one line of text")
    keys = {part.partition("=")[0].strip().upper() for part in text.split(";")}
    if {"COUNT", "UNTIL"} <= keys:
        raise RecurrenceError("invalid_rrule", "COUNT and UNTIL may not both be given "
                              "(RFC 5545): end the rule by one of them")
    parts = []
    for part in text.split(";"):
        key, _, value = part.partition("=")
        if key.strip().upper() == "UNTIL" and not value.strip().upper().endswith("Z"):
            value = value.strip()
            try:
                local = (datetime.strptime(value, "%Y%m%d").replace(hour=23, minute=59, second=59)
                         if len(value) == 8 else datetime.strptime(value, "%Y%m%dT%H%M%S"))
            except ValueError:
                raise RecurrenceError("invalid_rrule", f"UNTIL={value!r} is not a date or "
                                      "date-time such as 20261231 or 20261231T170000") from None
            try:
                value = local.replace(tzinfo=tz).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            except OverflowError:  # UNTIL=00010101 east of Greenwich: before year 1 in UTC
                raise RecurrenceError("invalid_rrule", f"UNTIL={value!r} is out of range") from None
            part = f"UNTIL={value}"
        parts.append(part)
    rule = ";".join(parts)
    try:
        # The invitation carries the rule (scheduler/booking/invitations.py): what icalendar
        # cannot read (BYDAY=+999MO, INTERVAL past 2^31) dateutil may still accept.
        vRecur.from_ical(rule)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise RecurrenceError("invalid_rrule", f"not an RFC 5545 RRULE: {exc}") from None
    return rule


def rule_instances(rule_text: str, local_start: datetime, tz: ZoneInfo):  # type: ignore[no-untyped-def]
    """The rule's instances as naive wall-clock times (an iterator; may be long)."""
    rule = rrulestr(rule_text, dtstart=local_start.replace(tzinfo=tz))
    return (instance.replace(tzinfo=None) for instance in rule)


def _rule_starts(schedule: Schedule, limits: Limits, tz: ZoneInfo,
                 horizon: datetime) -> list[datetime]:
    text = normalise_rrule(schedule.rrule or "", schedule.zone)
    try:
        # An aware DTSTART keeps wall-clock times across DST and accepts a UTC UNTIL.
        rule = rrulestr(text, dtstart=schedule.start.replace(tzinfo=tz))
    except (ValueError, TypeError) as exc:
        raise RecurrenceError("invalid_rrule", f"not an RFC 5545 RRULE: {exc}") from None
    if not hasattr(rule, "_freq") or rule._freq not in ALLOWED_FREQUENCIES:
        raise RecurrenceError("invalid_rrule", "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY")
    if rule._count is None and rule._until is None:
        raise RecurrenceError("unbounded_rrule", "the recurrence rule needs COUNT or UNTIL")
    local_horizon = horizon.astimezone(tz).replace(tzinfo=None)
    # Take one more than allowed so that "too many" is seen without expanding them all.
    try:
        starts = [start.replace(tzinfo=None)
                  for start in itertools.islice(rule, limits.max_occurrences + 1)]
    except (ValueError, IndexError, OverflowError) as exc:
        # dateutil checks some parts only while expanding: BYEASTER=999999 fails there
        # with an IndexError, and dates past year 9999 with a ValueError or OverflowError.
        raise RecurrenceError("invalid_rrule", f"not an RFC 5545 RRULE: {exc}") from None
    if len(starts) > limits.max_occurrences:
        raise RecurrenceError("too_many_occurrences",
                              f"a recurrence may have at most {limits.max_occurrences} "
                              "occurrences")
    if starts and starts[-1] > local_horizon:
        raise RecurrenceError("too_far", f"bookings may reach at most {limits.horizon.days} "
                              "days ahead")
    return starts


def utc_now() -> datetime:
    return datetime.now(UTC)

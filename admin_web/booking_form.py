"""The booking form: fields in, a schedule and participant mix out, errors per field.

Only the shape of the input is checked here; whether it fits is the scheduler's call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from scheduler.booking.recurrence import DEFAULT_ZONE, Schedule
from scheduler.booking.units import KINDS, ParticipantMix
from scheduler.models import Booking

REPEATS = ("none", "daily", "weekly", "monthly")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
MAX_COUNT = 400


@dataclass
class BookingForm:
    values: dict[str, str]
    weekdays: list[str]
    errors: dict[str, str] = field(default_factory=dict)
    schedule: Schedule | None = None
    participants: ParticipantMix | None = None
    invitees: tuple[str, ...] = ()


def blank(today: date) -> dict[str, str]:
    return {"title": "", "description": "", "date": (today + timedelta(days=1)).isoformat(),
            "start": "10:00", "end": "11:00", "hd": "5", "sd": "0", "audio": "0", "mixed": "0",
            "repeat": "none", "count": "", "until": "", "skip_holidays": "", "invitees": "",
            "priority": "routine", "organisation_id": ""}


def _time(raw: str) -> time | None:
    try:
        return time.fromisoformat(raw) if re.fullmatch(r"\d{1,2}:\d{2}", raw) else None
    except ValueError:
        return None


def parse(values: dict[str, str], weekdays: list[str], *, zone: str = DEFAULT_ZONE,
          kept_rule: str | None = None) -> BookingForm:
    """The form's booking. ``zone`` is the zone its times are in: a booking's own when it
    is changed, as the form shows its wall-clock times (saved in Prague, a booking in
    another zone moved). ``kept_rule`` is a rule the form cannot show (``representable``),
    saved as it is in place of the repeat fields, which the form then leaves out."""
    result = BookingForm(values, weekdays)
    errors = result.errors
    if not values.get("title"):
        errors["title"] = "Give the meeting a title."
    elif len(values["title"]) > 200:
        errors["title"] = "At most 200 characters."
    day = None
    try:
        day = date.fromisoformat(values.get("date", ""))
    except ValueError:
        errors["date"] = "Enter a date."
    start, end = _time(values.get("start", "")), _time(values.get("end", ""))
    if start is None:
        errors["start"] = "Enter a time as HH:MM."
    if end is None:
        errors["end"] = "Enter a time as HH:MM."
    elif start is not None and end == start:
        errors["end"] = "The end must not be the same time as the start."
    counts: dict[str, int] = {}
    for kind in KINDS:
        raw = values.get(kind, "") or "0"
        if not raw.isdigit():
            errors[kind] = "A whole number, 0 or more."
        else:
            counts[kind] = int(raw)
    if len(counts) == len(KINDS):
        if sum(counts.values()) < 1:
            errors["hd"] = "Expect at least one participant."
        else:
            result.participants = ParticipantMix(**counts)
    rrule = kept_rule if kept_rule is not None else _rrule(values, weekdays, errors, day)
    invitees = [a.strip() for a in re.split(r"[,;\s]+", values.get("invitees", "")) if a.strip()]
    bad = [a for a in invitees if not EMAIL.match(a)]
    if bad:
        errors["invitees"] = "Not an e-mail address: " + ", ".join(bad[:3])
    result.invitees = tuple(invitees)
    if not errors and day is not None and start is not None and end is not None:
        try:
            last = end_day(day, start, end)
        except OverflowError:  # 9999-12-31 and an end on the next day
            errors["date"] = "Enter a date."
            return result
        result.schedule = Schedule(datetime.combine(day, start), datetime.combine(last, end),
                                   zone, rrule, (), bool(values.get("skip_holidays")))
    return result


def end_day(day: date, start: time, end: time) -> date:
    """The day a meeting on ``day`` from ``start`` to ``end`` ends: an end earlier than
    the start is the next day's. A meeting across midnight (an overnight IZS exercise,
    22:00-02:00) is what the API books with an end on the next date; the form has one
    date, and the scheduler refuses one longer than its limit (12 hours), so a mistyped
    end (13:00 for 15:00 after a 14:00 start) is refused, not booked for 23 hours."""
    return day + timedelta(days=1) if end < start else day


def next_day_end(values: dict[str, str]) -> date | None:
    """The date the form's meeting ends on when that is the day after its date (the form
    says so beside the end), else None."""
    start, end = _time(values.get("start", "")), _time(values.get("end", ""))
    try:
        day = date.fromisoformat(values.get("date", ""))
        last = end_day(day, start, end) if start is not None and end is not None else day
    except (ValueError, OverflowError):
        return None
    return last if last != day else None


def _rrule(values: dict[str, str], weekdays: list[str], errors: dict[str, str],
           day: date | None) -> str | None:
    repeat = values.get("repeat", "none")
    if repeat not in REPEATS:
        errors["repeat"] = "Choose how it repeats."
        return None
    if repeat == "none":
        return None
    parts = [f"FREQ={repeat.upper()}"]
    if repeat == "weekly":
        chosen = [d for d in WEEKDAYS if d in weekdays]
        if chosen:
            parts.append("BYDAY=" + ",".join(chosen))
    count, until = values.get("count", ""), values.get("until", "")
    if count and until:
        errors["count"] = "Give either a number of meetings or an end date, not both."
    elif count:
        if not count.isdigit() or not 1 <= int(count) <= MAX_COUNT:
            errors["count"] = "A number from 1 to 400."
        else:
            parts.append(f"COUNT={int(count)}")
    elif until:
        try:
            last = date.fromisoformat(until)
        except ValueError:
            errors["until"] = "Enter a date."
            return None
        if day is not None and last < day:
            errors["until"] = "The last day is before the first meeting."
        parts.append(f"UNTIL={last.strftime('%Y%m%d')}T235959")
    else:
        errors["count"] = "A repeating meeting needs a number of meetings or an end date."
    return ";".join(parts)


def _last_day(until: str, b: Booking) -> str:
    """The form's "last day" for the rule's ``UNTIL``: the day in the booking's zone that,
    saved back as that day's end (``_rrule``), leaves the same occurrences.

    The scheduler keeps UNTIL in UTC (normalise_rrule), and the UTC date is a day early
    for an UNTIL just after midnight in Prague (set through the API): saved unchanged,
    the form dropped that day's occurrence. Nor is the local date always the one: with
    UNTIL at 00:30 and meetings at 10:00, its day has no meeting, and as the last day it
    would add one. Each day has its occurrence at the series' time of day, so that day
    counts if the occurrence there is not after UNTIL, else the day before is the last.
    """
    text = until.strip().upper()
    utc = text.endswith("Z")
    text = text.rstrip("Z")
    tz = ZoneInfo(b.zone)
    try:
        moment = (datetime.strptime(text, "%Y%m%d").replace(hour=23, minute=59, second=59)
                  if len(text) == 8 else datetime.strptime(text, "%Y%m%dT%H%M%S"))
        local = (moment.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None) if utc
                 else moment)
    except (ValueError, OverflowError):  # not as the scheduler writes it: the text's date
        return f"{text[0:4]}-{text[4:6]}-{text[6:8]}"
    last = local.date() - timedelta(days=1) if local.time() < b.local_start.time() \
        else local.date()
    return last.isoformat()


def representable(rule: str | None) -> bool:
    """Whether the form's repeat fields give ``rule`` back as it is, so that a booking
    saved unchanged keeps its occurrences.

    The API takes any RFC 5545 rule; the form writes FREQ (daily, weekly, monthly), the
    weekdays of a weekly one, and COUNT or UNTIL. Read into those fields, any other part
    (INTERVAL=2, BYMONTHDAY, BYSETPOS, FREQ=YEARLY...) was lost on save: a fortnightly
    series became weekly, a yearly one a single meeting. Such a rule is kept instead.
    """
    if not rule:
        return True
    parts: dict[str, str] = {}
    for part in rule.split(";"):
        key, _, value = part.partition("=")
        key = key.strip().upper()
        if key in parts:
            return False
        parts[key] = value.strip().upper()
    if parts.pop("INTERVAL", "1") != "1":
        return False
    freq = parts.pop("FREQ", "")
    if freq.lower() not in REPEATS[1:]:
        return False
    days = parts.pop("BYDAY", None)
    # Plain weekdays only (not -1FR, "the last Friday"), and only where the form has them.
    if days is not None and (freq != "WEEKLY" or not set(days.split(",")) <= set(WEEKDAYS)):
        return False
    count = parts.pop("COUNT", None)
    if count is not None and not (count.isdigit() and 1 <= int(count) <= MAX_COUNT):
        return False
    until = parts.pop("UNTIL", None)
    # Exactly one end: the form needs one (the API may book a series with neither).
    return not parts and (count is None) != (until is None)


def from_booking(b: Booking) -> tuple[dict[str, str], list[str]]:
    """The form's values for an existing booking (to change it). A rule the form cannot
    show is ``repeat`` "kept", with the rule itself in ``rule``: the form shows it as
    text, and saving keeps it."""
    values = {"title": b.title, "description": b.description,
              "date": b.local_start.date().isoformat(),
              "start": b.local_start.strftime("%H:%M"),
              "end": b.local_end.strftime("%H:%M"),
              "repeat": "none", "count": "", "until": "",
              "skip_holidays": "on" if b.skip_public_holidays else "",
              "invitees": ", ".join(b.invitees),
              "priority": b.priority,
              "organisation_id": str(b.organisation_id)}
    values.update({k: str(v) for k, v in b.participants.items()})
    weekdays: list[str] = []
    if not representable(b.rrule):
        values.update({"repeat": "kept", "rule": b.rrule or ""})
        return values, weekdays
    for part in (b.rrule or "").split(";"):
        key, _, value = part.partition("=")
        key, value = key.strip().upper(), value.strip().upper()
        if key == "FREQ":
            values["repeat"] = value.lower()
        elif key == "COUNT":
            values["count"] = value
        elif key == "UNTIL":
            values["until"] = _last_day(value, b)
        elif key == "BYDAY":
            weekdays = value.split(",")
    return values, weekdays

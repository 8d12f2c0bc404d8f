"""Recurrence: a booking's times, zone, RRULE and exception dates, as the API takes them.

The API (scheduler/api.py ``_schedule``) parses the zone and the ISO times with
scheduler.booking.recurrence ``zone`` and ``parse_local`` into a :class:`Schedule`; bookings.py
normalises the RRULE (``normalise_rrule``) and expands it (``expand``). Each refuses bad
input with :class:`RecurrenceError` (its code becomes the API's 400); nothing else may
escape.
"""

from __future__ import annotations

from datetime import UTC, datetime

import atheris

from scheduler.booking.recurrence import (
    Limits,
    RecurrenceError,
    Schedule,
    expand,
    normalise_rrule,
    parse_local,
    zone,
)

ZONES = ("Europe/Prague", "UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu")
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LIMITS = Limits()


def _time(fdp: atheris.FuzzedDataProvider) -> str:
    """An ISO time: mostly a well-formed one (any year, offset or none), else any text."""
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return fdp.ConsumeUnicodeNoSurrogates(40)
    text = (f"{fdp.ConsumeIntInRange(1, 9999):04d}-{fdp.ConsumeIntInRange(1, 12):02d}-"
            f"{fdp.ConsumeIntInRange(1, 28):02d}T{fdp.ConsumeIntInRange(0, 23):02d}:"
            f"{fdp.ConsumeIntInRange(0, 59):02d}")
    if fdp.ConsumeBool():
        offset = fdp.ConsumeIntInRange(-23 * 60 - 59, 23 * 60 + 59)
        sign = "+" if offset >= 0 else "-"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return text


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, len(ZONES))
    zone_name = ZONES[choice] if choice < len(ZONES) else fdp.ConsumeUnicodeNoSurrogates(64)
    start, end = _time(fdp), _time(fdp)
    exdates = [_time(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    skip_holidays = fdp.ConsumeBool()
    rule = fdp.ConsumeUnicodeNoSurrogates(500)  # the API's max_length
    try:
        tz = zone(zone_name)
        local_start = parse_local(start, tz, "start")
        local_end = parse_local(end, tz, "end")
        excluded = tuple(parse_local(d, tz, "recurrence.exdates") for d in exdates)
        schedule = Schedule(local_start, local_end, zone_name, rule or None, excluded, skip_holidays)
        if schedule.rrule:
            schedule = Schedule(local_start, local_end, zone_name,
                                normalise_rrule(schedule.rrule, zone_name), excluded, skip_holidays)
        occurrences, _skipped = expand(schedule, LIMITS, NOW)
    except RecurrenceError as exc:
        assert exc.code, exc
        return
    assert 0 < len(occurrences) <= LIMITS.max_occurrences

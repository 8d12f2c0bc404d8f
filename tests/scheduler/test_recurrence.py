"""Occurrences from local times, RRULE, exceptions and Czech holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from scheduler.booking.recurrence import Limits, RecurrenceError, Schedule, expand, normalise_rrule

NOW = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
LIMITS = Limits()


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_one_off_is_stored_in_utc() -> None:
    occurrences, _ = expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00")),
                            LIMITS, NOW)
    assert [(o.start, o.end) for o in occurrences] == [
        (datetime(2026, 12, 1, 9, 0, tzinfo=UTC), datetime(2026, 12, 1, 10, 0, tzinfo=UTC))]


def test_weekly_keeps_wall_clock_time_across_daylight_saving() -> None:
    schedule = Schedule(local("2027-03-22T10:00"), local("2027-03-22T11:00"),
                        rrule="FREQ=WEEKLY;COUNT=2")
    occurrences, _ = expand(schedule, LIMITS, NOW)
    # CET (+1) before 28 March 2027, CEST (+2) after: 10:00 local both times.
    assert [o.start.hour for o in occurrences] == [9, 8]
    assert [o.local_start.hour for o in occurrences] == [10, 10]


def test_time_in_the_spring_forward_gap_is_impossible() -> None:
    with pytest.raises(RecurrenceError) as error:
        expand(Schedule(local("2027-03-28T02:30"), local("2027-03-28T03:30")), LIMITS, NOW)
    assert error.value.code == "impossible_time"


def test_czech_public_holidays_are_skipped_and_reported() -> None:
    # Mondays from 22 March 2027: Easter Monday is 29 March 2027.
    schedule = Schedule(local("2027-03-22T10:00"), local("2027-03-22T11:00"),
                        rrule="FREQ=WEEKLY;COUNT=3", skip_public_holidays=True)
    occurrences, skipped = expand(schedule, LIMITS, NOW)
    assert skipped == [date(2027, 3, 29)]
    assert [o.local_start.date() for o in occurrences] == [date(2027, 3, 22), date(2027, 4, 5)]


def test_exdates_leave_out_occurrences() -> None:
    schedule = Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"),
                        rrule="FREQ=DAILY;COUNT=3", exdates=(local("2026-12-02T10:00"),))
    occurrences, _ = expand(schedule, LIMITS, NOW)
    assert [o.local_start.day for o in occurrences] == [1, 3]


@pytest.mark.parametrize(("rule", "code"), [
    ("FREQ=DAILY", "unbounded_rrule"),
    ("FREQ=DAILY;COUNT=100000", "too_many_occurrences"),
    ("FREQ=MINUTELY;COUNT=5", "invalid_rrule"),
    ("FREQ=SOMETIMES", "invalid_rrule"),
    ("FREQ=YEARLY;COUNT=10", "too_far"),
])
def test_bad_rules_are_refused_with_a_code(rule: str, code: str) -> None:
    with pytest.raises(RecurrenceError) as error:
        expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"), rrule=rule),
               LIMITS, NOW)
    assert error.value.code == code


@pytest.mark.parametrize("rule", ["FREQ=DAILY;BYMINUTE=0,30;COUNT=4",
                                  "FREQ=DAILY;BYSECOND=0,30;COUNT=4",
                                  "FREQ=WEEKLY;BYDAY=MO;BYHOUR=10,11;COUNT=4"])
def test_occurrences_that_overlap_one_another_are_refused(rule: str) -> None:
    """An hour's meeting at 10:00 and 10:30 (or 10:00:30) each day, in one room: a series'
    room holds one meeting at a time, so such a rule is refused (it used to be booked)."""
    with pytest.raises(RecurrenceError) as error:
        expand(Schedule(local("2026-12-07T10:00"), local("2026-12-07T11:30"), rrule=rule),
               LIMITS, NOW)
    assert error.value.code == "occurrence_overlap"


def test_several_meetings_a_day_that_do_not_overlap_pass() -> None:
    occurrences, _ = expand(Schedule(local("2026-12-07T10:00"), local("2026-12-07T11:00"),
                                     rrule="FREQ=DAILY;BYHOUR=10,11;COUNT=4"), LIMITS, NOW)
    assert [o.label() for o in occurrences] == ["2026-12-07 10:00", "2026-12-07 11:00",
                                                "2026-12-08 10:00", "2026-12-08 11:00"]


@pytest.mark.parametrize("name", ["localtime", "posixrules", "right/Europe/Prague",
                                  "posix/Europe/Prague", "Factory", "Europe/Atlantis", "x" * 5000])
def test_only_iana_time_zones_are_taken(name: str) -> None:
    """ZoneInfo opens any file of the system's zone directory: "localtime" (the server's
    own zone, UTC in a container), "posixrules", the leap-second "right/" zones. They
    were taken, a booking's times then meaning whatever the server's files say."""
    with pytest.raises(RecurrenceError) as error:
        expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"), zone=name),
               LIMITS, NOW)
    assert error.value.code == "unknown_time_zone"


def test_iana_time_zones_and_their_links_are_taken() -> None:
    for name in ("Europe/Prague", "Europe/London", "UTC", "Etc/GMT-1", "America/Argentina/Salta"):
        occurrences, _ = expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"),
                                         zone=name), LIMITS, NOW)
        assert occurrences[0].local_start == local("2026-12-01T10:00")


def test_unknown_zone_end_before_start_and_marathons_are_refused() -> None:
    cases = [
        (Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"), zone="Europe/Atlantis"),
         "unknown_time_zone"),
        (Schedule(local("2026-12-01T10:00"), local("2026-12-01T09:00")), "invalid_interval"),
        (Schedule(local("2026-12-01T10:00"), local("2026-12-02T10:00")), "too_long"),
    ]
    for schedule, code in cases:
        with pytest.raises(RecurrenceError) as error:
            expand(schedule, LIMITS, NOW)
        assert error.value.code == code


def test_huge_recurrence_is_refused_without_expanding_it_all() -> None:
    limits = Limits(max_occurrences=10, horizon=timedelta(days=10**5))
    with pytest.raises(RecurrenceError) as error:
        expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"),
                        rrule="FREQ=DAILY;COUNT=999999999"), limits, NOW)
    assert error.value.code == "too_many_occurrences"


def test_until_may_be_utc_as_calendars_write_it_or_local_as_people_do() -> None:
    for rule in ("FREQ=WEEKLY;UNTIL=20261215T090000Z", "FREQ=WEEKLY;UNTIL=20261215T100000",
                 "FREQ=WEEKLY;UNTIL=20261215"):
        occurrences, _ = expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"),
                                         rrule=rule), LIMITS, NOW)
        assert [o.local_start.day for o in occurrences] == [1, 8, 15], rule
    assert normalise_rrule("RRULE:FREQ=DAILY;UNTIL=20261215", "Europe/Prague") == \
        "FREQ=DAILY;UNTIL=20261215T225959Z"


# Found by fuzz/rrule.py: each of these raised something other than RecurrenceError out
# of the API's path (parse_local, normalise_rrule, expand), a 500 instead of a 400.

@pytest.mark.parametrize("rule", [
    "FREQ=YEARLY;COUNT=2;BYEASTER=999999",  # dateutil: IndexError while expanding
    "FREQ=DAILY;COUNT=1;BYEASTER=-99999999999999999999",
])
def test_rules_dateutil_fails_on_while_expanding_are_invalid(rule: str) -> None:
    with pytest.raises(RecurrenceError) as error:
        expand(Schedule(local("2026-12-01T10:00"), local("2026-12-01T11:00"), rrule=rule),
               LIMITS, NOW)
    assert error.value.code == "invalid_rrule"


def test_times_at_the_ends_of_the_calendar_are_out_of_range() -> None:
    from scheduler.booking.recurrence import parse_local, zone

    prague = zone("Europe/Prague")
    with pytest.raises(RecurrenceError) as error:  # year 0 once converted into Prague time
        parse_local("0001-01-01T00:10+05:00", prague, "start")
    assert error.value.code == "invalid_time"
    with pytest.raises(RecurrenceError) as error:  # 00:10 in Prague is year 0 in UTC
        expand(Schedule(local("0001-01-01T00:10"), local("0001-01-01T01:00")), LIMITS, NOW)
    assert error.value.code == "invalid_time"
    with pytest.raises(RecurrenceError) as error:  # year 10000 in UTC
        expand(Schedule(local("9999-12-31T23:00"), local("9999-12-31T23:30"),
                        zone="America/New_York"), LIMITS, NOW)
    assert error.value.code == "invalid_time"
    with pytest.raises(RecurrenceError) as error:
        normalise_rrule("FREQ=DAILY;UNTIL=00010101T000000", "Asia/Tokyo")
    assert error.value.code == "invalid_rrule"


@pytest.mark.parametrize("rule", [
    # Found by fuzz/ics.py: dateutil accepts these, icalendar's vRecur does not, so the
    # booking was made and its invitation failed with a ValueError.
    "FREQ=DAILY;COUNT=1;BYDAY=+999MO",
    "FREQ=DAILY;COUNT=2;INTERVAL=99999999999999999999",
    # A second line set the rule's own DTSTART (not the booking's) and broke the ICS.
    "DTSTART:20270101T000000\nRRULE:FREQ=DAILY;COUNT=2",
    "FREQ=DAILY;COUNT=2\r\nX-A:1",
])
def test_rules_an_invitation_cannot_carry_are_invalid(rule: str) -> None:
    with pytest.raises(RecurrenceError) as error:
        normalise_rrule(rule, "Europe/Prague")
    assert error.value.code == "invalid_rrule"


def test_rules_calendars_read_still_pass() -> None:
    rule = "FREQ=WEEKLY;BYDAY=TU;COUNT=10"
    assert normalise_rrule(rule, "Europe/Prague") == rule

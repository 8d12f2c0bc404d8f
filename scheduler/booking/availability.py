"""Free capacity over a time range, as an organisation sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.booking import capacity
from scheduler.booking.bookings import load_policy
from scheduler.booking.capacity import CapacityPolicy, Request, Segment
from scheduler.booking.occupancy import day_cache
from scheduler.booking.transactions import days_touched
from scheduler.config import SchedulerConfig
from scheduler.errors import InvalidInput
from scheduler.models import BookingOccurrence, Quota
from scheduler.organisations import OrgInfo, holder_among, org_info

MAX_RANGE = timedelta(days=31)
# A share's use is asked for the weeks a calendar shows (its month view: six weeks).
MAX_SHARE_RANGE = timedelta(days=62)


def _load(session: Session, config: SchedulerConfig, org: OrgInfo | None, start: datetime,
          end: datetime, excluding_booking: int | None,
          longest: timedelta) -> tuple[CapacityPolicy, int | None, list[Segment]]:
    """The policy, ``org``'s quota holder and the load over [start, end) as it sees it."""
    if end <= start:
        raise InvalidInput("invalid_interval", "'to' must be after 'from'")
    if end - start > longest:
        raise InvalidInput("range_too_long", f"ask for at most {longest.days} days at once")
    policy = load_policy(session, config)
    holder = holder_among(org, policy.quotas) if org else None
    # The days from the process's day cache (read again where their version moved), each
    # with its load profile: a week is a few hundred segments, not thousands of rows.
    days = day_cache(session).days(session, days_touched([(start, end)]),
                                   config.limits.max_duration)
    if excluding_booking is not None:
        o = BookingOccurrence
        own = set(session.scalars(select(o.id).where(o.booking_id == excluding_booking,
                                                     o.state == "scheduled")))
        days = {day: cached.without(own) for day, cached in days.items()}
    load = [segment for day in sorted(days) for segment in
            days[day].segments(policy, holder, start, end)]
    return policy, holder, load


def availability(session: Session, config: SchedulerConfig, org: OrgInfo | None,
                 start: datetime, end: datetime, now: datetime,
                 zone: str = "Europe/Prague", *,
                 excluding_booking: int | None = None) -> dict[str, object]:
    """Segments of constant load in [start, end) with the units ``org`` could still book.

    ``free_units``: what a routine booking of ``org`` made now could take there (an
    occurrence starting within the borrowing lead may use others' unused shares).
    ``free_units_emergency``: what an IZS emergency could take without displacing anyone.
    ``excluding_booking``: a booking being changed, whose scheduled occurrences its
    change replaces, so they leave the load (the change form counted them against the
    booking itself).
    """
    policy, holder, load = _load(session, config, org, start, end, excluding_booking,
                                 MAX_RANGE)
    izs = bool(org and org.izs)
    tz = ZoneInfo(zone)
    segments = []
    for segment in load:
        probe = Request(segment.start, segment.end, 0, holder, izs, "routine")
        free, _ = capacity.available(segment, probe, policy, now)
        row = {
            "start": segment.start.astimezone(tz).isoformat(),
            "end": segment.end.astimezone(tz).isoformat(),
            "used_units": segment.used,
            "free_units": max(0, free),
            "free_units_emergency": max(0, policy.pool_units - segment.used),
            "own_used_units": segment.own_used,
        }
        if segments and all(segments[-1][k] == row[k] for k in row if k not in ("start", "end")):
            segments[-1]["end"] = row["end"]  # same load: one longer segment
        else:
            segments.append(row)
    return {
        "organisation_id": org.id if org else None,
        "quota_holder_id": holder,
        "pool_units": policy.pool_units,
        "izs_reserve_units": policy.izs_reserve_units,
        "quota_units": policy.quotas.get(holder, 0) if holder is not None else 0,
        "borrow_lead_hours": policy.borrow_lead.total_seconds() / 3600,
        "segments": segments,
    }


@dataclass(frozen=True)
class ShareUse:
    """An organisation's guaranteed share, and how much of it is booked over a time range.

    The share is its quota holder's (itself, or the nearest one above it that has one:
    an ORP books on its region's, with the region's other ORP), so the use is that of
    every booking charged to it.
    """

    holder: OrgInfo | None  # whose share it books on; None: it has none
    share_bp: int  # basis points of the pool
    quota_units: int
    pool_units: int
    izs_reserve_units: int
    borrow_lead: timedelta
    peak_units: int  # the most of the share its bookings hold at one time
    peak_at: datetime  # the first time they hold that much

    @property
    def left_units(self) -> int:
        """What is left of the share at the peak (none where borrowing took it past)."""
        return max(0, self.quota_units - self.peak_units)


def share_use(session: Session, config: SchedulerConfig, org: OrgInfo, start: datetime,
              end: datetime, *, excluding_booking: int | None = None) -> ShareUse:
    """``org``'s share and its peak use in [start, end), from the load availability reads
    (``excluding_booking``: as there)."""
    policy, holder, load = _load(session, config, org, start, end, excluding_booking,
                                 MAX_SHARE_RANGE)
    # own_used: the units the holder holds there (capacity.Segment); max() keeps the first.
    peak = max(load, key=lambda segment: segment.own_used, default=None)
    quota = session.get(Quota, holder) if holder is not None else None
    return ShareUse(holder=org_info(session, holder) if holder is not None else None,
                    share_bp=quota.share_bp if quota is not None else 0,
                    quota_units=policy.quotas.get(holder, 0) if holder is not None else 0,
                    pool_units=policy.pool_units, izs_reserve_units=policy.izs_reserve_units,
                    borrow_lead=policy.borrow_lead,
                    peak_units=peak.own_used if peak is not None else 0,
                    peak_at=peak.start if peak is not None else start)

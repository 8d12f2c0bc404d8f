"""The scheduler's settings as a plain object; the composition root fills it in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from scheduler.booking.recurrence import Limits
from scheduler.booking.units import UnitCosts


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""  # empty: notices stay in the outbox, nothing is sent
    port: int = 25
    sender: str = "multipoint@localhost"
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True)
class SchedulerConfig:
    unit_costs: UnitCosts = field(default_factory=UnitCosts)
    worker_capacity_units: int = 800  # a new worker's capacity: 0.8 of a core, in millicores
    izs_reserve_percent: int = 20
    borrow_lead: timedelta = timedelta(hours=48)
    open_lead: timedelta = timedelta(minutes=10)
    close_grace: timedelta = timedelta(minutes=15)
    reminder_lead: timedelta = timedelta(hours=1)
    tick: timedelta = timedelta(seconds=30)  # the jobs' safety tick
    limits: Limits = field(default_factory=Limits)
    join_kind: str = "hd"  # the kind assumed for a participant at join time
    smtp: SmtpConfig = field(default_factory=SmtpConfig)

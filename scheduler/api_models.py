"""The shapes the REST API accepts. Strict: a number given as text is an error, not a guess."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.ids import MAX_ID

EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,60}$"
Email = Annotated[str, Field(pattern=EMAIL, max_length=254)]
UnitId = Annotated[int, Field(ge=0, le=MAX_ID)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ParticipantsIn(Strict):
    hd: int = Field(0, ge=0, le=1000, description="forwarded HD video participants")
    sd: int = Field(0, ge=0, le=1000, description="forwarded SD video participants")
    audio: int = Field(0, ge=0, le=1000, description="audio-only participants")
    mixed: int = Field(0, ge=0, le=1000,
                       description="participants receiving one mixed picture and sound")


class RecurrenceIn(Strict):
    rrule: str = Field(min_length=1, max_length=500,
                       description="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=TU;COUNT=10")
    exdates: list[str] = Field(default_factory=list, max_length=400,
                               description="local start times of occurrences to leave out")
    skip_public_holidays: bool = Field(False, description="leave out Czech public holidays")


class BookingIn(Strict):
    organisation_id: int | None = Field(None, ge=0, le=MAX_ID,
                                        description="default: the caller's organisation")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=4000)
    start: str = Field(description="local start, ISO 8601, e.g. 2026-12-01T10:00")
    end: str = Field(description="local end of the first occurrence")
    time_zone: str = Field("Europe/Prague", max_length=64)
    participants: ParticipantsIn
    priority: Literal["routine", "priority", "emergency"] = "routine"
    recurrence: RecurrenceIn | None = None
    invitees: list[Email] = Field(default_factory=list, max_length=200)
    call_units: list[UnitId] = Field(
        default_factory=list, max_length=20,
        description="room units (endpoint ids, each with a SIP address, of the booking's "
                    "organisation or one under it) called into the room at each start")


class BookingPatch(Strict):
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    start: str | None = None
    end: str | None = None
    time_zone: str | None = Field(None, max_length=64)
    participants: ParticipantsIn | None = None
    recurrence: RecurrenceIn | None = None
    remove_recurrence: bool = False
    invitees: list[Email] | None = Field(None, max_length=200)
    call_units: list[UnitId] | None = Field(None, max_length=20,
                                            description="the units to call; [] calls none")


class OccurrencePatch(Strict):
    start: str = Field(description="the occurrence's new local start, ISO 8601")
    end: str | None = Field(None, description="its new local end; default: as long as before")


class OrganisationIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["region", "orp", "central", "izs", "group", "other"]
    parent_id: int | None = Field(None, ge=0, le=MAX_ID)
    code: str | None = Field(None, max_length=100)
    email: Email | Literal[""] = ""


class NodeIn(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    workers: int = Field(ge=1, le=256)
    capacity_units: int | None = Field(None, ge=1, le=1_000_000,
                                       description="per worker; default from the settings")


class NodePatch(Strict):
    enabled: bool


class QuotaIn(Strict):
    share_percent: float = Field(ge=0, le=100)


class BridgeIn(Strict):
    organisation_id: int | None = Field(None, ge=0, le=MAX_ID)
    name: str = Field(min_length=1, max_length=200)
    participants: ParticipantsIn


class UserIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["operator", "org_admin", "izs_operator", "coordinator"]
    organisation_id: int | None = Field(None, ge=0, le=MAX_ID)
    email: Email | Literal[""] = ""


class TokenIn(Strict):
    label: str = Field("", max_length=100)

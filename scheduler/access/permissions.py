"""Who may do what: plain functions over a principal and the organisation concerned.

Roles:
- ``operator``: the central operator; everything.
- ``org_admin``: an organisation's admin; books routine and priority meetings for
  their own organisation (and those under it) and sees only those bookings.
- ``izs_operator``: as an admin, for their IZS organisation, and may book emergencies
  and run standing bridges.
- ``coordinator``: a grant coordinator; reads organisations, usage and call records,
  books nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.errors import Forbidden
from scheduler.organisations import OrgInfo

ROLES: tuple[str, ...] = ("operator", "org_admin", "izs_operator", "coordinator")


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    role: str
    organisation_id: int | None
    email: str = ""


def _deny(message: str) -> Forbidden:
    return Forbidden("forbidden", message)


def is_operator(principal: Principal) -> bool:
    return principal.role == "operator"


def owns(principal: Principal, org: OrgInfo) -> bool:
    """Is ``org`` the principal's organisation or one under it?"""
    return principal.organisation_id is not None and org.within(principal.organisation_id)


def require_operator(principal: Principal) -> None:
    if not is_operator(principal):
        raise _deny("only the central operator may do this")


def require_book(principal: Principal, org: OrgInfo, priority: str) -> None:
    if is_operator(principal):
        if priority == "emergency" and not org.izs:
            raise _deny("emergency bookings are for IZS organisations")
        return
    if principal.role not in ("org_admin", "izs_operator"):
        raise _deny(f"the role {principal.role!r} may not book")
    if not owns(principal, org):
        raise _deny("you may book only for your own organisation")
    if priority == "emergency" and not (principal.role == "izs_operator" and org.izs):
        raise _deny("only IZS operators may book emergencies")


def can_see_booking(principal: Principal, org: OrgInfo) -> bool:
    if is_operator(principal):
        return True
    return principal.role in ("org_admin", "izs_operator") and owns(principal, org)


def require_see_booking(principal: Principal, org: OrgInfo) -> None:
    if not can_see_booking(principal, org):
        raise _deny("this booking belongs to another organisation")


def require_change_booking(principal: Principal, org: OrgInfo) -> None:
    require_see_booking(principal, org)


def require_bridges(principal: Principal, org: OrgInfo | None = None) -> None:
    """Standing bridges: the operator, and IZS operators for their own organisation."""
    if is_operator(principal):
        return
    if principal.role != "izs_operator":
        raise _deny("standing bridges are for IZS operators")
    if org is not None and not (owns(principal, org) and org.izs):
        raise _deny("you may manage only your own organisation's bridges")


def report_scope(principal: Principal) -> int | None:
    """The organisation a principal's reports are limited to (None: all)."""
    if principal.role in ("operator", "coordinator"):
        return None
    return principal.organisation_id if principal.organisation_id is not None else -1

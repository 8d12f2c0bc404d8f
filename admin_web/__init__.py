"""Pages for admins, operators and grant coordinators (server-rendered, Jinja2).

Holds no business rules: those live in scheduler/. ``setup_admin`` registers every
/admin route and the static files; the composition root (multipoint/app.py) hands in
the scheduler services, the operator's view of live rooms and a self-test link maker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from admin_web import accounts, bookings, operating, rollout
from admin_web.web import ADMIN, STATIC_DIR, Admin, make_templates
from scheduler.services import SchedulerServices


def setup_admin(app: web.Application, services: SchedulerServices, live_rooms: Any, *,
                selftest_link: Callable[[str], str],
                test_call: Callable[[str, str], bool] | None = None,
                is_test_calling: Callable[[str], bool] = lambda serial: False) -> None:
    """``live_rooms``: signaling.operations.LiveRooms; ``selftest_link(serial)``: a signed
    self-test link for one room unit; ``test_call(serial, uri)`` starts its SIP test call."""
    app[ADMIN] = Admin(services, live_rooms, selftest_link, make_templates(), test_call,
                       is_test_calling)
    for module in (accounts, bookings, operating, rollout):
        module.routes(app)
    app.router.add_static("/admin/static/", STATIC_DIR)

"""Plumbing shared by every admin page: who is signed in, CSRF, language, rendering.

The session cookie is the scheduler API's (scheduler/api.py SESSION_COOKIE), so the
pages' scripts can read /api/v1 (availability, invitations) as the signed-in user.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from admin_web.i18n import LANGUAGES, date_formatter, plural_translator, translator
from scheduler.access import auth, users
from scheduler.access.permissions import Principal
from scheduler.api import SESSION_COOKIE
from scheduler.services import SchedulerServices

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
LANG_COOKIE = "multipoint_lang"
SESSION_TTL = timedelta(hours=10)  # a working day; then sign in again
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"

# Which roles see which part of the admin web.
BOOKERS = ("operator", "org_admin", "izs_operator")
OPERATORS = ("operator",)
COORDINATORS = ("operator", "coordinator")


@dataclass
class Admin:
    """What the pages need from the rest of the service, handed in by the composition root."""

    services: SchedulerServices
    live_rooms: Any  # signaling.operations.LiveRooms: admin_web does not import signaling
    selftest_link: Callable[[str], str]
    templates: jinja2.Environment
    # A room unit's SIP test call, run in the background: (serial, SIP URI) -> False when
    # one is running already (signaling/sip/testcall.py); None when SIP is off.
    test_call: Callable[[str, str], bool] | None = None
    is_test_calling: Callable[[str], bool] = lambda serial: False
    # Sign-in attempts per address and wrong passwords per (account, address).
    sign_in_throttle: users.SignInThrottle = field(default_factory=users.SignInThrottle)

    @property
    def db(self) -> Any:
        return self.services.db

    def now(self) -> datetime:
        return self.services.clock()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking database work off the event loop."""
        return await asyncio.to_thread(fn, *args)


ADMIN = web.AppKey("admin_web", Admin)
PRINCIPAL = web.RequestKey("principal", Principal)
LOGIN_CSRF = web.RequestKey("login_csrf", str)


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["czk"] = lambda v: f"{int(v or 0):,}".replace(",", "\u00a0") + "\u00a0Kč"
    env.filters["urlq"] = lambda v: quote(str(v), safe="")
    return env


def csrf_token(session_secret: str) -> str:
    # Bound to the session: a page of another site can neither read the cookie nor this.
    return hmac.new(session_secret.encode(), b"admin-csrf", hashlib.sha256).hexdigest()[:40]


def language(request: web.Request) -> str:
    asked = request.query.get("lang") or request.cookies.get(LANG_COOKIE, "cs")
    return asked if asked in LANGUAGES else "cs"


def principal(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


async def _authenticate(admin: Admin, request: web.Request) -> Principal | None:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None

    def work() -> Principal | None:
        with admin.db.session() as session:
            return auth.authenticate_session(session, secret, admin.now())

    return await admin.run(work)


def render(request: web.Request, template_name: str, status: int = 200,
           **context: Any) -> web.Response:
    admin = request.app[ADMIN]
    lang = language(request)
    user = principal(request)
    secret = request.cookies.get(SESSION_COOKIE, "")
    body = admin.templates.get_template(template_name).render(
        _=translator(lang), n_=plural_translator(lang), when=date_formatter(lang),
        lang=lang, user=user, path=request.path, query=request.query,
        # The sign-in form's own token first: a stale session cookie (expired, or ended
        # by a password change elsewhere) must not put a token on it that cannot match.
        csrf=request.get(LOGIN_CSRF) or (csrf_token(secret) if secret else ""),
        nav=navigation(user), **context)
    response = web.Response(text=body, content_type="text/html", status=status)
    if "lang" in request.query and lang == request.query["lang"]:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax", path="/")
    # Never framed nor cached: multipoint/http_security.py does that for every page. The
    # admin pages' own policy lets their stylesheets' inline styles and data: fonts in.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; font-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'")
    return response


def navigation(user: Principal | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    items: list[tuple[str, str]] = []
    if user.role in BOOKERS:
        items.append(("/admin/bookings", "Bookings"))
    if user.role in OPERATORS:
        items.append(("/admin/operating", "Operating"))
    if user.role in COORDINATORS:
        items += [("/admin/rollout", "Rollout"), ("/admin/dashboard", "Dashboard")]
    if user.role in OPERATORS:
        items += [("/admin/users", "Users"), ("/admin/audit", "Audit log")]
    return items


Page = Callable[[Admin, web.Request, Principal], Awaitable[web.StreamResponse]]


def page(roles: Iterable[str]) -> Callable[[Page], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A handler for signed-in users of ``roles``; POSTs must carry the session's CSRF token."""
    allowed = tuple(roles)

    def decorate(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            admin = request.app[ADMIN]
            user = await _authenticate(admin, request)
            if user is None:
                target = request.path_qs if request.method == "GET" else "/admin"
                raise web.HTTPSeeOther(f"/admin/sign-in?next={quote(target, safe='')}")
            request[PRINCIPAL] = user
            if user.role not in allowed:
                return render(request, "forbidden.html", status=403)
            if request.method not in ("GET", "HEAD"):
                await check_csrf(request, csrf_token(request.cookies[SESSION_COOKIE]))
            return await handler(admin, request, user)

        handle.__name__ = handler.__name__
        return handle

    return decorate


async def check_csrf(request: web.Request, expected: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded",
                                                 "multipart/form-data"):
        sent = str((await request.post()).get(CSRF_FIELD, ""))
    if not sent or not hmac.compare_digest(sent, expected):
        raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page and try again")


def utc_now() -> datetime:
    return datetime.now(UTC)


async def form(request: web.Request) -> dict[str, str]:
    """The posted fields as stripped strings (files are read separately)."""
    data = await request.post()
    return {k: v.strip() for k, v in data.items() if isinstance(v, str)}

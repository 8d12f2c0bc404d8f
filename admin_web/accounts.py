"""Sign-in and sign-out, the start page, users, and the audit log."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from admin_web.web import (
    ADMIN,
    BOOKERS,
    COORDINATORS,
    CSRF_FIELD,
    LOGIN_CSRF,
    OPERATORS,
    SESSION_TTL,
    Admin,
    form,
    page,
    render,
)
from scheduler.access import audit, auth, users
from scheduler.access.permissions import ROLES, Principal
from scheduler.api import SESSION_COOKIE
from scheduler.errors import SchedulerError
from scheduler.ids import parse_id
from scheduler.organisations import organisation_choices

LOGIN_CSRF_COOKIE = "multipoint_login_csrf"


def _safe_next(value: str) -> str:
    # Only a path of this site: never an open redirect to another one.
    return value if value.startswith("/admin") and not value.startswith("//") else "/admin"


def home_of(user: Principal) -> str:
    if user.role in OPERATORS:
        return "/admin/operating"
    if user.role in BOOKERS:
        return "/admin/bookings"
    if user.role in COORDINATORS:
        return "/admin/dashboard"
    return "/admin/sign-in"


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    request[LOGIN_CSRF] = token
    response = render(request, "sign_in.html", next=_safe_next(request.query.get("next", "")),
                      error="", name="")
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                        path="/admin", secure=request.secure)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    data = await form(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    # Login CSRF: the form must come from our own page (double-submit cookie).
    if not cookie or not secrets.compare_digest(cookie, data.get(CSRF_FIELD, "")):
        raise web.HTTPForbidden(text="reload the sign-in page and try again")
    request[LOGIN_CSRF] = cookie
    name, password = data.get("name", ""), data.get("password", "")
    now = admin.now()
    address = request.remote or ""
    retry_after = admin.sign_in_throttle.attempt(address)
    if retry_after is not None:
        response = render(request, "sign_in.html", status=429, error="too_many_attempts",
                          next=_safe_next(data.get("next", "")), name=name)
        response.headers["Retry-After"] = str(round(retry_after))
        return response

    def work() -> tuple[users.SignIn, str]:
        with admin.db.session() as session:
            outcome = users.sign_in(session, name, password, address, admin.sign_in_throttle)
            secret = ""
            if outcome.principal is not None:
                secret = auth.create_session(session, outcome.principal.user_id, now,
                                             SESSION_TTL)
                audit.record(session, outcome.principal, "session.sign_in", f"user:{name}", {})
            return outcome, secret

    outcome, secret = await admin.run(work)
    if outcome.principal is None:
        # One answer for an unknown name, a wrong password and a blocked pair.
        return render(request, "sign_in.html", status=401, error="bad_credentials",
                      next=_safe_next(data.get("next", "")), name=name)
    target = _safe_next(data.get("next", ""))
    if target in ("/admin", "/admin/"):
        target = home_of(outcome.principal)
    response = web.HTTPSeeOther(target)
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="Lax", path="/",
                        secure=request.secure, max_age=int(SESSION_TTL.total_seconds()))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/admin")
    raise response


@page(ROLES)
async def sign_out(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    secret = request.cookies[SESSION_COOKIE]

    def work() -> None:
        with admin.db.session() as session:
            auth.end_session(session, secret)
            audit.record(session, user, "session.sign_out", f"user:{user.name}", {})

    await admin.run(work)
    response = web.HTTPSeeOther("/admin/sign-in")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@page(ROLES)
async def home(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    raise web.HTTPSeeOther(home_of(user))


@page(OPERATORS)
async def audit_page(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    before = request.query.get("before")
    action = request.query.get("action", "")

    def work() -> list[Any]:
        with admin.db.session() as session:
            return audit.entries(session, limit=200,
                                 before_id=parse_id(before),
                                 action_prefix=action)

    return render(request, "audit.html", entries=await admin.run(work), action=action)


def _users_context(admin: Admin) -> dict[str, Any]:
    with admin.db.session() as session:
        return {"users": users.users_with_organisations(session),
                "organisations": organisation_choices(session), "roles": ROLES}


@page(OPERATORS)
async def users_page(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    context = await admin.run(_users_context, admin)
    return render(request, "users.html", errors={}, values={}, created="", **context)


@page(OPERATORS)
async def create_user(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    data = await form(request)
    errors: dict[str, str] = {}
    if not data.get("name"):
        errors["name"] = "Required."
    if data.get("role") not in ROLES:
        errors["role"] = "Choose a role."
    org_id = parse_id(data.get("organisation_id"))
    if data.get("role") in ("org_admin", "izs_operator") and org_id is None:
        errors["organisation_id"] = "This role belongs to an organisation."
    if len(data.get("password", "")) < users.MIN_PASSWORD:
        errors["password"] = "At least 10 characters."

    def work() -> str:
        with admin.db.session() as session:
            return users.create_local_user(session, data["name"], data["role"], data["password"],
                                           org_id, data.get("email", ""), actor=user).name

    created = ""
    if not errors:
        try:
            created = await admin.run(work)
        except SchedulerError as exc:
            errors["organisation_id" if "organisation" in exc.code else "name"] = exc.message
    context = await admin.run(_users_context, admin)
    return render(request, "users.html", status=422 if errors else 200, errors=errors,
                  values={} if created else data, created=created, **context)


@page(ROLES)
async def account_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    return render(request, "account.html", errors={}, changed=False)


@page(ROLES)
async def change_password(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    data = await form(request)
    errors: dict[str, str] = {}
    if len(data.get("new_password", "")) < users.MIN_PASSWORD:
        errors["new_password"] = "At least 10 characters."
    elif data.get("new_password") != data.get("again"):
        errors["again"] = "The passwords differ."

    address = request.remote or ""
    throttle = admin.sign_in_throttle

    def work() -> bool:
        with admin.db.session() as session:
            # The current password again: a session left open on a shared PC is not
            # enough. Its wrong guesses count as wrong sign-ins of this account.
            if throttle.blocked(user.name, address):
                return False
            if not users.password_matches(session, user.user_id, data.get("current", "")):
                throttle.failed(user.name, address)
                return False
            # Every other session of this user ends; this browser stays signed in.
            users.set_password(session, user.user_id, data["new_password"], actor=user,
                               keep_session=request.cookies.get(SESSION_COOKIE))
            return True

    if not errors and not await admin.run(work):
        errors["current"] = "Wrong password, or too many wrong ones: try again later."
    return render(request, "account.html", status=422 if errors else 200, errors=errors,
                  changed=not errors)


def routes(app: web.Application) -> None:
    app.router.add_get("/admin", home)
    app.router.add_get("/admin/", home)
    app.router.add_get("/admin/sign-in", sign_in_page)
    app.router.add_post("/admin/sign-in", sign_in)
    app.router.add_post("/admin/sign-out", sign_out)
    app.router.add_get("/admin/account", account_page)
    app.router.add_post("/admin/account", change_password)
    app.router.add_get("/admin/audit", audit_page)
    app.router.add_get("/admin/users", users_page)
    app.router.add_post("/admin/users", create_user)

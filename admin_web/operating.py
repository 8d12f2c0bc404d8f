"""The central operator's page: live rooms and their participants, nodes, capacity."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from aiohttp import web

from admin_web.web import OPERATORS, Admin, form, page, render
from mcu.channel import ChannelError
from scheduler.access import audit
from scheduler.access.permissions import Principal
from scheduler.booking.availability import availability
from scheduler.ids import parse_id
from scheduler.media import nodes
from scheduler.organisations import org_info, organisation_names
from signaling.spread import NotConfirmed

logger = logging.getLogger(__name__)

TIMELINE = timedelta(days=7)
# What a media worker answers when the room or participant the page showed has gone
# from it meanwhile: for the operator that is "no longer there", as a LookupError is.
GONE_CODES = frozenset({"unknown_participant", "room_not_found"})


def _audit(admin: Admin, user: Principal, action: str, target: str,
           details: dict[str, object]) -> None:
    with admin.db.session() as session:
        audit.record(session, user, action, target, details)


def _nodes_and_holders(admin: Admin) -> dict[str, Any]:
    with admin.db.session() as session:
        holders = list(organisation_names(session, only_quota_holders=True).items())
        return {"nodes": nodes.nodes_json(session, admin.services.config), "holders": holders}


@page(OPERATORS)
async def operating_page(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    context = await admin.run(_nodes_and_holders, admin)
    return render(request, "operating.html", rooms=await admin.live_rooms.rooms(),
                  load=admin.live_rooms.load(), recordings=admin.live_rooms.recordings()[:20],
                  dials=list(admin.live_rooms.dials), **context)


@page(OPERATORS)
async def live_fragment(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    """The live rooms alone, for the page's periodic refresh."""
    return render(request, "operating_live.html", rooms=await admin.live_rooms.rooms(),
                  load=admin.live_rooms.load(), dials=list(admin.live_rooms.dials))


@page(OPERATORS)
async def act(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    data = await form(request)
    room, participant, action = data.get("room", ""), data.get("participant", ""), data.get("action")
    try:
        if action == "mute":
            await admin.live_rooms.mute(room, participant, by=user.name)
        elif action == "remove":
            await admin.live_rooms.remove(room, participant, by=user.name)
        elif action == "dial":
            target = data.get("target", "").strip()
            if not target.lower().startswith(("sip:", "sips:")) or len(target) > 200 \
                    or any(ch.isspace() or not ch.isprintable() for ch in target):
                raise web.HTTPSeeOther("/admin/operating?bad=dial#live")
            admin.live_rooms.dial(room, target, by=user.name)
            participant = target
        elif action == "close":
            await admin.live_rooms.close_by_operator(room, by=user.name)
        elif action in ("lock", "unlock"):
            await admin.live_rooms.lock(room, action == "lock")
        elif action in ("record", "stop_recording"):
            await admin.live_rooms.record(room, action == "record")
        else:
            raise web.HTTPBadRequest(text="unknown action")
    except LookupError:
        raise web.HTTPSeeOther(f"/admin/operating?gone={action}#live") from None
    except NotConfirmed as exc:
        # The participant's node (a room spread over nodes) did not say it was done: it
        # may be done later, or never; the operator must not read it as done.
        logger.warning("operator %s: %s in room %s not confirmed: %s", user.name, action, room, exc)
        raise web.HTTPSeeOther("/admin/operating?failed=unconfirmed#live") from None
    except (ChannelError, TimeoutError) as exc:
        # The room's media worker refused (a recording it cannot write), is restarting
        # or did not answer: the operator is told on the page, which goes on working,
        # rather than getting a server error for what is not the page's fault.
        code = exc.code if isinstance(exc, ChannelError) else "timeout"
        if code in GONE_CODES:
            raise web.HTTPSeeOther(f"/admin/operating?gone={action}#live") from None
        logger.warning("operator %s: %s in room %s failed: %s", user.name, action, room,
                       exc if isinstance(exc, ChannelError) else "the media worker did not answer")
        failed = "recording" if code == "recording_failed" else "media"
        raise web.HTTPSeeOther(f"/admin/operating?failed={failed}#live") from None
    await admin.run(_audit, admin, user, f"room.{action}", f"room:{room}",
                    {"participant": participant} if participant else {})
    raise web.HTTPSeeOther(f"/admin/operating?done={action}#live")


@page(OPERATORS)
async def capacity_json(admin: Admin, request: web.Request, user: Principal) -> web.Response:
    """Booked units over the next week: the whole pool, or one organisation's share."""
    now = admin.now()
    raw = request.query.get("organisation_id", "")
    organisation_id = parse_id(raw)

    def work() -> dict[str, object]:
        with admin.db.session() as session:
            org = org_info(session, organisation_id) if organisation_id else None
            return availability(session, admin.services.config, org, now, now + TIMELINE, now)

    data = await admin.run(work)
    return web.json_response(data)


@page(OPERATORS)
async def recording(admin: Admin, request: web.Request, user: Principal) -> web.StreamResponse:
    room, name = request.match_info["room"], request.match_info["file"]
    # Only a file the live-rooms view lists: no path from the request reaches the disk.
    found = next((r for r in admin.live_rooms.recordings()
                  if r["room"] == room and r["file"] == name), None)
    if found is None:
        raise web.HTTPNotFound(text="no such recording")
    return web.FileResponse(found["path"], headers={
        "Content-Type": "video/webm", "Content-Disposition": f'attachment; filename="{room}-{name}"'})


def routes(app: web.Application) -> None:
    app.router.add_get("/admin/operating", operating_page)
    app.router.add_get("/admin/operating/live", live_fragment)
    app.router.add_post("/admin/operating/act", act)
    app.router.add_get("/admin/operating/capacity.json", capacity_json)
    app.router.add_get("/admin/operating/recordings/{room}/{file}", recording)

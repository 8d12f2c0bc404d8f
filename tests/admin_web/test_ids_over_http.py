"""Ids in admin URLs that name nothing, over real HTTP: a 404, never a 500."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select

from admin_web.web import csrf_token
from multipoint.app import DATABASE
from scheduler.access.auth import create_session
from scheduler.models import User
from tests.admin_web.conftest import Accounts

NOT_IDS = [str(2**31), str(2**63), str(2**64), "9" * 400, "987654"]


def session_cookie(server, name: str) -> str:  # type: ignore[no-untyped-def]
    with server.app[DATABASE].session() as session:
        user_id = session.scalar(select(User.id).where(User.name == name))
        assert user_id is not None
        return create_session(session, user_id, datetime.now(UTC), timedelta(hours=1))


async def test_admin_ids_that_name_nothing_are_404(server, accounts: Accounts,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    operator = session_cookie(server, "operator")
    headers = {"X-CSRF-Token": csrf_token(operator)}
    caplog.set_level(logging.ERROR)
    async with aiohttp.ClientSession(cookies={"multipoint_session": operator}) as http:
        for raw in NOT_IDS:
            for method, path, form in (
                    ("GET", f"/admin/bookings/{raw}", None),
                    ("GET", f"/admin/bookings/{raw}/edit", None),
                    ("POST", f"/admin/bookings/{raw}/edit", {"title": "x"}),
                    ("POST", f"/admin/bookings/{raw}/cancel", {}),
                    ("POST", f"/admin/rollout/applications/{raw}",
                     {"status": "approved", "approved_czk": "100"})):
                async with http.request(method, server.url + path, data=form, headers=headers,
                                        allow_redirects=False) as response:
                    text = await response.text()
                    assert response.status == 404, (method, path, response.status)
                    assert "Traceback" not in text
        for query in (f"organisation_id={2**63}", "organisation_id=" + "9" * 400):
            async with http.get(f"{server.url}/admin/operating/capacity.json?{query}") as response:
                assert response.status == 200
            async with http.get(f"{server.url}/admin/audit?before={2**63}") as response:
                assert response.status == 200
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []

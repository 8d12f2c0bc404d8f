"""The live API against its own OpenAPI document (schemathesis, bounded examples).

Every operation of /api/v1/openapi.json is called with inputs generated from the
document (valid and invalid), as the operator; every answer must be a documented status
with the documented content type and schema, and none a 5xx. On both databases.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler.access.auth import issue_api_token
from scheduler.api import setup_api
from scheduler.services import SchedulerServices
from tests.scheduler.conftest import NOW, FakeClock, World, free_port, join_link

EXAMPLES = 12  # per operation: about 25 operations, a few hundred calls in all
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance)


@pytest.fixture
def served(world: World) -> Iterator[tuple[str, str]]:
    """The API of ``world`` on a real port, its loop in a thread (schemathesis calls
    it with blocking requests); yields (base URL, the operator's token)."""
    services = SchedulerServices(world.db, world.config, join_link=join_link,
                                 clock=FakeClock(NOW), run_jobs=False)
    app = web.Application()
    setup_api(app, services)
    with world.db.session() as session:
        token = issue_api_token(session, world.users["operator"].user_id)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_every_operation_answers_as_its_document_says(served: tuple[str, str]) -> None:
    base_url, token = served
    document = requests.get(f"{base_url}/api/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(methods) for methods in document["paths"].values()) > 20
    failures: list[str] = []
    calls = 0
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

        try:
            call()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:1500])
    assert calls >= len(operations) * 2
    assert not failures, "\n\n".join(failures)

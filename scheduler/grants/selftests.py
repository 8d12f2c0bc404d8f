"""Recording and reading self-test verdicts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.models import SelfTestResult


def record_selftest(
    session: Session,
    *,
    passed: bool,
    problems: list[str],
    figures: dict[str, float | None],
    endpoint_serial: str | None = None,
    user_agent: str = "",
) -> SelfTestResult:
    result = SelfTestResult(
        passed=passed,
        problems=problems,
        figures=figures,
        endpoint_serial=endpoint_serial,
        user_agent=user_agent[:500],
    )
    session.add(result)
    session.flush()
    return result


def latest_selftests(session: Session, endpoint_serial: str | None = None,
                     limit: int = 50) -> list[SelfTestResult]:
    query = select(SelfTestResult).order_by(SelfTestResult.id.desc()).limit(limit)
    if endpoint_serial is not None:
        query = query.where(SelfTestResult.endpoint_serial == endpoint_serial)
    return list(session.scalars(query))

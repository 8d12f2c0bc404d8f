"""Tables. Business rules live in plain functions elsewhere in scheduler/, not here."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class SelfTestResult(Base):
    """The verdict of one self-test call (camera, microphone, network, echo).

    ``endpoint_serial`` ties it to a room unit of the grant programme when the unit's
    test link carried one; the rollout tracker reads these rows.
    """

    __tablename__ = "selftest_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    endpoint_serial: Mapped[str | None] = mapped_column(String(100), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)
    figures: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    user_agent: Mapped[str] = mapped_column(Text, default="")

"""Errors with a stable code and a human message; the API turns them into JSON."""

from __future__ import annotations


class SchedulerError(Exception):
    status = 400

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def as_json(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class InvalidInput(SchedulerError):
    status = 422


class NotFound(SchedulerError):
    status = 404


class Forbidden(SchedulerError):
    status = 403


class Unauthenticated(SchedulerError):
    status = 401


class Conflict(SchedulerError):
    status = 409


class CapacityRefused(Conflict):
    """A booking that does not fit: ``details`` names each conflicting occurrence."""


class PayloadTooLarge(SchedulerError):
    status = 413

"""Scheduling and persistence: organisations, capacity, bookings, jobs, rollout records.

Must not import aiortc (see docs/architecture.md).
"""

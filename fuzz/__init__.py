"""Fuzz harnesses for every parser that takes outside bytes (docs/fuzzing.md).

One module per target, each with ``one_input(data: bytes) -> None``: it feeds the bytes
to the real entry point and lets through only the error that entry point documents as
its clear answer to bad input. Anything else escaping is a crash. Run one with
``python -m fuzz TARGET [libFuzzer flags] [corpus dirs]``.
"""

from __future__ import annotations

TARGETS: tuple[str, ...] = ("rtp", "rtcp", "sdp", "signaling", "csv", "rrule", "ics")

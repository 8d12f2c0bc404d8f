"""Database ids as they arrive in URLs and query strings.

Every id column is an INTEGER: PostgreSQL's int4, the narrower of the two databases.
A number outside that range names nothing, and handing it to the database would be an
error there (PostgreSQL: out of range; SQLite: OverflowError past 2^63), not "not found".
"""

from __future__ import annotations

MAX_ID = 2**31 - 1


def parse_id(raw: str | None) -> int | None:
    """The id that ``raw`` names, or None when it cannot name a row (not plain decimal
    digits, zero, or past :data:`MAX_ID`)."""
    if not raw or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None

"""CSV import: an uploaded file through scheduler.grants.rollout.preview_csv.

The admin web (admin_web/rollout.py ``import_post``) decodes an upload with
``decode_csv`` (UTF-8, else the Czech encoding charset-normalizer finds), then previews
it against the database. The preview
answers every problem in the file as row or file errors (a :class:`Preview`); nothing
may raise.
"""

from __future__ import annotations

from fuzz._db import seeded_database
from scheduler.grants.rollout import decode_csv, preview_csv

_database = seeded_database()
# One read transaction for the whole run: preview_csv writes nothing, and a session per
# input would spend most of the time opening transactions.
_session = _database.sessionmaker()


def one_input(data: bytes) -> None:
    text = decode_csv(data)  # as admin_web/rollout.py decodes uploads
    preview = preview_csv(_session, text)
    for _column, code in preview.errors:
        assert code, preview

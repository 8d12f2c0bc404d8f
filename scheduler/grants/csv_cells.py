"""CSV cells that a spreadsheet will not run.

Excel, LibreOffice and Google Sheets treat a cell that starts with ``=``, ``+``, ``-``,
``@`` (or a tab or carriage return before one) as a formula: an imported site name such
as ``=HYPERLINK(...)`` or ``=cmd|...`` would run on the coordinator's machine when the
export is opened (CSV injection). Text cells that start so are written with a leading
``'`` (OWASP's advice), which spreadsheets show as text; the import takes it off again,
so an exported file imports back unchanged.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """A cell as written to a CSV export: text that would start a formula gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def restore(value: str) -> str:
    """A cell as read from a CSV import: the ``'`` that :func:`neutralise` added, taken off."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value

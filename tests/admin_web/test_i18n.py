"""The admin pages' Czech and English through Babel: plural forms and local dates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from admin_web.i18n import LANGUAGES, date_formatter, plural_translator, translator


def test_czech_counts_have_three_forms() -> None:
    units = plural_translator("cs")
    assert [units("%(num)d unit", "%(num)d units", n) for n in (1, 2, 4, 5, 0, 22, 101)] == [
        "1 jednotka", "2 jednotky", "4 jednotky", "5 jednotek", "0 jednotek", "22 jednotek",
        "101 jednotek"]
    assert plural_translator("en")("%(num)d unit", "%(num)d units", 1) == "1 unit"
    assert plural_translator("en")("%(num)d unit", "%(num)d units", 5) == "5 units"


def test_texts_and_codes_in_both_languages() -> None:
    assert translator("cs")("Required.") == "Povinné."
    assert translator("cs")("Not an e-mail address: x@") == "Není e-mailová adresa: x@"
    assert translator("en")("status:in_service") == "in service"
    assert translator("cs")("status:in_service") == "v provozu"
    assert translator("cs")("A text nobody translated") == "A text nobody translated"
    # The scheduler's words with values in them, as the booking form shows them.
    past = "the occurrence 2026-12-07 10:00 is in the past"
    assert translator("cs")(past) == "Schůzka 2026-12-07 10:00 je v minulosti."
    assert translator("en")(past) == past
    # Every code has both languages.
    for code in ("role:operator", "state:displaced", "kind:mixed", "priority:emergency"):
        assert all(translator(lang)(code) != code for lang in LANGUAGES)


def test_dates_as_each_language_writes_them() -> None:
    prague = datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo("Europe/Prague"))
    assert date_formatter("cs")(prague) == "7. 12. 2026 9:00"
    assert date_formatter("en")(prague) == "Dec 7, 2026 9:00\u202fAM"
    assert date_formatter("cs")(date(2027, 1, 31)) == "31. 1. 2027"
    assert date_formatter("cs")(None) == "—"
    # An aware time keeps its own zone (no silent conversion to the server's).
    assert date_formatter("cs")(datetime(2026, 12, 7, 8, 0, tzinfo=UTC)) == "7. 12. 2026 8:00"

"""Czech (the default) and English texts of the admin pages, through Babel.

Templates write English and call ``_()``, or ``n_(singular, plural, n)`` for a count
(Czech has three forms: 1 jednotka, 2 jednotky, 5 jednotek); the translations are
gettext catalogs in ``locale/<lang>/LC_MESSAGES/messages.po``, read with Babel when the
module loads (no compile step), with the plural rule each catalog's header states.
Codes of states and roles (``status:in_service``) have an entry in both languages.
Dates and times are formatted by Babel with the language's own conventions.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from babel.dates import format_date, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("cs", "en")
LOCALE_DIR = Path(__file__).parent / "locale"
# The scheduler's words that carry values (scheduler/booking/recurrence.py, bookings.py),
# as the booking form shows them: each is a msgid, its values taken from the English text.
SCHEDULER_TEMPLATES = (
    "%(time)s does not exist in %(zone)s (the clocks skip it)",
    "a meeting may last at most %(duration)s",
    "bookings may reach at most %(days)s days ahead",
    "the occurrence %(time)s is in the past",
    "a recurrence may have at most %(count)s occurrences",
    "a booking may expect at most %(count)s participants",
    "%(count)s of %(total)s occurrence(s) do not fit; the first, %(occurrence)s, needs "
    "%(units)s units but %(free)s are free at %(at)s: %(reason)s",
)


def _pattern(template: str) -> re.Pattern[str]:
    """A template's English text with each ``%(name)s`` a named group."""
    pieces = re.split(r"%\((\w+)\)s", template)
    return re.compile(
        "".join(re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>.+?)" for i, piece in enumerate(pieces))
    )


_TEMPLATES = [(template, _pattern(template)) for template in SCHEDULER_TEMPLATES]


def _load(lang: str) -> Translations:
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


_CATALOGS = {lang: _load(lang) for lang in LANGUAGES}


def translator(lang: str) -> Callable[[str], str]:
    catalog = _CATALOGS.get(lang, _CATALOGS["cs"])

    def translate(text: str) -> str:
        found = catalog.gettext(text)
        if found != text:
            return found
        head, sep, tail = text.partition(": ")
        if sep:  # "Not an e-mail address: x@" keeps its detail
            label = catalog.gettext(head + ":")
            if label != head + ":":
                return f"{label} {tail}"
        for template, pattern in _TEMPLATES:  # "the occurrence 2026-12-07 10:00 is in the past"
            match = pattern.fullmatch(text)
            if match:
                # A value may be words of the scheduler's too (a refusal's reason).
                values = {name: catalog.gettext(value) for name, value in match.groupdict().items()}
                return catalog.gettext(template) % values
        return text

    return translate


def plural_translator(lang: str) -> Callable[[str, str, int], str]:
    """``n_("%(num)d unit", "%(num)d units", 5)`` → "5 jednotek" in Czech."""
    catalog = _CATALOGS.get(lang, _CATALOGS["cs"])

    def translate(singular: str, plural: str, count: int) -> str:
        return catalog.ngettext(singular, plural, count) % {"num": count}

    return translate


def date_formatter(lang: str) -> Callable[[datetime | date | None], str]:
    """A date, or a date and time to the minute, as the language writes them."""
    locale = lang if lang in LANGUAGES else "cs"

    def when(value: datetime | date | None) -> str:
        if value is None:
            return "—"
        day = format_date(value, "medium", locale=locale)
        if not isinstance(value, datetime):
            return day
        return f"{day} {format_time(value, 'short', locale=locale)}"

    return when

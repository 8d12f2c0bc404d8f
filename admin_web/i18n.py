"""Czech (the default) and English texts of the admin pages.

Templates write English and call ``_()``; Czech comes from the table below. Codes of
states and roles (``status:in_service``) have an entry in both languages.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("cs", "en")

CODES_EN = {
    "role:operator": "central operator", "role:org_admin": "organisation admin",
    "role:izs_operator": "IZS operator", "role:coordinator": "grant coordinator",
    "status:requested": "requested", "status:approved": "approved", "status:ordered": "ordered",
    "status:delivered": "delivered", "status:installed": "installed", "status:tested": "tested",
    "status:in_service": "in service", "status:faulty": "faulty", "status:retest_due": "retest due",
    "status:decommissioned": "decommissioned",
    "application:submitted": "submitted", "application:approved": "approved",
    "application:rejected": "rejected",
    "action:mute": "muted", "action:remove": "removed", "action:lock": "room locked",
    "action:unlock": "room unlocked", "action:record": "recording started",
    "action:stop_recording": "recording stopped",
    "kind:hd": "HD video", "kind:sd": "SD video", "kind:audio": "audio only",
    "kind:mixed": "room units (mixed)",
    "repeat:none": "does not repeat", "repeat:daily": "daily", "repeat:weekly": "weekly",
    "repeat:monthly": "monthly",
    "priority:routine": "routine", "priority:priority": "priority",
    "priority:emergency": "emergency (IZS)",
    "day:MO": "Mon", "day:TU": "Tue", "day:WE": "Wed", "day:TH": "Thu", "day:FR": "Fri",
    "day:SA": "Sat", "day:SU": "Sun",
    "reason:pool_full": "the pool is full", "reason:izs_reserve": "only the IZS reserve is left",
    "reason:quota": "the rest is guaranteed to other organisations",
    "state:scheduled": "scheduled", "state:displaced": "displaced by an emergency",
    "state:cancelled": "cancelled", "state:open": "open", "state:closed": "closed",
    "csv:required": "required", "csv:too_long": "too long",
    "csv:duplicate_in_file": "the serial number is in the file twice",
    "csv:ambiguous_organisation": "several organisations have this name: use the code",
    "csv:unknown_organisation": "no such organisation", "csv:unknown_status": "no such status",
    "csv:tested_by_selftest_only": "only a passing self-test makes a unit tested",
    "csv:unknown_programme": "no such programme", "csv:invalid_number": "not a whole number ≥ 0",
    "csv:invalid_date": "not a date (YYYY-MM-DD)", "csv:missing_column": "the column is missing",
    "csv:no_rows": "the file has no rows", "csv:too_many_rows": "too many rows (5000 at most)",
    "call_closes_before_opens": "The call closes before it opens.",
    "deadline_before_close": "The deadline is before the call closes.",
    "programme_exists": "A programme of this name exists.",
    "invalid_transition": "This status change is not allowed.",
    "programme_not_found": "No such programme.", "organisation_not_found": "No such organisation.",
    "endpoint_exists": "A unit with this serial number exists.",
}

CS = {
    "role:operator": "centrální operátor", "role:org_admin": "správce organizace",
    "role:izs_operator": "operátor IZS", "role:coordinator": "koordinátor dotací",
    "status:requested": "požadováno", "status:approved": "schváleno", "status:ordered": "objednáno",
    "status:delivered": "dodáno", "status:installed": "instalováno", "status:tested": "otestováno",
    "status:in_service": "v provozu", "status:faulty": "porucha", "status:retest_due": "nutný přetest",
    "status:decommissioned": "vyřazeno",
    "application:submitted": "podána", "application:approved": "schválena",
    "application:rejected": "zamítnuta",
    "action:mute": "ztlumeno", "action:remove": "odebráno", "action:lock": "místnost zamčena",
    "action:unlock": "místnost odemčena", "action:record": "nahrávání spuštěno",
    "action:stop_recording": "nahrávání zastaveno",
    "kind:hd": "HD video", "kind:sd": "SD video", "kind:audio": "jen zvuk",
    "kind:mixed": "jednotky v sále (smíšené)",
    "repeat:none": "neopakuje se", "repeat:daily": "denně", "repeat:weekly": "týdně",
    "repeat:monthly": "měsíčně",
    "priority:routine": "běžná", "priority:priority": "přednostní", "priority:emergency": "mimořádná (IZS)",
    "day:MO": "po", "day:TU": "út", "day:WE": "st", "day:TH": "čt", "day:FR": "pá", "day:SA": "so",
    "day:SU": "ne",
    "reason:pool_full": "kapacita je plná", "reason:izs_reserve": "zbývá jen rezerva IZS",
    "reason:quota": "zbytek je garantován jiným organizacím",
    "state:scheduled": "naplánováno", "state:displaced": "vytlačeno mimořádnou poradou",
    "state:cancelled": "zrušeno", "state:open": "otevřeno", "state:closed": "uzavřeno",
    "csv:required": "povinné", "csv:too_long": "příliš dlouhé",
    "csv:duplicate_in_file": "výrobní číslo je v souboru dvakrát",
    "csv:ambiguous_organisation": "tento název má více organizací: uveďte kód",
    "csv:unknown_organisation": "neznámá organizace", "csv:unknown_status": "neznámý stav",
    "csv:tested_by_selftest_only": "stav „otestováno“ nastaví jen úspěšný autotest",
    "csv:unknown_programme": "neznámý program", "csv:invalid_number": "není celé číslo ≥ 0",
    "csv:invalid_date": "není datum (RRRR-MM-DD)", "csv:missing_column": "chybí sloupec",
    "csv:no_rows": "soubor nemá žádné řádky", "csv:too_many_rows": "příliš mnoho řádků (nejvýše 5000)",
    "call_closes_before_opens": "Výzva končí dřív, než začíná.",
    "deadline_before_close": "Termín je dřív než konec výzvy.",
    "programme_exists": "Program s tímto názvem už existuje.",
    "invalid_transition": "Tuto změnu stavu nelze provést.",
    "programme_not_found": "Takový program neexistuje.",
    "organisation_not_found": "Taková organizace neexistuje.",
    # Texts
    "Action": "Akce", "Action starts with": "Akce začíná na", "Actions": "Akce", "Amount": "Částka",
    "Amount (CZK)": "Částka (Kč)",
    "Application undecided after the call closed:": "Žádost nerozhodnutá po uzavření výzvy:",
    "Applications by institution": "Žádosti podle institucí", "Approved": "Schváleno",
    "Approved (CZK)": "Schváleno (Kč)", "As of": "Stav k", "Audit log": "Auditní záznam",
    "Back": "Zpět", "Back to your start page": "Zpět na úvodní stránku", "Bitrate up": "Datový tok nahoru",
    "Book": "Rezervovat", "Booked by the organisation": "Rezervováno organizací",
    "Booked now": "Rezervováno teď", "Booked units (all)": "Rezervované jednotky (vše)",
    "Booked units over time": "Rezervované jednotky v čase", "Bookings": "Rezervace",
    "Budget": "Rozpočet", "Budget (CZK)": "Rozpočet (Kč)", "CSV text": "Text CSV",
    "Calendar": "Kalendář", "Call closes": "Konec výzvy", "Call opens": "Začátek výzvy",
    "Cancel booking": "Zrušit rezervaci",
    "Cancel this booking and tell the invitees?": "Zrušit rezervaci a oznámit to pozvaným?",
    "Capacity (units)": "Kapacita (jednotky)", "Capacity over the next 7 days": "Kapacita na příštích 7 dní",
    "Change": "Změnit", "Change booking": "Změna rezervace", "Change status": "Změnit stav",
    "Checking capacity…": "Ověřuji kapacitu…",
    "Choose a time to see the capacity left.": "Zvolte čas a uvidíte zbývající kapacitu.",
    "Columns:": "Sloupce:", "Connection": "Spojení", "Copy link": "Kopírovat odkaz",
    "Create programme": "Založit program", "Create user": "Založit uživatele", "Dashboard": "Přehled",
    "Date": "Datum", "Deadline": "Termín", "Deadline (in service by)": "Termín (v provozu do)",
    "Decision": "Rozhodnutí", "Description": "Popis", "Details": "Podrobnosti",
    "Does not fit: needs %(needed)s units, only %(free)s free at that time.":
        "Nevejde se: potřebuje %(needed)s jednotek, v tu dobu je volných jen %(free)s.",
    "Done:": "Hotovo:", "Download invitation (.ics)": "Stáhnout pozvánku (.ics)", "Due": "Termín",
    "Due in service": "V provozu do", "E-mail": "E-mail", "Enabled": "Zapnuto", "End": "Konec",
    "Errors": "Chyby", "Estimate down": "Odhad pásma dolů",
    "Expected participants": "Očekávaní účastníci", "Export CSV": "Export CSV", "Filter": "Filtrovat",
    "Fits: needs %(needed)s units, %(free)s free at that time.":
        "Vejde se: potřebuje %(needed)s jednotek, v tu dobu je volných %(free)s.",
    "Free for the organisation": "Volné pro organizaci", "Grant programmes": "Dotační programy",
    "Guest": "Host", "Guest link": "Odkaz pro hosty",
    "Host": "Pořadatel", "Host link": "Odkaz pro pořadatele",
    "Import": "Importovat", "Import CSV": "Import CSV", "Import room units": "Import jednotek",
    "Import room units from CSV": "Import videokonferenčních jednotek z CSV", "Imported:": "Importováno:",
    "Institution": "Instituce", "Invitees": "Pozvaní",
    "Invitees (e-mail addresses)": "Pozvaní (e-mailové adresy)", "Join links": "Odkazy na připojení",
    "Line": "Řádek", "Live": "Živě", "Live rooms": "Živé místnosti", "Load": "Zátěž", "Lock": "Zamknout",
    "Loss up / down": "Ztráty nahoru / dolů", "Main menu": "Hlavní nabídka",
    "Media nodes and workers": "Mediální uzly a procesy", "Model": "Model", "Move to": "Přesunout do",
    "Multipoint": "Multipoint", "Multipoint administration": "Správa multipointu", "Mute": "Ztlumit",
    "Name": "Název", "Nearest times when it fits:": "Nejbližší termíny, kdy se vejde:",
    "New booking": "Nová rezervace", "New programme": "Nový program", "New user": "Nový uživatel",
    "No application yet.": "Zatím žádná žádost.",
    "No free time nearby: try another week or fewer participants.":
        "Poblíž není volno: zkuste jiný týden nebo méně účastníků.",
    "No live rooms now.": "Teď neběží žádná místnost.",
    "No media node is registered (multipoint seed registers the local one).":
        "Není registrován žádný mediální uzel (multipoint seed zaregistruje místní).",
    "No programme yet.": "Zatím žádný program.",
    "No room units yet: import a CSV.": "Zatím žádné jednotky: naimportujte CSV.",
    "No test call yet.": "Zatím žádný testovací hovor.", "Nobody is connected.": "Nikdo není připojen.",
    "Node": "Uzel", "Not allowed": "Nepovoleno", "Nothing is overdue.": "Nic není po termínu.",
    "Nothing recorded yet.": "Zatím nic nezaznamenáno.", "Number of meetings": "Počet schůzek",
    "Object": "Objekt", "Occurrences": "Výskyty", "Older entries": "Starší záznamy",
    "On days (weekly)": "Ve dnech (týdně)",
    "Open this link on the room unit itself: a passing test call moves the unit to “tested”.":
        "Otevřete tento odkaz přímo na jednotce: úspěšný testovací hovor ji přesune do stavu „otestováno“.",
    "Operating": "Provoz", "Organisation": "Organizace", "Overdue items": "Položky po termínu",
    "Participant": "Účastník", "Participants": "Účastníci", "Participants of": "Účastníci místnosti",
    "Password": "Heslo", "Paused videos": "Pozastavená videa",
    "Please correct the marked fields.": "Opravte prosím označená pole.", "Pool": "Celková kapacita",
    "Pool or organisation": "Celek nebo organizace", "Preview": "Náhled", "Price": "Cena", "Print": "Tisk",
    "Printable report": "Zpráva k tisku", "Priority": "Priorita", "Problems": "Problémy",
    "Programme": "Program", "Programmes and applications": "Programy a žádosti",
    "Record an application": "Zapsat žádost", "Record application": "Zapsat žádost",
    "Recordings": "Nahrávky", "Refresh every 3 s": "Obnovovat každé 3 s", "Region": "Kraj",
    "Remove": "Odebrat", "Remove this participant from the call?": "Odebrat účastníka z hovoru?",
    "Repeat": "Opakování", "Repeats": "Opakování", "Role": "Role", "Rollout": "Zavádění",
    "Rollout dashboard": "Přehled zavádění", "Rollout of room video units: report":
        "Zavádění videokonferenčních jednotek: zpráva",
    "Rollout report": "Zpráva o zavádění", "Room": "Místnost", "Room units": "Videokonferenční jednotky",
    "Rooms": "Místnosti", "Round trip": "Odezva", "Save": "Uložit", "Save changes": "Uložit změny",
    "Self-test": "Autotest", "Self-test link for this unit": "Odkaz na autotest této jednotky",
    "Send by e-mail": "Poslat e-mailem", "Serial number": "Výrobní číslo",
    "Share of budget": "Podíl rozpočtu",
    "Sign in": "Přihlásit se", "Sign out": "Odhlásit se", "Site": "Umístění",
    "Skip Czech public holidays": "Vynechat státní svátky", "Skip to content": "Přejít na obsah",
    "Spending against budget": "Čerpání rozpočtu", "Spent (ordered units)": "Vyčerpáno (objednané jednotky)",
    "Start": "Začátek", "Start recording": "Spustit nahrávání", "Status": "Stav",
    "Status pipeline": "Postup stavů", "Stop recording": "Zastavit nahrávání", "Submitted": "Podáno",
    "Summary": "Souhrn",
    "The account is locked after repeated wrong passwords. Try again later or ask the operator.":
        "Účet je po opakovaně špatném hesle zamčen. Zkuste to později nebo se obraťte na operátora.",
    "The booking is saved; invitations are on their way.": "Rezervace je uložena, pozvánky se odesílají.",
    "The calendar needs JavaScript; the list of bookings is in the API at /api/v1/bookings.":
        "Kalendář potřebuje JavaScript; seznam rezervací je v API na /api/v1/bookings.",
    "The file is too large (2 MiB at most).": "Soubor je příliš velký (nejvýše 2 MiB).",
    "The organisation is its code or exact name; the status one of the pipeline's (empty: requested); "
    "dates as YYYY-MM-DD. Nothing is written until the preview has no errors.":
        "Organizace je její kód nebo přesný název; stav jeden ze stavů postupu (prázdný: požadováno); "
        "data jako RRRR-MM-DD. Nic se nezapíše, dokud náhled obsahuje chyby.",
    "The room or participant is no longer there.": "Místnost nebo účastník už neexistuje.",
    "The whole pool": "Celá kapacita",
    "This does not fit in the capacity left.": "Do zbývající kapacity se to nevejde.",
    "Title": "Název", "Units": "Jednotky", "Units per region": "Jednotky podle krajů",
    "Units per region and status": "Jednotky podle krajů a stavů", "Units per status": "Jednotky podle stavu",
    "Units requested": "Požadované jednotky", "Unlock": "Odemknout", "User created:": "Uživatel založen:",
    "User name": "Uživatelské jméno", "Users": "Uživatelé", "Verdict": "Výsledek", "What": "Co",
    "When": "Kdy", "When (UTC)": "Kdy (UTC)", "Who": "Kdo", "Worker": "Proces",
    "Wrong name or password.": "Špatné jméno nebo heslo.",
    "Your role does not give access to this page.": "Vaše role k této stránce nemá přístup.",
    "all": "vše", "cancelled": "zrušeno", "create": "založit", "disabled": "vypnuto", "due": "termín",
    "errors": "chyby", "failed": "neprošel", "free": "volné", "locked": "zamčeno", "needs": "potřebuje",
    "new": "nových", "no": "ne", "outside regions": "mimo kraje", "overdue": "po termínu",
    "passed": "prošel", "recording": "nahrává se", "room units": "jednotek", "rows": "řádky",
    "since": "od", "units": "jednotek", "update": "aktualizovat", "updated": "aktualizováno", "yes": "ano",
    "…or a file": "…nebo soubor", "…or last day": "…nebo poslední den",
    # Field errors
    "A repeating meeting needs a number of meetings or an end date.":
        "Opakovaná schůzka potřebuje počet schůzek nebo poslední den.",
    "A whole number, 0 or more.": "Celé číslo, 0 nebo víc.", "A number from 1 to 400.": "Číslo od 1 do 400.",
    "At least 10 characters.": "Alespoň 10 znaků.", "At most 200 characters.": "Nejvýše 200 znaků.",
    "Choose a role.": "Zvolte roli.", "Choose how it repeats.": "Zvolte opakování.",
    "Choose the organisation that books.": "Zvolte organizaci, která rezervuje.",
    "Enter a date.": "Zadejte datum.", "Enter a date as YYYY-MM-DD.": "Zadejte datum jako RRRR-MM-DD.",
    "Enter a time as HH:MM.": "Zadejte čas jako HH:MM.",
    "Enter a whole number of crowns, 0 or more.": "Zadejte celé číslo v korunách, 0 nebo víc.",
    "Expect at least one participant.": "Počítejte alespoň s jedním účastníkem.",
    "Give either a number of meetings or an end date, not both.":
        "Zadejte buď počet schůzek, nebo poslední den, ne obojí.",
    "Give the meeting a title.": "Zadejte název schůzky.", "Not an e-mail address:": "Není e-mailová adresa:",
    "Required.": "Povinné.", "The end must be after the start.": "Konec musí být po začátku.",
    "The last day is before the first meeting.": "Poslední den je před první schůzkou.",
    "This role belongs to an organisation.": "Tato role patří k organizaci.",
    "endpoint_exists": "Jednotka s tímto výrobním číslem už existuje.",
    "New room unit": "Nová jednotka", "Price (CZK)": "Cena (Kč)",
    "The passwords differ.": "Hesla se liší.", "Wrong password.": "Špatné heslo.",
    "Your account": "Váš účet", "Change password": "Změnit heslo",
    "Current password": "Současné heslo", "New password": "Nové heslo",
    "New password again": "Nové heslo znovu", "The password is changed.": "Heslo je změněno.",
    "Media workers of this node": "Mediální procesy tohoto uzlu", "State": "Stav",
    "Units used / capacity": "Jednotky použité / kapacita", "CPU": "CPU",
    "Packets/s": "Pakety/s", "Restarts": "Restarty", "running": "běží", "starting": "startuje",
}


def translator(lang: str) -> Callable[[str], str]:
    table = CS if lang == "cs" else CODES_EN

    def translate(text: str) -> str:
        found = table.get(text)
        if found is not None:
            return found
        head, sep, tail = text.partition(": ")
        if sep and head + ":" in table:  # "Not an e-mail address: x@" keeps its detail
            return f"{table[head + ':']} {tail}"
        return text

    return translate

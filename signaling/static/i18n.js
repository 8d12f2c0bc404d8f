// Czech by default, English available: ?lang=en, or the switch on the page (remembered).
const STRINGS = {
  cs: {
    "selftest.title": "Test připojení",
    "selftest.intro": "Ověří kameru, mikrofon a síť: váš obraz a zvuk projdou serverem a vrátí se zpět. Použijte sluchátka, ať nevzniká ozvěna.",
    "selftest.start": "Spustit test",
    "selftest.unit": "Zařízení",
    "selftest.again": "Spustit znovu",
    "selftest.local": "Vaše kamera",
    "selftest.remote": "Obraz vrácený serverem",
    "selftest.running": "Test běží…",
    "selftest.pass": "Test prošel: obraz i zvuk se vracejí v pořádku.",
    "selftest.fail": "Zjištěny problémy:",
    "selftest.saved": "Výsledek byl uložen.",
    "selftest.notsaved": "Výsledek se nepodařilo uložit.",
    "fig.rtt": "Doba odezvy",
    "fig.loss": "Ztráta paketů",
    "fig.bitrate": "Datový tok (příjem)",
    "fig.frames": "Dekódované snímky",
    "fig.audio": "Přijaté zvukové pakety",
    "fig.mic": "Hlasitost mikrofonu",
    "problem.no_media": "Kameru nebo mikrofon nelze použít (povolte přístup v prohlížeči).",
    "problem.signaling": "Nepodařilo se spojit se serverem.",
    "problem.signaling_closed": "Spojení se serverem se přerušilo dřív, než server odpověděl: zkuste se připojit znovu.",
    "problem.redirect_loop": "Server, na kterém místnost běží, se nepodařilo najít (místnost se nejspíš právě přesouvá): zkuste se připojit za chvíli.",
    "problem.video_not_returned": "Obraz se ze serveru nevrací.",
    "problem.audio_not_returned": "Zvuk se ze serveru nevrací.",
    "problem.video_not_received": "Server od vás nedostává obraz.",
    "problem.audio_not_received": "Server od vás nedostává zvuk.",
    "problem.packet_loss": "Vysoká ztráta paketů.",
    "problem.high_latency": "Vysoká doba odezvy sítě.",
    "problem.low_bitrate": "Příliš nízký datový tok.",
    "problem.connection_failed": "Mediální spojení se nepodařilo navázat.",
    "problem.link_expired": "Platnost odkazu na test vypršela: načtěte stránku znovu.",
    "problem.link_invalid": "Odkaz na test je neplatný: vyžádejte si nový.",
    "problem.server_busy": "Server je právě vytížen: zkuste test za několik minut.",
    "call.title": "Videokonference",
    "call.prejoin": "Než se připojíte, zkontrolujte kameru a mikrofon.",
    "call.name": "Vaše jméno",
    "call.join": "Připojit se",
    "call.leave": "Odejít",
    "call.mute": "Ztlumit",
    "call.unmute": "Zapnout mikrofon",
    "call.camera_off": "Vypnout kameru",
    "call.camera_on": "Zapnout kameru",
    "call.share": "Sdílet obrazovku",
    "call.stop_share": "Ukončit sdílení",
    "call.chat": "Chat",
    "call.send": "Odeslat",
    "call.you": "Vy",
    "call.other_codec": "obraz v jiném kodeku, zde se nezobrazí",
    "call.reconnecting": "Obnovuji spojení…",
    "call.not_reconnected": "Spojení se nepodařilo obnovit. Do hovoru se vrátíte znovunačtením stránky.",
    "call.media_failed": "Obraz a zvuk se opakovaně nepodařilo propojit se serverem: síť, ve které jste, je nejspíš blokuje (firewall). Stránka to zkouší dál. Spusťte test připojení a jeho výsledek předejte správci své sítě.",
    "call.media_failed_turn": "Síť možná blokuje i náhradní cestu přes přenosový server (TURN).",
    "call.run_selftest": "Spustit test připojení",
    "call.left": "Opustili jste hovor.",
    "call.removed": "Moderátor vás z hovoru odebral.",
    // Why the room closed under the call (docs/protocol.md, "closed").
    "closed.meeting_over": "Čas schůzky skončil: hovor byl ukončen.",
    "closed.booking_cancelled": "Tato schůzka byla zrušena: hovor byl ukončen.",
    "closed.booking_displaced": "Tento termín schůzky musel ustoupit mimořádné události IZS: hovor byl ukončen.",
    "closed.bridge_inactive": "Tato stálá místnost byla vypnuta: hovor byl ukončen.",
    "closed.room_closed": "Místnost byla uzavřena: hovor byl ukončen.",
    "closed.closed_by_operator": "Místnost uzavřel operátor: hovor byl ukončen.",
    "call.muted_by_host": "Moderátor vám ztlumil mikrofon.",
    "call.unmute_request": "Moderátor vás žádá o zapnutí mikrofonu.",
    "call.locked": "Místnost je uzamčena.",
    "call.lock": "Zamknout místnost",
    "call.unlock": "Odemknout místnost",
    "call.remove": "Odebrat",
    "call.ask_unmute": "Požádat o zapnutí mikrofonu",
    "call.participants": "Účastníci",
    "call.composite": "Složený obraz",
    "call.mode_mixed": "Složený obraz",
    "call.mode_forwarded": "Samostatné obrazy",
    "call.record": "Nahrávat",
    "call.stop_recording": "Zastavit nahrávání",
    "call.recording": "● Nahrává se",
    // The server's error codes (docs/protocol.md, "Errors"; the scheduler's refusals of
    // a join), for errorText.
    "code.bad_token": "Odkaz na hovor je neplatný: vyžádejte si nový.",
    "code.token_expired": "Platnost odkazu na hovor vypršela: vyžádejte si nový.",
    "code.room_not_found": "K tomuto odkazu žádný hovor není.",
    "code.room_locked": "Místnost je uzamčena: moderátor teď nikoho dalšího nepouští.",
    "code.not_admitted": "Do hovoru teď nelze vstoupit.",
    "code.room_not_open": "Místnost teď není otevřená: připojte se v čase schůzky.",
    "code.room_not_open.opens_at": "Místnost teď není otevřená: připojit se lze {opens_at}.",
    "code.meeting_over": "Tato schůzka už skončila.",
    "code.booking_cancelled": "Tato schůzka byla zrušena.",
    "code.booking_displaced": "Tento termín schůzky musel ustoupit mimořádné události IZS.",
    "code.bridge_inactive": "Tato stálá místnost je vypnutá.",
    "code.no_worker": "Pro hovor teď není volný mediální server: zkuste to za několik minut.",
    "code.worker_full": "Mediální server této místnosti je plně vytížen: zkuste to za chvíli.",
    "code.room_unreachable": "Server, na kterém místnost běží, není dostupný: zkuste to za chvíli.",
    "code.capacity_full": "Server je plně vytížen: zkuste to za několik minut.",
    "code.too_many_pending_joins": "Právě se připojuje příliš mnoho účastníků: zkuste to za chvíli.",
    "code.rate_limited": "Příliš mnoho pokusů v krátké době: zkuste to za chvíli.",
    "code.rate_limited.retry_after": "Příliš mnoho pokusů v krátké době: zkuste to znovu za {retry_after} s.",
    "code.answer_timeout": "Obraz a zvuk se nepodařilo včas propojit se serverem.",
    "code.resume_failed": "Místo v hovoru se nepodařilo převzít zpět: stránka se připojí znovu.",
    "code.recording_failed": "Nahrávání neběží: server nemůže záznam zapisovat (plný disk?). Hovor pokračuje.",
    "code.ice_restart_failed": "Mediální spojení se nepodařilo obnovit: stránka se připojí znovu.",
    "code.forbidden": "To může jen moderátor.",
    "code.unknown_participant": "Tento účastník už v hovoru není.",
    "code.worker_gone": "Mediální server hovoru neběží: zkuste to za chvíli.",
    "code.internal_error": "Server tento požadavek nezpracoval: zkuste to znovu.",
    "code.unsupported_version": "Stránka je zastaralá: načtěte ji znovu.",
    "code.bad_json": "Server zprávě stránky nerozuměl: načtěte stránku znovu.",
    "code.bad_message": "Server zprávě stránky nerozuměl: načtěte stránku znovu.",
    "code.unknown_type": "Server zprávě stránky nerozuměl: načtěte stránku znovu.",
    "code.too_large": "Zpráva stránky byla pro server příliš dlouhá.",
    "code.already_joined": "Stránka a server se rozešly: načtěte stránku znovu.",
    "code.not_joined": "Stránka a server se rozešly: načtěte stránku znovu.",
    "code.stale_answer": "Stránka a server se rozešly: načtěte stránku znovu.",
    "code.unexpected_answer": "Stránka a server se rozešly: načtěte stránku znovu.",
    "code.bad_sdp": "Server odmítl nastavení médií z tohoto prohlížeče: načtěte stránku znovu, případně zkuste jiný prohlížeč.",
    "error": "Chyba",
    "when.today": "dnes od {time}",
    "when.day": "{date} od {time}",
    "lang": "English",
  },
  en: {
    "selftest.title": "Connection test",
    "selftest.intro": "Checks your camera, microphone and network: your picture and sound go through the server and come back. Use headphones to avoid echo.",
    "selftest.start": "Start the test",
    "selftest.unit": "Room unit",
    "selftest.again": "Run again",
    "selftest.local": "Your camera",
    "selftest.remote": "Picture returned by the server",
    "selftest.running": "Test running…",
    "selftest.pass": "Test passed: picture and sound come back fine.",
    "selftest.fail": "Problems found:",
    "selftest.saved": "The result was saved.",
    "selftest.notsaved": "The result could not be saved.",
    "fig.rtt": "Round-trip time",
    "fig.loss": "Packet loss",
    "fig.bitrate": "Bitrate (receiving)",
    "fig.frames": "Frames decoded",
    "fig.audio": "Audio packets received",
    "fig.mic": "Microphone level",
    "problem.no_media": "The camera or microphone cannot be used (allow access in the browser).",
    "problem.signaling": "Could not reach the server.",
    "problem.signaling_closed": "The connection to the server was cut before the server answered: try joining again.",
    "problem.redirect_loop": "The server the room runs on could not be found (the room is most likely being moved): try joining again shortly.",
    "problem.video_not_returned": "The picture does not come back from the server.",
    "problem.audio_not_returned": "The sound does not come back from the server.",
    "problem.video_not_received": "The server does not receive your picture.",
    "problem.audio_not_received": "The server does not receive your sound.",
    "problem.packet_loss": "High packet loss.",
    "problem.high_latency": "High network round-trip time.",
    "problem.low_bitrate": "Bitrate too low.",
    "problem.connection_failed": "The media connection could not be established.",
    "problem.link_expired": "The test link has expired: reload the page.",
    "problem.link_invalid": "The test link is not valid: ask for a new one.",
    "problem.server_busy": "The server is busy right now: try the test again in a few minutes.",
    "call.title": "Videoconference",
    "call.prejoin": "Check your camera and microphone before you join.",
    "call.name": "Your name",
    "call.join": "Join",
    "call.leave": "Leave",
    "call.mute": "Mute",
    "call.unmute": "Unmute",
    "call.camera_off": "Camera off",
    "call.camera_on": "Camera on",
    "call.share": "Share screen",
    "call.stop_share": "Stop sharing",
    "call.chat": "Chat",
    "call.send": "Send",
    "call.you": "You",
    "call.other_codec": "video in another codec, not shown here",
    "call.reconnecting": "Reconnecting…",
    "call.not_reconnected": "The connection could not be restored. Reload the page to join the call again.",
    "call.media_failed": "Picture and sound failed to connect to the server again: the network you are on most likely blocks them (a firewall). The page keeps trying. Run the connection test and pass its result to your network administrator.",
    "call.media_failed_turn": "The network may also block the fallback route through the relay server (TURN).",
    "call.run_selftest": "Run the connection test",
    "call.left": "You left the call.",
    "call.removed": "The host removed you from the call.",
    "closed.meeting_over": "The meeting's time is over: the call has ended.",
    "closed.booking_cancelled": "This meeting was cancelled: the call has ended.",
    "closed.booking_displaced": "This occurrence of the meeting gave way to an IZS emergency: the call has ended.",
    "closed.bridge_inactive": "This standing room was switched off: the call has ended.",
    "closed.room_closed": "The room was closed: the call has ended.",
    "closed.closed_by_operator": "The operator closed the room: the call has ended.",
    "call.muted_by_host": "The host muted your microphone.",
    "call.unmute_request": "The host asks you to unmute.",
    "call.locked": "The room is locked.",
    "call.lock": "Lock room",
    "call.unlock": "Unlock room",
    "call.remove": "Remove",
    "call.ask_unmute": "Ask to unmute",
    "call.participants": "Participants",
    "call.composite": "Composite picture",
    "call.mode_mixed": "Composite picture",
    "call.mode_forwarded": "Separate pictures",
    "call.record": "Record",
    "call.stop_recording": "Stop recording",
    "call.recording": "● Recording",
    "code.bad_token": "The call link is not valid: ask for a new one.",
    "code.token_expired": "The call link has expired: ask for a new one.",
    "code.room_not_found": "There is no call for this link.",
    "code.room_locked": "The room is locked: the host is not letting anyone else in now.",
    "code.not_admitted": "The call cannot be joined now.",
    "code.room_not_open": "The room is not open now: join at the time of the meeting.",
    "code.room_not_open.opens_at": "The room is not open now: you can join {opens_at}.",
    "code.meeting_over": "This meeting is over.",
    "code.booking_cancelled": "This meeting was cancelled.",
    "code.booking_displaced": "This occurrence of the meeting gave way to an IZS emergency.",
    "code.bridge_inactive": "This standing room is switched off.",
    "code.no_worker": "No media server is free for the call now: try again in a few minutes.",
    "code.worker_full": "This room's media server is full: try again shortly.",
    "code.room_unreachable": "The server the room runs on cannot be reached: try again shortly.",
    "code.capacity_full": "The server is full: try again in a few minutes.",
    "code.too_many_pending_joins": "Too many participants are connecting right now: try again shortly.",
    "code.rate_limited": "Too many attempts in a short time: try again shortly.",
    "code.rate_limited.retry_after": "Too many attempts in a short time: try again in {retry_after} s.",
    "code.answer_timeout": "Picture and sound did not connect to the server in time.",
    "code.resume_failed": "The place in the call could not be taken back: the page joins again.",
    "code.recording_failed": "Not recording: the server cannot write the recording (a full disk?). The call goes on.",
    "code.ice_restart_failed": "The media connection could not be restored: the page joins again.",
    "code.forbidden": "Only the host can do this.",
    "code.unknown_participant": "This participant is no longer in the call.",
    "code.worker_gone": "The call's media server is not running: try again shortly.",
    "code.internal_error": "The server did not handle this request: try again.",
    "code.unsupported_version": "This page is out of date: reload it.",
    "code.bad_json": "The server did not understand the page: reload the page.",
    "code.bad_message": "The server did not understand the page: reload the page.",
    "code.unknown_type": "The server did not understand the page: reload the page.",
    "code.too_large": "The page's message was too long for the server.",
    "code.already_joined": "The page and the server are out of step: reload the page.",
    "code.not_joined": "The page and the server are out of step: reload the page.",
    "code.stale_answer": "The page and the server are out of step: reload the page.",
    "code.unexpected_answer": "The page and the server are out of step: reload the page.",
    "code.bad_sdp": "The server refused this browser's media settings: reload the page, or try another browser.",
    "error": "Error",
    "when.today": "today from {time}",
    "when.day": "on {date} from {time}",
    "lang": "Čeština",
  },
};

function chooseLanguage() {
  const fromQuery = new URLSearchParams(location.search).get("lang");
  if (fromQuery && STRINGS[fromQuery]) return fromQuery;
  const saved = localStorage.getItem("multipoint.lang");
  return saved && STRINGS[saved] ? saved : "cs";
}

export let lang = chooseLanguage();

// ``values`` fill the text's {name}s.
export function t(key, values = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.cs[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (all, name) => values[name] ?? all);
}

// The details some errors carry (docs/protocol.md, "Errors"), as the texts show them;
// null for a value the page cannot read (the text without it is shown then).
const DETAILS = {
  retry_after: (seconds) => (Number.isFinite(seconds) && seconds >= 0 ? String(Math.max(1, Math.ceil(seconds))) : null),
  opens_at: (iso) => czechTime(iso),
};

// A server's error message (docs/protocol.md, "Errors") in the page's language: the
// page's own text for every code it knows, with the error's detail where the server
// sent one (when the room opens, how long to wait: the server's English text said so);
// the server's text, in English, only for a code it does not (a server newer than the page).
export function errorText(error) {
  const { code, message } = error;
  if (!code || !(`code.${code}` in STRINGS.cs)) return message;
  for (const [field, show] of Object.entries(DETAILS)) {
    const key = `code.${code}.${field}`;
    const value = key in STRINGS.cs && error[field] != null ? show(error[field]) : null;
    if (value !== null) return t(key, { [field]: value });
  }
  return t(`code.${code}`);
}

// A time the server sent (ISO 8601) as the officials read it: in Czech time, whatever
// zone the computer is set to, in the page's language, and with its date unless it is
// today. Null if it is no time.
function czechTime(iso) {
  const at = new Date(iso);
  if (typeof iso !== "string" || Number.isNaN(at.getTime())) return null;
  const locale = lang === "cs" ? "cs-CZ" : "en-GB";
  const zone = "Europe/Prague";
  // Czech writes 9:05, British English 09:05 (Chrome's en-GB "numeric" hour gave 0:12).
  const hour = lang === "cs" ? "numeric" : "2-digit";
  const time = at.toLocaleTimeString(locale, { timeZone: zone, hour, minute: "2-digit" });
  const day = (date) => date.toLocaleDateString("en-CA", { timeZone: zone });  // YYYY-MM-DD
  const now = new Date();
  if (day(at) === day(now)) return t("when.today", { time });
  const year = day(at).slice(0, 4) !== day(now).slice(0, 4) ? { year: "numeric" } : {};
  const date = at.toLocaleDateString(locale, { timeZone: zone, day: "numeric", month: "long", ...year });
  return t("when.day", { date, time });
}

export function applyTranslations(root = document) {
  document.documentElement.lang = lang;
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
}

export function installLanguageSwitch(button, onChange) {
  button.textContent = t("lang");
  button.addEventListener("click", () => {
    lang = lang === "cs" ? "en" : "cs";
    localStorage.setItem("multipoint.lang", lang);
    button.textContent = t("lang");
    applyTranslations();
    onChange?.();
  });
}

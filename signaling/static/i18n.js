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
    "error": "Chyba",
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
    "error": "Error",
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

export function t(key) {
  return STRINGS[lang][key] ?? STRINGS.cs[key] ?? key;
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

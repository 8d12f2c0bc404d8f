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
    "call.screen_of": "{name} – obrazovka",
    "call.chat": "Chat",
    "call.send": "Odeslat",
    "call.chat_text": "Zpráva do chatu",
    "call.video": "Obraz účastníků",
    "call.you": "Vy",
    "call.other_codec": "obraz v jiném kodeku, zde se nezobrazí",
    "call.reconnecting": "Obnovuji spojení…",
    "call.not_reconnected": "Spojení se nepodařilo obnovit. Zkuste se připojit znovu.",
    "call.join_again": "Připojit se znovu",
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
    // The guide (/guide, signaling/static/guide.js): {name}s quote the pages' own labels.
    "guide.title": "Návod pro účastníky",
    "guide.link": "Návod pro účastníky",
    "guide.intro": "Jak se připojit k videokonferenci z prohlížeče nebo ze sálového zařízení a co dělat, když něco nefunguje.",
    "guide.join.title": "Připojení z pozvánky",
    "guide.join.link": "Otevřete odkaz z pozvánky v prohlížeči.",
    "guide.join.allow": "Prohlížeč se zeptá, zda stránka smí použít kameru a mikrofon: povolte to. Stránka pak ukáže náhled vaší kamery a pod ním hlasitost mikrofonu.",
    "guide.join.name": "Do pole {name} napište své jméno (uvidí ho ostatní; odkaz, který vás jmenuje, ho vyplní sám a vy ho můžete změnit) a stiskněte {join}.",
    "guide.join.denied": "Když jste přístup zamítli nebo kameru používá jiný program, stránka napíše {no_media} Přístup povolíte v nastavení webu (ikona vlevo v adresním řádku prohlížeče) a stránku pak načtete znovu.",
    "guide.join.when": "Naplánovaná schůzka je otevřená jen v její čas: dřív stránka napíše, kdy se lze připojit. Když platnost odkazu vyprší, vyžádejte si nový od toho, kdo vás pozval.",
    "guide.selftest.title": "Test připojení",
    "guide.selftest.what": "Před první schůzkou si ověřte kameru, mikrofon a síť: na stránce testu stiskněte {start} a povolte kameru a mikrofon. Váš obraz a zvuk projdou serverem a vrátí se zpět; asi po deseti sekundách stránka napíše, zda test prošel, a když ne, co nefunguje. Použijte sluchátka, ať nevzniká ozvěna. Neprojde-li test kvůli síti, předejte jeho výsledek správci své sítě.",
    "guide.call.title": "V hovoru",
    "guide.call.mute": "{mute} vypne váš mikrofon, {unmute} ho zase zapne. Ostatní u vašeho jména vidí 🔇.",
    "guide.call.camera": "{camera_off} kameru vypne (ostatní váš obraz neuvidí), {camera_on} ji zase zapne.",
    "guide.call.share": "{share}: prohlížeč nabídne obrazovku, okno nebo kartu; ostatní je uvidí jako další obraz s vaším jménem. Sdílení ukončíte tlačítkem {stop_share}. Prohlížeče v telefonech obrazovku sdílet neumějí: tam tlačítko není.",
    "guide.call.tiles": "Kliknutím na obraz ho zvětšíte, dalším kliknutím vrátíte. Vpravo jsou {participants} a {chat}.",
    "guide.call.leave": "{leave} vás z hovoru odpojí. Vrátíte se tlačítkem {join_again} (nebo znovu otevřením odkazu z pozvánky).",
    "guide.host.title": "Co může moderátor",
    "guide.host.people": "Kdo se připojil odkazem moderátora, má v seznamu účastníků u každého z nich tlačítka {mute}, {ask_unmute} (zapnout mikrofon může jen účastník sám), {remove} a {mode_mixed}: účastník pak dostává jeden složený obraz a jeden smíchaný zvuk, což uleví slabému připojení; {mode_forwarded} vrátí obrazy jednotlivých účastníků. Sálové zařízení má složený obraz vždy.",
    "guide.host.room": "Nad hovorem má {lock} (nikdo další se nepřipojí, dokud místnost neodemkne tlačítkem {unlock}; mezitím všichni vidí {locked}) a {record} (ukončí {stop_recording}); během nahrávání všichni vidí {recording}.",
    "guide.network.title": "Když síť nestačí",
    "guide.network.reconnecting": "Při výpadku sítě stránka napíše {reconnecting} a spojení obnoví sama: počkejte. Když se to nepodaří ani za dvě a půl minuty, napíše {not_reconnected}",
    "guide.network.blocked": "Když se obraz a zvuk opakovaně nespojí se serverem (síť je nejspíš blokuje), stránka to zkouší dál a nabídne odkaz {run_selftest}: výsledek testu předejte správci své sítě.",
    "guide.network.weak": "Na slabém připojení stránka sama posílá i přijímá menší obraz. Pomůže také {camera_off}, nebo požádejte moderátora o {mode_mixed}; stejně funguje odkaz z pozvánky, na jehož konec připíšete &mode=mixed.",
    "guide.unit.title": "Připojení ze sálového zařízení",
    "guide.unit.room": "MÍSTNOST",
    "guide.unit.dial": "Sálový videokonferenční systém vytočí SIP adresu {sip}. MÍSTNOST je název místnosti z odkazu na hovor (část za /call/, například mtg-…); server je tentýž jako v odkazu, pokud správce neuvede jiný. Připojit se lze jen v čase schůzky; zařízení dostává jeden složený obraz a smíchaný zvuk a ostatní ho vidí v seznamu účastníků pod jeho názvem.",
    "guide.unit.pin": "Uvádí-li schůzka číslo a PIN pro sálová zařízení, vytočte sip:ČÍSLO@server a PIN zadejte na ovladači, zakončený znakem #.",
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
    "call.screen_of": "{name} – screen",
    "call.chat": "Chat",
    "call.send": "Send",
    "call.chat_text": "Chat message",
    "call.video": "Participants' video",
    "call.you": "You",
    "call.other_codec": "video in another codec, not shown here",
    "call.reconnecting": "Reconnecting…",
    "call.not_reconnected": "The connection could not be restored. Try joining again.",
    "call.join_again": "Join again",
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
    "guide.title": "Guide for participants",
    "guide.link": "Guide for participants",
    "guide.intro": "How to join a videoconference from a browser or from a room unit, and what to do when something does not work.",
    "guide.join.title": "Joining from an invitation",
    "guide.join.link": "Open the invitation's link in a browser.",
    "guide.join.allow": "The browser asks whether the page may use your camera and microphone: allow it. The page then shows your camera's preview and, below it, your microphone's level.",
    "guide.join.name": "Type your name (the others see it; a link that names you fills it in, and you can change it) into {name} and press {join}.",
    "guide.join.denied": "If you refused access, or another program uses the camera, the page says {no_media} Allow access in the site's settings (the icon at the left of the browser's address bar), then reload the page.",
    "guide.join.when": "A scheduled meeting is open only at its time: earlier, the page says when you can join. If the link has expired, ask whoever invited you for a new one.",
    "guide.selftest.title": "Connection test",
    "guide.selftest.what": "Before your first meeting, check your camera, microphone and network: on the test page press {start} and allow the camera and microphone. Your picture and sound go through the server and come back; after about ten seconds the page says whether the test passed, and if not, what does not work. Use headphones to avoid echo. If the test fails because of the network, pass its result to your network administrator.",
    "guide.call.title": "In the call",
    "guide.call.mute": "{mute} turns your microphone off, {unmute} turns it back on. The others see 🔇 beside your name.",
    "guide.call.camera": "{camera_off} turns your camera off (the others no longer see you), {camera_on} turns it back on.",
    "guide.call.share": "{share}: the browser offers a screen, a window or a tab; the others see it as another picture with your name. {stop_share} ends sharing. Phones' browsers cannot share a screen: there is no such button there.",
    "guide.call.tiles": "Click a picture to make it big, click again to make it small. On the right are the {participants} and the {chat}.",
    "guide.call.leave": "{leave} takes you out of the call. To come back, press {join_again} (or open the invitation's link again).",
    "guide.host.title": "What the host can do",
    "guide.host.people": "Whoever joined with a host link has buttons beside each participant in the list: {mute}, {ask_unmute} (only participants can unmute themselves), {remove} and {mode_mixed}: the participant then gets one composed picture and one mixed sound, which eases a weak link; {mode_forwarded} brings back each participant's own picture. A room unit always gets the composed picture.",
    "guide.host.room": "Above the call the host has {lock} (nobody else can join until {unlock}; meanwhile everybody sees {locked}) and {record} (ended by {stop_recording}); while recording, everybody sees {recording}.",
    "guide.network.title": "When the network is weak",
    "guide.network.reconnecting": "When the network drops, the page says {reconnecting} and reconnects by itself: wait. If it has not managed within two and a half minutes, it says {not_reconnected}",
    "guide.network.blocked": "If picture and sound keep failing to connect to the server (the network most likely blocks them), the page keeps trying and offers a link, {run_selftest}: pass the test's result to your network administrator.",
    "guide.network.weak": "On a weak link the page sends and receives a smaller picture by itself. Turning your camera off ({camera_off}) helps too, or ask the host for {mode_mixed}; the invitation's link with &mode=mixed added at its end does the same.",
    "guide.unit.title": "Joining from a room unit",
    "guide.unit.room": "ROOM",
    "guide.unit.dial": "A room video system dials the SIP address {sip}. ROOM is the room's name from the call link (the part after /call/, for example mtg-…); the server is the one in the link unless your administrator names another. It can join only at the meeting's time; the unit gets one composed picture and the mixed sound, and the others see it in the participant list by its name.",
    "guide.unit.pin": "If the meeting gives a number and a PIN for room units, dial sip:NUMBER@server and key in the PIN on the remote, followed by #.",
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

// Every element with data-i18n, the page's <title> too; data-i18n-suffix is kept after
// the text (the title's " – ROOM"). data-i18n-label: the name a screen reader says for
// an element without text of its own (aria-label).
export function applyTranslations(root = document) {
  document.documentElement.lang = lang;
  for (const element of root.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n) + (element.dataset.i18nSuffix ?? "");
  }
  for (const element of root.querySelectorAll("[data-i18n-label]")) {
    element.setAttribute("aria-label", t(element.dataset.i18nLabel));
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

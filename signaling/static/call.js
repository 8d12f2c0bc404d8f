// The call page an official opens from an invitation: pre-join check, then the meeting.
import { applyTranslations, errorText, installLanguageSwitch, lang, t } from "./i18n.js";
import { MultipointSession } from "./multipoint.js";

const params = new URLSearchParams(location.search);
const token = params.get("token") ?? "";
const $ = (selector) => document.querySelector(selector);
// Refusals of a join that every later attempt would get too (docs/protocol.md, "Errors"):
// a page that lost its call stops joining again at once and says why, instead of
// "Reconnecting…" for its 20 attempts (about 2.5 minutes) and then "could not be
// restored", as if the network were at fault. Any other refusal is worth another try:
// a full worker or node (capacity_full, worker_full, no_worker), a node or worker on its
// way back (room_unreachable, worker_gone), too many joins at once (rate_limited,
// too_many_pending_joins), the server's own failure (internal_error), an unknown code.
const FINAL_ERRORS = new Set([
  "bad_token", "token_expired", "room_not_found", "room_locked", "forbidden",  // the link
  // The scheduler: the meeting is not yet on or over, cancelled, gave way to an IZS
  // emergency, or its standing room was switched off.
  "not_admitted", "room_not_open", "meeting_over", "booking_cancelled", "booking_displaced",
  "bridge_inactive",
  // This page's join itself (an out-of-date page): sent again, refused again.
  "unsupported_version", "bad_json", "bad_message", "unknown_type", "too_large",
]);
// Why the server closed the room under the call (docs/protocol.md, "closed") when joining
// again would only be refused for the same reason, or the room was ended on purpose
// (room_closed, closed_by_operator): the call ends at once and says it in the page's
// language. It used to be taken for a lost network: "Reconnecting…", a resume refused,
// then a join refused (after the meeting's end: "join at the time of the meeting"). A
// room moved to another node (room_moved) or a meeting moved to another time
// (rescheduled) is joined again, as is a close this page does not know (a newer server):
// the join goes to the room's node, or its refusal says why and when.
const CLOSED_FINAL = new Set(["meeting_over", "booking_cancelled", "booking_displaced",
                              "bridge_inactive", "room_closed", "closed_by_operator"]);
// Attempts the page makes to join again after a lost call (waits of 1, 2, 4, then 8 s
// between them: about two and a half minutes) before it says the call is lost.
const REJOIN_ATTEMPTS = 20;
// The longest wait a refusal's retry_after makes the page take: a later attempt asks
// again, so a wrong or huge value costs one attempt rather than a page that waits for ever.
const MAX_RETRY_AFTER_MS = 5 * 60_000;
// Joins in a row whose media never connected before the page tells the official that
// the network seems to block it: one alone may be a passing fault.
const MEDIA_FAILURES_BEFORE_HINT = 2;
const CAMERA = { width: 960, height: 540 };

const state = {
  session: null, stream: null, me: null, role: null, locked: false,
  slots: new Map(),     // receive slot's mid -> {kind, stream, tile (video) or audio element}
  name: "",  // the name this call was joined by (the form's, else the link's)
  joinedName: "",  // the name the server gave us (the self view's label)
  // The mode joins ask for: the link's, then the one the server last listed us in (a
  // host's switch), so that joining again after a lost call does not undo that switch.
  mode: params.get("mode") === "mixed" ? "mixed" : "forwarded",
  muted: false, cameraOff: false, sharing: null, leaving: false, reconnects: 0,
  joining: false,  // a join from the pre-join form under way (Join pressed, or autojoin)
  muteAwait: null,  // the microphone state last told the server, until a list shows it
  front: null, fronts: [],  // the front in use (null: this page's own) and the live ones
  notice: null, prejoinError: null,  // what the page says now (see notice())
  mediaFailures: 0,  // joins in a row whose media never connected
  turn: false,       // whether the server gave us TURN (the operator configured it)
  ended: 0,  // calls this page has ended: a rejoin loop of an earlier one stops
};
window.multipointCall = state; // for tests and support staff

applyTranslations();
// The tiles' labels too (the self view's "(You)", the composed picture's), and what the
// page says (its notice, the pre-join form's error): they are texts of its language.
installLanguageSwitch($("#lang"), () => {
  updateButtons(); renderSlots(); labelSelf(); linkSelfTest(); linkGuide();
  notice(state.notice);
  if (state.prejoinError) showPrejoinError(state.prejoinError);
});
linkGuide();
// A link that names the official fills the field (its own name= parameter, else its
// token's name, put there by the server); any other, the name this computer joined by
// last. The official can still change it: the field is required, and typing one's own
// name on every link that already carried it was needless.
$("#name").value = (params.get("name") ?? "").trim().slice(0, $("#name").maxLength)
  || $("#name").value || (localStorage.getItem("multipoint.name") ?? "");
// The camera and microphone (or none): a join waits for them. Join pressed while the
// browser still asked for them (or a slow camera started) failed with the script's own
// English error ("Cannot read properties of null") on the pre-join form.
let previewing = startPreview();
previewing.then(() => {
  if (params.get("autojoin") === "1") join();
});
$("#join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  join();
});

async function startPreview() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: CAMERA });
  } catch {
    state.stream = new MediaStream();
    showPrejoinError(() => t("problem.no_media"));
  }
  $("#preview").srcObject = state.stream;
  meter(state.stream, $("#mic"));
}

async function join() {
  // One join at a time: on a slow network a second press of Join (or one beside
  // autojoin) joined the room a second time, the official then in it twice.
  if (state.joining || state.me) return;
  state.joining = true;
  const button = $("#join-form button[type=submit]");
  button.disabled = true;
  const name = $("#name").value.trim() || (params.get("name") ?? "");
  localStorage.setItem("multipoint.name", name);
  state.name = name;  // every rejoin of this call is by the same name
  $("#prejoin-error").hidden = true;
  state.prejoinError = null;
  let joined;
  try {
    await previewing;
    joined = await connect(name);
  } catch (error) {
    showPrejoinError(() => failure(error));
    return;
  } finally {
    state.joining = false;
    button.disabled = false;
  }
  $("#prejoin").hidden = true;
  $("#incall").hidden = false;
  state.joinedName = joined.name;
  addTile("self", "", state.stream, true);
  labelSelf();
  updateButtons();
}

function labelSelf() {
  const label = $('#grid [data-participant="self"] .name');
  if (label) label.textContent = `${state.joinedName} (${t("call.you")})`;
}

// Join through the front in use, following the server to the node that hosts the room.
async function connect(name) {
  for (let redirects = 0; ; redirects += 1) {
    try {
      return await connectOnce(name);
    } catch (error) {
      if (error.code !== "redirect" || redirects >= 3) throw error;
      state.front = error.front;
    }
  }
}

async function connectOnce(name) {
  const session = new MultipointSession({
    token, name, mode: state.mode, front: state.front,
    iceTransportPolicy: params.get("relay") === "1" ? "relay" : "all",
  });
  state.session = session;
  session.addEventListener("remotetrack", (event) => onRemoteTrack(event.detail));
  session.addEventListener("offer", () => renderSlots());
  session.addEventListener("slots", () => renderSlots());
  session.addEventListener("participants", (event) => onParticipants(event.detail));
  session.addEventListener("speaker", (event) => onSpeaker(event.detail));
  session.addEventListener("chat", (event) => onChat(event.detail));
  session.addEventListener("muted", () => { setMuted(true, false); notice(() => t("call.muted_by_host")); });
  session.addEventListener("unmute_requested", () => notice(() => t("call.unmute_request")));
  session.addEventListener("removed", () => { state.leaving = true; end(() => t("call.removed")); });
  session.addEventListener("closed", (event) => onRoomClosed(session, event.detail));
  session.addEventListener("error", (event) => notice(() => failure(event.detail)));
  // A lost network first restarts ICE in place (same participant, same tiles); only if
  // that does not bring the media back does the session close and the page join again.
  session.addEventListener("reconnecting", () => notice(() => t("call.reconnecting")));
  session.addEventListener("recovered", () => notice(null));
  session.addEventListener("close", () => onConnectionLost(session));
  session.addEventListener("resumed", () => {
    tellOwnState(session, true);
    reportTilesSoon();  // a change of tile sizes while the resume was unanswered was not sent
  });
  session.addEventListener("mediaconnected", () => {
    state.mediaFailures = 0;
    $("#media-hint").hidden = true;
  });
  let joined;
  try {
    joined = await session.start({
      microphone: state.stream.getAudioTracks()[0] ?? null,
      camera: state.cameraOff ? null : state.stream.getVideoTracks()[0] ?? null,
      screen: state.sharing?.getVideoTracks()[0] ?? null,
    });
  } catch (error) {
    // This attempt is over: its socket and peer connection go now. Left open, a refused
    // join's socket would stay for ever, and the later close of an unreachable one would
    // look like a call lost and start another rejoin loop beside the caller's (each
    // joining the room: the official twice in it, or in it behind the pre-join form).
    session.close();
    throw error;
  }
  state.me = joined.participant;
  state.role = joined.role;
  state.locked = joined.locked;
  state.fronts = joined.fronts ?? [];
  state.turn = (joined.ice_servers ?? []).length > 0;
  state.reconnects = 0;
  tellOwnState(session, false);
  return joined;
}

// What the server must know of this page's own media once it joined (a new participant
// is unmuted, camera on, not sharing) or resumed: what was said on a socket that was
// dying may never have got there. The microphone only when muted or when a change of it
// is unconfirmed: an unmute sent otherwise could undo a host's mute made meanwhile.
function tellOwnState(session, resumed) {
  if (state.muted || (resumed && state.muteAwait !== null)) {
    state.muteAwait = state.muted;
    session.send({ type: "set_muted", audio: state.muted });
  } else {
    state.muteAwait = null;
  }
  if (state.cameraOff || resumed) session.send({ type: "set_muted", video: state.cameraOff });
  if (state.sharing || resumed) session.send({ type: "screen", active: Boolean(state.sharing) });
}

// A network blip: drop the old connection and join again with the same link.
async function onConnectionLost(session) {
  if (state.leaving || session !== state.session || session.closed) return;
  session.closed = true;
  session.pc?.close();
  clearRemote();
  notice(() => t("call.reconnecting"));
  // Joined, but the media never came up (the server's answer_timeout, or our own ICE
  // recovery gave up): each new join succeeds and then fails the same way, so the page
  // looped join, "Reconnecting…", join, in silence. It still tries (the network may
  // change), but from the second such failure in a row it says what to do.
  if (!session.mediaConnected && ++state.mediaFailures >= MEDIA_FAILURES_BEFORE_HINT) {
    showMediaHint();
  }
  const call = state.ended;  // Leave, then Join again, during a wait: this loop is over
  let failed = 0;  // attempts that count toward the page's 20
  let asked = 0;  // ms the server's last refusal asked the page to wait (retry_after)
  while (!state.leaving && call === state.ended && failed < REJOIN_ATTEMPTS) {
    state.reconnects += 1;
    const backoff = Math.min(8000, 500 * 2 ** (failed + 1));
    await new Promise((resolve) => setTimeout(resolve, Math.max(backoff, asked)));
    if (state.leaving || call !== state.ended) return;  // Leave pressed while waiting: no join after it
    try {
      // The name it joined by: the form's field alone lost the link's name parameter
      // (an autojoin link with a name and an empty field), so the official came back
      // as the token's name, or "?".
      await connect(state.name);
      notice(null);
      return;
    } catch (error) {
      if (FINAL_ERRORS.has(error.code)) {
        state.leaving = true;
        // A locked room may be unlocked: Join again is worth a try then. The others
        // (the link, the meeting) would only be refused again.
        return end(() => failure(error), error.code === "room_locked");
      }
      asked = retryAfter(error);
      // A refusal that says when to come back (rate_limited, too_many_pending_joins) is
      // a server that answers and will take the join then: the next attempt waits that
      // long, and this one does not count. Taken as a failure at most 8 s apart, the attempts came back
      // early, were refused again, and the page had used up its 20 and said the call
      // could not be restored while the server was only asking it to wait.
      if (!asked) failed += 1;
      // The front in use may be gone with its node: try the next live one.
      if (state.fronts.length > 1) {
        const at = state.fronts.indexOf(state.front ?? state.fronts[0]);
        state.front = state.fronts[(at + 1) % state.fronts.length];
      }
    }
  }
  // Every attempt failed (about two and a half minutes): say so and how to come back,
  // rather than "Reconnecting…" for ever over a call that looks live.
  if (!state.leaving && call === state.ended) {
    state.leaving = true;
    end(() => t("call.not_reconnected"), true);
  }
}

// How long a refused join asked the page to wait (its retry_after, seconds), in ms with
// up to a fifth more at random: the pages that a shared link's rate refused together
// (hundreds of sites of one national briefing) would otherwise all come back at the same
// instant and most be refused again. 0 for a refusal that asked nothing.
function retryAfter(error) {
  const seconds = Number(error.retry_after);
  if (!Number.isFinite(seconds) || seconds <= 0) return 0;
  return Math.min(MAX_RETRY_AFTER_MS, seconds * 1000 * (1 + Math.random() / 5));
}

// Sent before the socket closes, so the call ends here before a rejoin would begin.
function onRoomClosed(session, { code }) {
  if (state.leaving || session !== state.session || !CLOSED_FINAL.has(code)) return;
  state.leaving = true;
  end(() => t(`closed.${code}`));
}

// Each receive slot is one track for the whole call; the server tells (offer, "slots")
// whom it shows now. A video slot showing someone is a tile with that one's name; an
// audio slot just plays. People without a slot are in the participant list by name.
function onRemoteTrack({ mid, track, kind }) {
  let slot = state.slots.get(mid);
  if (!slot) {
    const stream = new MediaStream();
    slot = { kind, stream, shows: null };
    if (kind === "video") {
      slot.tile = makeTile("slot-" + mid, "", stream, true);
      // A click makes a tile the big one (and the server sends it a bigger layer); it is
      // a button, so that the keyboard (Tab, then Enter or Space) does it too.
      slot.tile.tabIndex = 0;
      slot.tile.setAttribute("role", "button");
      slot.tile.setAttribute("aria-pressed", "false");
      slot.tile.addEventListener("click", () => focusTile(slot.tile));
      slot.tile.addEventListener("keydown", (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();  // Space would scroll the page
        focusTile(slot.tile);
      });
      tileSizes.observe(slot.tile);
    } else {
      slot.audio = document.createElement("audio");
      slot.audio.autoplay = true;
      slot.audio.srcObject = stream;
      $("#audio-slots").append(slot.audio);
    }
    state.slots.set(mid, slot);
  }
  for (const old of slot.stream.getTracks()) slot.stream.removeTrack(old);
  slot.stream.addTrack(track);
  renderSlots();
}

function renderSlots() {
  const tracks = state.session?.tracks ?? {};
  for (const [mid, slot] of state.slots) {
    slot.shows = tracks[mid] ?? null;
    if (!slot.tile) continue;
    if (!slot.shows) {
      slot.tile.remove();
      continue;
    }
    slot.tile.dataset.participant = slot.shows.participant;
    slot.tile.querySelector(".name").textContent = slotLabel(slot.shows);
    if (!slot.tile.isConnected) $("#grid").append(slot.tile);
  }
  renderPeople();
  reportTilesSoon();
}

// Simulcast: the server gives each tile the layer that fills it, so it hears of every
// change of their sizes (a resize, a tile made big, a tile gone).
const tileSizes = new ResizeObserver(() => reportTilesSoon());

function reportTilesSoon() {
  clearTimeout(state.tilesTimer);
  state.tilesTimer = setTimeout(() => {
    const tiles = {};
    for (const [mid, slot] of state.slots) {
      if (!slot.tile) continue;
      const height = slot.tile.isConnected ? slot.tile.querySelector("video").clientHeight : 0;
      tiles[mid] = Math.round(height * window.devicePixelRatio);
    }
    state.session?.reportTiles(tiles);
  }, 300);
}

function focusTile(tile) {
  const focused = !tile.classList.contains("focused");
  for (const other of document.querySelectorAll(".tile.focused")) {
    other.classList.remove("focused");
    other.setAttribute("aria-pressed", "false");
  }
  tile.classList.toggle("focused", focused);
  tile.setAttribute("aria-pressed", String(focused));
}

function slotLabel(shows) {
  if (shows.source === "mix") return t("call.composite");
  if (shows.source === "screen") return t("call.screen_of", { name: shows.name });
  const person = (state.roster ?? []).find((p) => p.id === shows.participant);
  return shows.name + (person?.audio_muted ? " 🔇" : "");
}

function addTile(id, name, stream, muted) {
  const tile = makeTile(id, name, stream, muted);
  $("#grid").append(tile);
  return tile;
}

function makeTile(id, name, stream, muted) {
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.dataset.participant = id;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = muted;
  video.srcObject = stream;
  const label = document.createElement("figcaption");
  label.className = "name";
  label.textContent = name;
  tile.append(video, label);
  return tile;
}

function clearRemote() {
  for (const slot of state.slots.values()) (slot.tile ?? slot.audio).remove();
  state.slots.clear();
}

function onParticipants({ participants, locked, recording }) {
  state.locked = locked;
  state.recording = recording;
  state.roster = participants;
  const me = participants.find((person) => person.id === state.me);
  if (me) state.mode = me.mode;
  if (me && state.muteAwait !== null) {
    // A list sent before the server took our last mute or unmute says nothing of it
    // (after a resume the server's first list is from before the outage).
    if (me.audio_muted === state.muteAwait) state.muteAwait = null;
  } else if (me?.audio_muted && !state.muted) {
    setMuted(true, false);  // a host's mute this page did not hear of (its socket was down)
  }
  renderSlots();
  updateButtons();
}

// Someone whose camera is in a video codec this page does not receive (docs/codecs.md):
// heard, listed, but never in a camera tile here.
function otherCodec(person) {
  const me = (state.roster ?? []).find((p) => p.id === state.me);
  return Boolean(me && me.mode !== "mixed" && person.id !== state.me && person.video_codec
                 && me.video_codec && person.video_codec !== me.video_codec);
}

function renderPeople() {
  const list = $("#people");
  list.replaceChildren();
  const shown = new Set([...state.slots.values()].filter((s) => s.shows).map((s) => s.shows.participant));
  for (const person of state.roster ?? []) {
    const item = document.createElement("li");
    // Someone no slot shows now (a big room) is here by name only.
    item.dataset.inSlot = String(shown.has(person.id) || person.id === state.me);
    const label = document.createElement("span");
    label.textContent = person.name + (person.id === state.me ? ` (${t("call.you")})` : "") + (person.audio_muted ? " 🔇" : "")
      + (otherCodec(person) ? ` (${t("call.other_codec")})` : "");
    item.append(label);
    if (state.role === "host" && person.id !== state.me) {
      const controls = document.createElement("span");
      controls.append(
        hostButton(person, t("call.mute"), { type: "mute", participant: person.id }),
        hostButton(person, t("call.ask_unmute"), { type: "request_unmute", participant: person.id }),
        hostButton(person, t("call.remove"), { type: "remove", participant: person.id }),
      );
      // A room unit is always mixed: the server refuses to switch it.
      if (!person.unit) {
        const mixed = person.mode === "mixed";
        controls.append(hostButton(person, t(mixed ? "call.mode_forwarded" : "call.mode_mixed"),
          { type: "set_mode", participant: person.id, mode: mixed ? "forwarded" : "mixed" }));
      }
      item.append(controls);
    }
    list.append(item);
  }
}

// A host's button beside ``person``: its accessible name says whom it acts on (a screen
// reader read a list of bare "Mute" buttons).
function hostButton(person, label, message) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-label", `${label}: ${person.name}`);
  button.addEventListener("click", () => state.session.send(message));
  return button;
}

function onSpeaker({ active, speaking }) {
  for (const slot of state.slots.values()) {
    const id = slot.shows?.participant;
    slot.tile?.classList.toggle("speaking", Boolean(id) && (id === active || speaking.includes(id)));
  }
  $("#grid").querySelector('[data-participant="self"]')?.classList.toggle("speaking", speaking.includes(state.me));
}

function onChat({ name, text, at }) {
  const line = document.createElement("p");
  const when = new Date(at * 1000).toLocaleTimeString(document.documentElement.lang, { hour: "2-digit", minute: "2-digit" });
  const who = document.createElement("strong");
  who.textContent = `${name} `;
  line.append(`${when} `, who, text);
  $("#chat-log").append(line);
  $("#chat-log").scrollTop = $("#chat-log").scrollHeight;
}

$("#chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("#chat-text").value.trim();
  // Not sent while the call is down (the page joining again): kept in the field to send
  // once it is back, rather than emptied and lost without a word.
  if (text && !state.session?.send({ type: "chat", text })) return;
  $("#chat-text").value = "";
});

function setMuted(muted, tellServer = true) {
  state.muted = muted;
  for (const track of state.stream.getAudioTracks()) track.enabled = !muted;
  if (tellServer) {
    state.muteAwait = muted;
    state.session?.send({ type: "set_muted", audio: muted });
  }
  updateButtons();
}

$("#mute").addEventListener("click", () => setMuted(!state.muted));
$("#camera").addEventListener("click", async () => {
  const button = $("#camera");
  button.disabled = true;  // one change at a time: turning it on waits for the camera
  try {
    if (!state.cameraOff) cameraOff();
    else if (!(await cameraOn())) return;
    await state.session.replaceTrack("camera", state.cameraOff ? null : state.stream.getVideoTracks()[0] ?? null);
    state.session.send({ type: "set_muted", video: state.cameraOff });
  } finally {
    button.disabled = false;
    updateButtons();
  }
});

// Off is off: the camera is given back (its light goes out) and the self view, showing
// the same stream, goes dark as the others' view of us does. Only unsent, the camera
// went on filming, and the self view showed a live picture nobody else saw.
function cameraOff() {
  state.cameraOff = true;
  for (const track of state.stream.getVideoTracks()) {
    track.stop();
    state.stream.removeTrack(track);
  }
}

// The camera again (a new track of it); false, and a notice, if it cannot be had now.
async function cameraOn() {
  let track;
  try {
    [track] = (await navigator.mediaDevices.getUserMedia({ video: CAMERA })).getVideoTracks();
  } catch {
    notice(() => `${t("error")}: ${t("problem.no_media")}`);
    return false;
  }
  state.stream.addTrack(track);
  state.cameraOff = false;
  return true;
}
$("#share").addEventListener("click", async () => {
  if (state.sharing) return stopSharing();
  try {
    state.sharing = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch {
    return;
  }
  const track = state.sharing.getVideoTracks()[0];
  track.addEventListener("ended", stopSharing);
  await state.session.replaceTrack("screen", track);
  state.session.send({ type: "screen", active: true });
  updateButtons();
});
$("#lock").addEventListener("click", () => state.session.send({ type: "lock", locked: !state.locked }));
$("#record").addEventListener("click", () => state.session.send({ type: "record", active: !state.recording }));
$("#leave").addEventListener("click", () => {
  state.leaving = true;
  end(() => t("call.left"), true);
});
// After a call this page ended where coming back makes sense (Leave, a call that could
// not be restored, a locked room): back to the pre-join form, camera and microphone
// again, and joined from it as a new participant, without reopening the link. A refused
// join says why there, with Join to try again.
$("#join-again").addEventListener("click", async () => {
  Object.assign(state, { me: null, role: null, roster: null, leaving: false, reconnects: 0,
                         muted: false, cameraOff: false, muteAwait: null, mediaFailures: 0 });
  notice(null);
  $("#rejoin").hidden = true;
  $("#incall").querySelector(".controls").hidden = false;
  $("#people").replaceChildren();
  $("#incall").hidden = true;
  $("#prejoin").hidden = false;
  previewing = startPreview();
  await previewing;
  join();
});

async function stopSharing() {
  state.sharing?.getTracks().forEach((track) => track.stop());
  state.sharing = null;
  await state.session.replaceTrack("screen", null);
  state.session.send({ type: "screen", active: false });
  updateButtons();
}

function updateButtons() {
  setButton("#mute", state.muted, state.muted ? "call.unmute" : "call.mute");
  setButton("#camera", state.cameraOff, state.cameraOff ? "call.camera_on" : "call.camera_off");
  setButton("#share", Boolean(state.sharing), state.sharing ? "call.stop_share" : "call.share");
  setButton("#lock", state.locked, state.locked ? "call.unlock" : "call.lock");
  setButton("#record", Boolean(state.recording), state.recording ? "call.stop_recording" : "call.record");
  // Phones' browsers cannot share a screen (no getDisplayMedia): a button there did nothing.
  $("#share").hidden = !navigator.mediaDevices?.getDisplayMedia;
  $("#lock").hidden = state.role !== "host";
  $("#record").hidden = state.role !== "host";
  $("#recording").hidden = !state.recording;
  // Everyone, guests too, sees while the room is locked (and so that nobody else can
  // come in, nor a guest whose call is lost come back); it goes when it is unlocked.
  $("#locked").hidden = !state.locked;
}

function setButton(selector, pressed, key) {
  const button = $(selector);
  button.setAttribute("aria-pressed", String(pressed));
  button.textContent = t(key);
}

// ``rejoin``: whether the page offers Join again (not after a removal, a meeting over,
// a link no longer valid: those would only be refused).
function end(say, rejoin = false) {
  state.ended += 1;
  state.session?.close();
  state.stream?.getTracks().forEach((track) => track.stop());
  // A screen being shared too: left running, the browser went on capturing it (and
  // showing that it does) after the call had ended.
  state.sharing?.getTracks().forEach((track) => track.stop());
  state.sharing = null;
  clearRemote();
  $("#grid").replaceChildren();
  $("#incall").querySelector(".controls").hidden = true;
  $("#media-hint").hidden = true;  // "the page keeps trying": not any more
  $("#rejoin").hidden = !rejoin;
  notice(say);
}

// What the notice says, as a function that gives it in the page's language (null:
// nothing), so that the language switch can say it again in the new language.
function notice(say) {
  state.notice = say;
  $("#notice").hidden = !say;
  $("#notice").textContent = say ? say() : "";
}

// The network seems to block the media: run the connection self-test (its result tells
// the office's IT what passes), and where the operator configured TURN, the network may
// block that route too.
function showMediaHint() {
  $("#media-hint-turn").hidden = !state.turn;
  linkSelfTest();
  $("#media-hint").hidden = false;
}

// The self-test in the page's own language (a ?lang= of this page is not remembered).
function linkSelfTest() {
  $("#selftest-link").href = `/selftest?lang=${lang}`;
}

// The guide in the page's own language, as the self-test.
function linkGuide() {
  $("#guide-link").href = `/guide?lang=${lang}`;
}

// A refused join or request, or a server that cannot be reached, in the page's language
// (the server's texts are English, and so are the texts of multipoint.js's own errors).
function failure(error) {
  let text;
  if (error.unreachable) text = t("problem.signaling");
  else if (error.closed) text = t("problem.signaling_closed");  // no answer to the join
  else if (error.code === "redirect") text = t("problem.redirect_loop");  // past 3 of them
  else text = errorText(error);
  return `${t("error")}: ${text}`;
}

// As notice(): ``say`` gives the text in the page's language.
function showPrejoinError(say) {
  state.prejoinError = say;
  $("#prejoin-error").hidden = false;
  $("#prejoin-error").textContent = say();
}

function meter(stream, element) {
  if (!stream.getAudioTracks().length) return;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const tick = () => {
    analyser.getFloatTimeDomainData(samples);
    element.value = Math.min(1, Math.sqrt(samples.reduce((sum, s) => sum + s * s, 0) / samples.length) * 4);
    if (stream.active) requestAnimationFrame(tick);
  };
  tick();
}

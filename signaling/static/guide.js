// The short guide for participants: its texts name the other pages' buttons and
// messages through their own i18n keys, so a label changed there is changed here too.
import { applyTranslations, installLanguageSwitch, lang, t } from "./i18n.js";

// {name} in a guide text -> the i18n key of the label or message it quotes.
const QUOTED = {
  name: "call.name", join: "call.join", leave: "call.leave", no_media: "problem.no_media",
  mute: "call.mute", unmute: "call.unmute", camera_off: "call.camera_off", camera_on: "call.camera_on",
  share: "call.share", stop_share: "call.stop_share", participants: "call.participants",
  chat: "call.chat", start: "selftest.start", run_selftest: "call.run_selftest",
  remove: "call.remove", ask_unmute: "call.ask_unmute", mode_mixed: "call.mode_mixed",
  mode_forwarded: "call.mode_forwarded", lock: "call.lock", unlock: "call.unlock", locked: "call.locked",
  record: "call.record", stop_recording: "call.stop_recording", recording: "call.recording",
  reconnecting: "call.reconnecting", not_reconnected: "call.not_reconnected",
  join_again: "call.join_again",
};

function fill() {
  const [open, close] = lang === "cs" ? ["„", "“"] : ["“", "”"];
  const values = Object.fromEntries(Object.entries(QUOTED).map(([name, key]) => [name, open + t(key) + close]));
  // A room unit dials the room's name at this server (docs/sip.md, "Calling in").
  values.sip = `sip:${t("guide.unit.room")}@${location.hostname}`;
  for (const element of document.querySelectorAll("[data-guide]")) {
    element.textContent = t(element.dataset.guide, values);
  }
  document.querySelector("#guide-selftest").href = `/selftest?lang=${lang}`;
}

applyTranslations();
fill();
installLanguageSwitch(document.querySelector("#lang"), fill);

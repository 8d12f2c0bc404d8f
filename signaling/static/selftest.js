// The self-test call: camera and microphone go through the server and come back
// (an echo room), with live figures from getStats and a verdict posted back.
import { applyTranslations, installLanguageSwitch, lang, t } from "./i18n.js";
import { MultipointSession } from "./multipoint.js";

const main = document.querySelector("main");
const params = new URLSearchParams(location.search);
const DURATION_S = Math.min(60, Math.max(3, Number(params.get("duration")) || 10));
const LIMITS = { lossRatio: 0.05, rtt: 0.3, bitrateKbps: 100 };
// The server's refusals of the test call (docs/protocol.md, "Errors"), as problems.
const REFUSALS = {
  token_expired: "link_expired", bad_token: "link_invalid",
  capacity_full: "server_busy", too_many_pending_joins: "server_busy", rate_limited: "server_busy",
};
// status: the i18n key of what the page says while a test runs (null once a verdict is shown).
const state = { session: null, verdict: null, figures: null, saved: null, status: null };
window.multipointSelfTest = state; // for tests and support staff in the console

applyTranslations();
linkGuide();
installLanguageSwitch(document.querySelector("#lang"), () => {
  linkGuide();
  if (state.verdict) showVerdict(state.verdict);
  else if (state.status) setStatus(state.status);
});
const startButton = document.querySelector("#start");
startButton.addEventListener("click", () => run());
if (params.get("autostart") === "1") run();

async function run() {
  startButton.disabled = true;
  state.verdict = null;
  document.querySelector("#verdict").hidden = true;
  state.session?.close();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  } catch {
    return finish({ passed: false, problems: ["no_media"], figures: {} });
  }
  document.querySelector("#local").srcObject = stream;
  meterMicrophone(stream);
  const session = new MultipointSession({
    token: main.dataset.token,
    iceTransportPolicy: params.get("relay") === "1" ? "relay" : "all",
  });
  state.session = session;
  const remote = new MediaStream();
  document.querySelector("#remote").srcObject = remote;
  session.addEventListener("remotetrack", (event) => remote.addTrack(event.detail.track));
  try {
    await session.start({
      microphone: stream.getAudioTracks()[0] ?? null,
      camera: stream.getVideoTracks()[0] ?? null,
      screen: null,
    });
  } catch (error) {
    // Refused is not unreachable: an expired link (a page left open past its token's
    // life) or a busy server is said as such, not as a server that cannot be reached.
    release(stream, session);
    return finish({ passed: false, problems: [REFUSALS[error.code] ?? "signaling"], figures: {} });
  }
  setStatus("selftest.running");
  const first = await waitForConnection(session);
  let previous = first;
  for (let second = 0; second < DURATION_S; second++) {
    await sleep(1000);
    const figures = await session.figures(previous);
    showFigures(figures);
    state.figures = figures;
    previous = figures;
  }
  finish(judge(first, previous, session.pc.connectionState));
  release(stream, session);
}

// The test is over, passed, failed or refused: the camera and microphone are given back
// (a refused test left them on, the camera's light too), and the session is closed (a
// refused join's socket and peer connection would otherwise stay open).
function release(stream, session) {
  stream.getTracks().forEach((track) => track.stop());
  session.close();
}

async function waitForConnection(session) {
  for (let i = 0; i < 100 && session.pc.connectionState !== "connected"; i++) await sleep(100);
  return session.figures();
}

function judge(first, last, connectionState) {
  const problems = [];
  if (connectionState !== "connected" && last.packetsReceived === 0) problems.push("connection_failed");
  if (last.framesDecoded - first.framesDecoded <= 0) problems.push("video_not_returned");
  if (last.audioPackets - first.audioPackets <= 0) problems.push("audio_not_returned");
  if (last.lossRatio > LIMITS.lossRatio) problems.push("packet_loss");
  if (last.rtt !== null && last.rtt > LIMITS.rtt) problems.push("high_latency");
  if ((last.bitrateKbps ?? 0) < LIMITS.bitrateKbps) problems.push("low_bitrate");
  return {
    passed: problems.length === 0,
    problems,
    figures: {
      rtt_ms: last.rtt === null ? null : Math.round(last.rtt * 1000),
      loss_pct: Math.round(last.lossRatio * 1000) / 10,
      bitrate_kbps: Math.round(last.bitrateKbps ?? 0),
      frames_decoded: last.framesDecoded - first.framesDecoded,
      audio_packets: last.audioPackets - first.audioPackets,
    },
  };
}

async function finish(verdict) {
  state.verdict = verdict;
  showVerdict(verdict);
  startButton.disabled = false;
  // Through data-i18n, so that the language switch keeps it "Run again".
  startButton.dataset.i18n = "selftest.again";
  startButton.textContent = t("selftest.again");
  try {
    const response = await fetch("/selftest/result", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: main.dataset.token, ...verdict }),
    });
    state.saved = response.ok ? await response.json() : false;
  } catch {
    state.saved = false;
  }
  if (state.saved) {
    // What was recorded is the server's verdict: it also counts what it received and sent.
    verdict = { ...verdict, passed: state.saved.passed, problems: state.saved.problems };
    state.verdict = verdict;
  }
  showVerdict(verdict);
}

function showVerdict(verdict) {
  state.status = null;
  const box = document.querySelector("#verdict");
  box.hidden = false;
  box.className = "verdict " + (verdict.passed ? "pass" : "fail");
  box.replaceChildren();
  const heading = document.createElement("strong");
  heading.textContent = verdict.passed ? t("selftest.pass") : t("selftest.fail");
  box.append(heading);
  if (!verdict.passed) {
    const list = document.createElement("ul");
    for (const problem of verdict.problems) {
      const item = document.createElement("li");
      item.textContent = t("problem." + problem);
      list.append(item);
    }
    box.append(list);
  }
  if (state.saved !== null) {
    const note = document.createElement("p");
    note.className = "small";
    note.textContent = state.saved ? t("selftest.saved") : t("selftest.notsaved");
    box.append(note);
  }
  box.dataset.verdict = verdict.passed ? "pass" : "fail";
}

function showFigures(figures) {
  document.querySelector("#fig-rtt").textContent = figures.rtt === null ? "–" : `${Math.round(figures.rtt * 1000)} ms`;
  document.querySelector("#fig-loss").textContent = `${(figures.lossRatio * 100).toFixed(1)} %`;
  document.querySelector("#fig-bitrate").textContent = `${Math.round(figures.bitrateKbps ?? 0)} kbit/s`;
  document.querySelector("#fig-frames").textContent = String(figures.framesDecoded);
  document.querySelector("#fig-audio").textContent = String(figures.audioPackets);
}

function setStatus(key) {
  state.status = key;
  const box = document.querySelector("#verdict");
  box.hidden = false;
  box.className = "verdict";
  box.textContent = t(key);
}

function meterMicrophone(stream) {
  if (!stream.getAudioTracks().length) return;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const meter = document.querySelector("#mic");
  const tick = () => {
    analyser.getFloatTimeDomainData(samples);
    meter.value = Math.min(1, Math.sqrt(samples.reduce((sum, s) => sum + s * s, 0) / samples.length) * 4);
    if (stream.active) requestAnimationFrame(tick);
  };
  tick();
}

// The guide in the page's own language (a ?lang= of this page is not remembered).
function linkGuide() {
  document.querySelector("#guide-link").href = `/guide?lang=${lang}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// The participant side of the multipoint protocol (docs/protocol.md), for the browser.
// The server makes every offer; we answer, putting our tracks on the publish slots it names.

const ICE_GATHERING_TIMEOUT_MS = 3000;
// Coming back after a lost network (docs/protocol.md): each attempt restarts ICE (over a
// new socket if the old one died) and waits this long for the media path; after the
// window the session gives up and the page joins again with its link.
const RECOVER_ATTEMPT_MS = 5000;
const RECOVER_WINDOW_MS = 25000;
const RESUME_UNREACHABLE = 3;  // sockets that failed to connect before the page joins again
// A socket can die without closing (a firewall or NAT drops its flow: the browser hears
// nothing for many minutes, while the server's heartbeats notice within 12 s and keep
// our place for a resume only so long). In a call we ping this often, and a socket that
// answers a ping with no message at all within SOCKET_SILENT_MS is taken as lost: found
// within about 18 s, well inside the server's 30 s of grace (a false alarm costs an ICE
// restart that interrupts nothing).
const PING_EVERY_MS = 4000;
const SOCKET_SILENT_MS = 10000;
// Simulcast (docs/simulcast.md): when the server asks for camera layers, each is sent at
// this fraction of the camera's resolution and at most this bitrate; the server says
// which layers anybody watches ("layers"), and the others are paused here. The same for
// VP8 and H.264 rooms: Chrome encodes H.264 layers (OpenH264) from the answer's RIDs as
// it does VP8's, with no scalabilityMode of ours; a browser that answers one stream
// simply publishes one.
const CAMERA_LAYERS = {
  q: { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  h: { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  f: { scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
};
// Server messages after which the socket closes for good: no coming back from these
// (after "closed" the server has taken the participant out: a "resume" would only be
// refused, a second or more late).
const FINAL_MESSAGES = new Set(["removed", "disconnected", "redirect", "closed"]);

// The video codecs the server forwards that this browser can both send and receive, in
// the browser's own order of preference (docs/codecs.md): "vp8", and "h264" only as
// constrained baseline (profile 0x42 with constraint_set1) in packetization mode 1.
export function supportedVideoCodecs() {
  const names = (capabilities) => (capabilities?.codecs ?? []).map((codec) => {
    const mime = codec.mimeType.toLowerCase();
    if (mime === "video/vp8") return "vp8";
    const fmtp = codec.sdpFmtpLine ?? "";
    const profile = /profile-level-id=([0-9a-f]{6})/i.exec(fmtp)?.[1];
    if (mime === "video/h264" && /packetization-mode=1/.test(fmtp) && profile
        && profile.slice(0, 2).toLowerCase() === "42" && (parseInt(profile.slice(2, 4), 16) & 0x40)) {
      return "h264";
    }
    return null;
  }).filter(Boolean);
  const receive = new Set(names(RTCRtpReceiver.getCapabilities?.("video")));
  return [...new Set(names(RTCRtpSender.getCapabilities?.("video")))].filter((name) => receive.has(name));
}

export class MultipointSession extends EventTarget {
  // ``front``: the base URL of the front to use (another node's, after a redirect or
  // when this page's own front is gone); by default the page's own origin.
  // ``iceTransportPolicy``: "relay" sends media only through TURN (a support check that
  // TURN passes this office's firewall); the TURN servers come with "joined".
  constructor({ token, name = "", mode = "forwarded", iceServers = [], front = null,
                iceTransportPolicy = "all" }) {
    super();
    this.token = token;
    this.name = name;
    this.mode = mode;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.front = front;
    this.tracks = {};           // receive slot's mid -> who it shows now {participant, name, kind, source}
    this.localTracks = {};      // source -> MediaStreamTrack | null
    this.pc = null;
    this.ws = null;
    this.participantId = null;
    this.resumeSecret = null;   // from "joined": takes our place back over a new socket
    this.closed = false;
    this.recoveries = 0;        // lost paths come back without a new join
    this.pending = null;        // {resolve, reject} of the "join" or "resume" in flight
    this.recovering = false;
    // Whether the media path has ever been up on this connection: one that never was
    // (ICE failed from the start: UDP blocked and no TURN that passes) is no network
    // blip, and joining again will most likely fail the same way.
    this.mediaConnected = false;
    this.activeLayers = null;   // camera layers the server wants sent (null: all)
    this.lastTiles = "";
  }

  // Open the signaling socket and join; resolves once the server said "joined".
  start(localTracks) {
    this.localTracks = { ...localTracks };
    this.pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle",
                                      iceTransportPolicy: this.iceTransportPolicy });
    this.pc.addEventListener("track", (event) => this.#onTrack(event));
    this.pc.addEventListener("iceconnectionstatechange", () => {
      const state = this.pc.iceConnectionState;
      if (!this.mediaConnected && this.#mediaUp()) {
        this.mediaConnected = true;
        this.#emit("mediaconnected", {});
      }
      if ((state === "disconnected" || state === "failed") && this.participantId) this.#recover();
    });
    return this.#request({ type: "join", v: 1, token: this.token, name: this.name, mode: this.mode,
                           video_codecs: supportedVideoCodecs() });
  }

  // A new socket whose first message is ``first`` ("join" or "resume"); settles once the
  // server took it ("joined" / "resumed") or refused it.
  #request(first) {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      const ws = new WebSocket(this.front ? `${this.front.replace(/^http/, "ws").replace(/\/$/, "")}/ws`
                                          : `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
      this.ws = ws;
      ws.addEventListener("open", () => {
        ws.send(JSON.stringify(first));
        this.#watch(ws);
      });
      ws.addEventListener("error", () =>
        this.#settle(Object.assign(new Error("signaling connection failed"), { unreachable: true })));
      ws.addEventListener("close", (event) => this.#onSocketClosed(ws, event));
      ws.addEventListener("message", (event) => this.#onRaw(ws, event));
    });
  }

  // Ping an open socket of a participant, and give it up when a ping of ours goes
  // unanswered (no message at all) for SOCKET_SILENT_MS. Judged by pings, not by time
  // since the last message: a hidden tab's timers may run only once a minute.
  #watch(ws) {
    let asked = null;  // when the ping that no message has answered yet went out
    ws.addEventListener("message", () => { asked = null; });
    const timer = setInterval(() => {
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN || this.closed) {
        clearInterval(timer);
      } else if (asked !== null && performance.now() - asked > SOCKET_SILENT_MS) {
        clearInterval(timer);
        ws.close();  // its close event may come only much later: it is lost now
        this.#onSocketClosed(ws, { code: 1006, reason: "silent" });
      } else if (asked === null && this.participantId) {
        asked = performance.now();
        ws.send(JSON.stringify({ type: "ping" }));
      }
    }, PING_EVERY_MS);
  }

  #settle(error, value) {
    const pending = this.pending;
    this.pending = null;
    if (!pending) return;
    if (error) pending.reject(error);
    else pending.resolve(value);
  }

  async #onRaw(ws, event) {
    if (ws !== this.ws) return;  // a socket we gave up on
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "joined" || message.type === "resumed") {
      this.participantId = message.participant;
      this.resumeSecret = message.resume ?? null;
      this.#useIceServers(message.ice_servers);
      this.#settle(null, message);
    } else if (message.type === "ice_servers") {
      // Fresh TURN credentials before the offer of an ICE restart we asked for: those of
      // "joined" may have expired in a long call, and coturn refuses them then.
      this.#useIceServers(message.ice_servers);
    } else if (message.type === "redirect") {
      // The room lives on another node: join there with the same link.
      this.closed = true;
      this.#settle(Object.assign(new Error("the room is on another node"),
                                 { code: "redirect", front: message.front }));
    } else if (message.type === "error" && this.pending) {
      // With the code, the error's details (retry_after, opens_at...): the page's text says them.
      const { type, ...fields } = message;
      this.#settle(Object.assign(new Error(message.message), fields));
    }
    if (FINAL_MESSAGES.has(message.type) || message.code === "answer_timeout") this.resumeSecret = null;
    try {
      await this.#onMessage(message);
    } catch (error) {
      console.error("handling", message.type, error);
    }
  }

  // TURN with credentials of our own, set before an offer starts ICE gathering.
  #useIceServers(servers) {
    if (!servers?.length) return;
    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: [...this.iceServers, ...servers] });
  }

  #onSocketClosed(ws, event) {
    if (ws !== this.ws) return;
    // A socket closed before its join or resume was answered (a proxy or front going away).
    this.#settle(Object.assign(new Error("signaling connection closed"), { closed: true }));
    if (!this.closed && this.participantId && this.resumeSecret) {
      this.#recover();  // the network, most likely: take our place back over a new socket
    } else if (!this.recovering) {
      this.#emit("close", { code: event.code, reason: event.reason });
    }
  }

  // The media path or the socket went away: restart ICE on this same connection, over
  // a new socket if needed, until the media path is back or the window has passed.
  async #recover() {
    if (this.recovering || this.closed) return;
    this.recovering = true;
    this.#emit("reconnecting", {});
    const started = performance.now();
    let unreachable = 0;  // sockets that could not even connect: the front may be gone
    // The server refused our "resume": our participant is gone there (it took a clean
    // close as a leave, or its grace ran out). Media that still looks up is only ICE
    // that has not noticed yet, and the new socket belongs to nobody: join again.
    let refused = false;
    try {
      while (!this.closed && performance.now() - started < RECOVER_WINDOW_MS) {
        const socketUp = this.ws?.readyState === WebSocket.OPEN;
        if (this.#mediaUp() && socketUp) break;
        if (this.ws?.readyState === WebSocket.CONNECTING && this.#mediaUp()) {
          // A new socket still connecting, media up: nothing to wait for but the socket
          // (without this pause the loop would spin on resolved promises, freezing the
          // page for the whole window, its socket's open event included).
          await new Promise((resolve) => setTimeout(resolve, 500));
          continue;
        }
        if (socketUp) {
          this.pc.restartIce();  // our next answer has new ICE credentials too
          this.send({ type: "restart_ice" });
        } else if (this.ws?.readyState !== WebSocket.CONNECTING) {
          // The socket died too: take our place back over a new one (the server then
          // restarts ICE by itself).
          this.pc.restartIce();
          try {
            await Promise.race([
              this.#request({ type: "resume", v: 1, participant: this.participantId,
                              resume: this.resumeSecret }),
              new Promise((_, reject) => setTimeout(() => reject(new Error("no answer")), RECOVER_ATTEMPT_MS)),
            ]);
          } catch (error) {
            if (error.code) {  // refused (resume_failed, ...): join again
              refused = true;
              break;
            }
            if (error.unreachable && ++unreachable >= RESUME_UNREACHABLE) {
              break;  // its node may have died: join again, through another front if need be
            }
            await new Promise((resolve) => setTimeout(resolve, 1000));
            continue;
          }
        }
        await this.#mediaUpWithin(RECOVER_ATTEMPT_MS);
      }
    } finally {
      this.recovering = false;
    }
    if (this.closed) return;
    if (!refused && this.#mediaUp() && this.ws?.readyState === WebSocket.OPEN) {
      this.recoveries += 1;
      this.#emit("recovered", { recoveries: this.recoveries });
      return;
    }
    this.resumeSecret = null;  // the page joins again, with a new connection
    this.ws?.close();
    this.#emit("close", { code: 0, reason: "not_recovered" });
  }

  #mediaUp() {
    return ["connected", "completed"].includes(this.pc?.iceConnectionState);
  }

  #mediaUpWithin(ms) {
    if (this.#mediaUp()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (up) => {
        clearTimeout(timer);
        this.pc.removeEventListener("iceconnectionstatechange", changed);
        resolve(up);
      };
      const changed = () => { if (this.#mediaUp()) done(true); };
      const timer = setTimeout(() => done(false), ms);
      this.pc.addEventListener("iceconnectionstatechange", changed);
    });
  }

  // Whether it went: not while the socket's "join" or "resume" is unanswered, when the
  // server would refuse anything else on it ("join a room first", shown as an error).
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.pending) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  // Put a different track on a publish slot (camera off, screen share); no renegotiation.
  async replaceTrack(source, track) {
    this.localTracks[source] = track;
    const transceiver = this.#publishTransceiver(source);
    if (transceiver) await transceiver.sender.replaceTrack(track);
  }

  // How tall each receive slot's tile is, in device pixels (0: not shown), by mid: the
  // server sends each the simulcast layer that fills it, and no more.
  reportTiles(tiles) {
    const text = JSON.stringify(tiles);
    if (text === this.lastTiles) return;
    if (this.send({ type: "tiles", tiles })) this.lastTiles = text;
  }

  close() {
    this.closed = true;
    this.send({ type: "leave" });
    this.ws?.close();
    this.pc?.close();
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #publishTransceiver(source) {
    const mid = this.publish?.[source];
    return this.pc.getTransceivers().find((t) => t.mid === mid);
  }

  async #onMessage(message) {
    if (message.type === "offer") {
      await this.#answer(message);
    } else if (message.type === "slots") {
      // The server re-pointed some of our receive slots at other people: same tracks,
      // other senders. Each message is the whole map (null: the slot shows nobody).
      this.tracks = Object.fromEntries(Object.entries(message.slots).filter(([, info]) => info));
    } else if (message.type === "layers") {
      this.activeLayers = message.active;
      await this.#applyLayers();
    }
    this.#emit(message.type, message);
  }

  async #answer(offer) {
    this.publish = offer.publish;
    this.tracks = { ...offer.tracks };
    await this.pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    for (const [source, mid] of Object.entries(offer.publish)) {
      const transceiver = this.pc.getTransceivers().find((t) => t.mid === mid);
      if (!transceiver) continue;
      // Every publish slot is answered send-only, so a track can be put on it later
      // (screen share, camera back on) without a new negotiation.
      transceiver.direction = "sendonly";
      const track = this.localTracks[source] ?? null;
      if (transceiver.sender.track !== track) await transceiver.sender.replaceTrack(track);
    }
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this.#applyLayers();
    await this.#iceGatheringComplete();
    this.send({ type: "answer", sdp: this.pc.localDescription.sdp, revision: offer.revision });
  }

  // The camera's simulcast layers (the server's offer asked for them by RID): their sizes
  // and bitrates, and which of them to send now.
  async #applyLayers() {
    const sender = this.#publishTransceiver("camera")?.sender;
    const parameters = sender?.getParameters();
    if (!parameters?.encodings || parameters.encodings.length < 2) return;
    for (const encoding of parameters.encodings) {
      Object.assign(encoding, CAMERA_LAYERS[encoding.rid] ?? {});
      encoding.active = !this.activeLayers || this.activeLayers.includes(encoding.rid);
    }
    try {
      await sender.setParameters(parameters);
    } catch (error) {
      console.warn("camera layers not applied", error);
    }
  }

  #iceGatheringComplete() {
    if (this.pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ICE_GATHERING_TIMEOUT_MS);
      this.pc.addEventListener("icegatheringstatechange", () => {
        if (this.pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  #onTrack(event) {
    const mid = event.transceiver.mid;
    this.#emit("remotetrack", { mid, track: event.track, kind: event.track.kind });
  }

  // Figures for people: round-trip time, loss and bitrate of what we receive.
  async figures(previous) {
    const report = await this.pc.getStats();
    const now = performance.now();
    const figures = { rtt: null, bytesReceived: 0, packetsReceived: 0, packetsLost: 0,
                      framesDecoded: 0, audioPackets: 0, at: now };
    report.forEach((stat) => {
      if (stat.type === "candidate-pair" && stat.nominated && stat.currentRoundTripTime !== undefined) {
        figures.rtt = stat.currentRoundTripTime;
      } else if (stat.type === "inbound-rtp") {
        figures.bytesReceived += stat.bytesReceived ?? 0;
        figures.packetsReceived += stat.packetsReceived ?? 0;
        figures.packetsLost += Math.max(0, stat.packetsLost ?? 0);
        if (stat.kind === "video") figures.framesDecoded += stat.framesDecoded ?? 0;
        if (stat.kind === "audio") figures.audioPackets += stat.packetsReceived ?? 0;
      }
    });
    if (previous) {
      const seconds = (now - previous.at) / 1000;
      figures.bitrateKbps = seconds > 0 ? ((figures.bytesReceived - previous.bytesReceived) * 8) / 1000 / seconds : 0;
    }
    const total = figures.packetsReceived + figures.packetsLost;
    figures.lossRatio = total > 0 ? figures.packetsLost / total : 0;
    return figures;
  }
}

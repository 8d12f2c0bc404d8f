// The participant side of the multipoint protocol (docs/protocol.md), for the browser.
// The server makes every offer; we answer, putting our tracks on the publish slots it names.

const ICE_GATHERING_TIMEOUT_MS = 3000;

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
    this.closed = false;
  }

  // Open the signaling socket and join; resolves once the server said "joined".
  start(localTracks) {
    this.localTracks = { ...localTracks };
    this.pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle",
                                      iceTransportPolicy: this.iceTransportPolicy });
    this.pc.addEventListener("track", (event) => this.#onTrack(event));
    this.pc.addEventListener("connectionstatechange", () =>
      this.#emit("connectionstate", { state: this.pc.connectionState }));
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(this.front ? `${this.front.replace(/^http/, "ws").replace(/\/$/, "")}/ws`
                                       : `${scheme}://${location.host}/ws`);
    return new Promise((resolve, reject) => {
      this.ws.addEventListener("open", () =>
        this.send({ type: "join", v: 1, token: this.token, name: this.name, mode: this.mode }));
      this.ws.addEventListener("error", () => reject(new Error("signaling connection failed")));
      this.ws.addEventListener("close", (event) => {
        this.#emit("close", { code: event.code, reason: event.reason });
        reject(new Error("signaling connection closed"));
      });
      this.ws.addEventListener("message", async (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message.type === "joined") {
          this.participantId = message.participant;
          if (message.ice_servers?.length) {
            // TURN with credentials of our own, before the offer starts ICE gathering.
            this.pc.setConfiguration({ ...this.pc.getConfiguration(),
                                       iceServers: [...this.iceServers, ...message.ice_servers] });
          }
          resolve(message);
        } else if (message.type === "redirect") {
          // The room lives on another node: join there with the same link.
          this.closed = true;
          reject(Object.assign(new Error("the room is on another node"),
                               { code: "redirect", front: message.front }));
        } else if (message.type === "error" && !this.participantId) {
          reject(Object.assign(new Error(message.message), { code: message.code }));
        }
        try {
          await this.#onMessage(message);
        } catch (error) {
          console.error("handling", message.type, error);
        }
      });
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // Put a different track on a publish slot (camera off, screen share); no renegotiation.
  async replaceTrack(source, track) {
    this.localTracks[source] = track;
    const transceiver = this.#publishTransceiver(source);
    if (transceiver) await transceiver.sender.replaceTrack(track);
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
    await this.#iceGatheringComplete();
    this.send({ type: "answer", sdp: this.pc.localDescription.sdp, revision: offer.revision });
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

"""Real aiortc peers for tests: a participant client that answers the server's offers."""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame

from mcu import aiortc_adapter as adapter


class ToneTrack(AudioStreamTrack):
    """A sine tone, so a listener can tell sources apart by frequency."""

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._samples = 0

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # paced silence, 20 ms at 48 kHz
        count = frame.samples
        t = (np.arange(count) + self._samples) / 48000
        self._samples += count
        tone = (self.amplitude * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
        out = AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = 48000
        out.pts = frame.pts
        out.time_base = frame.time_base
        return out


class ColourTrack(VideoStreamTrack):
    """A plain colour picture with a moving bar, 320x240."""

    def __init__(self, rgb: tuple[int, int, int] = (200, 40, 40)) -> None:
        super().__init__()
        self.rgb = rgb
        self._frame = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((240, 320, 3), dtype=np.uint8)
        image[:, :] = self.rgb
        x = (self._frame * 4) % 320
        image[:, x:x + 8] = 255
        self._frame += 1
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


@dataclass
class Received:
    frames: int = 0
    last_frame: VideoFrame | AudioFrame | None = None
    track: MediaStreamTrack | None = None
    mid: str | None = None
    audio: list[np.ndarray] = field(default_factory=list)  # the last second of sound, mono

    def spectrum_peak(self, frequency: float) -> float:
        """Spectral magnitude at ``frequency`` over the median: high when the tone is there."""
        samples = np.concatenate(self.audio[-50:]).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        bins = np.fft.rfftfreq(len(samples), 1 / 48000)
        near = spectrum[(bins > frequency - 15) & (bins < frequency + 15)]
        return float(near.max() / (np.median(spectrum) + 1e-9))


@dataclass
class ClientPeer:
    """The client side of one participant, driven by the server's offers."""

    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    screen: MediaStreamTrack | None = None
    # max-bundle: aiortc 1.16 with "balanced" leaves later video m-lines unconnected.
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)))
    receive_video: bool = True  # False: answers video it is offered "inactive" (audio-only units)
    received: dict[str, Received] = field(default_factory=dict)  # by mid
    ice_restarts: int = 0  # offers that restarted ICE
    _readers: list[asyncio.Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
            entry = self.received.setdefault(transceiver.mid, Received(mid=transceiver.mid))
            entry.track = track
            self._readers.append(asyncio.ensure_future(self._read(track, entry)))

    async def _read(self, track: MediaStreamTrack, entry: Received) -> None:
        # Reading every frame keeps aiortc's decoder queue from growing.
        try:
            while True:
                frame = await track.recv()
                entry.frames += 1
                entry.last_frame = frame
                if isinstance(frame, AudioFrame):
                    channels = len(frame.layout.channels)
                    entry.audio.append(frame.to_ndarray().reshape(-1)[::channels].copy())
                    del entry.audio[:-60]
        except Exception:
            return

    async def answer(self, offer_sdp: str, publish: dict[str, str]) -> str:
        # An offer with new ICE credentials restarts ICE (aiortc has no restart of its own).
        restart = adapter.offer_restarts_ice(self.pc, offer_sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if restart:
            adapter.begin_ice_restart(self.pc)
            self.ice_restarts += 1
        for transceiver in self.pc.getTransceivers():
            if transceiver.mid == publish.get("microphone") and self.audio is not None:
                transceiver.sender.replaceTrack(self.audio)
                transceiver.direction = "sendonly"
            elif transceiver.mid == publish.get("camera") and self.video is not None:
                transceiver.sender.replaceTrack(self.video)
                transceiver.direction = "sendonly"
            elif transceiver.mid == publish.get("screen") and self.screen is not None:
                transceiver.sender.replaceTrack(self.screen)
                transceiver.direction = "sendonly"
            elif transceiver.mid in publish.values() or (
                    transceiver.kind == "video" and not self.receive_video):
                transceiver.direction = "inactive"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        if restart:
            await adapter.finish_ice_restart(self.pc, offer_sdp)
        return self.pc.localDescription.sdp

    def frames(self, kind: str) -> dict[str, int]:
        return {mid: r.frames for mid, r in self.received.items()
                if r.track is not None and r.track.kind == kind}

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()


async def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())



class RtcpProbe:
    """Client-side instrumentation (test only): what reaches the client's sender and receiver."""

    def __init__(self, peer: ClientPeer) -> None:
        self.peer = peer
        self.keyframe_requests: list[int] = []  # media SSRC of each PLI/FIR our sender got
        self.received: list[tuple[int, int, int, bytes]] = []  # (payload type, ssrc, seq, payload)

    def watch_sender(self, transceiver) -> None:
        sender = transceiver.sender
        original = sender._handle_rtcp_packet

        async def handle(packet) -> None:
            if getattr(packet, "fmt", None) in (1, 4) and type(packet).__name__ == "RtcpPsfbPacket":
                self.keyframe_requests.append(packet.media_ssrc)
            await original(packet)

        sender._handle_rtcp_packet = handle

    def watch_transport(self, transceiver) -> None:
        """Every RTP packet the client's transport decrypts, before aiortc routes it: aiortc
        routes RTX by payload type alone, which several video m-lines make ambiguous (a
        browser routes it by the SDP's FID group)."""
        transport = transceiver.receiver.transport
        original = transport._handle_rtp_data

        async def handle(data: bytes, arrival_time_ms: int) -> None:
            packet = RtpPacket.parse(data, transport._rtp_header_extensions_map)
            self.received.append((packet.payload_type, packet.ssrc, packet.sequence_number,
                                  bytes(packet.payload)))
            await original(data, arrival_time_ms)

        transport._handle_rtp_data = handle

    async def send_pli(self, transceiver, media_ssrc: int) -> None:
        await transceiver.receiver._send_rtcp_pli(media_ssrc)

    async def send_nack(self, transceiver, media_ssrc: int, lost: list[int]) -> None:
        await transceiver.receiver._send_rtcp_nack(media_ssrc, lost)


def first_ssrc_per_mid(sdp: str) -> dict[str, int]:
    """Each m-section's mid and the first SSRC it announces (what a leg sends with)."""
    found = {}
    for section in sdp.split("\r\nm=")[1:]:
        mid = re.search(r"^a=mid:(\S+)", section, re.M)
        ssrc = re.search(r"^a=ssrc:(\d+) ", section, re.M)
        if mid and ssrc:
            found[mid.group(1)] = int(ssrc.group(1))
    return found

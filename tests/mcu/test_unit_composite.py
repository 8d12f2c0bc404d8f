"""The composite in H.264 per size (mcu/mixing.py): what room units of each size receive.

A real RoomMixer on its own ticks, its H.264 legs sending plain RTP to sockets of ours;
what comes out is depacketized and decoded with FFmpeg, as a unit would.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest
from mcu._fanout import Sink

from mcu import codecs, rtp
from mcu.forwarding import Consumer, Producer
from mcu.mixer import packetize
from mcu.mixer.h264 import H264Depacketizer
from mcu.mixing import RoomMixer, screen_source
from mcu.stats import WorkerCounters
from tests.mixer.mixer_media import vp8_frames
from tests.peers import wait_until


class Unit:
    """A room unit's composite slot and the socket it receives on."""

    def __init__(self, name: str, mixer: RoomMixer, size: tuple[int, int], sender: socket.socket) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.consumer = Consumer(f"{name}:camera0", "video", name, mixer.counters, codec=codecs.H264)
        self.sink = Sink()
        self.sink.bind(sender.fileno(), *self.socket.getsockname(), 0, 0, None)
        self.consumer.configure(hash(name) & 0xFFFFFFFF or 1, 0, 96, None, lambda _: None, self.sink)
        self.consumer.switch_to(mixer.composite_for(codecs.H264, size))
        self.depacketizer = H264Depacketizer()
        self.decoder = av.CodecContext.create("h264", "r")
        self.sizes: list[tuple[int, int]] = []  # of each picture decoded
        self.picture: np.ndarray | None = None  # the last one, RGB
        self.payloads: list[bytes] = []

    def read(self) -> None:
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return
            view = rtp.parse_rtp(data)
            payload = data[view.payload_start:view.payload_end]
            self.payloads.append(payload)
            frame = self.depacketizer.push(view.sequence_number, view.timestamp, view.marker, payload)
            if frame is not None:
                for picture in self.decoder.decode(av.Packet(frame.data)):
                    self.sizes.append((picture.width, picture.height))
                    self.picture = picture.to_ndarray(format="rgb24")

    def decoded(self, count: int) -> bool:
        self.read()
        return len(self.sizes) >= count

    def leave(self) -> None:
        self.consumer.switch_to(None)
        self.consumer.disconnect()

    def close(self) -> None:
        self.sink.unbind()
        self.socket.close()


@pytest.fixture
async def room() -> AsyncIterator[tuple[RoomMixer, socket.socket]]:
    mixer = RoomMixer("units", WorkerCounters())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    yield mixer, sender
    mixer.close()
    sender.close()


async def test_each_size_is_encoded_once_for_its_units_and_only_while_one_receives_it(room) -> None:
    mixer, sender = room
    small = [Unit(f"small{i}", mixer, (320, 180), sender) for i in range(2)]
    large = Unit("large", mixer, (1280, 720), sender)
    units = [*small, large]
    try:
        mixer.start()
        assert await wait_until(lambda: all(unit.decoded(10) for unit in units), timeout=15)
        assert set(small[0].sizes) == set(small[1].sizes) == {(320, 180)}
        assert set(large.sizes) == {(1280, 720)}
        # Units of one size share its encode: the very same payloads, in the same order.
        assert small[0].payloads[:20] == small[1].payloads[:20]
        assert sorted(mixer.h264_sizes) == [(320, 180), (1280, 720)]
        # The 720p unit leaves: its size's encoder goes, the others' pictures go on.
        large.leave()
        assert await wait_until(lambda: (1280, 720) not in mixer.h264_sizes, timeout=5)
        before = len(small[0].sizes)
        assert await wait_until(lambda: small[0].decoded(before + 10), timeout=10)
        assert mixer.h264_sizes[(320, 180)].encoder is not None
        # Nobody receives video: no encoder is left and the video ticks stop.
        for unit in small:
            unit.leave()
        assert await wait_until(lambda: not mixer.composing and not mixer.h264_sizes, timeout=5)
        assert not mixer.needed and mixer.composite_for(codecs.VP8) is mixer.video_out
    finally:
        for unit in units:
            unit.close()


async def test_a_unit_of_the_rooms_own_size_is_encoded_from_the_rooms_canvas(room) -> None:
    mixer, sender = room
    unit = Unit("unit", mixer, (640, 360), sender)
    try:
        mixer.start()
        assert await wait_until(lambda: unit.decoded(5), timeout=15)
        assert set(unit.sizes) == {(640, 360)}
        # Not larger than the room's canvas: no second canvas is composed for it.
        assert mixer.composite_for(codecs.H264) is mixer.composite_for(codecs.H264, (640, 360))
        assert mixer._large is None
    finally:
        unit.leave()
        unit.close()


async def test_a_shared_screen_fills_a_large_units_composite_above_the_cameras(room) -> None:
    """A 720p unit's canvas (composed at its size, not scaled up) presents a screen as the
    room's does: the screen large, the cameras in a strip below."""
    mixer, sender = room
    yellow, red = (230, 230, 40), (220, 30, 30)
    counters = mixer.counters
    microphone = Producer("p-mic", "p", "audio", "microphone", counters)
    camera = Producer("p-cam", "p", "video", "camera", counters)
    screen = Producer("p-screen", "p", "video", "screen", counters)
    mixer.add_source("p", "Jana Nováková", microphone, camera)
    unit = Unit("unit", mixer, (1280, 720), sender)
    streams = {camera: vp8_frames(red, 300), screen: vp8_frames(yellow, 300, size=(640, 360))}
    sequence = {camera: 0, screen: 0}

    async def send(frames: int) -> None:
        """Each video's next pictures as RTP into its taps, as received packets are."""
        for _ in range(frames):
            for producer, pictures in streams.items():
                index = sequence[producer] % len(pictures)  # only the first is a key frame
                for position, payload in enumerate(payloads := packetize(pictures[index], index)):
                    sequence[producer] += 1
                    header = struct.pack("!BBHII", 0x80, (0x80 if position == len(payloads) - 1 else 0) | 96,
                                         sequence[producer] & 0xFFFF, index * 3000, 1)
                    producer.run_taps(header + payload)
            await asyncio.sleep(1 / 30)

    def share(colour) -> float:
        picture = unit.picture
        assert picture is not None
        return float((np.abs(picture.reshape(-1, 3).astype(int) - colour).max(axis=1) < 45).mean())

    try:
        mixer.start()
        mixer.set_screen("p", screen, "Jana Nováková")
        assert mixer.compositor.presentation == screen_source("p")
        for _ in range(40):
            await send(5)
            if unit.decoded(20) and mixer._large is not None and share(yellow) > 0.3:
                break
        assert mixer._large is not None and mixer._large.presentation == screen_source("p")
        assert set(unit.sizes) == {(1280, 720)}
        assert share(yellow) > 0.3 and share(red) > 0.005
        assert share(yellow) > 4 * share(red)
        # The share ends: the camera alone fills the canvas again.
        mixer.set_screen("p", None)
        assert mixer._large.presentation is None and screen.taps == []
        for _ in range(40):
            await send(5)
            unit.read()
            if share(yellow) < 0.01:
                break
        assert share(yellow) < 0.01 and share(red) > 0.3
    finally:
        unit.leave()
        unit.close()

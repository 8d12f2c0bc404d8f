"""The mixer's outputs (mcu/mixing.py MixOutput): who gets which payload, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from mcu._fanout import Sink

from mcu import rtp
from mcu.forwarding import Consumer
from mcu.mixing import MixOutput
from mcu.stats import WorkerCounters


class Listener:
    """One subscriber's mixed leg, sending plain RTP to a socket of its own."""

    def __init__(self, name: str, counters: WorkerCounters, sender: socket.socket) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.packets: list[bytes] = []
        self.consumer = Consumer(f"{name}-mix", "audio", name, counters)
        self.consumer.leg.ssrc, self.consumer.leg.payload_type = hash(name) & 0xFFFF, 111
        self.sink = Sink()
        self.sink.bind(sender.fileno(), *self.socket.getsockname(), 0, 0, None)
        self.consumer.leg.sink = self.sink

    def payloads(self) -> list[bytes]:
        """The payloads received since the last call (every packet is kept in `packets`)."""
        out = []
        while True:
            try:
                data = self.socket.recv(2048)
            except BlockingIOError:
                return out
            self.packets.append(data)
            view = rtp.parse_rtp(data)
            out.append(data[view.payload_start:view.payload_end])

    def close(self) -> None:
        self.sink.unbind()
        self.socket.close()


@pytest.fixture
def room() -> Iterator[tuple[MixOutput, dict[str, Listener]]]:
    counters = WorkerCounters()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    output = MixOutput("room-mix", "audio", counters)
    listeners = {name: Listener(name, counters, sender) for name in ("a", "b", "c", "d")}
    for listener in listeners.values():
        output.attach(listener.consumer)
    yield output, listeners
    for listener in listeners.values():
        listener.close()
    sender.close()


def test_each_talker_gets_its_own_payload_and_everybody_else_the_shared_one(room) -> None:
    output, listeners = room
    output.emit(960, False, b"\x78mix", {"a": b"\x78not-a", "b": b"\x78not-b"})
    got = {name: listener.payloads() for name, listener in listeners.items()}
    assert got == {"a": [b"\x78not-a"], "b": [b"\x78not-b"], "c": [b"\x78mix"], "d": [b"\x78mix"]}
    assert output.counters.packets_forwarded == 4

    # The talkers change: the legs are grouped anew.
    output.emit(1920, False, b"\x78mix2", {"c": b"\x78not-c"})
    got = {name: listener.payloads() for name, listener in listeners.items()}
    assert got == {"a": [b"\x78mix2"], "b": [b"\x78mix2"], "c": [b"\x78not-c"], "d": [b"\x78mix2"]}
    # Nobody talks: one payload for all.
    output.emit(2880, False, b"\x78quiet", {})
    assert all(listener.payloads() == [b"\x78quiet"] for listener in listeners.values())


def test_a_consumer_that_leaves_or_comes_is_grouped_at_the_next_packet(room) -> None:
    output, listeners = room
    own = {"a": b"\x78not-a"}
    output.emit(960, False, b"\x78mix", own)
    for listener in listeners.values():
        listener.payloads()
    output.detach(listeners["c"].consumer)
    output.emit(1920, False, b"\x78mix", own)
    assert listeners["c"].payloads() == []
    assert listeners["d"].payloads() == [b"\x78mix"] and listeners["a"].payloads() == [b"\x78not-a"]
    output.detach(listeners["a"].consumer)  # a talker who left gets nothing more
    output.emit(2880, False, b"\x78mix", own)
    assert listeners["a"].payloads() == []
    output.attach(listeners["c"].consumer)
    output.emit(3840, False, b"\x78mix", own)
    assert listeners["c"].payloads() == [b"\x78mix"]
    # d got every packet, numbered without a gap across the regroupings.
    assert listeners["d"].payloads() == [b"\x78mix"] * 2
    numbers = [rtp.parse_rtp(data).sequence_number for data in listeners["d"].packets]
    assert numbers == [(numbers[0] + i) & 0xFFFF for i in range(4)]

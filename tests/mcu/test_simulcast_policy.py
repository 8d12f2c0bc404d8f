"""Simulcast's choices as plain functions (mcu/simulcast.py), and the control side of a
layered producer (mcu/forwarding.py: Producer.set_layers, Consumer.set_layer)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from mcu._fanout import RECEIVED_SWITCHED, Counters, Leg, receive

from mcu import rtp
from mcu.forwarding import KEYFRAME_REQUEST_INTERVAL_S, Consumer, Producer
from mcu.simulcast import (
    LayeredVideo,
    answered_layers,
    layer_for_height,
    offer_layers,
    step_layers,
)
from mcu.stats import WorkerCounters
from tests.mcu.test_fanout import Link

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:10\r\na=sendonly\r\n"
)
SIMULCAST_LINES = [
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=rid:q recv", "a=rid:h recv", "a=rid:f recv",
    "a=simulcast:recv q;h;f",
]


def sections(sdp: str) -> list[str]:
    """The m-sections, each with its own line ends."""
    return re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)[1:]


# The offer and the answer ------------------------------------------------------------


def test_the_offer_asks_for_layers_on_the_given_mid_only() -> None:
    offered = offer_layers(OFFER, "1")
    assert "\n" not in offered.replace("\r\n", "")  # CRLF line ends, none bare
    assert offered.endswith("\r\n")
    before, after = sections(OFFER), sections(offered)
    assert after[0] == before[0] and after[2] == before[2]  # mid 0 and mid 10 ("1" is a prefix)
    assert after[1] == before[1] + "".join(line + "\r\n" for line in SIMULCAST_LINES)
    assert offered.startswith(OFFER.split("m=")[0])  # the session part unchanged
    # A mid that is not there: the offer as it was; LF-only input comes back CRLF.
    assert offer_layers(OFFER, "7") == OFFER
    assert offer_layers(OFFER.replace("\r\n", "\n"), "7") == OFFER


def answer(simulcast: str, mid: str = "1") -> str:
    return ("v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
            f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\n{simulcast}")


@pytest.mark.parametrize(("line", "rids"), [
    ("a=simulcast:send q;h;f\r\n", ["q", "h", "f"]),
    ("a=simulcast:send f;h;q\r\n", ["q", "h", "f"]),  # always low to high
    ("a=simulcast:send q;~h;f\r\n", ["q", "h", "f"]),  # paused now, still sent later
    ("a=simulcast:send q,h;f\r\n", ["q", "h", "f"]),  # alternatives
    ("a=simulcast:send h;f\r\n", ["h", "f"]),
    ("a=simulcast:send q;x;f\r\n", ["q", "f"]),  # a RID we never offered
    ("a=simulcast:recv q;h;f\r\n", []),  # the other direction
    ("a=sendonly\r\n", []),  # no simulcast: one stream
])
def test_the_answer_names_the_layers_it_sends(line: str, rids: list[str]) -> None:
    assert answered_layers(answer(line), "1") == rids


def test_layers_answered_on_another_mid_are_not_ours() -> None:
    sdp = answer("a=simulcast:send q;h;f\r\n", mid="2")
    assert answered_layers(sdp, "1") == []
    assert answered_layers(sdp, "2") == ["q", "h", "f"]
    assert answered_layers(sdp.replace("\r\n", "\n"), "2") == ["q", "h", "f"]


# Which layer a tile needs ------------------------------------------------------------


@pytest.mark.parametrize(("height", "available", "layer"), [
    (None, 3, 2),  # a tile of no known size: the top one
    (None, 2, 1),
    (0, 3, 0),  # hidden
    (135, 3, 0),
    (150, 3, 0),  # 135 >= 150 * 0.9: a little upscaling beats the next layer
    (151, 3, 1),
    (270, 3, 1),
    (300, 3, 1),
    (301, 3, 2),
    (500, 3, 2),
    (5000, 3, 2),  # bigger than any layer: the top one
    (500, 2, 1),  # only two layers sent
    (500, 1, 0),
])
def test_a_tile_gets_the_lowest_layer_at_least_about_its_height(height: float | None, available: int,
                                                               layer: int) -> None:
    assert layer_for_height(height, available) == layer


# Stepping layers within the estimate ---------------------------------------------------


def video(name: str, layer: int, wanted: int = 2, bps: tuple[float, ...] = (100_000, 400_000, 1_000_000)
          ) -> LayeredVideo:
    return LayeredVideo(name, layer, wanted, bps)


def test_tiles_that_shrank_step_down_at_once_whatever_the_estimate() -> None:
    videos = [video("a", 2, wanted=0), video("b", 1, wanted=2), video("c", 2, wanted=1)]
    # Several at once, straight to what the tile wants: that frees bandwidth.
    assert step_layers(videos, 10_000_000, congested=False, may_probe=True) == {"a": 0, "c": 1}
    assert step_layers(videos, None, congested=True, may_probe=False) == {"a": 0, "c": 1}


def test_congestion_steps_down_the_least_important_video_as_far_as_the_estimate_says() -> None:
    videos = [video("a", 2), video("b", 1), video("c", 0)]
    # "c" is the least important but on the lowest layer already: "b" steps down.
    assert step_layers(videos, 500_000, congested=True, may_probe=True) == {"b": 0}
    # One layer down when that fits within 90 % of the estimate (100k + 400k), further
    # when it does not (one switch to the lowest, not two); one layer with no estimate.
    assert step_layers([video("a", 2), video("b", 0)], 560_000, True, False) == {"a": 1}
    assert step_layers([video("a", 2), video("b", 0)], 500_000, True, False) == {"a": 0}
    assert step_layers([video("a", 2), video("b", 0)], None, True, False) == {"a": 1}
    # Nothing left to step down: last-N pauses instead (mcu/lastn.py).
    assert step_layers([video("a", 0), video("b", 0)], 100, True, True) == {}


def test_the_most_important_video_steps_up_when_the_estimate_has_room() -> None:
    videos = [video("a", 0), video("b", 0)]  # 200 kbit/s carried
    # To a's layer 1: 200k + 300k = 500k, within 90 % of the estimate.
    assert step_layers(videos, 560_000, congested=False, may_probe=False) == {"a": 1}
    # Not within it: no step, and not b's either (no skipping ahead to a cheaper one).
    assert step_layers(videos, 550_000, congested=False, may_probe=False) == {}
    assert step_layers([video("a", 0, bps=(100_000, 5_000_000)), video("b", 0)], 1_000_000, False,
                       False) == {}
    # A probe steps up anyway; no estimate yet means only a probe does.
    assert step_layers(videos, 550_000, congested=False, may_probe=True) == {"a": 1}
    assert step_layers(videos, None, congested=False, may_probe=False) == {}
    assert step_layers(videos, None, congested=False, may_probe=True) == {"a": 1}
    # One step at a time, to the next layer only.
    assert step_layers([video("a", 0), video("b", 0)], 100_000_000, False, False) == {"a": 1}
    # A subscriber whose link is tried with padding first: the estimate alone never
    # steps it up (mcu/room.py probes, then steps).
    assert step_layers(videos, 100_000_000, False, False, up_by_estimate=False) == {}


def test_videos_at_what_their_tiles_want_leave_room_for_the_next() -> None:
    videos = [video("a", 1, wanted=1), video("b", 0, wanted=2)]
    assert step_layers(videos, 10_000_000, congested=False, may_probe=False) == {"b": 1}
    assert step_layers([video("a", 1, wanted=1)], 10_000_000, False, True) == {}


def test_unmeasured_layers_are_counted_at_their_nominal_bitrate() -> None:
    # Layer rates of 0 (not measured yet, or paused at the publisher): 150k, 500k, 1.2M.
    # 150k carried + 350k more = 500k: within 90 % of 560k, not of 550k.
    videos = [video("a", 0, bps=(0, 0, 0))]
    assert step_layers(videos, 560_000, congested=False, may_probe=False) == {"a": 1}
    assert step_layers(videos, 550_000, congested=False, may_probe=False) == {}


# The control side: a layered producer and its consumers ----------------------------------


class Camera:
    """A camera producer sent as q/h/f, each layer with its own SSRC and a PLI recorder."""

    def __init__(self) -> None:
        self.counters = WorkerCounters()
        self.group = Producer("alice-camera", "alice", "video", "camera", self.counters)
        self.group.set_layers(["q", "h", "f"])
        self.plis: list[int] = []  # the media SSRC each PLI asks
        for index, layer in enumerate(self.group.layers):
            layer.ssrc = 100 + index
            layer.feedback = self.record

    def record(self, packet: bytes) -> None:
        self.plis.append(int.from_bytes(packet[8:12], "big"))

    def asked(self) -> list[int]:
        """The SSRCs asked since the last call; the once-a-second limit is lifted, so
        each call sees exactly what was asked since."""
        asked, self.plis = self.plis, []
        for layer in self.group.layers:
            layer.last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL_S
        return sorted(asked)

    def legs_of(self, layer: int) -> tuple[Leg, ...]:
        return self.group.layers[layer].track.legs


@pytest.fixture
def link() -> Iterator[Link]:
    made = Link()
    yield made
    made.close()


def consumer(camera: Camera, name: str) -> Consumer:
    made = Consumer(name, "video", "bob", camera.counters)
    made.switch_to(camera.group)
    return made


def test_layers_are_producers_of_their_own_and_a_new_consumer_gets_the_top_one() -> None:
    camera = Camera()
    assert [layer.rid for layer in camera.group.layers] == ["q", "h", "f"]
    assert all(layer.group is camera.group for layer in camera.group.layers)
    first = consumer(camera, "slot-1")
    assert first.leg.source is camera.group.layers[2].track and first.source is camera.group.layers[2]
    assert camera.legs_of(2) == (first.leg,) and camera.legs_of(0) == camera.legs_of(1) == ()
    assert camera.group.track.legs == ()  # the group's own track is unused
    assert camera.asked() == [102]  # a keyframe of what it will send, nothing else


def test_a_consumer_not_started_moves_at_once_and_a_started_one_waits_for_a_keyframe() -> None:
    camera = Camera()
    first, second = consumer(camera, "slot-1"), consumer(camera, "slot-2")
    camera.asked()
    first.set_layer(0)  # nothing sent yet: no keyframe of the top layer to wait for
    assert (first.layer, first.target_layer) == (0, None)
    assert first.leg.source is camera.group.layers[0].track and first.leg.target is None
    assert camera.legs_of(0) == (first.leg,) and camera.legs_of(2) == (second.leg,)
    assert camera.asked() == [100]

    second.leg.started = True  # it is sending the top layer now
    second.set_layer(1)
    assert (second.layer, second.target_layer) == (None, 1)
    assert second.leg.source is camera.group.layers[2].track
    assert second.leg.target is camera.group.layers[1].track
    # In the legs of both: it sends f until h's keyframe, which h's packets bring.
    assert camera.legs_of(1) == (second.leg,) and camera.legs_of(2) == (second.leg,)
    assert camera.legs_of(0) == (first.leg,)
    assert camera.asked() == [101, 102]  # the layer it has and the one it moves to
    second.request_keyframe()
    assert camera.asked() == [101, 102]
    first.request_keyframe()
    assert camera.asked() == [100]  # only its own layer

    # Back to the layer it has before the switch: nothing waits any more.
    second.set_layer(2)
    assert second.target_layer is None and second.leg.target is None
    assert camera.legs_of(1) == () and camera.legs_of(2) == (second.leg,)


def test_a_switch_done_in_c_is_taken_note_of(link: Link) -> None:
    camera = Camera()
    slot = consumer(camera, "slot-1")
    slot.configure(0x5151, 0, 96, None, lambda _: None, link.sink)
    for layer in camera.group.layers:
        layer.track.payload_type = 96
    tracks = {layer.ssrc: layer.track for layer in camera.group.layers}
    counters = Counters()
    keyframe = b"\x90\x80\x80\x01\x00key"  # VP8: X, I, a 15-bit picture ID, P bit clear
    assert receive(tracks, rtp.rtp_header(96, True, 1, 1, 102, False) + keyframe, counters) == 0
    link.receive()
    slot.set_layer(0)
    assert slot.target_layer == 0
    flags = receive(tracks, rtp.rtp_header(96, True, 50, 9, 100, False) + keyframe, counters)
    assert flags & RECEIVED_SWITCHED
    slot.switched()  # what the participant does for each consumer waiting on that group
    assert (slot.layer, slot.target_layer) == (0, None) and slot.source is camera.group.layers[0]
    assert camera.legs_of(0) == (slot.leg,) and camera.legs_of(2) == ()
    assert rtp.parse_rtp(link.receive()).sequence_number == (slot.leg.next_seq - 1) & 0xFFFF


def test_relink_and_detach_keep_each_layers_legs_exact() -> None:
    camera = Camera()
    slots = [consumer(camera, f"slot-{n}") for n in range(3)]
    slots[0].set_layer(0)
    slots[1].leg.started = True
    slots[1].set_layer(0)
    for layer in range(3):  # exactly the legs whose source or target is that layer
        track = camera.group.layers[layer].track
        expected = tuple(s.leg for s in slots if track in (s.leg.source, s.leg.target))
        assert camera.legs_of(layer) == expected
    assert camera.legs_of(0) == (slots[0].leg, slots[1].leg)
    assert camera.legs_of(2) == (slots[1].leg, slots[2].leg)
    slots[1].switch_to(None)
    assert slots[1].leg.source is None and slots[1].leg.target is None
    assert camera.legs_of(0) == (slots[0].leg,) and camera.legs_of(2) == (slots[2].leg,)
    # The publisher stops simulcast: everyone back on the group's one track.
    camera.group.set_layers([])
    assert camera.group.track.legs == (slots[0].leg, slots[2].leg)
    assert all(s.leg.source is camera.group.track for s in (slots[0], slots[2]))


def test_padding_is_rtx_copies_of_the_newest_packets_each_with_a_transport_number(link: Link) -> None:
    camera = Camera()
    slot = consumer(camera, "slot-1")
    written: list[bytes] = []
    link.sink.transport_cc_id = 5
    slot.configure(0x5151, 0x7171, 96, None, written.append, link.sink)
    assert not slot.can_pad and slot.pad(5000) == 0  # no RTX negotiated: nothing to pad with
    slot.configure(0x5151, 0x7171, 96, 97, written.append, link.sink)
    assert not slot.can_pad and slot.pad(5000) == 0  # nothing sent yet
    for layer in camera.group.layers:
        layer.track.payload_type = 96
    tracks = {layer.ssrc: layer.track for layer in camera.group.layers}
    counters = Counters()
    keyframe = b"\x90\x80\x80\x01\x00" + bytes(1000)  # VP8: X, I, a 15-bit picture ID, P bit clear
    for seq in range(1, 31):
        receive(tracks, rtp.rtp_header(96, False, seq, 9, 102, False) + keyframe, counters)
    forwarded = [rtp.parse_rtp(link.receive()).sequence_number for _ in range(30)]

    sent = slot.pad(5000)
    assert 5000 <= sent < 5000 + 1100 and len(written) == 5
    originals = []
    for packet in written:
        view = rtp.parse_rtp(packet)
        assert (view.payload_type, view.ssrc) == (97, 0x7171)
        original = int.from_bytes(packet[view.payload_start:view.payload_start + 2], "big")
        assert original in forwarded[-16:]  # the newest: the subscriber still holds them
        originals.append(original)
    assert len(set(originals)) == 5 and camera.counters.padding_packets == 5
    # Each copy has a transport-wide number of its own after the 30 forwarded, which the
    # subscriber's feedback will be matched with.
    assert all(item is not None for item in link.sink.sent_range(0, 35))
    assert link.sink.sent_range(35, 1) == [None]

    assert slot.can_pad
    slot.pause()
    assert not slot.can_pad and slot.pad(5000) == 0

"""The compositor, judged by decoding what it encoded."""

from __future__ import annotations

import av
import numpy as np
import pytest

from mcu.mixer import font
from mcu.mixer.composite import Compositor
from mcu.mixer.layout import grid, speaker
from mcu.mixer.vp8 import EncodedFrame, SelectiveDecoder, Vp8Decoder, is_keyframe
from tests.mixer.mixer_media import vp8_frames

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 230, 40),
    "magenta": (210, 40, 210),
}
FRAMES = 12


@pytest.fixture(scope="module")
def streams() -> dict[str, list[bytes]]:
    return {name: vp8_frames(colour, FRAMES) for name, colour in COLOURS.items()}


class Viewer:
    """A subscriber: decodes the composite stream as a browser would."""

    def __init__(self) -> None:
        self.codec = av.CodecContext.create("libvpx", "r")
        self.picture: np.ndarray | None = None

    def receive(self, frames: list[EncodedFrame]) -> None:
        for f in frames:
            for decoded in self.codec.decode(av.Packet(f.data)):
                self.picture = decoded.to_ndarray(format="rgb24")


def tile_colour(picture: np.ndarray, comp: Compositor, source: str) -> np.ndarray:
    tile = comp.tile_of(source)
    assert tile is not None
    cy, cx = tile.y + tile.height // 2, tile.x + tile.width // 2
    # The middle of the tile, clear of the moving bar at the top of each source.
    patch = picture[cy - 8 : cy + 8, cx - 8 : cx + 8].reshape(-1, 3)
    return patch.mean(axis=0)


def assert_colour(actual: np.ndarray, expected: tuple[int, int, int]) -> None:
    assert np.abs(actual - np.array(expected)).max() < 30, (actual, expected)


def run(comp: Compositor, decoders: SelectiveDecoder, streams, sources, ticks, viewer) -> None:
    for i in range(ticks):
        for s in sources:
            frames = streams[s]
            if i < len(frames):
                picture = decoders.decode(s, frames[i])
                if picture is not None:
                    comp.push_frame(s, picture)
        viewer.receive(comp.tick())


@pytest.mark.parametrize("count", [1, 4, 5])
def test_each_source_shows_its_colour_in_its_tile(streams, count: int) -> None:
    sources = list(COLOURS)[:count]
    comp = Compositor(640, 360, fps=30)
    decoders = SelectiveDecoder()
    for s in sources:
        comp.add_source(s, s.title())
    decoders.select(comp.shown())
    viewer = Viewer()
    run(comp, decoders, streams, sources, FRAMES, viewer)
    assert viewer.picture is not None and viewer.picture.shape == (360, 640, 3)
    for s in sources:
        assert_colour(tile_colour(viewer.picture, comp, s), COLOURS[s])


def test_names_are_written_under_the_tiles(streams) -> None:
    comp = Compositor(640, 360)
    comp.add_source("red", "Jiří Novák")
    comp.add_source("blue", "")
    comp.push_frame("red", np.zeros((240, 320, 3), dtype=np.uint8))
    comp.push_frame("blue", np.zeros((240, 320, 3), dtype=np.uint8))
    comp.compose()
    y = comp.canvas()[:360]
    for source, named in (("red", True), ("blue", False)):
        tile = comp.tile_of(source)
        assert tile is not None and tile.label_height > 0
        strip = y[tile.label_y : tile.label_y + tile.label_height, tile.x : tile.x + tile.width]
        assert (strip > 200).any() == named


def test_a_source_that_stops_keeps_a_frozen_tile_also_across_a_layout_change(streams) -> None:
    comp = Compositor(640, 360)
    decoders = SelectiveDecoder()
    for s in ("red", "green"):
        comp.add_source(s, s)
    decoders.select(comp.shown())
    viewer = Viewer()
    sends = {"red": streams["red"][:3], "green": streams["green"]}  # red stops after 3
    run(comp, decoders, sends, ["red", "green"], FRAMES, viewer)
    assert viewer.picture is not None
    assert_colour(tile_colour(viewer.picture, comp, "red"), COLOURS["red"])
    # A newcomer changes the layout: red is rescaled from its last picture.
    comp.add_source("blue", "blue")
    decoders.select(comp.shown())
    run(comp, decoders, {"blue": streams["blue"], "green": streams["green"]}, ["blue"], 6, viewer)
    for s in ("red", "green", "blue"):
        assert_colour(tile_colour(viewer.picture, comp, s), COLOURS[s])


def test_garbage_from_a_source_freezes_its_tile_and_asks_for_a_keyframe(streams) -> None:
    comp = Compositor(320, 180)
    decoders = SelectiveDecoder()
    comp.add_source("red")
    comp.add_source("green")
    decoders.select(comp.shown())
    viewer = Viewer()
    run(comp, decoders, streams, ["red", "green"], 4, viewer)
    rng = np.random.default_rng(5)
    garbage = [rng.bytes(500), b"", b"\x00" * 20, bytes([0x10]) + rng.bytes(40)]
    keyish = b"\x50\x00\x00\x9d\x01\x2a" + rng.bytes(100)  # a key frame header, then junk
    for junk in [*garbage, keyish]:
        picture = decoders.decode("red", junk)
        if picture is not None:
            comp.push_frame("red", picture)
        viewer.receive(comp.tick())
    assert decoders.needs_keyframe("red")
    assert_colour(tile_colour(viewer.picture, comp, "red"), COLOURS["red"])
    assert_colour(tile_colour(viewer.picture, comp, "green"), COLOURS["green"])


def test_a_keyframe_request_forces_a_keyframe_of_the_shared_encode() -> None:
    comp = Compositor(320, 180)
    comp.add_source("a")
    comp.push_frame("a", np.full((90, 160, 3), 100, dtype=np.uint8))
    first = comp.tick()
    assert first[0].keyframe and is_keyframe(first[0].data)
    deltas = [f for _ in range(20) for f in comp.tick()]
    assert not any(f.keyframe for f in deltas)
    comp.request_keyframe()
    forced = comp.tick()
    assert forced[0].keyframe and is_keyframe(forced[0].data)
    # A late joiner can start from that frame alone.
    late = Vp8Decoder()
    assert late.decode(forced[0].data) is not None


def test_a_storm_of_keyframe_requests_gives_one_keyframe_per_interval() -> None:
    comp = Compositor(320, 180, fps=30, min_keyframe_interval=0.5)
    comp.add_source("a")
    comp.push_frame("a", np.full((90, 160, 3), 100, dtype=np.uint8))
    keyframes = []
    for i in range(60):
        comp.request_keyframe()  # every subscriber sends PLI, every frame
        keyframes += [i for f in comp.tick() if f.keyframe]
    assert keyframes == [0, 15, 30, 45]


def test_only_selected_sources_are_decoded(streams) -> None:
    decoders = SelectiveDecoder()
    assert decoders.select(["red"]) == ["red"]
    assert decoders.decode("green", streams["green"][0]) is None
    assert decoders.decode("red", streams["red"][1]) is None  # a delta before any key
    assert decoders.decode("red", streams["red"][0]) is not None
    assert decoders.select(["red", "green"]) == ["green"]  # green needs a key frame (PLI)
    assert decoders.needs_keyframe("green") and not decoders.needs_keyframe("red")


def test_speaker_layout_puts_the_speaker_large_and_first(streams) -> None:
    comp = Compositor(640, 360, layout="speaker")
    for s in ("red", "green", "blue"):
        comp.add_source(s, s)
    comp.set_speaker("blue")
    assert comp.shown()[0] == "blue"
    big, small = comp.tile_of("blue"), comp.tile_of("red")
    assert big is not None and small is not None
    assert big.width * big.height > 4 * small.width * small.height
    decoders = SelectiveDecoder()
    decoders.select(comp.shown())
    viewer = Viewer()
    run(comp, decoders, streams, ["red", "green", "blue"], FRAMES, viewer)
    for s in ("red", "green", "blue"):
        assert_colour(tile_colour(viewer.picture, comp, s), COLOURS[s])


@pytest.mark.parametrize("count", range(1, 11))
def test_layouts_keep_tiles_inside_the_picture_and_apart(count: int) -> None:
    for tiles in (grid(count, 1280, 720), speaker(count, 1280, 720)):
        assert len(tiles) == count
        boxes = [(t.x, t.y, t.x + t.width, t.label_y + t.label_height) for t in tiles]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
            assert x0 % 2 == y0 % 2 == 0
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_names_keep_their_diacritics_and_a_long_one_ends_in_an_ellipsis() -> None:
    # A háček over the R: the top rows of "Ř" have ink that "R" has not.
    plain, caron = font.render("R", 20, 100), font.render("Ř", 20, 100)
    assert plain.shape[0] == caron.shape[0] == 20
    top = slice(0, 3)  # above the cap height
    assert caron[top].max() > 128 and plain[top].max() < 64
    assert (font.render("Jiří Nováček", 20, 300) != font.render("Jiri Novacek", 20, 300)).any()
    # Too long for the tile: cut, with an ellipsis, within the width.
    long = font.render("Krajské ředitelství policie Kraje Vysočina, územní odbor Jihlava", 16, 120)
    assert 0 < long.shape[1] <= 120
    assert font.render("", 16, 120).shape[1] == 0


def test_a_presentation_is_shown_large_above_the_cameras_until_it_ends(streams) -> None:
    comp = Compositor(640, 360, layout="grid")
    for s in ("red", "green", "blue"):
        comp.add_source(s, s)
    comp.set_speaker("green")
    grid_tiles = {s: comp.tile_of(s) for s in ("red", "green", "blue")}
    comp.add_source("yellow", "red – obrazovka")  # red's shared screen
    comp.set_presentation("yellow")
    assert comp.shown()[:2] == ["yellow", "green"]  # the screen, then the speaker
    screen = comp.tile_of("yellow")
    cameras = [comp.tile_of(s) for s in ("red", "green", "blue")]
    assert screen is not None and all(c is not None for c in cameras)
    assert all(screen.width * screen.height > 4 * c.width * c.height for c in cameras)
    assert all(c.y > screen.y + screen.height for c in cameras)  # a strip below it
    decoders = SelectiveDecoder()
    decoders.select(comp.shown())
    viewer = Viewer()
    run(comp, decoders, streams, ["red", "green", "blue", "yellow"], FRAMES, viewer)
    for s in ("red", "green", "blue", "yellow"):
        assert_colour(tile_colour(viewer.picture, comp, s), COLOURS[s])
    # The share ends: the grid again, with only the cameras.
    comp.remove_source("yellow")
    assert comp.presentation is None and "yellow" not in comp.shown()
    assert {s: comp.tile_of(s) for s in ("red", "green", "blue")} == grid_tiles

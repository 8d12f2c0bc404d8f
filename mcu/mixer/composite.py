"""The video compositor: one picture of many sources, encoded once per layout.

Sources hand in decoded frames whenever they have them (`push_frame`); only the
latest is kept. On each frame tick (`tick`) a source with a new frame is scaled
once to its tile (swscale through PyAV) and copied into a persistent YUV 4:2:0
canvas; tiles that did not change are not touched, and a source that stops
sending simply keeps its last picture (a frozen tile). The canvas is encoded once
with VP8 and the same packets go to every subscriber of this layout; a key frame
request from any of them forces a key frame of this one encode.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from . import font
from .layout import LayoutKind, Tile, tiles_for
from .vp8 import VIDEO_CLOCK, VIDEO_TIME_BASE, EncodedFrame, Vp8Encoder

SourceId = Hashable

# Video-range black and neutral chroma; the strip under a tile is a little lighter
# so that the name reads as a caption, not as part of the picture.
_BACKGROUND_Y = 16
_LABEL_Y = 40
_TEXT_Y = 235
_NEUTRAL_UV = 128


@dataclass(slots=True)
class _Source:
    name: str
    pending: av.VideoFrame | None = None  # newest frame not yet scaled
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # scaled to tile
    scaled_for: tuple[int, int] | None = None
    source_size: tuple[int, int] | None = None
    dirty: bool = False
    # A reformatter per source keeps its swscale context between frames; a bare
    # `frame.reformat` builds a new one each call and costs four times as much.
    scaler: VideoReformatter = field(default_factory=VideoReformatter)


class Compositor:
    """A fixed-size composite of the sources, in a grid or an active-speaker layout."""

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        layout: LayoutKind = "grid",
        bitrate: int | None = None,
        max_tiles: int = 9,
        min_keyframe_interval: float = 0.5,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError("a YUV 4:2:0 composite needs an even width and height")
        self.width, self.height, self.fps = width, height, fps
        self.max_tiles = max_tiles
        self._kind: LayoutKind = layout
        self._sources: dict[SourceId, _Source] = {}
        self._speaker: SourceId | None = None
        # A shared screen: shown large with the cameras in a strip below, whatever the
        # layout, as long as it is shared (a room unit has no other way to see it).
        self._presentation: SourceId | None = None
        self._tiles: dict[SourceId, Tile] = {}
        self._layout_dirty = True
        # One buffer in PyAV's yuv420p ndarray layout, with views on its planes.
        self._canvas = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self._y = self._canvas[:height]
        chroma = self._canvas[height:].reshape(2, height // 2, width // 2)
        self._u, self._v = chroma[0], chroma[1]
        self._encoder = Vp8Encoder(width, height, fps, bitrate)
        self._keyframe_requested = True
        # Many subscribers asking at once (a PLI storm after a network blip) must not
        # turn every frame into a key frame: one per interval, the rest wait for it.
        self._keyframe_gap = max(1, round(min_keyframe_interval * fps))
        self._since_keyframe = self._keyframe_gap
        self._frame_index = 0

    # -- sources -------------------------------------------------------------------
    def add_source(self, source: SourceId, name: str = "") -> None:
        if source not in self._sources:
            self._sources[source] = _Source(name)
            self._layout_dirty = True

    def remove_source(self, source: SourceId) -> None:
        if self._sources.pop(source, None) is not None:
            self._layout_dirty = True
        if self._speaker == source:
            self._speaker = None
        if self._presentation == source:
            self._presentation = None

    def set_name(self, source: SourceId, name: str) -> None:
        src = self._sources.get(source)
        if src is not None and src.name != name:
            src.name = name
            self._layout_dirty = True

    def set_layout(self, kind: LayoutKind) -> None:
        if kind != self._kind:
            self._kind = kind
            self._layout_dirty = True

    def set_speaker(self, source: SourceId | None) -> None:
        """The active speaker: first (large, in the speaker layout) and always shown."""
        if source != self._speaker:
            self._speaker = source
            self._layout_dirty = True

    def set_presentation(self, source: SourceId | None) -> None:
        """The source shown large above the others (a shared screen), or none."""
        if source != self._presentation:
            self._presentation = source
            self._layout_dirty = True

    @property
    def layout(self) -> LayoutKind:
        return self._kind

    @property
    def presentation(self) -> SourceId | None:
        return self._presentation if self._presentation in self._sources else None

    def shown(self) -> list[SourceId]:
        """Sources with a tile, in tile order: the ones a decoder should be kept for."""
        order = list(self._sources)
        for first in (self._speaker, self.presentation):  # the presentation before the speaker
            if first in self._sources:
                order.remove(first)
                order.insert(0, first)
        return order[: self.max_tiles]

    def tile_of(self, source: SourceId) -> Tile | None:
        """Where a source is shown (its size is what its sender should send, ideally)."""
        self._relayout_if_needed()
        return self._tiles.get(source)

    def push_frame(self, source: SourceId, frame: av.VideoFrame | np.ndarray) -> None:
        """The newest decoded picture of a source (a VideoFrame, or an RGB24 array)."""
        src = self._sources.get(source)
        if src is None:
            return
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        src.pending = frame

    def request_keyframe(self) -> None:
        self._keyframe_requested = True

    # -- output --------------------------------------------------------------------
    def compose(self) -> av.VideoFrame:
        """Bring the canvas up to date and return it as a frame (pts on 90 kHz)."""
        self._relayout_if_needed()
        for source, tile in self._tiles.items():
            src = self._sources[source]
            if src.pending is not None:
                self._scale(src, src.pending, tile)
                src.pending = None
            if src.dirty and src.planes is not None:
                self._draw(src, tile)
                src.dirty = False
        frame = av.VideoFrame.from_ndarray(self._canvas, format="yuv420p")
        frame.pts = round(self._frame_index * VIDEO_CLOCK / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._frame_index += 1
        return frame

    def tick(self) -> list[EncodedFrame]:
        """Compose and encode one frame of the fixed frame tick."""
        return self.encode(self.compose())

    def encode(self, frame: av.VideoFrame) -> list[EncodedFrame]:
        """Encode a composed frame, honouring (and rate-limiting) key frame requests."""
        self._since_keyframe += 1
        keyframe = self._keyframe_requested and self._since_keyframe >= self._keyframe_gap
        if keyframe:
            self._keyframe_requested = False
        packets = self._encoder.encode(frame, keyframe)
        if any(p.keyframe for p in packets):
            self._since_keyframe = 0
        return packets

    def canvas(self) -> np.ndarray:
        """The composite in PyAV's yuv420p array layout (read-only view, for tests)."""
        view = self._canvas.view()
        view.setflags(write=False)
        return view

    # -- internals -----------------------------------------------------------------
    def _relayout_if_needed(self) -> None:
        if not self._layout_dirty:
            return
        self._layout_dirty = False
        shown = self.shown()
        kind: LayoutKind = "speaker" if self.presentation is not None else self._kind
        tiles = tiles_for(kind, len(shown), self.width, self.height)
        self._tiles = dict(zip(shown, tiles, strict=True))
        self._y[:] = _BACKGROUND_Y
        self._u[:] = _NEUTRAL_UV
        self._v[:] = _NEUTRAL_UV
        for source, tile in self._tiles.items():
            src = self._sources[source]
            self._draw_label(src.name, tile)
            # Rescale the last picture for the new tile: a frozen source stays
            # visible across a layout change.
            if (
                src.planes is not None
                and src.scaled_for != (tile.width, tile.height)
                and src.pending is None
            ):
                src.pending = self._planes_to_frame(src.planes)
            src.dirty = src.planes is not None

    @staticmethod
    def _planes_to_frame(planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> av.VideoFrame:
        y, u, v = planes
        h, w = y.shape
        buf = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])
        return av.VideoFrame.from_ndarray(buf.reshape(h * 3 // 2, w), format="yuv420p")

    def _scale(self, src: _Source, frame: av.VideoFrame, tile: Tile) -> None:
        fw, fh = frame.width, frame.height
        if fw < 2 or fh < 2 or tile.width < 2 or tile.height < 2:
            return
        # Fit inside the tile keeping the aspect ratio; the rest stays background.
        s = min(tile.width / fw, tile.height / fh)
        w = max(2, int(fw * s) // 2 * 2)
        h = max(2, int(fh * s) // 2 * 2)
        # AREA: a clean downscale (sources are mostly larger than their tile), and
        # as cheap as bilinear here.
        scaled = src.scaler.reformat(
            frame, width=w, height=h, format="yuv420p", interpolation=Interpolation.AREA
        )
        src.planes = tuple(  # type: ignore[assignment]
            np.frombuffer(p, dtype=np.uint8).reshape(p.height, p.line_size)[:, : p.width]
            for p in scaled.planes
        )
        src.source_size = (fw, fh)
        src.scaled_for = (tile.width, tile.height)
        src.dirty = True

    def _draw(self, src: _Source, tile: Tile) -> None:
        assert src.planes is not None
        y, u, v = src.planes
        h, w = y.shape
        if w > tile.width or h > tile.height:  # scaled for an older, larger tile
            return
        x0 = tile.x + (tile.width - w) // 2 // 2 * 2
        y0 = tile.y + (tile.height - h) // 2 // 2 * 2
        self._y[y0 : y0 + h, x0 : x0 + w] = y
        self._u[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] = u
        self._v[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] = v

    def _draw_label(self, name: str, tile: Tile) -> None:
        if not tile.label_height:
            return
        ly = tile.label_y
        self._y[ly : ly + tile.label_height, tile.x : tile.x + tile.width] = _LABEL_Y
        if not name:
            return
        coverage = font.render(name, tile.label_height - 2, tile.width - 8)
        mh, mw = coverage.shape
        tx = tile.x + (tile.width - mw) // 2
        ty = ly + (tile.label_height - mh) // 2
        region = self._y[ty : ty + mh, tx : tx + mw]
        # Anti-aliased: each pixel between the strip's grey and white by its coverage.
        alpha = coverage.astype(np.uint16)
        region[:] = ((region * (255 - alpha) + _TEXT_Y * alpha) // 255).astype(np.uint8)

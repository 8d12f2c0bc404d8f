"""Record the composite and the mixed audio to WebM/Matroska, without re-encoding.

The packets the mixer and the compositor already made for their listeners (Opus,
VP8) are muxed as they are, so a recording costs a write, not an encode.

A recording must be a finished, seekable file however the room ends:

- `close()` (idempotent) writes the cues and the duration; `stop()` is its alias
  and a room's close should call it;
- if the owner is dropped or the process exits without closing (an exception
  unwinding a room, a normal exit), a `weakref.finalize` hook closes the file;
- if the process is killed outright, the clusters written so far (flushed every
  second) are still readable, and `repair()` rewrites them into a finished file.
"""

from __future__ import annotations

import contextlib
import fractions
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import av

from .opus import FRAME_SAMPLES, SAMPLE_RATE
from .vp8 import VIDEO_CLOCK, EncodedFrame

_AUDIO_TB = fractions.Fraction(1, SAMPLE_RATE)
_VIDEO_TB = fractions.Fraction(1, VIDEO_CLOCK)


def _format_for(path: Path) -> str:
    return "webm" if path.suffix.lower() == ".webm" else "matroska"


def _close_container(container: av.container.OutputContainer) -> None:
    # Runs from close() or from the finalizer: must not raise, must not run twice.
    # A half-written file is still better closed than left open.
    with contextlib.suppress(Exception):
        container.close()


class Recorder:
    """Writes pre-encoded VP8 and Opus packets of one room to a file.

    Timestamps: audio on 48 kHz samples (`MixTick.timestamp`), video on the 90 kHz
    clock (`EncodedFrame.timestamp`). The two clocks have different origins, so
    each stream's first packet is placed at the wall-clock time it arrives since
    the recorder started (`clock`), and the stream's own timestamps rule after that.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        video_size: tuple[int, int] | None = (640, 360),
        fps: float = 30.0,
        audio: bool = True,
        clock: Callable[[], float] = time.monotonic,
        keyframe_interval: float = 4.0,
    ) -> None:
        if video_size is None and not audio:
            raise ValueError("a recording needs video, audio or both")
        self.path = Path(path)
        self._clock = clock
        self._start = clock()
        container = av.open(
            str(self.path),
            "w",
            format=_format_for(self.path),
            # Clusters of at most a second, flushed as written: a killed process
            # loses at most that much.
            options={"cluster_time_limit": "1000", "flush_packets": "1"},
        )
        self._container = container
        self._video = None
        self._audio = None
        if video_size is not None:
            rate = fractions.Fraction(fps).limit_denominator(1001)
            stream = container.add_stream("libvpx", rate=rate)
            stream.width, stream.height = video_size
            stream.pix_fmt = "yuv420p"
            self._video = stream
        if audio:
            # The stream's own libopus encoder is only opened (never fed) so that
            # the muxer gets the OpusHead our mixer's packets need.
            stream = container.add_stream("libopus", rate=SAMPLE_RATE)
            stream.layout = "mono"
            self._audio = stream
        self._video_duration = round(VIDEO_CLOCK / fps)
        self._origin: dict[str, int] = {}  # stream -> offset added to its timestamps
        self._last: dict[str, int] = {}
        self._waiting_for_keyframe = video_size is not None
        self._keyframe_every = round(keyframe_interval * VIDEO_CLOCK)
        self._last_keyframe: int | None = None
        self.dropped = 0
        # The write error that ended the recording (a full disk, a volume gone): the
        # file is closed then, as far as it can be, and nothing more is written.
        self.failed: OSError | None = None
        self._finalizer = weakref.finalize(self, _close_container, container)

    # -- writing -------------------------------------------------------------------
    @property
    def waiting_for_keyframe(self) -> bool:
        """True until the first video key frame: ask the compositor for one."""
        return self._waiting_for_keyframe

    @property
    def wants_keyframe(self) -> bool:
        """True when the compositor should make a key frame: before the first one, and
        every `keyframe_interval` seconds after, so that the file can be seeked."""
        if self._video is None or self.closed:
            return False
        if self._waiting_for_keyframe or self._last_keyframe is None:
            return True
        last_video = self._last.get("video", self._last_keyframe)
        return last_video - self._last_keyframe >= self._keyframe_every

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def write_audio(self, packet: bytes, timestamp: int) -> bool:
        """One Opus packet of the mix; `timestamp` in 48 kHz samples."""
        if self._audio is None or self.closed or not packet:
            return False
        pts = self._place("audio", timestamp, SAMPLE_RATE)
        if pts is None:
            return False
        p = av.Packet(packet)
        p.pts = p.dts = pts
        p.duration = FRAME_SAMPLES
        p.time_base = _AUDIO_TB
        p.stream = self._audio
        return self._mux(p)

    def write_video(self, frame: EncodedFrame) -> bool:
        """One VP8 frame of the composite; delta frames before the first key are dropped."""
        if self._video is None or self.closed:
            return False
        if self._waiting_for_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return False
            self._waiting_for_keyframe = False
        pts = self._place("video", frame.timestamp, VIDEO_CLOCK)
        if pts is None:
            return False
        p = av.Packet(frame.data)
        p.pts = p.dts = pts
        p.duration = self._video_duration
        p.time_base = _VIDEO_TB
        p.is_keyframe = frame.keyframe
        p.stream = self._video
        if frame.keyframe:
            self._last_keyframe = pts
        return self._mux(p)

    def _place(self, kind: str, timestamp: int, rate: int) -> int | None:
        origin = self._origin.get(kind)
        if origin is None:
            elapsed = max(0.0, self._clock() - self._start)
            origin = self._origin[kind] = round(elapsed * rate) - timestamp
        pts = timestamp + origin
        last = self._last.get(kind)
        if last is not None and pts <= last:
            self.dropped += 1  # a muxer needs rising timestamps; a repeat is no loss
            return None
        self._last[kind] = pts
        return pts

    def _mux(self, packet: av.Packet) -> bool:
        try:
            self._container.mux(packet)
        except OSError as exc:  # PyAV's av.error.OSError and its errno subclasses
            # The file cannot be written: every later packet would fail the same way, each
            # at the cost of a system call, and the owner must know to tell someone.
            self.dropped += 1
            self.failed = exc
            self.close()
            return False
        except (av.FFmpegError, ValueError):
            self.dropped += 1  # this packet only (the muxer refused it)
            return False
        return True

    # -- finishing -----------------------------------------------------------------
    def close(self) -> None:
        """Finish the file (cues, duration). Safe to call more than once."""
        self._finalizer()

    stop = close

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def repair(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
        """Rewrite an unfinished recording (the process was killed) into a finished one.

        Copies every packet that can be read into a new file with cues and duration, of
        the source's format (WebM stays WebM whatever `out` is named); returns its path
        (`out`, or the same name with `.repaired` before the suffix).
        """
        src = Path(path)
        dst = Path(out) if out else src.with_name(f"{src.stem}.repaired{src.suffix}")
        with av.open(str(src)) as inp, av.open(str(dst), "w", format=_format_for(src)) as outp:
            mapping = {}
            for stream in inp.streams:
                if stream.type in ("audio", "video"):
                    mapping[stream.index] = outp.add_stream_from_template(stream)
            for packet in inp.demux(*[inp.streams[i] for i in mapping]):
                if packet.dts is None or packet.size == 0:
                    continue
                packet.stream = mapping[packet.stream.index]
                outp.mux(packet)
        return dst

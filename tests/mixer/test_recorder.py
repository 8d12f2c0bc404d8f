"""Recordings open in PyAV with both streams and the right duration, however they end."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from mcu.mixer.audio import AudioMixer
from mcu.mixer.composite import Compositor
from mcu.mixer.recorder import Recorder
from tests.mixer.mixer_media import level_of, opus_packets, tone

FPS = 25
ROOT = Path(__file__).resolve().parents[2]  # the repository, for the child processes
SECONDS = 2.0


class Clock:
    """The session's time: advanced by the test, so no test waits on a real clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Room:
    """What a room does with a recording: feed it each tick, close it when it closes."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.clock = clock
        self.mixer = AudioMixer()
        self.compositor = Compositor(320, 180, fps=FPS)
        self.recorder = Recorder(
            path, video_size=(320, 180), fps=FPS, clock=clock, keyframe_interval=0.5
        )
        self.packets = opus_packets(tone(440, SECONDS + 1))
        self.level = level_of(tone(440, 0.1))
        self.mixer.add_source("a")
        self.compositor.add_source("a", "Alice")
        self.ticks = 0

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds * 50)):
            i = self.ticks
            self.clock.now = i * 0.02
            self.mixer.push("a", i, i * 960, self.packets[i], self.level, self.clock.now)
            mix = self.mixer.tick()
            self.recorder.write_audio(mix.shared, mix.timestamp)
            if i % (50 // FPS) == 0:
                shade = (i * 3) % 200
                self.compositor.push_frame("a", np.full((120, 160, 3), shade, dtype=np.uint8))
                if self.recorder.wants_keyframe:
                    self.compositor.request_keyframe()
                for frame in self.compositor.tick():
                    self.recorder.write_video(frame)
            self.ticks += 1

    def close(self) -> None:
        self.recorder.close()


def check(path: Path, seconds: float) -> None:
    with av.open(str(path)) as f:
        kinds = {s.type: s.codec_context.name for s in f.streams}
        assert kinds == {"video": "vp8", "audio": "opus"}
        assert f.duration is not None, "no duration: the file was not finished"
        assert f.duration / 1e6 == pytest.approx(seconds, abs=0.1)
        audio = sum(fr.samples for fr in f.decode(audio=0))
        assert audio / 48000 == pytest.approx(seconds, abs=0.1)
    with av.open(str(path)) as f:
        video = sum(1 for _ in f.decode(video=0))
        assert video == pytest.approx(seconds * FPS, abs=3)
    with av.open(str(path)) as f:  # seekable: cues were written
        f.seek(int(seconds / 2 * 1e6))
        frame = next(f.decode(video=0))
        assert frame.time == pytest.approx(seconds / 2, abs=0.5)


def test_a_stopped_recording_has_both_streams_and_the_duration(tmp_path: Path) -> None:
    room = Room(tmp_path / "call.webm", Clock())
    room.run(SECONDS)
    room.recorder.stop()
    room.recorder.stop()  # a second stop is harmless
    check(tmp_path / "call.webm", SECONDS)


def test_a_room_dropped_without_stop_still_leaves_a_finished_file(tmp_path: Path) -> None:
    room = Room(tmp_path / "dropped.mkv", Clock())
    room.run(SECONDS)
    del room  # the room went away on an error path: nobody called stop()
    gc.collect()
    check(tmp_path / "dropped.mkv", SECONDS)


def test_a_process_that_exits_without_stop_leaves_a_finished_file(tmp_path: Path) -> None:
    path = tmp_path / "exit.webm"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.mixer.test_recorder import Clock, Room
        room = Room({str(path)!r}, Clock())
        room.run({SECONDS})
        raise SystemExit("room crashed")  # no stop(), and the room is still referenced
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 1, done.stderr
    check(path, SECONDS)


def test_a_killed_process_leaves_a_readable_file_that_repair_finishes(tmp_path: Path) -> None:
    path = tmp_path / "killed.webm"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.mixer.test_recorder import Clock, Room
        room = Room({str(path)!r}, Clock())
        room.run({SECONDS + 1})
        os._exit(9)  # like SIGKILL: no finalizer, no close
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 9, done.stderr
    repaired = Recorder.repair(path)
    with av.open(str(repaired)) as f:
        assert {s.type for s in f.streams} == {"video", "audio"}
        assert f.duration is not None
        # Clusters are flushed every second: at most about that much is lost.
        assert f.duration / 1e6 >= SECONDS - 0.1

"""End-to-end benchmark of mixed rooms: what a room of room units costs the server.

    python -m bench.mixed [--participants 10,20,60] [--video] [--seconds T]

Runs the real service (``python -m multipoint serve``, one media worker) as a separate
process on loopback, and for each N fills one room with N participants that join with
``mode: mixed`` over the real protocol, as a room unit does: each sends Opus (20 ms) with
RFC 6464 audio levels and receives the mixed sound; with ``--video`` each also sends VP8
(640x360, 30 fps) and receives the composite, otherwise each declines the composite (an
audio-only unit). In a meeting few people talk at once: ``--talkers`` participants send
their tone at its level, the others send the same packets marked silent (level 127), as a
unit's microphone in a quiet room does.

Per N the server's CPU (its whole process tree, from /proc) is read over a window with
the room running and over the same length with no room before it (the idle server);
their difference is what the room costs. Across the sizes a straight line through
(N, room cost) splits it into a fixed part per room and a part per participant. The
server's wake-ups a second over both windows (``server_wakeups_per_s``, as in
``bench.sfu``) say how often the worker was woken to do that work.

Mixed sound is made by the server, so no packet can be matched to the one sent:
``loss_ratio`` is the mixed packets missing at the receivers (50 a second expected each),
``added_delay_ms_p99`` the 99th percentile of how much later than its own earliest
packet a mixed packet arrives, relative to its RTP timestamp (the jitter the server's
mixing and pacing add; kernel receive timestamps).

Prints one JSON object on stdout; progress goes to stderr. Run it in a loopback-only
namespace (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import secrets
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._clients import Pacer, Participant, Receiver, Window
from bench._media import AUDIO_FRAME, AUDIO_RATE, encode_media
from bench.sfu import (
    REPOSITORY,
    ServerProcess,
    _close_all,
    _free_port,
    _wait_for,
    cancel_on_signals,
    print_result,
    running,
)
from mcu import aiortc_adapter, rtp
from signaling.tokens import JoinGrant, issue_token

logger = logging.getLogger("bench.mixed")

SILENT_LEVEL = 127  # RFC 6464: -127 dBov, digital silence
SETTLE_S = 2.0  # no offer to anyone for this long: the room is settled
MIXED_PPS = AUDIO_RATE / AUDIO_FRAME  # the mixed sound: one packet per 20 ms


class MixedReceiver(Receiver):
    """Counts the mixed sound's packets and keeps their arrival jitter, inside the window."""

    def __init__(self, window: Window) -> None:
        super().__init__(window, None)
        self.audio_in_window = 0
        self.video_received = 0
        # Per mixed audio stream (SSRC): arrival minus RTP time, in seconds.
        self.transit: dict[int, list[float]] = {}
        self._unwrapped: dict[int, tuple[int, int]] = {}  # ssrc -> (last timestamp, cycles)

    def on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        super().on_rtp(data, arrival_time_ms)
        view = rtp.parse_rtp(data)
        kind = self.kind_by_pt.get(view.payload_type)
        if kind == "video":
            self.video_received += 1
            return
        if kind != "audio":
            return
        now = time.monotonic()
        if not self.window.start <= now < self.window.end:
            return
        self.audio_in_window += 1
        stamp = self.arrival() if self.arrival is not None else None
        arrived = now if stamp is None else stamp - (time.time() - time.monotonic())
        last, cycles = self._unwrapped.get(view.ssrc, (view.timestamp, 0))
        if view.timestamp < last and last - view.timestamp > 1 << 31:
            cycles += 1
        self._unwrapped[view.ssrc] = (view.timestamp, cycles)
        media_time = (view.timestamp + (cycles << 32)) / AUDIO_RATE
        self.transit.setdefault(view.ssrc, []).append(arrived - media_time)

    def jitter_ms(self) -> list[float]:
        out: list[float] = []
        for transits in self.transit.values():
            earliest = min(transits)
            out += [(t - earliest) * 1000 for t in transits]
        return out


@dataclasses.dataclass
class _Reading:
    """The server's CPU time and wake-ups at one moment."""

    at: float
    cpu_seconds: float
    wakeups: int

    @classmethod
    def of(cls, server: ServerProcess) -> _Reading:
        return cls(time.monotonic(), server.cpu_seconds(), sum(server.wakeups().values()))

    def rates(self, server: ServerProcess) -> tuple[float, float]:
        """(% of a core, wake-ups a second) from this reading until now."""
        now = _Reading.of(server)
        elapsed = now.at - self.at
        return 100 * (now.cpu_seconds - self.cpu_seconds) / elapsed, (now.wakeups - self.wakeups) / elapsed


async def _measure(server: ServerProcess, seconds: float) -> tuple[float, float]:
    start = _Reading.of(server)
    await asyncio.sleep(seconds)
    return start.rates(server)


async def bench_room(args: argparse.Namespace, server: ServerProcess, port: int, secret: str,
                     media: Any, size: int) -> dict[str, Any]:
    """One room of ``size`` mixed participants: its cost, loss and jitter."""
    room = f"mixed-{size}-{'video' if args.video else 'audio'}"
    logger.info("%s: the idle server for %.0f s", room, args.seconds)
    idle, idle_wakeups = await _measure(server, args.seconds)
    window = Window()
    pacer = Pacer()
    silent = dataclasses.replace(media, audio_level=SILENT_LEVEL)
    kinds = ("audio", "video") if args.video else ("audio",)
    everyone = [Participant(f"unit-{i}", window, media if i < args.talkers else silent,
                            mode="mixed", publish=kinds, receive_video=args.video,
                            receiver=MixedReceiver(window))
                for i in range(size)]
    for i, participant in enumerate(everyone):
        for stream in participant.streams.values():
            pacer.add(stream, phase=i * stream.period / size)  # unrelated microphones
    pacer.start()
    token = issue_token(secret, JoinGrant(room=room, role="guest"), 3600)
    receivers = [p.receiver for p in everyone]
    assert all(isinstance(r, MixedReceiver) for r in receivers)

    def check() -> None:
        server.check_running()
        failed = [f"{p.name}: {p.failure}" for p in everyone if p.failure]
        if failed:
            raise RuntimeError("participants failed: " + "; ".join(failed[:5]))

    try:
        started = time.monotonic()
        timeout = 30 + 2.0 * size
        joining = asyncio.Semaphore(args.join_concurrency)

        async def join(participant: Participant) -> None:
            async with joining:
                await participant.join(f"ws://127.0.0.1:{port}/ws", token)

        logger.info("%s: joining %d participants", room, size)
        await asyncio.wait_for(asyncio.gather(*(join(p) for p in everyone)), timeout)
        wanted = ("audio", "video") if args.video else ("audio",)
        await _wait_for("every participant to receive the mix",
                        lambda: all(p.receiver.flowing(wanted) for p in everyone), timeout, check)
        await _wait_for("signaling to settle",
                        lambda: time.monotonic() - max(p.last_offer_at for p in everyone) > SETTLE_S,
                        timeout, check)
        setup_s = time.monotonic() - started
        logger.info("%s: flowing after %.1f s; warming up %.0f s", room, setup_s, args.warmup)
        await asyncio.sleep(args.warmup)
        check()
        begin = _Reading.of(server)
        window.start = begin.at
        window.end = begin.at + args.seconds
        await asyncio.sleep(args.seconds)
        busy, wakeups = begin.rates(server)
        elapsed = time.monotonic() - begin.at
        check()
    finally:
        pacer.stop()
        await _close_all(everyone)
    expected = MIXED_PPS * elapsed * size
    received = sum(r.audio_in_window for r in receivers if isinstance(r, MixedReceiver))
    jitter = [ms for r in receivers if isinstance(r, MixedReceiver) for ms in r.jitter_ms()]
    video = sum(r.video_received for r in receivers if isinstance(r, MixedReceiver))
    await asyncio.sleep(2)  # the room closes with its last participant
    return {
        "participants": size,
        "video": args.video,
        "talkers": min(args.talkers, size),
        "room_cpu_pct": round(busy - idle, 2),
        "server_cpu_pct": round(busy, 2),
        "idle_server_cpu_pct": round(idle, 2),
        "server_wakeups_per_s": round(wakeups, 1),
        "idle_server_wakeups_per_s": round(idle_wakeups, 1),
        "loss_ratio": round(max(0.0, expected - received) / expected, 5),
        "added_delay_ms_p99": round(float(np.percentile(jitter, 99)), 2) if jitter else None,
        "added_delay_ms_p50": round(float(np.percentile(jitter, 50)), 2) if jitter else None,
        "composite_packets_received": video,
        "setup_s": round(setup_s, 1),
        "window_s": round(elapsed, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def split_costs(runs: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(fixed % per room, % per participant): least squares over (N, room cost)."""
    sizes = [r["participants"] for r in runs]
    if len(set(sizes)) < 2:
        return None, None
    slope, intercept = np.polyfit(sizes, [r["room_cpu_pct"] for r in runs], 1)
    return float(intercept), float(slope)


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    cancel_on_signals()
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    logger.info("encoding the media once")
    media = await asyncio.to_thread(encode_media)
    port = _free_port()
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
    data_dir = workdir / "data"
    data_dir.mkdir()
    env = dict(os.environ, MULTIPOINT_DATA_DIR=str(data_dir), MULTIPOINT_MEDIA_ADDRESSES="127.0.0.1",
               MULTIPOINT_SECRET_KEY=secret, MULTIPOINT_PUBLIC_URL=f"http://127.0.0.1:{port}",
               MULTIPOINT_SCHEDULER_JOBS="false", MULTIPOINT_HTTP_HOST="127.0.0.1",
               MULTIPOINT_WORKERS="1",
               # Every simulated site joins from loopback, with one link per room.
               MULTIPOINT_JOIN_RATE_PER_IP="1000000/minute", MULTIPOINT_JOIN_RATE_PER_LINK="1000000/minute",
               # The scheduler counts a mixed participant as 24 units of a worker's 800
               # (scheduler/booking/units.py): lifted, so that the bench measures rooms past that.
               MULTIPOINT_SCHEDULER_WORKER_CAPACITY_UNITS="100000")
    env.pop("MULTIPOINT_SETTINGS_FILE", None)
    env.pop("MULTIPOINT_DATABASE_URL", None)
    tree = Path(args.server_tree).resolve()
    env["PYTHONPATH"] = str(tree)
    server = ServerProcess("multipoint", [sys.executable, "-m", "multipoint", "serve", "--port", str(port)],
                           env, workdir / "server.log", cwd=tree)
    runs: list[dict[str, Any]] = []
    try:
        async with running(server, f"http://127.0.0.1:{port}/healthz"):
            for size in args.participants:
                runs.append(await bench_room(args, server, port, secret, media, size))
                logger.info("%s", runs[-1])
    except Exception as exc:
        raise RuntimeError(f"{exc} (server log: {server.log_tail(8)})") from exc
    fixed, per_participant = split_costs(runs)
    for entry in runs:
        entry["room_fixed_cpu_pct"] = None if fixed is None else round(fixed, 2)
        share = entry["room_cpu_pct"] - (fixed or 0.0)
        entry["cpu_pct_per_participant"] = round(share / entry["participants"], 3)
    return {
        "command": command,
        "runs": runs,
        "fit": {"room_fixed_cpu_pct": None if fixed is None else round(fixed, 2),
                "cpu_pct_per_participant": None if per_participant is None else round(per_participant, 3)},
        "media": {"audio": "Opus 20 ms mono 32 kbit/s, RFC 6464 levels",
                  "video": "VP8 640x360 30 fps" if args.video else None},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server_tree": str(tree),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed", description=__doc__.splitlines()[0])
    parser.add_argument("--participants", default="10,20,60",
                        help="room sizes, one room each in turn (default 10,20,60)")
    parser.add_argument("--video", action="store_true",
                        help="everyone also sends VP8 and receives the composite")
    parser.add_argument("--talkers", type=int, default=2, help="participants whose audio level says speech")
    parser.add_argument("--seconds", type=float, default=10, help="measurement window (and idle window)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of flow before the window")
    parser.add_argument("--join-concurrency", type=int, default=4, help="joins under way at once")
    parser.add_argument("--server-tree", default=str(REPOSITORY), help="source tree to run the service from")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.participants = [int(n) for n in args.participants.split(",") if n.strip()]
    except ValueError:
        parser.error("--participants takes sizes such as 10,20,60")
    if not args.participants or min(args.participants) < 2 or args.seconds <= 0:
        parser.error("room sizes must be at least 2 and --seconds positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        for noisy in ("aioice", "aiortc", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    command = "python -m bench.mixed " + " ".join(sys.argv[1:] if argv is None else argv)
    return print_result(command, lambda: run(args, command))


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the selective forwarding unit: server CPU per forwarded packet, loss, delay.

    python -m bench.sfu --publishers P --subscribers S --seconds T

Runs the real service (``python -m multipoint serve``) as a separate process on
loopback and drives it with P publishers, each in its own room ``bench-i`` with S
subscribers, so that every subscriber receives exactly one publisher's audio and video.
Publishers send pre-encoded VP8 (640x360, 30 fps, about 450 kbit/s, a keyframe a second)
and Opus (20 ms, 32 kbit/s), encoded once at start, at real-time pace; subscribers
count and time packets without decoding. After a warm-up with every leg flowing, the
measurement window reads the server's CPU time (/proc) and its forwarded-packet counter
(/metrics) at both ends. Then the same is done for a naive relay (aiortc ``MediaRelay``
with one sender per subscriber, bench/_naive.py) at a size it can carry.

With ``--simulcast`` every publisher sends its camera as three simulcast layers (the
same video at 1/4, 1/2 and full size, RID header extension, as Chrome answers the
server's offer) and every client agrees to transport-cc, so the server stamps each
forwarded packet and runs its estimator on the subscribers' feedback; subscribers
report no tile size, so each gets the top layer: three layers in, one out.

Prints one JSON object on stdout; progress goes to stderr. Needs loopback only; run it in
a loopback-only namespace, as docs/benchmarks.md shows. Method and figures are in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import aiortc
import numpy as np

from bench._clients import TRANSPORT_CC_MODES, OfferingPeer, OutStream, Pacer, Participant, Window
from bench._media import AUDIO_FRAME, AUDIO_RATE, VIDEO_FPS, EncodedMedia, encode_media
from mcu import aiortc_adapter
from signaling.tokens import JoinGrant, issue_token

logger = logging.getLogger("bench")

REPOSITORY = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
FORWARDED_METRIC = "multipoint_packets_forwarded_total"
QUIET_S = 2.0  # no offer to anyone for this long: the rooms are settled
DRAIN_S = 1.0  # after the window: packets sent in it still arriving
CONTENTION_LIMIT = 0.05  # run-queue wait, as a share of the window, that leaves delay clean


# Server processes -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if the bench dies, even by SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """A server under test: started, watched (CPU from /proc), always stopped."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path = REPOSITORY) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent)
        logger.info("%s started (pid %d)", self.name, self.pid)

    def pids(self) -> list[int]:
        """The server and its children: the front and its media worker processes."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue  # gone meanwhile
            if int(text[text.rindex(")") + 2:].split()[1]) == self.pid:  # field 4: ppid
                children.append(int(stat.parent.name))
        return [self.pid, *sorted(children)]

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server's processes (all threads), /proc/PID/stat."""
        user = system = 0.0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            user += int(fields[11]) / CLOCK_TICKS  # field 14
            system += int(fields[12]) / CLOCK_TICKS  # field 15
        return user, system

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def rss_bytes(self) -> int:
        """Resident memory of the server's processes together."""
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
            except OSError:
                continue
        return total

    def wakeups(self) -> dict[int, int]:
        """Each server process's wake-ups so far: the voluntary context switches of all its
        threads (/proc/PID/task/*/status), each a sleep in the kernel (epoll, a timer) that
        something ended. On a VM a wake-up can cost more CPU than the packets it serves
        (docs/benchmarks.md), so the count explains what the CPU figures alone do not."""
        counts: dict[int, int] = {}
        for pid in self.pids():
            total = 0
            for status in Path(f"/proc/{pid}/task").glob("*/status"):
                try:
                    text = status.read_text()
                except OSError:
                    continue  # the thread ended meanwhile
                total += next((int(line.split()[1]) for line in text.splitlines()
                               if line.startswith("voluntary_ctxt_switches:")), 0)
            counts[pid] = total
        return counts

    def runqueue_wait_seconds(self) -> float:
        """Time the processes' main threads were runnable but waiting for a CPU
        (/proc/PID/schedstat): the threads that forward packets."""
        total = 0.0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
            except OSError:
                continue
        return total

    def check_running(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log, leaving out HTTP access lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if "aiohttp.access" not in line]
        return " | ".join(kept[-lines:]) + f" (whole log: {self.log_path})"

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        logger.info("%s stopped", self.name)


@contextlib.asynccontextmanager
async def running(server: ServerProcess, health_url: str) -> AsyncIterator[ServerProcess]:
    try:
        await server.start()
        await _wait_healthy(server, health_url)
        yield server
    finally:
        await asyncio.shield(server.stop())


async def _wait_healthy(server: ServerProcess, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            server.check_running()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer {url} within {timeout:.0f} s: {server.log_tail()}")


async def _read_forwarded(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        text = await response.text()
    match = re.search(rf"^{FORWARDED_METRIC}\s+(\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{url} has no {FORWARDED_METRIC}")
    return int(float(match.group(1)))


# Waiting and measuring -----------------------------------------------------------------


async def _wait_for(what: str, ready: Any, timeout: float, check: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


def _delay_figures(window: Window) -> dict[str, Any]:
    if not window.delays:
        return {"p50": None, "p99": None, "max": None, "over_5ms": 0, "worst_seconds": [],
                "handled_p50": None, "handled_p99": None}
    delays = np.asarray(window.delays)
    p50, p99 = np.percentile(delays, [50, 99])
    handled_p50, handled_p99 = np.percentile(np.asarray(window.handled_delays), [50, 99])
    # When in the window the late packets were sent (stalls show up as clusters).
    late = delays > 0.005
    seconds = (np.asarray(window.sent)[late] - window.start).astype(int)
    worst = sorted(zip(*np.unique(seconds, return_counts=True), strict=True), key=lambda x: -x[1])[:5]
    return {"p50": round(float(p50) * 1000, 3), "p99": round(float(p99) * 1000, 3),
            "max": round(float(delays.max()) * 1000, 3), "over_5ms": int(late.sum()),
            "worst_seconds": [[int(second), int(count)] for second, count in worst],
            "handled_p50": round(float(handled_p50) * 1000, 3),
            "handled_p99": round(float(handled_p99) * 1000, 3)}


def _machine_cpu() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])
    return total - idle - steal, steal, total


class Snapshot:
    """Counters read together at one end of the window."""

    def __init__(self, server: ServerProcess, forwarded: int, streams: Iterable[OutStream]) -> None:
        self.forwarded = forwarded
        self.server_user, self.server_system = server.cpu_times()
        self.server_cpu = self.server_user + self.server_system
        self.server_wait = server.runqueue_wait_seconds()
        self.server_wakeups = sum(server.wakeups().values())
        self.bench_wait = int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
        self.machine = _machine_cpu()
        self.bench_cpu = time.process_time()
        self.at = time.monotonic()
        self.sent = {id(s): s.sent for s in streams}


async def _idle_cpu_percent(server: ServerProcess, pacer: Pacer, seconds: float) -> float | None:
    """The server's CPU with every participant connected but no media (publishers paused)."""
    if seconds <= 0:
        return None
    pacer.stop()
    await asyncio.sleep(DRAIN_S)
    cpu, at = server.cpu_seconds(), time.monotonic()
    logger.info("measuring the idle server for %.0f s", seconds)
    await asyncio.sleep(seconds)
    idle = 100 * (server.cpu_seconds() - cpu) / (time.monotonic() - at)
    pacer.resume()
    return round(idle, 1)


# Our SFU ------------------------------------------------------------------------------


async def bench_sfu(args: argparse.Namespace, media: EncodedMedia, workdir: Path) -> dict[str, Any]:
    publishers, per_room, seconds = args.publishers, args.subscribers, args.seconds
    port = _free_port()
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
    data_dir = workdir / "sfu-data"
    data_dir.mkdir()
    env = dict(os.environ, MULTIPOINT_DATA_DIR=str(data_dir), MULTIPOINT_MEDIA_ADDRESSES="127.0.0.1",
               MULTIPOINT_SECRET_KEY=secret, MULTIPOINT_PUBLIC_URL=f"http://127.0.0.1:{port}",
               MULTIPOINT_SCHEDULER_JOBS="false", MULTIPOINT_HTTP_HOST="127.0.0.1",
               MULTIPOINT_WORKERS=str(args.workers),
               # Every simulated participant joins from loopback, with one link per room.
               MULTIPOINT_JOIN_RATE_PER_IP="1000000/minute",
               MULTIPOINT_JOIN_RATE_PER_LINK="1000000/minute")
    env.pop("MULTIPOINT_SETTINGS_FILE", None)
    env.pop("MULTIPOINT_DATABASE_URL", None)
    tree = Path(args.server_tree).resolve()
    env["PYTHONPATH"] = str(tree)  # python -m runs the service from that tree
    server = ServerProcess("multipoint", [sys.executable, "-m", "multipoint", "serve", "--port", str(port)],
                           env, workdir / "sfu-server.log", cwd=tree)
    base = f"http://127.0.0.1:{port}"
    window = Window()
    pacer = Pacer()
    rooms: list[tuple[Participant, list[Participant]]] = []
    everyone: list[Participant] = []
    setup_started = time.monotonic()
    try:
        async with running(server, base + "/healthz"), aiohttp.ClientSession() as session:
            for room in range(publishers):
                publisher = Participant(f"pub-{room}", window, media, simulcast=args.simulcast,
                                        transport_cc=args.transport_cc)
                subscribers = [Participant(f"sub-{room}-{i}", window, None, publisher.streams,
                                           transport_cc=args.transport_cc)
                               for i in range(per_room)]
                rooms.append((publisher, subscribers))
                everyone += [publisher, *subscribers]
                # Stagger the publishers over a frame interval, as unrelated cameras are
                # (a camera's layers leave together: one picture, encoded three times).
                for stream in publisher.sending_streams():
                    pacer.add(stream, phase=room * stream.period / publishers)
            # Streams tick from now on and send as soon as their publisher is connected.
            pacer.start()

            def token(room: int) -> str:
                return issue_token(secret, JoinGrant(room=f"bench-{room}", role="guest"), 3600)

            joining = asyncio.Semaphore(args.join_concurrency)

            async def fill(room: int) -> None:
                # Each join is an ICE and DTLS handshake on both sides: rooms fill a few at
                # a time, so that neither side's event loop stalls past the heartbeat.
                async with joining:
                    publisher, subscribers = rooms[room]
                    for participant in (publisher, *subscribers):
                        await participant.join(f"ws://127.0.0.1:{port}/ws", token(room))

            def check() -> None:
                server.check_running()
                failed = [f"{p.name}: {p.failure}" for p in everyone if p.failure]
                if failed:
                    raise RuntimeError("participants failed: " + "; ".join(failed[:5]))

            setup_timeout = args.setup_timeout or 30 + 2.0 * len(everyone)
            logger.info("joining %d publishers and %d subscribers", publishers, publishers * per_room)
            await asyncio.wait_for(asyncio.gather(*(fill(r) for r in range(publishers))), setup_timeout)
            subscribers_all = [s for _, subs in rooms for s in subs]
            await _wait_for("every subscriber to receive its publisher's audio and video",
                            lambda: all(s.receiver.matched() for s in subscribers_all),
                            setup_timeout, check)
            # Renegotiations still under way would load both sides during the window.
            await _wait_for("signaling to settle",
                            lambda: time.monotonic() - max(p.last_offer_at for p in everyone) > QUIET_S,
                            setup_timeout, check)
            setup_s = time.monotonic() - setup_started
            logger.info("all %d legs flowing after %.1f s", 2 * len(subscribers_all), setup_s)
            idle = await _idle_cpu_percent(server, pacer, args.idle_seconds)
            logger.info("warming up %.0f s", args.warmup)
            await asyncio.sleep(args.warmup)
            check()

            streams = pacer.streams
            begin = Snapshot(server, await _read_forwarded(session, base + "/metrics"), streams)
            window.start = begin.at
            pacer.late_max = 0.0
            logger.info("measuring for %.0f s", seconds)
            await asyncio.sleep(seconds)
            end = Snapshot(server, await _read_forwarded(session, base + "/metrics"), streams)
            window.end = end.at
            await asyncio.sleep(DRAIN_S)
            check()
            pacer.stop()
            result = _sfu_figures(args, rooms, window, begin, end, pacer)
            if args.simulcast or args.transport_cc != "off":
                result["simulcast"] = _simulcast_figures(rooms, media)
            result["setup_s"] = round(setup_s, 1)
            result["server_idle_cpu_percent"] = idle
            if idle is not None:
                # What each packet costs beyond the connections' fixed upkeep.
                marginal = (result["server_cpu_percent"] - idle) / 100 * result["window_s"] * 1e6
                result["server_cpu_us_per_packet_marginal"] = round(
                    marginal / max(1, result["forwarded_pps"] * result["window_s"]), 2)
            return result
    except Exception as exc:
        raise RuntimeError(f"{exc} (server log: {server.log_tail(8)})") from exc
    finally:
        pacer.stop()
        await _close_all(everyone)


def _sfu_figures(args: argparse.Namespace, rooms: list[tuple[Participant, list[Participant]]],
                 window: Window, begin: Snapshot, end: Snapshot, pacer: Pacer) -> dict[str, Any]:
    elapsed = end.at - begin.at
    forwarded = end.forwarded - begin.forwarded
    cpu = end.server_cpu - begin.server_cpu
    expected = {"audio": 0, "video": 0}
    received = {"audio": 0, "video": 0}
    mismatched = relearned = unmatched_legs = other = 0
    video_shares = []  # per subscriber: video received of what its publisher sent in the window
    for publisher, subscribers in rooms:
        # What subscribers should get: the microphone and (with simulcast) the top layer.
        for kind, stream in publisher.streams.items():
            expected[kind] += (end.sent[id(stream)] - begin.sent[id(stream)]) * len(subscribers)
        video = publisher.streams.get("video")
        video_sent = end.sent[id(video)] - begin.sent[id(video)] if video is not None else 0
        for subscriber in subscribers:
            receiver = subscriber.receiver
            other += receiver.other_packets
            for leg in receiver.legs.values():
                if leg.source is None:
                    continue
                received[leg.kind] += leg.in_window
                mismatched += leg.mismatched
                relearned += leg.relearned
                unmatched_legs += leg.offset is None
            if video_sent:
                video_shares.append(sum(leg.in_window for leg in receiver.legs.values()
                                        if leg.kind == "video" and leg.source is not None) / video_sent)
    total_expected, total_received = sum(expected.values()), sum(received.values())
    legs = 2 * args.publishers * args.subscribers

    busy, steal, total = (e - b for e, b in zip(end.machine, begin.machine, strict=True))
    everyone = [p for publisher, subscribers in rooms for p in (publisher, *subscribers)]

    def per_packet(seconds: float) -> float | None:
        return round(seconds * 1e6 / forwarded, 2) if forwarded else None

    def loss(e: int, r: int) -> float | None:
        return round(max(0, e - r) / e, 6) if e else None

    delays = _delay_figures(window)
    return {
        "forwarded_pps": round(forwarded / elapsed, 1),
        "server_cpu_us_per_packet": per_packet(cpu),
        "loss_ratio": loss(total_expected, total_received),
        "added_delay_ms_p50": delays["p50"],
        "added_delay_ms_p99": delays["p99"],
        "added_delay_ms_max": delays["max"],
        "packets_delayed_over_5ms": delays["over_5ms"],
        "late_packets_by_window_second": delays["worst_seconds"],  # [second, packets over 5 ms]
        # The same delay taken when the load generator's event loop handled each packet:
        # adds its own lag (it runs 8 publishers and 64 subscribers on one thread).
        "client_handled_delay_ms_p50": delays["handled_p50"],
        "client_handled_delay_ms_p99": delays["handled_p99"],
        "packets_without_kernel_timestamp": window.unstamped,
        "server_cpu_us_per_packet_user": per_packet(end.server_user - begin.server_user),
        "server_cpu_us_per_packet_system": per_packet(end.server_system - begin.server_system),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "server_cpu_percent_per_leg": round(100 * cpu / elapsed / legs, 3),
        "server_runqueue_wait_percent": round(100 * (end.server_wait - begin.server_wait) / elapsed, 1),
        "server_wakeups_per_s": round((end.server_wakeups - begin.server_wakeups) / elapsed, 1),
        "machine_busy_percent": round(100 * busy / total, 1) if total else None,
        "machine_steal_percent": round(100 * steal / total, 1) if total else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        # Delay is the server's only when neither side waited long for a CPU (other work
        # on a shared machine queues packets in both event loops).
        "delay_undisturbed": (end.server_wait - begin.server_wait) / elapsed < CONTENTION_LIMIT
        and (end.bench_wait - begin.bench_wait) / elapsed < CONTENTION_LIMIT,
        "window_s": round(elapsed, 3),
        "expected_packets": total_expected,
        "received_packets": total_received,
        "loss_ratio_audio": loss(expected["audio"], received["audio"]),
        "loss_ratio_video": loss(expected["video"], received["video"]),
        # The subscriber that got least of its publisher's video (a paused video shows here).
        "video_received_min_ratio": round(min(video_shares), 4) if video_shares else None,
        "duplicates_or_extra": max(0, total_received - total_expected),
        "forwarded_vs_expected": round(forwarded / total_expected, 4) if total_expected else None,
        "unmatched_packets": mismatched,
        "leg_offset_relearned": relearned,
        "legs_never_matched": unmatched_legs,
        "other_packets": other,
        "bench_cpu_percent": round(100 * (end.bench_cpu - begin.bench_cpu) / elapsed, 1),
        "bench_runqueue_wait_percent": round(100 * (end.bench_wait - begin.bench_wait) / elapsed, 1),
        "pacer_late_ms_max": round(pacer.late_max * 1000, 2),
        "keyframe_requests_at_publishers": sum(p.receiver.keyframe_requests for p, _ in rooms),
        "unknown_server_messages": sum(p.unknown_messages for p in everyone),
    }


def _simulcast_figures(rooms: list[tuple[Participant, list[Participant]]],
                       media: EncodedMedia) -> dict[str, Any]:
    """What simulcast and transport-cc did, as the clients saw it."""
    publishers = [publisher for publisher, _ in rooms]
    subscribers = [s for _, subs in rooms for s in subs]
    # The server's receiver reports to a publisher have a block for each stream it
    # learned: a layer is learned by its RID (mcu/participant.py), so a block for every
    # layer's SSRC says the server took all three as layers of the camera.
    learned = [sum(stream.ssrc in publisher.receiver.reported_ssrcs for stream in publisher.layer_streams)
               for publisher in publishers]
    received = sum(leg.received for s in subscribers for leg in s.receiver.legs.values())
    stamped = sum(s.receiver.transport_stamped for s in subscribers)
    return {
        "layers_answered": sorted({",".join(p.layers_sent) for p in publishers}),
        "layers_learned_by_server_min": min(learned),
        "layers_asked_by_server": sorted({",".join(p.layers_asked or []) for p in publishers}),
        "layer_kbps": [round(layer.kbps, 1) for layer in media.layers],
        "layer_pps": [round(sum(map(len, layer.frames)) * VIDEO_FPS / len(layer.frames), 1)
                      for layer in media.layers],
        "transport_cc_clients": sum(1 for p in (*publishers, *subscribers) if p.receiver.transport_cc_id),
        # Every packet forwarded to a subscriber should carry the server's stamp.
        "subscriber_packets_stamped_ratio": round(stamped / received, 4)
        if received and any(s.receiver.transport_cc_id for s in subscribers) else None,
        "transport_feedback_sent_by_subscribers": sum(s.transport_feedback_sent for s in subscribers),
        "transport_feedback_received_by_publishers": sum(
            p.receiver.transport_feedback_received for p in publishers),
    }


async def _close_all(peers: Iterable[Any]) -> None:
    results = await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
    problems = [r for r in results if isinstance(r, BaseException)]
    if problems:
        logger.info("%d peers did not close cleanly (%r)", len(problems), problems[0])


# The naive relay ------------------------------------------------------------------------


async def bench_naive(args: argparse.Namespace, media: EncodedMedia, workdir: Path) -> dict[str, Any]:
    count, seconds = args.naive_subscribers, args.naive_seconds or args.seconds
    port = _free_port()
    server = ServerProcess("naive relay", [sys.executable, "-m", "bench._naive", "--port", str(port)],
                           dict(os.environ), workdir / "naive-server.log")
    base = f"http://127.0.0.1:{port}"
    window = Window()
    pacer = Pacer()
    peers: list[OfferingPeer] = []
    try:
        async with running(server, base + "/healthz"), aiohttp.ClientSession() as session:

            async def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
                for _ in range(100):
                    async with session.post(url, json=body) as response:
                        if response.status == 409:  # the publisher's tracks are not there yet
                            await asyncio.sleep(0.1)
                            continue
                        response.raise_for_status()
                        return await response.json()
                raise RuntimeError("the naive relay never had a publisher")

            async def sent() -> int:
                async with session.get(base + "/stats") as response:
                    return int((await response.json())["packets_sent"])

            publisher = OfferingPeer("publish", window, media)
            peers.append(publisher)
            await publisher.connect(base + "/offer", post)
            for stream in publisher.streams.values():
                pacer.add(stream, phase=0.0)
            pacer.start()
            subscribers = [OfferingPeer("subscribe", window, None) for _ in range(count)]
            peers += subscribers
            for subscriber in subscribers:
                await subscriber.connect(base + "/offer", post)
            await _wait_for("naive subscribers to receive audio and video",
                            lambda: all(s.receiver.flowing() for s in subscribers),
                            args.setup_timeout or 60, server.check_running)
            await asyncio.sleep(args.warmup)

            def received() -> int:
                return sum(leg.received for s in subscribers for leg in s.receiver.legs.values())

            sent_begin, cpu_begin, received_begin, at_begin = \
                await sent(), server.cpu_seconds(), received(), time.monotonic()
            logger.info("measuring the naive relay with %d subscribers for %.0f s", count, seconds)
            await asyncio.sleep(seconds)
            sent_end, cpu_end, received_end, at_end = \
                await sent(), server.cpu_seconds(), received(), time.monotonic()
            server.check_running()
            pacer.stop()
            elapsed = at_end - at_begin
            packets = sent_end - sent_begin
            cpu = cpu_end - cpu_begin
            publisher_pps = sum(s.sent for s in publisher.streams.values()) / max(
                1e-9, time.monotonic() - min(s.start_at for s in publisher.streams.values()))
            return {
                "publishers": 1,
                "subscribers": count,
                "seconds": seconds,
                "window_s": round(elapsed, 3),
                "sent_pps": round(packets / elapsed, 1),
                "received_pps": round((received_end - received_begin) / elapsed, 1),
                "publisher_pps": round(publisher_pps, 1),
                "server_cpu_us_per_packet": round(cpu * 1e6 / packets, 2) if packets else None,
                "server_cpu_percent": round(100 * cpu / elapsed, 1),
                "server_cpu_percent_per_leg": round(100 * cpu / elapsed / (2 * count), 3),
            }
    finally:
        pacer.stop()
        await _close_all(peers)


# Entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu", description=__doc__.splitlines()[0])
    parser.add_argument("--publishers", type=int, default=4, help="P: publishers, one room each")
    parser.add_argument("--subscribers", type=int, default=8, help="S: subscribers per publisher")
    parser.add_argument("--seconds", type=float, default=20, help="T: length of the measurement window")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of flow before the window")
    parser.add_argument("--idle-seconds", type=float, default=3,
                        help="before the warm-up: the server's CPU with all connected and no media")
    parser.add_argument("--workers", type=int, default=1,
                        help="media worker processes of the server (its CPU counts them all)")
    parser.add_argument("--server-tree", default=str(REPOSITORY),
                        help="source tree to run the service from (default: this checkout), e.g. "
                             "an export of a commit: git archive HEAD | tar -x -C DIR")
    parser.add_argument("--naive-subscribers", type=int, default=4,
                        help="subscribers of the naive relay (one publisher); 0 skips it")
    parser.add_argument("--naive-seconds", type=float, default=0,
                        help="window of the naive relay (default: --seconds)")
    parser.add_argument("--setup-timeout", type=float, default=0,
                        help="seconds allowed for joining and first media (default: from the size)")
    parser.add_argument("--join-concurrency", type=int, default=1,
                        help="rooms being filled at the same time during setup")
    parser.add_argument("--simulcast", action="store_true",
                        help="publishers send three camera layers (RID), every client agrees to "
                             "transport-cc; subscribers get the top layer")
    parser.add_argument("--transport-cc", choices=TRANSPORT_CC_MODES, default=None,
                        help="off: REMB; stamp: agreed to, but no feedback from the clients; "
                             "feedback: as Chrome (default with --simulcast, else off); to split "
                             "what simulcast costs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr in more detail")
    args = parser.parse_args(argv)
    if args.transport_cc is None:
        args.transport_cc = "feedback" if args.simulcast else "off"
    if args.publishers < 1 or args.subscribers < 1 or args.seconds <= 0:
        parser.error("--publishers and --subscribers must be at least 1, --seconds positive")
    return args


def cancel_on_signals() -> None:
    """SIGTERM or SIGINT cancels the running task, so that its servers are stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    cancel_on_signals()
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-sfu-"))
    try:
        logger.info("encoding the media once")
        started = time.process_time()
        media = await asyncio.to_thread(encode_media, 10.0, args.simulcast)
        logger.info("encoded in %.1f s of CPU: VP8 %.0f kbit/s, %.1f packets/s",
                    time.process_time() - started, media.video_kbps, media.video_pps)
        result: dict[str, Any] = {
            "command": command, "publishers": args.publishers, "subscribers": args.subscribers,
            "seconds": args.seconds,
            # plain: one camera stream, REMB; simulcast: three layers in, transport-cc.
            "mode": "simulcast" if args.simulcast else "plain",
            "transport_cc": args.transport_cc,
        }
        result.update(await bench_sfu(args, media, workdir))
        if args.naive_subscribers > 0:
            naive = await bench_naive(args, media, workdir)
            result["naive"] = naive
            ours, theirs = result["server_cpu_us_per_packet"], naive["server_cpu_us_per_packet"]
            result["ratio"] = round(theirs / ours, 1) if ours and theirs else None
            ours_leg, theirs_leg = result["server_cpu_percent_per_leg"], naive["server_cpu_percent_per_leg"]
            result["ratio_per_leg"] = round(theirs_leg / ours_leg, 1) if ours_leg and theirs_leg else None
        else:
            result["naive"], result["ratio"], result["ratio_per_leg"] = None, None, None
        result["media"] = {"video_kbps": round(media.video_kbps, 1), "video_pps": round(media.video_pps, 1),
                           "audio_pps": AUDIO_RATE / AUDIO_FRAME, "video": "VP8 640x360 30 fps",
                           "audio": "Opus 20 ms mono 32 kbit/s"}
        if media.layers:
            result["media"]["video_layers"] = "VP8 160x90, 320x180, 640x360 30 fps (q, h, f)"
        result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                             "aiortc": aiortc.__version__}
        result["server_tree"] = str(Path(args.server_tree).resolve())
    except BaseException:
        logger.error("kept the servers' logs in %s", workdir)
        raise
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        for noisy in ("aioice", "aiortc", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    command = "python -m bench.sfu " + " ".join(sys.argv[1:] if argv is None else argv)
    return print_result(command, lambda: run(args, command))


def print_result(command: str, run_it: Callable[[], Awaitable[dict[str, Any]]]) -> int:
    """Run the benchmark; print its JSON object, or ``{"command", "error"}`` and return 1."""
    try:
        result = asyncio.run(run_it())
    except (Exception, asyncio.CancelledError, KeyboardInterrupt) as exc:
        print(json.dumps({"command": command, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of capacity across media workers: CPU per packet, cascades, failover, big rooms.

    python -m bench.scale                          # every figure, on this machine (< 6 min)
    python -m bench.scale --workers 1,2,4,8,14     # forwarded packets/s at each size

Runs the real service (``python -m multipoint serve --workers N``) as separate processes
on loopback, and measures it from outside:

* **forwarding**: publishers (pre-encoded VP8 and Opus at real-time pace) and receive-only
  subscribers that count and time packets without decoding, driven from one or more
  load-generator processes (``shards``). The server's CPU is that of its whole process
  tree (the front and its workers, /proc); a packet counts when a subscriber received
  it. Four runs: rooms on one worker; the same rooms on two workers (on both); one room
  of 1 publisher and 16 subscribers on one worker; the same room cascaded over two
  workers (split by a small worker capacity). ``two_worker_ratio`` compares the first
  two, ``cascade_overhead_ratio`` the last two (the same packets either way).
  ``--cascade-only`` runs just the last two, ``--rounds`` times, and reports each
  ratio and their median.
* **across nodes** (``--nodes 2``, or ``--cross-node-only``): the same room of 1
  publisher and 16 subscribers on two nodes sharing PostgreSQL (``--db``): all through
  one node's front, then every other participant through the other's, so the room is
  spread over both nodes; ``cross_node_overhead_ratio`` compares the two (CPU of both
  nodes' process trees per forwarded packet).
* **failover**: ``kill -9`` of the worker hosting a call, three times; the time until
  every participant (rejoining by itself, as the call page does) receives media again.
* **big room**: as many participants in one room as the machine can drive (60 by
  default), a few publishing; the largest offer any of them received and the server's
  memory growth per participant.

With ``--workers`` it instead runs the forwarding load at each worker count (the same
rooms per worker) and reports forwarded packets/s against linear scaling.

Prints one JSON object on stdout; progress goes to stderr. Run it in a loopback-only
namespace (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench._clients import Pacer, Participant, Window
from bench._media import encode_media
from bench.sfu import (
    REPOSITORY,
    ServerProcess,
    _free_port,
    cancel_on_signals,
    print_result,
    running,
)
from mcu import aiortc_adapter
from signaling.tokens import JoinGrant, issue_token

logger = logging.getLogger("bench.scale")

DELAY_SAMPLE = 20_000  # delays a shard reports, drawn at random from all it measured
SETTLE_S = 2.0  # no offer to anyone for this long: the rooms are settled
HD_UNITS = 11  # what the server counts a forwarded participant as (scheduler defaults)


# The server ------------------------------------------------------------------------------


class Server:
    """``multipoint serve`` with its workers, on a fresh data dir; measured from /proc."""

    def __init__(self, workdir: Path, workers: int, capacity_units: int | None = None, *,
                 node: str = "", database_url: str = "", secret: str = "",
                 extra_env: dict[str, str] | None = None, port: int = 0) -> None:
        self.port = port or _free_port()
        self.secret = secret or "".join(secrets.choice(string.ascii_letters + string.digits)
                                        for _ in range(48))
        data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
        env = dict(os.environ, MULTIPOINT_DATA_DIR=str(data_dir),
                   MULTIPOINT_MEDIA_ADDRESSES="127.0.0.1", MULTIPOINT_SECRET_KEY=self.secret,
                   MULTIPOINT_PUBLIC_URL=f"http://127.0.0.1:{self.port}",
                   MULTIPOINT_SCHEDULER_JOBS="false", MULTIPOINT_HTTP_HOST="127.0.0.1",
                   MULTIPOINT_WORKERS=str(workers),
                   # Every simulated site joins from loopback, with one link per room.
                   MULTIPOINT_JOIN_RATE_PER_IP="1000000/minute",
                   MULTIPOINT_JOIN_RATE_PER_LINK="1000000/minute",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY),
                                                            os.environ.get("PYTHONPATH")])))
        if capacity_units is not None:
            env["MULTIPOINT_SCHEDULER_WORKER_CAPACITY_UNITS"] = str(capacity_units)
        for name in ("MULTIPOINT_SETTINGS_FILE", "MULTIPOINT_DATABASE_URL", "MULTIPOINT_MEDIA_INLINE",
                     "MULTIPOINT_NODE"):
            env.pop(name, None)
        if database_url:
            env["MULTIPOINT_DATABASE_URL"] = database_url
        env.update(extra_env or {})
        argv = [sys.executable, "-m", "multipoint", "serve", "--port", str(self.port)]
        if node:
            argv += ["--node", node]
        self.node = node
        self.process = ServerProcess(f"multipoint {node or ''}({workers} workers)".replace("  ", " "),
                                     argv, env, data_dir / "server.log")
        self.workers = workers

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, room: str) -> str:
        return issue_token(self.secret, JoinGrant(room=room, role="guest"), 3600)

    def running(self) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
        return running(self.process, self.base + "/healthz")

    async def wait_workers(self, timeout: float = 60) -> None:
        """/healthz answers before the workers run; wait until all of them do."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                async with session.get(self.base + "/healthz") as response:
                    health = await response.json()
                if health.get("workers") == self.workers:
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the workers did not start: {self.process.log_tail()}")

    def worker_pids(self) -> list[int]:
        return self.process.pids()[1:]


def cpu_of(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Load generators (shards) -----------------------------------------------------------------


async def shard_main(config: dict[str, Any]) -> None:
    """One load-generator process: joins its rooms, then measures between start and stop.

    Talks to the coordinator by lines: prints ``{"ready": ...}``, reads ``start`` and
    ``stop``, prints its figures as one JSON line and exits.
    """
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    media = await asyncio.to_thread(encode_media)
    window, pacer = Window(), Pacer()
    everyone: list[Participant] = []
    rooms: list[tuple[Participant, list[Participant]]] = []
    for index, room in enumerate(config["rooms"]):
        publisher = Participant(f"pub-{room['name']}", window, media)
        subscribers = [Participant(f"sub-{room['name']}-{i}", window, None, publisher.streams)
                       for i in range(room["subscribers"])]
        rooms.append((publisher, subscribers))
        everyone += [publisher, *subscribers]
        for stream in publisher.streams.values():
            pacer.add(stream, phase=(index / max(1, len(config["rooms"]))) * stream.period)
    pacer.start()
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    joining = asyncio.Semaphore(config.get("join_concurrency", 4))

    async def fill(publisher: Participant, subscribers: list[Participant], token: str,
                   urls: list[str]) -> None:
        async with joining:  # a few rooms at a time, each filled in order
            # Through the fronts in turn (a room spread over nodes): the publisher
            # through the first, the subscribers alternately.
            for index, participant in enumerate((publisher, *subscribers)):
                await participant.join(urls[index % len(urls)], token)

    try:
        await asyncio.gather(*(fill(publisher, subscribers, room["token"],
                                    room.get("ws_urls") or [config["ws_url"]])
                               for (publisher, subscribers), room in zip(rooms, config["rooms"],
                                                                         strict=True)))
        subscribers_all = [s for _, subs in rooms for s in subs]
        deadline = time.monotonic() + config.get("setup_timeout", 120)
        while not (all(s.receiver.matched() for s in subscribers_all)
                   and time.monotonic() - max(p.last_offer_at for p in everyone) > SETTLE_S):
            failed = [p.failure for p in everyone if p.failure]
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"setup failed: {failed[:3] or 'timed out'}")
            await asyncio.sleep(0.2)
        # Frames the pacer could not send on time while everyone joined would go out in a
        # burst: start the clock again from now, so every window carries the nominal load.
        pacer.stop()
        pacer.resume()
        print(json.dumps({"ready": len(everyone)}), flush=True)
        assert (await stdin.readline()).strip() == b"start"
        window.start = time.monotonic()
        sent_at_start = {id(s): s.sent for s in pacer.streams}
        assert (await stdin.readline()).strip() == b"stop"
        window.end = time.monotonic()
        sent_at_end = {id(s): s.sent for s in pacer.streams}
        await asyncio.sleep(1.0)  # packets sent in the window still arriving
        expected = sum((sent_at_end[id(stream)] - sent_at_start[id(stream)]) * len(subscribers)
                       for publisher, subscribers in rooms for stream in publisher.streams.values())
        received = sum(leg.in_window for s in subscribers_all for leg in s.receiver.legs.values()
                       if leg.source is not None)
        delays = window.delays
        sample = random.sample(delays, DELAY_SAMPLE) if len(delays) > DELAY_SAMPLE else delays
        print(json.dumps({"expected": expected, "received": received,
                          "delays_ms": [round(d * 1000, 3) for d in sample],
                          "failures": [p.failure for p in everyone if p.failure][:3]}), flush=True)
    finally:
        pacer.stop()
        await asyncio.gather(*(p.close() for p in everyone), return_exceptions=True)


class Shard:
    def __init__(self, config: dict[str, Any], log: Path) -> None:
        self.config, self.log = config, log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.scale", "shard", json.dumps(self.config),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                cwd=REPOSITORY, limit=64 * 1024 * 1024)

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            tail = self.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"a load generator exited: {tail}")
        return json.loads(raw)

    def send(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def forwarding(workdir: Path, label: str, workers: int, rooms: int, subscribers: int,
                     seconds: float, warmup: float, shards: int,
                     capacity_units: int | None = None) -> dict[str, Any]:
    """``rooms`` rooms of 1 publisher and ``subscribers`` subscribers; the figures of a window."""
    server = Server(workdir, workers, capacity_units)
    logger.info("%s: %d workers, %d rooms of 1+%d, %d load generators", label, workers, rooms,
                subscribers, shards)
    async with server.running():
        await server.wait_workers()
        return await measure(workdir, label, [server], [server], rooms, subscribers, seconds,
                             warmup, shards, workers)


async def measure(workdir: Path, label: str, servers: list[Server], fronts: list[Server],
                  rooms: int, subscribers: int, seconds: float, warmup: float, shards: int,
                  workers: int) -> dict[str, Any]:
    """Fill the rooms through ``fronts`` (in turn) and measure a window; the server CPU
    is that of every process of ``servers`` together (several nodes: all of them)."""
    names = [f"{label}-{i}" for i in range(rooms)]
    groups = [names[i::shards] for i in range(shards) if names[i::shards]]
    urls = [front.ws_url for front in fronts]
    clients = [Shard({"ws_url": urls[0], "setup_timeout": 60 + 3 * subscribers * len(group),
                      "rooms": [{"name": n, "token": fronts[0].token(n), "subscribers": subscribers,
                                 "ws_urls": urls} for n in group]},
                     workdir / f"{label}-shard{i}.log") for i, group in enumerate(groups)]

    def cpu() -> float:
        return sum(server.process.cpu_seconds() for server in servers)

    def waited() -> float:
        return sum(server.process.runqueue_wait_seconds() for server in servers)

    try:
        await asyncio.gather(*(c.start() for c in clients))
        ready = await asyncio.gather(*(c.line(240) for c in clients))
        logger.info("%s: %d participants flowing; warming up %.0f s", label,
                    sum(r["ready"] for r in ready), warmup)
        await asyncio.sleep(warmup)
        each_before = [server.process.cpu_seconds() for server in servers]
        wakeups_before = [server.process.wakeups() for server in servers]
        cpu_before, at_before = cpu(), time.monotonic()
        wait_before = waited()
        for client in clients:
            client.send("start")
        await asyncio.sleep(seconds)
        for client in clients:
            client.send("stop")
        cpu_after, at_after = cpu(), time.monotonic()
        each = [server.process.cpu_seconds() - before
                for server, before in zip(servers, each_before, strict=True)]
        # Per process (each node's front, then its workers): how often each was woken.
        wakeups = [count - before[pid] for server, before in zip(servers, wakeups_before, strict=True)
                   for pid, count in server.process.wakeups().items() if pid in before]
        wait_after = waited()
        results = await asyncio.gather(*(c.line(60) for c in clients))
        for server in servers:
            server.process.check_running()
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
    elapsed = at_after - at_before
    expected = sum(r["expected"] for r in results)
    received = sum(r["received"] for r in results)
    delays = np.asarray([d for r in results for d in r["delays_ms"]] or [np.nan])
    used = cpu_after - cpu_before
    return {
        "workers": workers, "rooms": rooms, "subscribers_per_room": subscribers,
        "window_s": round(elapsed, 2),
        "forwarded_pps": round(received / elapsed, 1),
        "expected_pps": round(expected / elapsed, 1),
        "server_cpu_percent": round(100 * used / elapsed, 1),
        "server_cpu_percent_each": [round(100 * c / elapsed, 1) for c in each],
        "server_cpu_us_per_packet": round(used * 1e6 / received, 2) if received else None,
        "loss_ratio": round(max(0, expected - received) / expected, 6) if expected else None,
        "added_delay_ms_p50": round(float(np.nanpercentile(delays, 50)), 3),
        "added_delay_ms_p99": round(float(np.nanpercentile(delays, 99)), 3),
        "server_runqueue_wait_percent": round(100 * (wait_after - wait_before) / elapsed, 1),
        "server_wakeups_per_s": round(sum(wakeups) / elapsed, 1),
        "server_wakeups_per_s_each": [round(w / elapsed, 1) for w in wakeups],
        "failures": [f for r in results for f in r["failures"]],
    }


# Failover ------------------------------------------------------------------------------


async def failover(workdir: Path, kills: int, subscribers: int) -> dict[str, Any]:
    """Kill the worker hosting a call ``kills`` times; seconds until all receive again."""
    media = await asyncio.to_thread(encode_media, 2.0)
    server = Server(workdir, 2)
    pacer, publisher, others = rejoining_call(media, subscribers)
    everyone = [publisher, *others]
    times: list[float] = []

    async with server.running():
        await server.wait_workers()
        pacer.start()
        try:
            for participant in everyone:
                await participant.join(server.ws_url, server.token("failover"))
            await _all_receiving(others, {}, 60)
            for kill in range(kills):
                # The hosting worker is the busy one.
                pids = server.worker_pids()
                before = {pid: cpu_of(pid) for pid in pids}
                await asyncio.sleep(1.0)
                hosting = max(pids, key=lambda pid: cpu_of(pid) - before[pid])
                await asyncio.sleep(0.5)
                marks = _marks(others)
                killed_at = time.monotonic()
                os.kill(hosting, signal.SIGKILL)
                await _all_receiving(others, marks, 60)
                times.append(time.monotonic() - killed_at)
                logger.info("failover %d: back after %.2f s", kill + 1, times[-1])
                await server.wait_workers()
                await asyncio.sleep(2.0)
        finally:
            pacer.stop()
            await asyncio.gather(*(p.close() for p in everyone), return_exceptions=True)
    return {"failover_s": [round(t, 2) for t in times],
            "failover_s_p50": round(float(np.median(times)), 2), "failover_s_max": round(max(times), 2),
            "failover_participants": len(everyone)}


# Failover between nodes ------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_schema(database: str) -> Any:
    """A PostgreSQL schema of its own, dropped afterwards; yields a URL that uses it."""
    from sqlalchemy import create_engine, make_url, text

    schema = "bench_" + secrets.token_hex(6)
    admin = create_engine(database)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(database).update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def izs_bridge(database_url: str) -> str:
    """Seed the organisations and make an IZS standing bridge; its room name."""
    from sqlalchemy import select

    from scheduler.booking.bridges import create_bridge
    from scheduler.booking.units import ParticipantMix
    from scheduler.config import SchedulerConfig
    from scheduler.db import Database
    from scheduler.models import Organisation
    from scheduler.organisations import org_info
    from scheduler.seed import seed

    database = Database(database_url)
    try:
        with database.session() as session:
            seed(session, local_workers=0)
            izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
            assert izs is not None
            return create_bridge(session, SchedulerConfig(), org_info(session, izs.id),
                                 "Bench bridge", ParticipantMix(hd=5)).room_name
    finally:
        database.dispose()


def hosting_node(database_url: str, room: str) -> str | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(text(
                "SELECT n.name FROM rooms r JOIN media_workers w ON w.id = r.worker_id "
                "JOIN media_nodes n ON n.id = w.node_id WHERE r.name = :room"), {"room": room})
    finally:
        engine.dispose()


async def node_failover(workdir: Path, database: str, kills: int, subscribers: int,
                        lease_s: float) -> dict[str, Any]:
    """Two nodes on one PostgreSQL database; kill -9 of the node hosting a call (front and
    workers), ``kills`` times, each time starting it again; seconds until every
    subscriber receives again through the other node's front."""
    media = await asyncio.to_thread(encode_media, 2.0)
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
    lease = {"MULTIPOINT_NODE_LEASE_SECONDS": str(lease_s)}
    times: list[float] = []
    with scratch_schema(database) as url:
        def node(name: str, port: int = 0) -> Server:
            return Server(workdir, 1, node=name, database_url=url, secret=secret, port=port,
                          extra_env={**lease, "MULTIPOINT_NODE_LABELS": "izs" if name == "b" else ""})

        servers = {"a": node("a"), "b": node("b")}
        stack = contextlib.AsyncExitStack()
        async with stack:
            for server in servers.values():  # one after the other: the first makes the schema
                await stack.enter_async_context(server.running())
                await server.wait_workers()
            room = await asyncio.to_thread(izs_bridge, url)
            token = issue_token(secret, JoinGrant(room=room, role="guest", scheduled=True), 3600)
            pacer, publisher, others = rejoining_call(media, subscribers)
            everyone = [publisher, *others]
            pacer.start()
            try:
                for participant in everyone:  # through node a's front: sent to the IZS node
                    await participant.join(servers["a"].ws_url, token)
                await _all_receiving(others, {}, 60)
                for kill in range(kills):
                    name = await asyncio.to_thread(hosting_node, url, room)
                    assert name in servers, name
                    marks = _marks(others)
                    killed_at = time.monotonic()
                    for pid in servers[name].process.pids():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    await _all_receiving(others, marks, 60)
                    times.append(time.monotonic() - killed_at)
                    logger.info("node failover %d (node %s killed): back after %.2f s",
                                kill + 1, name, times[-1])
                    # The node comes back at its address (a restart by its supervisor).
                    await servers[name].process.process.wait()
                    servers[name] = node(name, servers[name].port)
                    await stack.enter_async_context(servers[name].running())
                    await servers[name].wait_workers()
                    await asyncio.sleep(1.0)
            finally:
                pacer.stop()
                await asyncio.gather(*(p.close() for p in everyone), return_exceptions=True)
    return {"node_failover_s": [round(t, 2) for t in times],
            "node_failover_s_p50": round(float(np.median(times)), 2),
            "node_failover_s_max": round(max(times), 2), "node_lease_s": lease_s,
            "node_failover_redirects": sum(p.redirects for p in everyone)}


async def cross_node(workdir: Path, database: str, subscribers: int, seconds: float,
                     warmup: float, shards: int) -> dict[str, Any]:
    """One room of 1 publisher and ``subscribers`` on two nodes sharing a PostgreSQL
    database: first everyone through node a's front (the room on one node), then the
    same room with every other participant through node b's (spread over both: each node
    takes part of it, MULTIPOINT_SPREAD_ROOMS=always). The server CPU is both nodes'
    process trees in both runs, so the idle node's upkeep is in either."""
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
    with scratch_schema(database) as url:
        servers = [Server(workdir, 1, node=name, database_url=url, secret=secret,
                          extra_env={"MULTIPOINT_SPREAD_ROOMS": "always"}) for name in ("a", "b")]
        async with contextlib.AsyncExitStack() as stack:
            for server in servers:  # one after the other: the first makes the schema
                await stack.enter_async_context(server.running())
                await server.wait_workers()
            one = await measure(workdir, "node-one", servers, servers[:1], 1, subscribers,
                                seconds, warmup, shards, 1)
            spread = await measure(workdir, "node-spread", servers, servers, 1, subscribers,
                                   seconds, warmup, shards, 2)
    return {"server_cpu_us_per_packet_one_node": one["server_cpu_us_per_packet"],
            "server_cpu_us_per_packet_two_nodes": spread["server_cpu_us_per_packet"],
            "cross_node_overhead_ratio": _ratio(spread, one),
            "cross_node_loss_ratio": max(one["loss_ratio"] or 0, spread["loss_ratio"] or 0),
            "cross_node_runs": {"one_node": one, "two_nodes": spread}}


def rejoining_call(media: Any, subscribers: int) -> tuple[Pacer, Participant, list[Participant]]:
    """A publisher and ``subscribers`` that join again by themselves when their worker or
    node goes away (as the call page does); the pacer of the publisher's streams."""
    window, pacer = Window(), Pacer()
    publisher = Participant("pub", window, media)
    others = [Participant(f"sub-{i}", window, None, publisher.streams) for i in range(subscribers)]
    for participant in (publisher, *others):
        participant.rejoin_when_disconnected = True
    for stream in publisher.streams.values():
        pacer.add(stream, phase=0.0)
    return pacer, publisher, others


def _marks(subscribers: list[Participant]) -> dict[int, tuple[int, int, int]]:
    marks = {}
    for subscriber in subscribers:
        legs = subscriber.receiver.legs.values()
        marks[id(subscriber)] = (subscriber.joins,
                                 sum(leg.received for leg in legs if leg.kind == "audio"),
                                 sum(leg.received for leg in legs if leg.kind == "video"))
    return marks


async def _all_receiving(subscribers: list[Participant], marks: dict[int, tuple[int, int, int]],
                         timeout: float) -> None:
    """Every subscriber joined again since ``marks`` (if given) and got audio and video
    after that."""
    deadline = time.monotonic() + timeout
    while True:
        done = True
        for subscriber in subscribers:
            joins, audio, video = marks.get(id(subscriber), (-1, -1, -1))
            legs = subscriber.receiver.legs.values()
            if subscriber.joins <= joins \
                    or sum(leg.received for leg in legs if leg.kind == "audio") <= max(audio, 0) \
                    or sum(leg.received for leg in legs if leg.kind == "video") <= max(video, 0):
                done = False
                break
        if done:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"participants did not receive within {timeout:.0f} s")
        await asyncio.sleep(0.02)


# A big room ----------------------------------------------------------------------------------


async def big_room(workdir: Path, participants: int, publishers: int) -> dict[str, Any]:
    media = await asyncio.to_thread(encode_media, 2.0)
    server = Server(workdir, 1)
    window, pacer = Window(), Pacer()
    sending = [Participant(f"pub-{i}", window, media) for i in range(publishers)]
    receiving = [Participant(f"site-{i}", window, None) for i in range(participants - publishers)]
    everyone = [*sending, *receiving]
    for index, publisher in enumerate(sending):
        for stream in publisher.streams.values():
            pacer.add(stream, phase=index * stream.period / publishers)
    async with server.running():
        await server.wait_workers()
        await asyncio.sleep(2.0)
        rss_before = server.process.rss_bytes()
        pacer.start()
        started = time.monotonic()
        try:
            joining = asyncio.Semaphore(4)

            async def join(participant: Participant) -> None:
                async with joining:
                    await participant.join(server.ws_url, server.token("big-room"))

            await asyncio.wait_for(asyncio.gather(*(join(p) for p in everyone)), 60 + 3 * participants)
            deadline = time.monotonic() + 120
            while not all(p.receiver.flowing() for p in receiving):
                if time.monotonic() > deadline:
                    stuck = [p.name for p in receiving if not p.receiver.flowing()]
                    raise RuntimeError(f"{len(stuck)} sites never received media: {stuck[:5]}")
                await asyncio.sleep(0.5)
            setup_s = time.monotonic() - started
            await asyncio.sleep(3.0)
            rss_after = server.process.rss_bytes()
            server.process.check_running()
        finally:
            pacer.stop()
            await asyncio.gather(*(p.close() for p in everyone), return_exceptions=True)
    return {"big_room_participants": participants, "big_room_publishers": publishers,
            "big_room_setup_s": round(setup_s, 1),
            "big_room_offer_bytes_max": max(p.largest_offer_bytes for p in everyone),
            "big_room_offers_per_participant_max": max(p.offers for p in everyone),
            "big_room_rss_mib_before": round(rss_before / 2**20, 1),
            "big_room_rss_mib_after": round(rss_after / 2**20, 1),
            "big_room_rss_mib_per_participant": round((rss_after - rss_before) / 2**20 / participants, 3)}


# Entry points --------------------------------------------------------------------------------


async def cascaded_room(workdir: Path, common: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """1 publisher and 16 subscribers on one worker, then cascaded: a worker takes 9
    participants, so 9 are on one worker and 8 on the other. The same packets either way:
    the ratio is what the pipe and the second process cost."""
    alone = await forwarding(workdir, "alone", 1, 1, 16, **common)
    cascade = await forwarding(workdir, "cascade", 2, 1, 16, capacity_units=9 * HD_UNITS, **common)
    return alone, cascade


async def cascade_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Only the cascaded room, ``--rounds`` times (the two runs alternate): its figure
    moves from run to run on a small machine."""
    common = {"seconds": args.seconds, "warmup": args.warmup, "shards": args.client_processes}
    rounds = [await cascaded_room(workdir, common) for _ in range(args.rounds)]
    ratios = [_ratio(cascade, alone) for alone, cascade in rounds]
    return {"cascade_overhead_ratios": ratios,
            "cascade_overhead_ratio": sorted(ratios)[len(ratios) // 2],  # the median
            "server_cpu_us_per_packet_one_room_one_worker": [
                alone["server_cpu_us_per_packet"] for alone, _ in rounds],
            "server_cpu_us_per_packet_cascaded": [
                cascade["server_cpu_us_per_packet"] for _, cascade in rounds],
            "loss_ratio": max(r["loss_ratio"] or 0 for pair in rounds for r in pair),
            "runs": [{"one_room_one_worker": a, "cascaded": c} for a, c in rounds]}


async def default_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    common = {"seconds": args.seconds, "warmup": args.warmup, "shards": args.client_processes}
    rooms, subscribers = args.rooms, args.subscribers
    one = await forwarding(workdir, "one", 1, rooms, subscribers, **common)
    two = await forwarding(workdir, "two", 2, rooms, subscribers, **common)
    alone, cascade = await cascaded_room(workdir, common)
    runs = {"one_worker": one, "two_workers": two, "one_room_one_worker": alone, "cascaded": cascade}
    result: dict[str, Any] = {
        "server_cpu_us_per_packet_one_worker": one["server_cpu_us_per_packet"],
        "server_cpu_us_per_packet_two_workers": two["server_cpu_us_per_packet"],
        "server_cpu_us_per_packet_cascaded": cascade["server_cpu_us_per_packet"],
        "two_worker_ratio": _ratio(two, one),
        "cascade_overhead_ratio": _ratio(cascade, alone),
        "cascade_vs_one_worker_run": _ratio(cascade, one),
        "loss_ratio": max(r["loss_ratio"] or 0 for r in runs.values()),
        "added_delay_ms_p99": max(r["added_delay_ms_p99"] for r in runs.values()),
        "runs": runs,
    }
    result.update(await failover(workdir, args.kills, 4))
    result.update(await big_room(workdir, args.big_room, args.big_room_publishers))
    if args.nodes >= 2:
        result.update(await node_failover(workdir, args.db, args.kills, 4, args.node_lease))
        # The same room as "alone" and "cascaded", on one node and spread over two.
        result.update(await cross_node(workdir, args.db, 16, **common))
    return result


def _ratio(run: dict[str, Any], base: dict[str, Any]) -> float | None:
    a, b = run["server_cpu_us_per_packet"], base["server_cpu_us_per_packet"]
    return round(a / b, 3) if a and b else None


async def scaling_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = [int(n) for n in args.workers.split(",")]
    series = []
    for workers in sizes:
        shards = args.client_processes or max(1, min(workers * 2, (os.cpu_count() or 2) - workers))
        run = await forwarding(workdir, f"w{workers}", workers, workers * args.rooms_per_worker,
                               args.subscribers, args.seconds, args.warmup, shards)
        run["load_generators"] = shards
        series.append(run)
    base = series[0]["forwarded_pps"] / sizes[0] if series else 0
    for run in series:
        run["linear_fraction"] = round(run["forwarded_pps"] / (base * run["workers"]), 3) if base else None
    return {"scaling": series, "rooms_per_worker": args.rooms_per_worker,
            "subscribers_per_room": args.subscribers,
            "min_linear_fraction": min(r["linear_fraction"] or 0 for r in series)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", help="comma-separated worker counts: the scaling series instead")
    parser.add_argument("--seconds", type=float, default=12, help="measurement window of a forwarding run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of flow before the window")
    parser.add_argument("--client-processes", type=int, default=0,
                        help="load-generator processes (default: 1 here; scaling: by the cores left)")
    parser.add_argument("--rooms", type=int, default=4,
                        help="one and two workers: rooms of 1 publisher and --subscribers")
    parser.add_argument("--rooms-per-worker", type=int, default=4, help="scaling series: rooms per worker")
    parser.add_argument("--subscribers", type=int, default=12, help="subscribers per room")
    parser.add_argument("--kills", type=int, default=3, help="failover: workers killed, one after another")
    parser.add_argument("--big-room", type=int, default=60, help="participants of the big room")
    parser.add_argument("--big-room-publishers", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1,
                        help="2: also two nodes on PostgreSQL (--db), killing the one hosting a call")
    parser.add_argument("--db", default="postgresql+psycopg://postgres@/test?host=/var/run/postgresql",
                        help="PostgreSQL for --nodes 2 (a scratch schema is made in it and dropped)")
    parser.add_argument("--node-lease", type=int, default=10,
                        help="seconds of a node's lease (the service's default, 10)")
    parser.add_argument("--cross-node-only", action="store_true",
                        help="only the room spread over two nodes (cross_node_overhead_ratio)")
    parser.add_argument("--cascade-only", action="store_true",
                        help="only the room cascaded over two workers (cascade_overhead_ratio), "
                             "--rounds times")
    parser.add_argument("--rounds", type=int, default=3, help="--cascade-only: how many times")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.workers is None and not args.client_processes:
        args.client_processes = 1
    return args


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    cancel_on_signals()
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    started = time.monotonic()
    result: dict[str, Any] = {"command": command}
    if args.workers:
        result.update(await scaling_run(args, workdir))
    elif args.cascade_only:
        result.update(await cascade_run(args, workdir))
    elif args.cross_node_only:
        result.update(await cross_node(workdir, args.db, 16, args.seconds, args.warmup,
                                       args.client_processes))
    else:
        result.update(await default_run(args, workdir))
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    result["logs"] = str(workdir)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["shard"]:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        asyncio.run(shard_main(json.loads(argv[1])))
        return 0
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    for noisy in ("aioice", "aiortc", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command = "python -m bench.scale " + " ".join(argv)
    return print_result(command, lambda: run(args, command))


if __name__ == "__main__":
    raise SystemExit(main())

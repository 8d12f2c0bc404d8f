"""Weak office links: how simulcast and congestion control adapt, with real Chromium.

    python -m bench.network [--window 60] [--scenarios downlink_400kbit,loss_5pct,uplink_600kbit]
    python -m bench.network --only-cost [--sfu-rounds 2] [--sfu-seconds 20]

Runs the service in this process (one media worker) on a link to an "office": a network
namespace joined to ours by a veth pair (bench/netlab.py). Chromium pages with fake
camera and microphone join from both sides; the link is then shaped, made lossy or cut,
and the pages' ``getStats()`` and the server's own view of each receive slot say what
happened:

- ``downlink_400kbit``: a viewer in the office, its tile of the publisher made big, gets
  400 kbit/s down. Expected: the lowest layer within 10 s (the server forwards it and
  the page decodes frames of its height), at most 2 freezes a minute afterwards, the
  viewer outside keeping the top layer; the top layer again within 20 s of the limit
  being lifted. The server tries the office's link with padding before each step up
  (``padding_packets_while_limited``).
- ``loss_5pct``: 5 % of what reaches the office is dropped at random. Expected: NACK and
  RTX keep the office's video to at most 2 freezes a minute.
- ``uplink_600kbit``: the publisher is in the office, with 600 kbit/s up. Expected: its
  own estimator drops its top layer, and the viewer outside keeps a moving picture.
- ``outage_5s``: the office's link goes down for 5 s. Expected: its page receives again
  within 5 s of the link returning, with the same participant id.

Prints one JSON object: ``scenarios``, one entry per case (``name``, ``adapted``,
``adapt_s``, ``bitrate_before_kbps``, ``bitrate_after_kbps``, ``layer``, ``freezes`` per
minute, ``loss_ratio``, and what else the case measured), and
``simulcast_extra_us_per_packet``: the whole server's CPU per forwarded packet with
simulcast (three layers in, one out per subscriber, transport-cc both ways) minus the
same plain (one stream, no transport-cc), as bench.sfu measures it at 4×8, the two
modes alternated in this run (:func:`whole_server_cost`). ``packet_path_extra_us_per_packet``
is the C packet path's part alone (:func:`packet_path_cost`, in this process).
``--only-cost`` (or ``--scenarios none``) measures only these, without Chromium.
Needs root (namespaces, tc, nftables); it moves itself into a loopback-only namespace
of its own first (bench.sfu runs in it too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from bench.netlab import OFFICE_ADDRESS, SERVER_ADDRESS, Office
from mcu.simulcast import LAYER_HEIGHTS
from multipoint.app import MEDIA, create_app
from multipoint.settings import load_settings
from signaling.links import join_url

logger = logging.getLogger("bench.network")

CHROMIUM = os.environ.get("MULTIPOINT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # Inside the loopback-only namespace Chromium would otherwise ignore 127.0.0.1.
    "--allow-loopback-in-peer-connection",
]
SCENARIOS = ("downlink_400kbit", "loss_5pct", "uplink_600kbit", "outage_5s")
SFU_SIZE = ("--publishers", "4", "--subscribers", "8")  # the plain figure: bench.sfu at 4×8
# A run whose subscribers did not all get their video through the window measured
# something else (a paused video forwards less): its figure is flagged.
FLOW_MIN_RATIO = 0.95
TOP, LOWEST = 2, 0
LOWEST_HEIGHT = LAYER_HEIGHTS[LOWEST]

# What a page receives, per receive slot (mid): frames, height, freezes, packets, bytes.
INBOUND_VIDEO = """
async () => {
  const out = {};
  (await window.multipointCall.session.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video')
      out[s.mid] = {frames: s.framesDecoded ?? 0, height: s.frameHeight ?? 0,
                    freezes: s.freezeCount ?? 0, received: s.packetsReceived ?? 0,
                    lost: Math.max(0, s.packetsLost ?? 0), bytes: s.bytesReceived ?? 0};
  });
  return out;
}
"""
# What a page sends of its camera, per RID: frames encoded, bytes, why it is limited.
OUTBOUND_LAYERS = """
async () => {
  const out = {};
  (await window.multipointCall.session.pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid)
      out[s.rid] = {frames: s.framesEncoded ?? 0, bytes: s.bytesSent ?? 0,
                    limit: s.qualityLimitationReason ?? '', height: s.frameHeight ?? 0};
  });
  return out;
}
"""


@dataclass
class Lab:
    """The server (in this process), the office and a browser on each side."""

    app: web.Application
    port: int
    secret: bytes
    office: Office
    here: Browser  # pages on the server's side of the link
    there: Browser  # pages in the office

    def base(self, in_office: bool) -> str:
        host = SERVER_ADDRESS if in_office else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def join(self, room: str, name: str, in_office: bool = False, camera: bool = True) -> Joined:
        browser = self.there if in_office else self.here
        base = self.base(in_office)
        context = await browser.new_context(base_url=base)
        await context.grant_permissions(["camera", "microphone"], origin=base)
        page = await context.new_page()
        await page.goto(join_url(base, self.secret, room, name=name, ttl_s=3600) + "&autojoin=1&lang=cs")
        await page.wait_for_function("() => Boolean(window.multipointCall.me)", timeout=30_000)
        await page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        if not camera:
            await page.click("#camera")
        return Joined(page, await page.evaluate("window.multipointCall.me"))

    def slot(self, room: str, viewer: Joined, publisher: Joined) -> Any:
        """The viewer's receive slot (a Consumer) showing the publisher's camera."""
        participant = self.app[MEDIA].rooms[room].participants[viewer.id]
        for consumer in participant.consumers.values():
            if consumer.producer is not None and consumer.producer.id == f"{publisher.id}-camera":
                return consumer
        return None

    def mid(self, room: str, viewer: Joined, consumer: Any) -> str:
        participant = self.app[MEDIA].rooms[room].participants[viewer.id]
        return next(mid for mid, leg in participant._leg_by_mid.items() if leg is consumer)


@dataclass
class Joined:
    page: Page
    id: str

    async def focus(self, other: Joined) -> None:
        """Make the other one's tile the big one."""
        await self.page.wait_for_selector(f"#grid .tile[data-participant='{other.id}']", timeout=30_000)
        await self.page.click(f"#grid .tile[data-participant='{other.id}']")


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float,
                interval: float = 0.25) -> float | None:
    """Seconds until ``predicate`` holds (None: not within ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(interval)
    return None


def on_layer(slot: Any, layer: int) -> bool:
    return slot is not None and slot.layer == layer and slot.target_layer is None


async def inbound(page: Page, mid: str) -> dict[str, float]:
    stats = (await page.evaluate(INBOUND_VIDEO)).get(mid)
    return stats or {"frames": 0, "height": 0, "freezes": 0, "received": 0, "lost": 0, "bytes": 0}


async def watch(page: Page, mid: str, seconds: float) -> dict[str, float]:
    """The video on one slot over ``seconds``: bitrate, freezes a minute, loss, frames."""
    first = await inbound(page, mid)
    await asyncio.sleep(seconds)
    last = await inbound(page, mid)
    received = last["received"] - first["received"]
    lost = last["lost"] - first["lost"]
    return {
        "kbps": round((last["bytes"] - first["bytes"]) * 8 / 1000 / seconds),
        "freezes_per_minute": round((last["freezes"] - first["freezes"]) * 60 / seconds, 1),
        "loss_ratio": round(lost / (received + lost), 3) if received + lost > 0 else 0.0,
        "frames": last["frames"] - first["frames"],
        "height": last["height"],
    }


# Scenarios ---------------------------------------------------------------------------


async def downlink_400kbit(lab: Lab, window_s: float) -> dict[str, Any]:
    room = "bench-downlink"
    publisher = await lab.join(room, "Publikující")
    outside = await lab.join(room, "Kraj", camera=False)
    office = await lab.join(room, "Obec", in_office=True, camera=False)
    for viewer in (outside, office):
        await viewer.focus(publisher)
    office_slot = await _slot(lab, room, office, publisher)
    outside_slot = await _slot(lab, room, outside, publisher)
    await until(lambda: on_layer(office_slot, TOP) and on_layer(outside_slot, TOP), 30)
    mid = lab.mid(room, office, office_slot)
    before = await watch(office.page, mid, 4)

    counters = lab.app[MEDIA].counters
    lab.office.shape_down(400)

    async def lowest_arrives() -> bool:  # the server switched, and the page decodes it
        return on_layer(office_slot, LOWEST) and (await inbound(office.page, mid))["height"] == LOWEST_HEIGHT

    adapt_s = await until(lowest_arrives, 30)
    padded = counters.padding_packets
    layers_seen: set[int | None] = set()

    async def sample_layers() -> None:
        while True:
            layers_seen.update((office_slot.layer, office_slot.target_layer))
            await asyncio.sleep(0.25)

    sampling = asyncio.ensure_future(sample_layers())
    after = await watch(office.page, mid, window_s)
    sampling.cancel()
    kept_top = on_layer(outside_slot, TOP)
    padded = counters.padding_packets - padded

    lab.office.shape_down(None)
    recover_s = await until(lambda: on_layer(office_slot, TOP), 40)
    return {
        "name": "downlink_400kbit",
        "adapted": adapt_s is not None and adapt_s <= 10 and after["freezes_per_minute"] <= 2
                   and kept_top and recover_s is not None and recover_s <= 20,
        "adapt_s": adapt_s, "recover_s": recover_s,
        "bitrate_before_kbps": before["kbps"], "bitrate_after_kbps": after["kbps"],
        "layer": office_slot.layer,
        # The highest layer the slot was on or moving to while limited (probes that
        # failed are padding, not layers).
        "layer_while_limited": max((layer for layer in layers_seen if layer is not None), default=None),
        "freezes": after["freezes_per_minute"], "loss_ratio": after["loss_ratio"],
        "others_kept_top_layer": kept_top, "window_s": window_s,
        "padding_packets_while_limited": padded,
    }


async def loss_5pct(lab: Lab, window_s: float) -> dict[str, Any]:
    room = "bench-loss"
    publisher = await lab.join(room, "Publikující")
    office = await lab.join(room, "Obec", in_office=True, camera=False)
    await office.focus(publisher)
    slot = await _slot(lab, room, office, publisher)
    await until(lambda: slot.packets > 0 and slot.target_layer is None, 20)
    mid = lab.mid(room, office, slot)
    before = await watch(office.page, mid, 4)
    retransmitted = lab.app[MEDIA].counters.retransmissions
    lab.office.lose(5)
    after = await watch(office.page, mid, window_s)
    lab.office.lose(None)
    return {
        "name": "loss_5pct",
        "adapted": after["freezes_per_minute"] <= 2 and after["frames"] > 0,
        "adapt_s": None,
        "bitrate_before_kbps": before["kbps"], "bitrate_after_kbps": after["kbps"],
        "layer": slot.layer, "freezes": after["freezes_per_minute"],
        # What the page lost for good, after NACK/RTX repaired what they could.
        "loss_ratio": after["loss_ratio"],
        "retransmissions": lab.app[MEDIA].counters.retransmissions - retransmitted,
        "viewer_frames_in_window": after["frames"], "window_s": window_s,
    }


async def uplink_600kbit(lab: Lab, window_s: float) -> dict[str, Any]:
    room = "bench-uplink"
    office = await lab.join(room, "Obec", in_office=True)
    outside = await lab.join(room, "Kraj", camera=False)
    await outside.focus(office)
    slot = await _slot(lab, room, outside, office)
    await until(lambda: on_layer(slot, TOP), 30)
    mid = lab.mid(room, outside, slot)
    before = await watch(outside.page, mid, 4)
    sent_before = await office.page.evaluate(OUTBOUND_LAYERS)

    lab.office.shape_up(600)

    async def top_dropped() -> bool:
        first = await office.page.evaluate(OUTBOUND_LAYERS)
        await asyncio.sleep(1)
        second = await office.page.evaluate(OUTBOUND_LAYERS)
        return second.get("f", {}).get("frames", 0) == first.get("f", {}).get("frames", 0)

    adapt_s = await until(top_dropped, 30, interval=0)
    after = await watch(outside.page, mid, window_s)
    sent_after = await office.page.evaluate(OUTBOUND_LAYERS)
    lab.office.shape_up(None)
    return {
        "name": "uplink_600kbit",
        "adapted": adapt_s is not None and after["frames"] > window_s * 5,
        "adapt_s": adapt_s,
        "bitrate_before_kbps": before["kbps"], "bitrate_after_kbps": after["kbps"],
        "layer": slot.layer, "freezes": after["freezes_per_minute"], "loss_ratio": after["loss_ratio"],
        "publisher_limited_by": sent_after.get("f", {}).get("limit"),
        "layers_sent_before": sorted(sent_before), "window_s": window_s,
        "viewer_frames_in_window": after["frames"],
    }


async def outage_5s(lab: Lab, window_s: float) -> dict[str, Any]:
    room = "bench-outage"
    publisher = await lab.join(room, "Publikující")
    office = await lab.join(room, "Obec", in_office=True)
    slot = await _slot(lab, room, office, publisher)
    await until(lambda: slot.packets > 0, 20)
    mid = lab.mid(room, office, slot)
    before = await watch(office.page, mid, 4)
    lab.office.link(False)
    await asyncio.sleep(5)
    lab.office.link(True)

    async def receiving() -> bool:
        first = await inbound(office.page, mid)
        await asyncio.sleep(0.25)
        return (await inbound(office.page, mid))["frames"] > first["frames"]

    back_s = await until(receiving, 25, interval=0)
    after = await watch(office.page, mid, min(window_s, 10))
    same = await office.page.evaluate("window.multipointCall.me") == office.id
    reloaded = await office.page.evaluate("window.loadedOnce") is not True
    return {
        "name": "outage_5s",
        "adapted": back_s is not None and back_s <= 5 and same and not reloaded,
        "adapt_s": back_s,
        "bitrate_before_kbps": before["kbps"], "bitrate_after_kbps": after["kbps"],
        "layer": slot.layer, "freezes": after["freezes_per_minute"], "loss_ratio": after["loss_ratio"],
        "same_participant": same, "reloaded": reloaded,
    }


async def _slot(lab: Lab, room: str, viewer: Joined, publisher: Joined) -> Any:
    found: list[Any] = []

    def present() -> bool:
        found[:] = [lab.slot(room, viewer, publisher)]
        return found[0] is not None

    if await until(present, 30) is None:
        raise RuntimeError(f"{viewer.id} never got a slot showing {publisher.id}")
    return found[0]


# The packet path with simulcast --------------------------------------------------------


def packet_path_cost(simulcast: bool, subscribers: int = 8, pictures: int = 3000) -> float:
    """Microseconds of CPU per forwarded packet of the C packet path (``receive()``, the
    rewrite, the send on a UDP socket), for one camera and ``subscribers`` slots of it.

    Plain: one VP8 stream to every slot, no transport-cc (bench.sfu's 4×8 legs). With
    simulcast: three layers in (1, 2 and 4 packets a picture), each slot on one of them
    (the slots spread over the three), every sink stamping transport-cc. Packets go to a
    port nobody listens on: the kernel's whole send path, nothing to read.
    """
    import socket
    import struct

    from mcu._fanout import Counters, Leg, Sink, Track, receive

    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    layers = 3 if simulcast else 1
    tracks = {0x1000 + index: Track(video=True) for index in range(layers)}
    for track in tracks.values():
        track.payload_type = 96
    legs = []
    for index in range(subscribers):
        sink = Sink()
        sink.bind(sender.fileno(), "127.0.0.1", 9, 0, 0, None)
        if simulcast:
            sink.transport_cc_id = 5
        leg = Leg(video=True)
        leg.sink, leg.payload_type, leg.ssrc = sink, 96, 0x2000 + index
        leg.source = list(tracks.values())[index % layers]
        legs.append(leg)
    for track in tracks.values():
        track.legs = tuple(leg for leg in legs if leg.source is track)
    counters = Counters()
    per_picture = (1, 2, 4) if simulcast else (4,)
    packets = []
    for picture in range(pictures):
        for layer, ssrc in enumerate(tracks):
            for part in range(per_picture[layer]):
                first = part == 0
                # VP8 descriptor: X, S on the first packet; I (15-bit picture ID), L, T; then
                # the payload header, whose P bit is clear on a keyframe (one in 100).
                descriptor = bytes([0x90 if first else 0x80, 0xE0]) + struct.pack("!H", 0x8000 | picture) \
                    + bytes([picture & 0xFF, 0x20])
                payload = descriptor + bytes([0x00 if picture % 100 == 0 and first else 0x01]) + bytes(1000)
                rtp_header = struct.pack("!BBHII", 0x80, 96 | (0x80 if part == per_picture[layer] - 1 else 0),
                                         (picture * 4 + part) & 0xFFFF, picture * 3000, ssrc)
                packets.append(rtp_header + payload)
    started = time.process_time()
    for packet in packets:
        receive(tracks, packet, counters)
    elapsed = time.process_time() - started
    sender.close()
    forwarded = counters.packets_forwarded
    return elapsed / forwarded * 1e6 if forwarded else float("nan")


# The whole server with simulcast -------------------------------------------------------


async def bench_sfu_once(simulcast: bool, seconds: float) -> dict[str, Any]:
    """One bench.sfu run at 4×8 (its own server process), in this namespace; its JSON."""
    argv = [sys.executable, "-m", "bench.sfu", *SFU_SIZE, "--seconds", str(seconds),
            "--naive-subscribers", "0", *(["--simulcast"] if simulcast else [])]
    logger.info("running %s", " ".join(argv[1:]))
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await process.communicate()  # its progress goes to our stderr
    lines = stdout.decode(errors="replace").strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"error": f"no output (exit {process.returncode})"}
    if "error" in result:
        raise RuntimeError(f"bench.sfu {'--simulcast ' if simulcast else ''}failed: {result['error']}")
    return result


async def whole_server_cost(rounds: int, seconds: float) -> dict[str, Any]:
    """Server CPU per forwarded packet at 4×8, plain and with simulcast, alternated
    ``rounds`` times (plain, simulcast, plain, …) so that both meet the same machine: the
    best run of each mode, and each round's difference."""
    runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        for simulcast in (False, True):
            result = await bench_sfu_once(simulcast, seconds)
            flowing = (result.get("video_received_min_ratio") or 0) >= FLOW_MIN_RATIO
            runs.append({
                "mode": result["mode"], "us_per_packet": result["server_cpu_us_per_packet"],
                "us_per_packet_marginal": result.get("server_cpu_us_per_packet_marginal"),
                "forwarded_pps": result["forwarded_pps"], "loss_ratio": result["loss_ratio"],
                "video_received_min_ratio": result.get("video_received_min_ratio"),
                "every_subscriber_got_video": flowing,
                "server_runqueue_wait_percent": result["server_runqueue_wait_percent"],
                "server_wakeups_per_s": result["server_wakeups_per_s"],
                "machine_busy_percent": result["machine_busy_percent"],
                "load_average_1m": result["load_average_1m"],
                **({"simulcast": result["simulcast"]} if "simulcast" in result else {}),
            })
    plain = [run["us_per_packet"] for run in runs if run["mode"] == "plain"]
    layered = [run["us_per_packet"] for run in runs if run["mode"] == "simulcast"]
    return {
        "plain": min(plain), "simulcast": min(layered),
        "extra": round(min(layered) - min(plain), 2),
        "round_differences": [round(b - a, 2) for a, b in zip(plain, layered, strict=True)],
        "every_subscriber_got_video": all(run["every_subscriber_got_video"] for run in runs),
        "method": f"bench.sfu {' '.join(SFU_SIZE)} --seconds {seconds:g}, plain and --simulcast "
                  f"alternated {rounds} times; the best run of each",
        "runs": runs,
    }


RUNNERS: dict[str, Callable[[Lab, float], Awaitable[dict[str, Any]]]] = {
    "downlink_400kbit": downlink_400kbit, "loss_5pct": loss_5pct,
    "uplink_600kbit": uplink_600kbit, "outage_5s": outage_5s,
}


# The lab -----------------------------------------------------------------------------


@asynccontextmanager
async def lab_running(workdir: Path) -> AsyncIterator[Lab]:
    office = Office()
    runner = None
    try:
        port = _free_port()
        settings = load_settings(data_dir=workdir / "data", secret_key="bench-secret-" + "x" * 20,
                                 media_addresses=[SERVER_ADDRESS, "127.0.0.1"], media_inline=True,
                                 public_url=f"http://127.0.0.1:{port}")
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        for host in (SERVER_ADDRESS, "127.0.0.1"):
            await web.TCPSite(runner, host, port).start()
        office_flags = [flag for flag in CHROMIUM_FLAGS if flag != "--allow-loopback-in-peer-connection"]
        # The camera needs a secure origin; the office reaches us on plain HTTP.
        office_flags.append(f"--unsafely-treat-insecure-origin-as-secure=http://{SERVER_ADDRESS}:{port}")
        async with async_playwright() as playwright:
            here = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            there = await playwright.chromium.launch(
                executable_path=str(office.chromium_wrapper(CHROMIUM, workdir)), args=office_flags)
            try:
                yield Lab(runner.app, port, settings.signing_secret(), office, here, there)
            finally:
                await there.close()
                await here.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        office.close()


async def run_scenario(lab: Lab, name: str, window_s: float) -> dict[str, Any]:
    """One case, with fresh pages, the link unshaped before and after."""
    contexts_before = {id(c) for browser in (lab.here, lab.there) for c in browser.contexts}
    try:
        logger.info("scenario %s", name)
        return await RUNNERS[name](lab, window_s)
    finally:
        lab.office.shape_down(None)
        lab.office.shape_up(None)
        lab.office.lose(None)
        lab.office.link(True)
        for browser in (lab.here, lab.there):
            for context in browser.contexts:
                if id(context) not in contexts_before:
                    await context.close()


async def run(names: list[str], window_s: float, sfu_rounds: int = 2,
              sfu_seconds: float = 20.0) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-network-"))
    scenarios = []
    if names:
        async with lab_running(workdir) as lab:
            scenarios = [await run_scenario(lab, name, window_s) for name in names]
    # After the scenarios: Chromium is gone and the in-process server stopped.
    whole = await whole_server_cost(sfu_rounds, sfu_seconds)
    plain = min(packet_path_cost(False) for _ in range(3))
    layered = min(packet_path_cost(True) for _ in range(3))
    costs = {"plain": round(plain, 2), "simulcast_with_transport_cc": round(layered, 2),
             "method": "C packet path only (receive, rewrite, send), one camera to 8 slots; "
                       "the best of 3 runs each, in this process"}
    return {"command": "python -m bench.network " + " ".join(sys.argv[1:]), "scenarios": scenarios,
            "simulcast_extra_us_per_packet": whole["extra"], "whole_server_us_per_packet": whole,
            "packet_path_extra_us_per_packet": round(layered - plain, 2),
            "packet_path_us_per_packet": costs, "office_address": OFFICE_ADDRESS}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_own_namespace() -> bool:
    """Whether this process is in a namespace with loopback alone (ours to change)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    return [line.split(":")[1].strip() for line in links] == ["lo"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network", description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds each case is watched after it adapted (freezes a minute)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="which cases, by name ('none': only simulcast_extra_us_per_packet)")
    parser.add_argument("--only-cost", action="store_true",
                        help="no cases, no Chromium: only simulcast_extra_us_per_packet")
    parser.add_argument("--sfu-rounds", type=int, default=2,
                        help="bench.sfu runs of each mode (plain and simulcast, alternated)")
    parser.add_argument("--sfu-seconds", type=float, default=20.0, help="each bench.sfu run's window")
    args = parser.parse_args(argv)
    if args.sfu_rounds < 1 or args.sfu_seconds <= 0:
        parser.error("--sfu-rounds must be at least 1, --sfu-seconds positive")
    names = [] if args.only_cost or args.scenarios == "none" else [
        name for name in args.scenarios.split(",") if name]
    unknown = [name for name in names if name not in RUNNERS]
    if unknown:
        parser.error(f"unknown scenarios: {unknown}; known: {list(RUNNERS)}")
    if not in_own_namespace():
        # A namespace of our own: the office's veth pair and its addresses never touch
        # the machine's network.
        command = [sys.executable, "-m", "bench.network", *(sys.argv[1:] if argv is None else argv)]
        inner = "ip link set lo up && exec " + " ".join(f"'{part}'" for part in command)
        return subprocess.run(["unshare", "-n", "sh", "-c", inner]).returncode
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("aioice", "aiortc", "aiohttp", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = asyncio.run(run(names, args.window, args.sfu_rounds, args.sfu_seconds))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

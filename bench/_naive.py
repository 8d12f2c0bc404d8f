"""The naive relay bench.sfu compares against: aiortc's public API only.

    python -m bench._naive --port PORT

One publisher's tracks are decoded by aiortc (RemoteStreamTrack), fanned out with
``aiortc.contrib.media.MediaRelay`` and re-encoded by one ``RTCRtpSender`` per
subscriber: what an SFU built on aiortc's public API does. Signalling is one HTTP call:
``POST /offer`` with ``{"role": "publish" | "subscribe", "sdp"}`` answers with
``{"sdp"}``; ``GET /stats`` sums ``packetsSent`` of every sender (``getStats``).

The only non-public piece is the ICE address patch (aioice leaves loopback out of its
candidates), shared with the service through ``mcu.aiortc_adapter.configure_ice``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

from mcu.aiortc_adapter import configure_ice

logger = logging.getLogger("bench.naive")


def create_app() -> web.Application:
    relay = MediaRelay()
    tracks: dict[str, MediaStreamTrack] = {}
    publishers: list[RTCPeerConnection] = []
    subscribers: list[RTCPeerConnection] = []

    def new_pc() -> RTCPeerConnection:
        return RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                  bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        pc = new_pc()
        if body["role"] == "publish":
            publishers.append(pc)

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                tracks[track.kind] = track

            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        else:
            if set(tracks) != {"audio", "video"}:
                raise web.HTTPConflict(text="no publisher yet")
            subscribers.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
            for kind in ("audio", "video"):
                pc.addTrack(relay.subscribe(tracks[kind], buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def stats(request: web.Request) -> web.Response:
        sent = 0
        for pc in subscribers:
            for sender in pc.getSenders():
                report = await sender.getStats()
                sent += sum(getattr(s, "packetsSent", 0) for s in report.values()
                            if getattr(s, "type", "") == "outbound-rtp")
        return web.json_response({"packets_sent": sent, "subscribers": len(subscribers)})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def close(app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in publishers + subscribers),
                             return_exceptions=True)

    app = web.Application()
    app.router.add_post("/offer", offer)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1", help="media address to advertise")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_ice([args.address], None)
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()

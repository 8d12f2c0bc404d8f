"""/healthz and /metrics (Prometheus text format), read from the media worker at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mcu.room import MediaWorker

COUNTER_HELP = {
    "packets_received": "RTP packets received from publishers",
    "packets_forwarded": "RTP packets forwarded to subscribers",
    "bytes_forwarded": "RTP bytes forwarded to subscribers",
    "packets_malformed": "received packets dropped as malformed RTP",
    "rtcp_malformed": "received RTCP dropped as malformed",
    "packets_unroutable": "received RTP with no producer to route to",
    "send_errors": "packets that could not be sent",
    "handler_errors": "unexpected errors in the packet path (each one contained)",
    "keyframe_requests": "keyframe requests sent to publishers",
    "nacks_received": "NACKs received from subscribers",
    "retransmissions": "packets retransmitted from our history",
    "pipe_dropped": "datagrams dropped on the pipe between media workers",
    "pipe_keyframe_requests": "keyframe requests received from other media workers",
    "pipe_nacks_received": "NACKs received from other media workers",
}


ERROR_COUNTERS = ("packets_malformed", "rtcp_malformed", "packets_unroutable", "send_errors",
                  "handler_errors")


class MediaCollector(Collector):
    def __init__(self, worker: MediaWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("multipoint_rooms", "rooms open on this worker",
                                value=len(self.worker.rooms))
        yield GaugeMetricFamily("multipoint_peers", "participants connected to this worker",
                                value=self.worker.participant_count)
        counters = self.worker.counters.as_dict()
        for name, value in counters.items():
            yield CounterMetricFamily(f"multipoint_{name}", COUNTER_HELP.get(name, name), value=value)
        yield CounterMetricFamily("multipoint_errors", "all packet-path errors and drops",
                                  value=sum(counters[name] for name in ERROR_COUNTERS))


def setup_metrics(app: web.Application, worker: MediaWorker) -> None:
    registry = CollectorRegistry()
    registry.register(MediaCollector(worker))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "rooms": len(worker.rooms),
                                  "peers": worker.participant_count})

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)

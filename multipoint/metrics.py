"""/healthz and /metrics (Prometheus text format), read from the media workers at scrape time.

The packet-path counters are the workers' own, summed; a worker reports them every
second (a restarted worker starts again from zero, which Prometheus reads as a reset).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from signaling.operations import LiveRooms

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
    "padding_packets": "padding sent to probe a subscriber's link before a higher layer",
    "pipe_dropped": "datagrams dropped on the pipe between media workers",
    "pipe_keyframe_requests": "keyframe requests received from other media workers",
    "pipe_nacks_received": "NACKs received from other media workers",
    "pipe_layer_reports": "reports of the simulcast layers other media workers use",
    "datagrams_dropped_unkeyed": "datagrams dropped before a connection's DTLS read them "
                                 "(queue bound, or too long before the SRTP keys)",
    "stun_malformed": "malformed STUN datagrams dropped",
    "unit_dropped": "datagrams dropped on room units' plain RTP ports (garbage, strangers, "
                    "SRTP that is not authentic)",
}


SIGNALING_COUNTER_HELP = {
    "joins_refused_pending": "joins refused: too many pending joins (per client IP or front)",
    "answer_timeouts": "joins removed for not answering and connecting in time",
    "signaling_dropped": "signaling connections dropped because the client stopped reading",
}

ERROR_COUNTERS = ("packets_malformed", "rtcp_malformed", "packets_unroutable", "send_errors",
                  "handler_errors", "datagrams_dropped_unkeyed", "stun_malformed")


class MediaCollector(Collector):
    def __init__(self, live_rooms: LiveRooms) -> None:
        self.live_rooms = live_rooms

    def collect(self) -> Iterator[Metric]:
        load = self.live_rooms.load()
        yield GaugeMetricFamily("multipoint_rooms", "live rooms on this node", value=load["rooms"])
        yield GaugeMetricFamily("multipoint_peers", "participants connected to this node",
                                value=load["participants"])
        workers = GaugeMetricFamily("multipoint_worker_up", "1 while a media worker runs",
                                    labels=["worker"])
        cpu = GaugeMetricFamily("multipoint_worker_cpu", "a media worker's CPU (1 = one core)",
                                labels=["worker"])
        for worker in load["workers"]:
            workers.add_metric([str(worker["index"])], 1 if worker["ready"] else 0)
            cpu.add_metric([str(worker["index"])], worker["cpu"])
        yield workers
        yield cpu
        counters = self.live_rooms.pool.counters()
        for name in COUNTER_HELP:
            yield CounterMetricFamily(f"multipoint_{name}", COUNTER_HELP[name],
                                      value=counters.get(name, 0))
        signaling = self.live_rooms.signaling
        yield GaugeMetricFamily("multipoint_pending_joins",
                                "joins holding media ports that have not connected yet",
                                value=signaling.pending_total)
        for name, value in signaling.counters.items():
            yield CounterMetricFamily(f"multipoint_{name}", SIGNALING_COUNTER_HELP[name],
                                      value=value)
        refused = CounterMetricFamily("multipoint_rate_limited",
                                      "attempts refused by a rate limit, by what was tried",
                                      labels=["action"])
        for action, count in signaling.rate_limits.refused.items():
            refused.add_metric([action], count)
        yield refused
        yield CounterMetricFamily("multipoint_errors", "all packet-path errors and drops",
                                  value=sum(counters.get(name, 0) for name in ERROR_COUNTERS))
        if signaling.spread is not None:  # several nodes: rooms spread over them
            yield CounterMetricFamily(
                "multipoint_spread_write_failures",
                "writes of spread rooms' state to the database that failed (each retried)",
                value=signaling.spread.failed_writes)


def setup_metrics(app: web.Application, live_rooms: LiveRooms) -> None:
    registry = CollectorRegistry()
    registry.register(MediaCollector(live_rooms))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(request: web.Request) -> web.Response:
        load = live_rooms.load()
        running = sum(1 for w in load["workers"] if w["ready"])
        return web.json_response({"status": "ok" if running else "starting",
                                  "rooms": load["rooms"], "peers": load["participants"],
                                  "workers": running, "workers_total": len(load["workers"])})

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)

"""The send-side estimator (mcu/congestion.py) against a simulated bottleneck link.

The link is a queue in front of a fixed capacity, with a fixed propagation delay and
optional random loss; the sender sends 1200-byte packets at a given rate, and feedback
comes every 100 ms with what arrived by then, as a subscriber's browser sends it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from mcu._fanout import DelayTrend, Leg, SendSideEstimator, forward, summarize

from mcu.congestion import (
    PROBE_DURATION_S,
    PROBE_LATE_PACKETS,
    PacketResult,
    PaddingProbe,
)
from tests.mcu.estimator_reference import ReferenceEstimator
from tests.mcu.test_fanout import Link as FanoutLink
from tests.mcu.twcc_reference import build_feedback

PACKET = 1200
FEEDBACK_S = 0.1


class Link:
    def __init__(self, capacity_bps: float, delay_s: float = 0.02, loss: float = 0.0,
                 seed: int = 1) -> None:
        self.capacity_bps = capacity_bps
        self.delay_s = delay_s
        self.loss = loss
        self.free_at = 0.0  # when the bottleneck has sent everything queued
        self.random = random.Random(seed)

    def send(self, at: float, size: int) -> float | None:
        if self.random.random() < self.loss:
            return None
        start = max(at, self.free_at)
        self.free_at = start + size * 8 / self.capacity_bps
        return self.free_at + self.delay_s


def run(estimator: SendSideEstimator, link: Link, seconds: float, start: float,
        rate: Callable[[float], float]) -> list[tuple[float, int]]:
    """Send for ``seconds`` at ``rate(now)``; returns (time, estimate) after each feedback."""
    now = start
    pending: list[PacketResult] = []
    history = []
    next_feedback = start + FEEDBACK_S
    next_send = start
    while now < start + seconds:
        now = min(next_send, next_feedback)
        if now == next_send:
            pending.append(PacketResult(now, PACKET, link.send(now, PACKET)))
            next_send = now + PACKET * 8 / rate(now)
        else:
            # What has arrived by now is reported; later arrivals wait for the next one.
            due = [p for p in pending if p.arrived_at is None or p.arrived_at <= now]
            pending = [p for p in pending if p not in due]
            history.append((now, estimator.on_feedback(now, due)))
            next_feedback = now + FEEDBACK_S
    return history


def test_a_steady_path_lets_the_estimate_grow_slowly_and_never_drop() -> None:
    estimator = SendSideEstimator(start_bps=1_000_000)
    history = run(estimator, Link(10_000_000), 10.0, 0.0, lambda now: 800_000)
    assert estimator.decreases == 0
    estimates = [e for _, e in history]
    # It grows (8 % a second at most), but not beyond 1.5 times what got through.
    assert estimates[-1] > 1_000_000
    assert max(estimates) <= 1.5 * 800_000 + 10_000 + 50_000
    for (t0, e0), (t1, e1) in itertools.pairwise(history):
        assert e1 <= e0 * 1.08 ** (t1 - t0) + 1


def test_a_queue_building_up_is_overuse_and_the_estimate_drops_below_the_sending_rate() -> None:
    estimator = SendSideEstimator(start_bps=2_000_000)
    link = Link(1_000_000)
    run(estimator, link, 3.0, 0.0, lambda now: 700_000)
    assert estimator.decreases == 0
    history = run(estimator, link, 3.0, 3.0, lambda now: 1_500_000)  # 1.5 Mbit/s into 1 Mbit/s
    assert estimator.decreases >= 1
    assert estimator.detector.state in ("overuse", "normal", "underuse")
    assert min(e for _, e in history) < 1_000_000  # below the link, so below what is sent
    assert estimator.estimate_bps < 1_500_000


def test_twenty_percent_loss_lowers_the_estimate() -> None:
    estimator = SendSideEstimator(start_bps=1_000_000)
    run(estimator, Link(10_000_000), 3.0, 0.0, lambda now: 900_000)
    before = estimator.estimate_bps
    run(estimator, Link(10_000_000, loss=0.2, seed=7), 3.0, 3.0, lambda now: 900_000)
    assert 0.15 < estimator.loss < 0.3
    assert estimator.estimate_bps < 0.6 * before
    assert estimator.decreases == 0  # loss, not delay


def test_following_its_own_estimate_it_settles_near_capacity_without_oscillating() -> None:
    # The sender sends what the estimate allows (up to 2 Mbit/s) through a 1 Mbit/s link.
    estimator = SendSideEstimator(start_bps=600_000)
    link = Link(1_000_000)
    history = run(estimator, link, 60.0, 0.0, lambda now: min(estimator.estimate_bps, 2_000_000))
    late = [e for t, e in history if t > 20]
    assert 600_000 < sum(late) / len(late) < 1_300_000
    # Each decrease is followed by a slow, additive climb: a handful a minute, not one
    # every few feedbacks.
    assert 1 <= estimator.decreases <= 15


def test_the_measured_round_trip_paces_the_climb_near_capacity() -> None:
    # Near where it last overused, the estimate grows about a packet per round trip: a
    # subscriber 10 ms away finds the link's edge again sooner, so backs off more often
    # in a minute, than one a second away; both settle near the link's capacity.
    decreases = {}
    for rtt in (0.01, 1.0):
        estimator = SendSideEstimator(start_bps=600_000)
        estimator.rtt_s = rtt
        history = run(estimator, Link(1_000_000, delay_s=rtt / 2), 60.0, 0.0,
                      lambda now, e=estimator: min(e.estimate_bps, 2_000_000))
        late = [e for t, e in history if t > 20]
        assert 800_000 < sum(late) / len(late) < 1_200_000
        decreases[rtt] = estimator.decreases
    assert decreases[0.01] > decreases[1.0] >= 1


def test_a_round_trip_out_of_range_is_refused() -> None:
    estimator = SendSideEstimator()
    assert estimator.rtt_s == 0.1  # until RTCP measured one
    for wrong in (-0.01, 2.5, float("nan")):
        with pytest.raises(ValueError, match="rtt_s"):
            estimator.rtt_s = wrong
    estimator.rtt_s = 0.0  # a loopback
    assert estimator.rtt_s == 0.0


def test_after_congestion_ends_it_recovers_upward_gradually() -> None:
    # A sender that follows the estimate (up to 1.5 Mbit/s): past the congestion, the
    # estimate climbs back step by step, with no new decrease on the way.
    estimator = SendSideEstimator(start_bps=2_000_000)
    run(estimator, Link(800_000), 5.0, 0.0, lambda now: 1_500_000)
    low = estimator.estimate_bps
    assert low < 800_000
    decreases = estimator.decreases
    history = run(estimator, Link(20_000_000), 30.0, 5.0,
                  lambda now: min(estimator.estimate_bps, 1_500_000))
    assert estimator.decreases == decreases
    assert history[-1][1] >= 1_500_000  # back to what the source sends
    assert history[10][1] < low * 1.3  # not in one jump
    for (_, before), (_, after) in itertools.pairwise(history):
        assert after >= before  # and never down again


def test_what_gets_through_without_a_queue_is_never_called_congestion() -> None:
    # Publishers choose the rate, not us: 3 Mbit/s forwarded over a fast path is carried,
    # whatever the estimate started from.
    estimator = SendSideEstimator(start_bps=300_000)
    history = run(estimator, Link(50_000_000), 3.0, 0.0, lambda now: 3_000_000)
    assert estimator.decreases == 0
    assert all(e >= 0.9 * 3_000_000 for t, e in history if t > 1.0)


# Padding probes ------------------------------------------------------------------------


def probe_link(estimator: SendSideEstimator, link: Link, media_bps: float, target_bps: float,
               seconds: float = 4.0) -> tuple[PaddingProbe, float]:
    """Media at ``media_bps`` for a second (the path's delay with no queue), then a probe
    padding it up to ``target_bps`` while the probe says to send. Returns the probe and
    the seconds it padded."""
    state: dict[str, PaddingProbe] = {}
    started = 1.0

    def rate(now: float) -> float:
        probe = state.get("probe")
        if probe is None and now >= started:
            probe = state["probe"] = PaddingProbe(now, target_bps, estimator.base_delay_s)
        if probe is not None and probe.open and now - probe.started_at < PROBE_DURATION_S:
            state["padded_until"] = now  # type: ignore[assignment]
            return target_bps
        return media_bps

    class Watching(SendSideEstimator):  # the participant hands each feedback to both
        def on_feedback(self, now_s: float, packets: list[PacketResult]) -> int:
            if "probe" in state:
                state["probe"].on_feedback(packets)
            return estimator.on_feedback(now_s, packets)

    run(Watching(), link, seconds, 0.0, rate)
    probe = state["probe"]
    return probe, float(state["padded_until"]) - probe.started_at  # type: ignore[arg-type]


def test_a_probe_on_a_link_too_thin_fails_early_and_one_with_room_passes() -> None:
    thin = SendSideEstimator()
    probe, padded = probe_link(thin, Link(400_000), media_bps=190_000, target_bps=720_000)
    assert probe.verdict(5.0) == "failed"
    assert probe.late >= PROBE_LATE_PACKETS
    assert padded < 0.8 * PROBE_DURATION_S  # it stopped once the queue showed

    wide = SendSideEstimator(start_bps=200_000)
    probe, padded = probe_link(wide, Link(5_000_000), media_bps=190_000, target_bps=720_000)
    assert probe.verdict(5.0) == "passed"
    assert probe.received_bps >= 0.95 * 720_000 and probe.late == probe.lost == 0
    assert padded >= 0.95 * PROBE_DURATION_S
    assert wide.estimate_bps >= probe.received_bps  # the padding counted as received

    # What a probe that passed showed is the estimate, even just after an overuse (when
    # the estimate only creeps up).
    assert thin.decreases > 0 and thin.estimate_bps < 500_000
    thin.probed(900_000)
    assert thin.estimate_bps >= 900_000


def test_random_loss_alone_does_not_fail_a_probe_but_a_full_link_that_drops_does() -> None:
    lossy = SendSideEstimator()
    probe, _ = probe_link(lossy, Link(5_000_000, loss=0.03, seed=3), media_bps=190_000, target_bps=720_000)
    assert probe.lost > 0 and probe.verdict(5.0) == "passed"

    # A link with no queue at all (a policer): what does not fit is lost, at once.
    probe = PaddingProbe(0.0, 720_000, base_delay_s=0.02)
    probe.on_feedback([PacketResult(0.01 * n, PACKET, None if n % 2 else 0.03 + 0.01 * n) for n in range(20)])
    assert probe.verdict(0.3) == "failed" and probe.late == 0


def test_a_probe_whose_feedback_stops_fails_after_a_while_and_older_packets_do_not_count() -> None:
    probe = PaddingProbe(10.0, 720_000, base_delay_s=0.02)
    probe.on_feedback([PacketResult(9.9, PACKET, None)] * 5)  # sent before it started
    assert probe.packets == 0 and probe.verdict(10.5) is None and probe.open
    assert probe.verdict(10.0 + 2 * PROBE_DURATION_S + 1.1) == "failed"


def test_a_probe_measures_the_rate_from_any_arrival_time_zero_included() -> None:
    # The receiver's clock may read 0 at a packet's arrival: it is a time like any other.
    probe = PaddingProbe(0.0, 80_000, base_delay_s=0.0)
    probe.on_feedback([PacketResult(0.0, 1000, 0.0), PacketResult(0.1, 1000, 0.1),
                       PacketResult(0.2, 1000, 0.2)])
    assert probe.received_bps == pytest.approx(3000 * 8 / 0.2)


def test_the_base_delay_is_the_least_seen_lately() -> None:
    estimator = SendSideEstimator()
    assert estimator.base_delay_s is None
    estimator.on_feedback(1.0, [PacketResult(0.0, PACKET, 0.05), PacketResult(0.01, PACKET, 0.04)])
    assert estimator.base_delay_s == pytest.approx(0.03)
    estimator.on_feedback(2.0, [PacketResult(1.0, PACKET, 1.08)])
    assert estimator.base_delay_s == pytest.approx(0.03)
    # Long after, only what was seen within the window counts (a route that changed).
    estimator.on_feedback(9.0, [PacketResult(8.0, PACKET, 8.06)])
    assert estimator.base_delay_s == pytest.approx(0.06)


# What the C path sums up per feedback (mcu/_fanout.c) ----------------------------------


def test_a_feedback_is_summed_up_in_groups_of_packets_sent_together() -> None:
    packets = [
        PacketResult(1.000, 1000, 1.030), PacketResult(1.002, 1000, 1.031),  # one burst
        PacketResult(1.004, 500, None),  # lost: counted, in no group
        PacketResult(1.020, 200, 1.041),  # another group
        PacketResult(1.021, 300, 1.050),  # ... whose arrival is its latest
    ]
    groups, sent, lost, size, first, last, least_delay, least_at = summarize(packets, 0.005)
    assert groups == [(1.000, 1.002, 1.031), (1.020, 1.021, 1.050)]
    assert (sent, lost, size) == (5, 1, 2500)
    assert (first, last) == (1.030, 1.050)
    assert least_delay == pytest.approx(0.021) and least_at == 1.041
    nothing = summarize([PacketResult(1.0, 100, None)], 0.005)
    assert nothing == ([], 1, 1, 0, None, None, None, None)
    with pytest.raises(TypeError):
        summarize([(1.0, "big", None)], 0.005)
    with pytest.raises(TypeError):
        summarize(None, 0.005)


def test_a_feedback_packet_is_matched_with_what_the_sink_stamped() -> None:
    link = FanoutLink()
    try:
        link.sink.transport_cc_id = 5
        leg = Leg(video=False)
        leg.sink = link.sink
        for seq in range(3):
            forward((leg,), b"", b"x" * 100, 0, seq, seq * 960, False, False, False, 100)
        sent = link.sink.sent_range(0, 3)
        assert all(item is not None for item in sent)
        # Number 3 was never stamped: left out; 1 did not arrive.
        packet = build_feedback(7, 8, 0, [5_000_000, None, 5_000_250, 5_000_500], 0)
        estimator, reference = SendSideEstimator(), ReferenceEstimator()
        estimate = estimator.on_packet(10.0, link.sink, packet)
        expected = reference.on_feedback(10.0, [PacketResult(sent[0][0], sent[0][1], 5.0),
                                                PacketResult(sent[1][0], sent[1][1], None),
                                                PacketResult(sent[2][0], sent[2][1], 5.00025)])
        assert estimate == expected and estimator.loss == pytest.approx(1 / 3)
        assert estimator.received_bps == reference.received_bps
        assert estimator.base_delay_s == reference.base_delay_s
        # Numbers it never stamped (or no longer knows): nothing taken, nothing changes.
        assert estimator.on_packet(10.1, link.sink, build_feedback(7, 8, 1000, [5_000_000], 1)) is None
        for bad in (packet[:-4], b"", packet[:4] + bytes(16)):
            with pytest.raises(ValueError):
                estimator.on_packet(10.2, link.sink, bad)
        assert estimator.loss == pytest.approx(1 / 3) and estimator.estimate_bps == estimate
        with pytest.raises(TypeError):
            estimator.on_packet(10.3, link.sink, list(packet))
        with pytest.raises(TypeError):
            estimator.on_packet(10.3, leg, packet)
    finally:
        link.close()


def test_the_c_estimator_matches_the_python_reference_number_for_number() -> None:
    """The simulated links of the tests above, and random ones, fed to both."""
    rng = random.Random(20)
    for case in range(12):
        link = Link(rng.choice([300_000, 1_000_000, 5_000_000]), delay_s=rng.uniform(0.005, 0.1),
                    loss=rng.choice([0.0, 0.0, 0.03, 0.2]), seed=case)
        start = rng.choice([200_000, 1_000_000, 2_000_000])
        estimator, reference = SendSideEstimator(start_bps=start), ReferenceEstimator(start_bps=start)
        if case % 2:  # the round trip RTCP measured, or the typical one assumed before that
            estimator.rtt_s = reference.rtt_s = 2 * link.delay_s
        both = Both(estimator, reference)
        rate = rng.uniform(200_000, 2_500_000)
        run(both, link, 20.0, 0.0, lambda now, r=rate, b=both: r if now % 8 < 5 else min(b.estimate_bps, 3e6))
        if case % 3 == 0:
            estimator.probed(1_500_000)
            reference.probed(1_500_000)
            run(both, link, 5.0, 20.0, lambda now: 1_400_000)
        assert both.compared > 100


class Both(SendSideEstimator):
    """Hands each feedback to the C estimator and the reference, and compares them."""

    def __init__(self, estimator: SendSideEstimator, reference: ReferenceEstimator) -> None:
        super().__init__()
        self.estimator, self.reference, self.compared = estimator, reference, 0

    def on_feedback(self, now_s: float, packets: list[PacketResult]) -> int:
        got = self.estimator.on_feedback(now_s, packets)
        assert got == self.reference.on_feedback(now_s, packets)
        c, r = self.estimator, self.reference
        assert (c.delay_bps, c.loss_bps, c.received_bps, c.loss, c.decreases, c.base_delay_s) == (
            r.delay_bps, r.loss_bps, r.received_bps, r.loss, r.decreases, r.base_delay_s)
        assert c.detector.state == r.detector.state
        self.compared += 1
        return got

    @property
    def estimate_bps(self) -> int:  # type: ignore[override]
        return self.estimator.estimate_bps


def test_the_delay_trend_sees_a_queue_build_and_drain() -> None:
    trend = DelayTrend(0.005)
    assert trend.state == "normal" and trend.threshold_ms == pytest.approx(12.5)

    delay = [0.02]
    sent = [0.0]

    def groups(count: int, growth_ms: float) -> list[tuple[float, float, float]]:
        # One packet every 10 ms, each arriving ``growth_ms`` later than the last did.
        made = []
        for _ in range(count):
            sent[0] += 0.01
            delay[0] = max(0.02, delay[0] + growth_ms / 1000)
            made.append((sent[0], sent[0], sent[0] + delay[0]))
        return made

    trend.add(groups(40, 0.0))
    assert trend.state == "normal" and abs(trend.trend) < 0.01
    trend.add(groups(40, 1.0))  # the delay grows 1 ms a packet: a queue
    assert trend.state == "overuse" and trend.trend > trend.threshold_ms
    trend.add(groups(30, -1.0))  # and drains
    assert trend.state == "underuse" and trend.trend < -trend.threshold_ms
    with pytest.raises(TypeError):
        trend.add([(0.2, 0.2)])
    with pytest.raises(TypeError):
        trend.add(None)

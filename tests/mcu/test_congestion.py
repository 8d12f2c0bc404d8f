"""The send-side estimator (mcu/congestion.py) against a simulated bottleneck link.

The link is a queue in front of a fixed capacity, with a fixed propagation delay and
optional random loss; the sender sends 1200-byte packets at a given rate, and feedback
comes every 100 ms with what arrived by then, as a subscriber's browser sends it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from mcu.congestion import PacketResult, SendSideEstimator

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

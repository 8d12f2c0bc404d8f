"""The jitter buffer and the Opus playout, on real Opus packets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mcu.mixer.jitter import JitterBuffer, OpusPlayout, UnitKind
from mcu.mixer.opus import packet_samples
from tests.mixer.mixer_media import FRAME, opus_packets, tone

TONE = opus_packets(tone(440, 3.0))


def feed(buf: JitterBuffer, order: list[int], base_seq: int = 1000) -> None:
    for i in order:
        buf.push((base_seq + i) & 0xFFFF, i * FRAME, TONE[i % len(TONE)], i * 0.02, 20)


def test_toc_gives_the_duration_without_decoding() -> None:
    assert packet_samples(TONE[0]) == 960
    assert packet_samples(bytes([0x78 | 1, 1, 2])) == 1920  # two 20 ms frames
    assert packet_samples(bytes([(1 << 3) | 3, 3])) == 3 * 960  # three 20 ms frames
    assert packet_samples(bytes([(3 << 3) | 3, 3])) == 0  # 3 x 60 ms: longer than Opus allows
    assert packet_samples(b"") == 0
    assert packet_samples(bytes([0x03, 0x00])) == 0  # code 3 with no frames


def test_reordered_packets_play_in_order_without_loss() -> None:
    buf = JitterBuffer()
    order = list(range(60))
    rng = random.Random(1)
    for start in range(0, 60, 3):  # shuffle within windows of three
        window = order[start : start + 3]
        rng.shuffle(window)
        order[start : start + 3] = window
    units = []
    for tick, i in enumerate(order):  # one packet arrives per tick, in the shuffled order
        buf.push(1000 + i, i * FRAME, TONE[i], tick * 0.02, 20)
        units.append(buf.pop())
    units += [buf.pop() for _ in range(5)]
    played = [u.payload for u in units if u.kind is UnitKind.PACKET]
    # The first packet came after its successors and before playout started; from
    # then on every packet plays in order, none declared lost.
    first = TONE.index(played[0])
    assert first <= 1
    assert played == TONE[first:60]
    assert buf.stats.lost == 0


def test_sequence_numbers_wrap() -> None:
    buf = JitterBuffer()
    feed(buf, list(range(20)), base_seq=65530)
    kinds = [buf.pop().kind for _ in range(20)]
    assert kinds.count(UnitKind.PACKET) == 20
    assert buf.stats.lost == 0 and buf.stats.resets == 0


def test_a_gap_is_reported_as_one_loss_and_late_duplicates_are_refused() -> None:
    buf = JitterBuffer()
    feed(buf, [i for i in range(20) if i != 7])
    kinds = [buf.pop().kind for _ in range(19)]
    assert kinds.count(UnitKind.LOST) == 1
    assert buf.stats.lost == 1
    assert not buf.push(1007, 7 * FRAME, TONE[7], 1.0, 20)  # too late now
    assert buf.stats.late == 1
    feed(buf, [25])
    assert not buf.push(1025, 25 * FRAME, TONE[25], 1.0, 20)
    assert buf.stats.duplicate == 1


def test_not_opus_is_refused() -> None:
    buf = JitterBuffer()
    assert not buf.push(1, 0, b"", 0.0, 20)
    assert not buf.push(2, 960, bytes([0x03]), 0.0, 20)
    assert buf.stats.invalid == 2 and buf.depth == 0


def test_size_is_bounded_when_the_reader_stalls() -> None:
    buf = JitterBuffer(capacity=50)
    feed(buf, list(range(500)))
    assert buf.depth == 50
    assert buf.stats.dropped_overflow == 450


def test_dtx_pause_is_silence_then_rebuffers_without_a_burst() -> None:
    """A talker pauses (DTX: no packets, sequence numbers contiguous) and resumes."""
    buf = JitterBuffer()
    kinds = []
    seq = 0
    for tick in range(200):
        speaking = tick < 50 or tick >= 120
        if speaking:
            buf.push(seq, tick * FRAME, TONE[tick % 100], tick * 0.02, 20)
            seq += 1
        kinds.append(buf.pop().kind)
    assert buf.stats.lost == 0  # a pause is not loss
    assert UnitKind.IDLE in kinds[60:120]  # the spurt ended: idle, nothing decoded
    # One packet out per tick after the pause: the delay did not grow by the pause.
    assert buf.depth <= buf.target + 1


def test_sender_clock_drift_is_absorbed_by_dropping_quiet_packets() -> None:
    """A sender 2 % fast: 51 packets per 50 ticks. Depth must stay bounded."""
    buf = JitterBuffer()
    seq = 0
    depths = []
    for tick in range(3000):
        n = 2 if tick % 50 == 0 else 1
        for _ in range(n):
            buf.push(seq & 0xFFFF, seq * FRAME, TONE[seq % 100], tick * 0.02, 90)  # quiet
            seq += 1
        buf.pop()
        depths.append(buf.depth)
    assert buf.stats.dropped_drift > 30
    assert max(depths[-500:]) <= buf.target + 3
    assert buf.stats.dropped_overflow == 0


def test_playout_conceals_a_loss_and_fades_to_silence_when_the_source_stops() -> None:
    playout = OpusPlayout()
    out = []
    for tick in range(120):
        if tick < 60 and tick != 30:
            playout.push(tick, tick * FRAME, TONE[tick], tick * 0.02, 20)
        frame = playout.pull(decode=True)
        assert frame.pcm is not None and frame.pcm.shape == (FRAME,)
        out.append(frame.pcm)
    pcm = np.concatenate(out).astype(np.int32)
    assert playout.buffer.stats.lost == 1
    # The lost frame was concealed, not a hole of zeros in the middle of the tone.
    rms = [float(np.sqrt(np.mean(pcm[i * FRAME : (i + 1) * FRAME] ** 2))) for i in range(120)]
    assert min(rms[10:55]) > 1000
    # After the source stopped: silence, reached without a jump.
    assert max(rms[-40:]) == 0
    assert int(np.max(np.abs(np.diff(pcm)))) < 4000


def test_no_click_when_a_talker_resumes_after_silence() -> None:
    playout = OpusPlayout()
    seq = 0
    out = []
    for tick in range(160):
        if tick < 40 or tick >= 100:
            playout.push(seq, tick * FRAME, TONE[tick % 150], tick * 0.02, 20)
            seq += 1
        frame = playout.pull(decode=True)
        assert frame.pcm is not None
        out.append(frame.pcm)
    pcm = np.concatenate(out).astype(np.int32)
    # A 440 Hz tone of amplitude 6000 moves at most ~350 per sample; a click jumps far more.
    assert int(np.max(np.abs(np.diff(pcm)))) < 4000


def test_garbage_payload_with_a_valid_looking_toc_never_raises() -> None:
    playout = OpusPlayout()
    rng = np.random.default_rng(3)
    for tick in range(50):
        payload = TONE[tick] if tick % 5 else bytes([0x78]) + rng.bytes(60)
        playout.push(tick, tick * FRAME, payload, tick * 0.02, 20)
        frame = playout.pull(decode=True)
        assert frame.pcm is not None and frame.pcm.shape == (FRAME,)


def test_skipping_an_idle_buffer_equals_popping_it_each_tick() -> None:
    stepped, skipped = JitterBuffer(), JitterBuffer()
    for buf in (stepped, skipped):
        feed(buf, [0, 1, 2, 3])
        while buf.pop().kind is not UnitKind.IDLE:  # plays out, underruns, goes idle
            pass
        buf.push(1002, 2 * FRAME, TONE[2], 0.2, 20)  # late: raises the delay target
        assert buf.pop().kind is UnitKind.IDLE
    for _ in range(300):
        assert stepped.pop().kind is UnitKind.IDLE
    skipped.skip_idle(300)
    assert skipped._late_boost == pytest.approx(stepped._late_boost)
    assert skipped.target == stepped.target
    for buf in (stepped, skipped):
        feed(buf, [400, 401, 402])
    assert [stepped.pop() for _ in range(4)] == [skipped.pop() for _ in range(4)]

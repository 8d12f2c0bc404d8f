"""bench.mixed runs end to end and its figures come from what really flowed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.mixed import split_costs

pytestmark = pytest.mark.media

REPOSITORY = Path(__file__).resolve().parents[2]


def test_split_costs_is_a_straight_line_through_the_rooms() -> None:
    runs = [{"participants": 10, "room_cpu_pct": 5.0}, {"participants": 20, "room_cpu_pct": 7.0},
            {"participants": 60, "room_cpu_pct": 15.0}]
    fixed, per_participant = split_costs(runs)
    assert fixed == pytest.approx(3.0) and per_participant == pytest.approx(0.2)
    assert split_costs(runs[:1]) == (None, None)


def test_two_small_mixed_rooms_through_the_real_server() -> None:
    # The real service as a process, real aiortc units joining with mode=mixed.
    done = subprocess.run([sys.executable, "-m", "bench.mixed", "--participants", "2,3",
                           "--seconds", "2", "--warmup", "0.5"],
                          cwd=REPOSITORY, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert [r["participants"] for r in result["runs"]] == [2, 3]
    for entry in result["runs"]:
        # Every unit received the mixed sound through the window (a few packets at its edges).
        assert entry["loss_ratio"] < 0.1
        assert entry["added_delay_ms_p99"] is not None
        assert entry["composite_packets_received"] == 0  # audio-only units decline the composite
        assert entry["room_cpu_pct"] > 0
        # The worker wakes at least for the mixer's 50 ticks a second.
        assert entry["server_wakeups_per_s"] > 40 and entry["idle_server_wakeups_per_s"] >= 0
    assert result["fit"]["room_fixed_cpu_pct"] is not None

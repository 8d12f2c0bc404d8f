"""Every fuzz harness (fuzz/, docs/fuzzing.md) runs a bounded number of inputs from its
kept corpus and a fixed seed, and finds no crash: the CI step of the fuzzing. The long
runs (10^6 inputs per target) are done by hand and reported in docs/fuzzing.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import TARGETS

pytestmark = pytest.mark.media  # the sdp target negotiates on loopback: namespace only
ROOT = Path(__file__).resolve().parents[1]
# Inputs per target in CI, from a fixed seed: the same inputs on every run (a few seconds
# each here), so CI says whether a change broke a parser, not whether this run was lucky.
# New ground is broken by the long runs (docs/fuzzing.md); what they find joins the
# corpus. MULTIPOINT_FUZZ_SCALE multiplies the counts.
RUNS = {"rtp": 400_000, "rtcp": 150_000, "sdp": 20_000, "signaling": 400_000,
        "rrule": 60_000, "ics": 4_000, "csv": 6_000}
SCALE = float(os.environ.get("MULTIPOINT_FUZZ_SCALE", "1"))
SEED = 20261205


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_runs_its_corpus_and_more_without_a_crash(target: str, tmp_path: Path) -> None:
    assert any((ROOT / "fuzz" / "corpus" / target).iterdir()), "no kept corpus"
    run = subprocess.run(
        [sys.executable, "-m", "fuzz", target, f"-runs={int(RUNS[target] * SCALE)}",
         f"-seed={SEED}", "-max_total_time=120", "-timeout=30",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    runs = [int(line.rsplit(":", 1)[1]) for line in output.splitlines()
            if line.startswith("stat::number_of_executed_units:")]
    assert runs and runs[0] > 0, output[-2000:]

"""Every fuzz harness (fuzz/, docs/fuzzing.md) runs for a bounded time from its kept
corpus and finds no crash: the CI step of the fuzzing. The long runs (10^6 inputs per
target) are done by hand and reported in docs/fuzzing.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz import TARGETS

pytestmark = pytest.mark.media  # the sdp target negotiates on loopback: namespace only
ROOT = Path(__file__).resolve().parents[1]
SECONDS = int(os.environ.get("MULTIPOINT_FUZZ_SECONDS", "8"))


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_runs_its_corpus_and_more_without_a_crash(target: str, tmp_path: Path) -> None:
    assert any((ROOT / "fuzz" / "corpus" / target).iterdir()), "no kept corpus"
    run = subprocess.run(
        [sys.executable, "-m", "fuzz", target, f"-max_total_time={SECONDS}", "-timeout=30",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    runs = [int(line.rsplit(":", 1)[1]) for line in output.splitlines()
            if line.startswith("stat::number_of_executed_units:")]
    assert runs and runs[0] > 0, output[-2000:]

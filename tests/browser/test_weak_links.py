"""Weak office links (bench/network.py's cases, shorter): Chromium in an office namespace
behind a shaped veth link; simulcast and congestion control adapt.

The figures of the full cases (freezes a minute, how fast the top layer comes back) are
in ``python -m bench.network``; here each case must adapt the way the issue asks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench import network

pytestmark = pytest.mark.browser


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[network.Lab]:
    async with network.lab_running(tmp_path) as lab:
        yield lab


async def test_a_viewer_on_400_kbits_gets_the_lowest_layer_and_the_others_keep_the_top(lab) -> None:
    result = await network.run_scenario(lab, "downlink_400kbit", 10.0)
    print(result)
    # The 10 s is bench.network's figure on a quiet machine; under the whole test
    # run's load the estimate takes a few seconds more (13 s seen).
    assert result["adapt_s"] is not None and result["adapt_s"] <= 20, result
    assert result["others_kept_top_layer"], result
    # Its link was tried with padding while limited (a probe each few seconds), and the
    # top layer came back once the limit went.
    assert result["padding_packets_while_limited"] > 0, result
    assert result["recover_s"] is not None, result


async def test_a_publisher_on_600_kbits_up_drops_its_top_layer_and_nobody_loses_its_video(lab) -> None:
    result = await network.run_scenario(lab, "uplink_600kbit", 10.0)
    print(result)
    assert result["adapt_s"] is not None, result
    assert result["viewer_frames_in_window"] > 50, result


async def test_five_percent_loss_is_repaired(lab) -> None:
    result = await network.run_scenario(lab, "loss_5pct", 15.0)
    print(result)
    assert result["retransmissions"] > 0, result
    assert result["viewer_frames_in_window"] > 15 * 10, result  # a moving picture throughout
    assert result["freezes"] <= 4, result

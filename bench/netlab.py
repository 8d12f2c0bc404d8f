"""An office on a link of its own: a network namespace joined to ours by a veth pair.

The link can be shaped (``tbf``: the rate each way), made lossy (nftables drops a share
of what the office receives, at random) and cut (``ip link set down``), as
../shared/TESTING.md describes; ``netem`` is not in this kernel. The addresses exist only
in namespaces made here, so nothing leaves the machine. Needs root; run it inside a
loopback-only namespace of its own (``unshare -n``), as the tests and benchmarks do.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

SERVER_ADDRESS, OFFICE_ADDRESS = "10.200.0.1", "10.200.0.2"
SERVER_END, OFFICE_END = "mpv0", "mpv1"
# tbf as ../shared/TESTING.md has it: a bucket of 10 kB, and what a small office router
# queues before it drops: 50 ms at the rate.
TBF_BURST = "10kb"
TBF_LATENCY = "50ms"


class Office:
    """A namespace held by a sleeping process, linked to ours by ``mpv0`` (our end)."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
        time.sleep(0.3)
        pid = str(self.holder.pid)
        self.enter = ["nsenter", "-t", pid, "-n"]
        run("ip", "link", "add", SERVER_END, "type", "veth", "peer", "name", OFFICE_END, "netns", pid)
        run("ip", "addr", "add", f"{SERVER_ADDRESS}/24", "dev", SERVER_END)
        run("ip", "link", "set", SERVER_END, "up")
        run(*self.enter, "sh", "-c", f"ip link set lo up && ip addr add {OFFICE_ADDRESS}/24 dev {OFFICE_END}"
                                     f" && ip link set {OFFICE_END} up")

    def link(self, up: bool) -> None:
        """Cut the link, or bring it back."""
        run("ip", "link", "set", SERVER_END, "up" if up else "down")

    def shape_down(self, kbit: int | None) -> None:
        """Limit what reaches the office (None: no limit)."""
        _shape([], SERVER_END, kbit)

    def shape_up(self, kbit: int | None) -> None:
        """Limit what the office sends (None: no limit)."""
        _shape(self.enter, OFFICE_END, kbit)

    def lose(self, percent: int | None) -> None:
        """Drop this share of the UDP the office receives, at random (None: none)."""
        subprocess.run([*self.enter, "nft", "delete", "table", "inet", "lossy"], capture_output=True)
        if percent:
            run(*self.enter, "nft", "add", "table", "inet", "lossy")
            run(*self.enter, "nft", "add", "chain", "inet", "lossy", "input",
                "{ type filter hook input priority 0; }")
            run(*self.enter, "nft", "add", "rule", "inet", "lossy", "input", "udp", "dport", "1-65535",
                "numgen", "random", "mod", "100", "<", str(percent), "drop")

    def chromium_wrapper(self, chromium: str, directory: Path) -> Path:
        """A script that starts Chromium inside the office (Playwright drives it over a
        pipe, not the network)."""
        wrapper = directory / "chromium-in-office"
        wrapper.write_text(f'#!/bin/sh\nexec {" ".join(self.enter)} {chromium} "$@"\n')
        wrapper.chmod(0o755)
        return wrapper

    def close(self) -> None:
        # Both ends go with one; at once, not when the namespace is gone (what runs after
        # this must find loopback alone).
        subprocess.run(["ip", "link", "del", SERVER_END], capture_output=True)
        self.holder.kill()
        self.holder.wait()


def _shape(enter: list[str], device: str, kbit: int | None) -> None:
    subprocess.run([*enter, "tc", "qdisc", "del", "dev", device, "root"], capture_output=True)
    if kbit is not None:
        run(*enter, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{kbit}kbit",
            "burst", TBF_BURST, "latency", TBF_LATENCY)


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)

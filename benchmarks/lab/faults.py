"""Faults for one lab region: nftables rules inside its namespace, signals to its processes.

Links are never taken down to fake a failure (ROUTING.md section 0.2): a silent
blackhole is an nft ``drop`` both ways, a refusal is a TCP ``reset``, loss is
``numgen random``. A crash is ``kill -9`` and a hang ``kill -STOP`` of the
processes the lab started, and nothing else. Callers check the guard route
before any of these (see :meth:`benchmarks.lab.lab.NetLab.inject`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from .netns import PROXY_PORT, LabRegion, run

__all__ = ["FAULT_KINDS", "NFT_TABLE", "blackhole", "reset", "loss", "clear", "kill", "hang", "resume"]

FAULT_KINDS = ("crash", "blackhole", "reset", "hang")
"""Fault kinds :meth:`benchmarks.lab.lab.NetLab.inject` knows, each undone by ``restore``."""

NFT_TABLE = "aylab_fault"
"""The nftables table (inside a region's namespace) holding its fault rules."""


def blackhole(region: LabRegion) -> None:
    """Silently drop every packet on the region's link (both ways)."""
    _nft(region, f'iifname "{region.ns_if}" drop', f'oifname "{region.ns_if}" drop')


def reset(region: LabRegion) -> None:
    """Answer every TCP packet to the region's front with a reset."""
    _nft(region, f'iifname "{region.ns_if}" tcp dport {PROXY_PORT} reject with tcp reset', None)


def loss(region: LabRegion, percent: float) -> None:
    """Drop ``percent`` % of packets each way at random."""
    share = int(round(percent))
    _nft(
        region,
        f'iifname "{region.ns_if}" numgen random mod 100 < {share} drop',
        f'oifname "{region.ns_if}" numgen random mod 100 < {share} drop',
    )


def clear(region: LabRegion) -> None:
    """Remove the region's nftables fault table, if any."""
    run("ip", "netns", "exec", region.namespace, "nft", "delete", "table", "inet", NFT_TABLE, check=False)


def kill(region: LabRegion) -> None:
    """``kill -9`` every process the lab started for the region, and forget them."""
    for process in region.processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    region.processes.clear()
    region.stopped = False


def hang(region: LabRegion) -> None:
    """``kill -STOP`` the region's proxy and server: connections open, nothing answers."""
    for process in region.processes.values():
        os.kill(process.pid, signal.SIGSTOP)
    region.stopped = True


def resume(region: LabRegion) -> None:
    """``kill -CONT`` a hung region."""
    for process in region.processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
    region.stopped = False


def _nft(region: LabRegion, input_rule: str, output_rule: str | None) -> None:
    clear(region)
    script = [
        f"table inet {NFT_TABLE} {{",
        "  chain input { type filter hook input priority 0; policy accept; " + input_rule + "; }",
    ]
    if output_rule:
        script.append("  chain output { type filter hook output priority 0; policy accept; " + output_rule + "; }")
    script.append("}")
    run("ip", "netns", "exec", region.namespace, "nft", "-f", "-", input_text="\n".join(script) + "\n")

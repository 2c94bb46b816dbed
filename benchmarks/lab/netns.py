"""The lab's network: one namespace per region, a veth pair to the root namespace, the guard route.

Pure plumbing over ``ip`` and ``tc``; nothing here starts a process or injects a
fault. Every address the lab uses lies in ``10.251.K.0/24``, and the guard route
``unreachable 10.251.K.0/24`` goes in before any of it: without it, a packet for
a vanished namespace address would follow the default route off the machine
(ROUTING.md section 0.2).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "RTT_FROM_US_EAST_1_MS",
    "PROXY_PORT",
    "LabRegion",
    "run",
    "lab_unavailable_reason",
    "free_octet",
    "install_guard",
    "remove_guard",
    "guard_present",
    "build_region",
    "try_netem",
    "apply_netem",
    "leftovers",
]

RTT_FROM_US_EAST_1_MS: Mapping[str, float] = {
    "us-east-1": 5.3,
    "eu-west-2": 77.7,
    "us-west-2": 64.3,
    "eu-central-1": 93.1,
    "ap-southeast-1": 219.1,
}
"""Cloudping p50 over a year from us-east-1 (ROUTING.md section 6.1): the lab's edge sits there."""

PROXY_PORT = 80
"""Where each region's front (the delay proxy) listens on its namespace address."""


@dataclass(slots=True)
class LabRegion:
    """One emulated region: its namespace, addresses, RTT and the processes serving it."""

    name: str
    index: int
    namespace: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    rtt_ms: float
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopped: bool = False

    @property
    def url(self) -> str:
        """Where the region answers, seen from the root namespace."""
        return f"http://{self.ns_ip}:{PROXY_PORT}"

    @classmethod
    def numbered(cls, name: str, index: int, octet: int, rtt_ms: float) -> LabRegion:
        """Region ``index`` of the lab on ``10.251.<octet>.0/24``: the ``index``-th /30 in it."""
        base = 4 * index
        return cls(
            name=name,
            index=index,
            namespace=f"aylab{octet}-{name}",
            host_if=f"ayh{octet}x{index}",
            ns_if=f"ayn{octet}x{index}",
            host_ip=f"10.251.{octet}.{base + 1}",
            ns_ip=f"10.251.{octet}.{base + 2}",
            rtt_ms=rtt_ms,
        )


def run(*args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raise with its stderr when ``check`` and it fails."""
    result = subprocess.run(list(args), capture_output=True, text=True, input=input_text)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def lab_unavailable_reason() -> str | None:
    """Why this machine cannot run the lab (not root, no ``ip``/``nft``, netns refused), or ``None``."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install iproute2 nftables)"
    probe = f"aylabprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def free_octet() -> int:
    """A ``K`` no address or route of this machine uses in ``10.251.K.0/24`` (random, so labs can coexist)."""
    used = run("ip", "-o", "addr", "show", check=False).stdout + run("ip", "route", "show", check=False).stdout
    candidates = [k for k in range(1, 255) if f"10.251.{k}." not in used]
    if not candidates:
        raise RuntimeError("no free 10.251.K.0/24 lab prefix")
    return random.Random(os.getpid() ^ time.monotonic_ns()).choice(candidates)


def install_guard(prefix: str) -> None:
    """``ip route replace unreachable <prefix>``: lab traffic fails locally, never leaves the machine."""
    run("ip", "route", "replace", "unreachable", prefix)


def remove_guard(prefix: str) -> str | None:
    """Remove the guard route; returns the problem, if any."""
    result = run("ip", "route", "del", "unreachable", prefix, check=False)
    return None if result.returncode == 0 else f"ip route del {prefix}: {result.stderr.strip()}"


def guard_present(prefix: str) -> bool:
    """Is ``unreachable <prefix>`` in the root namespace's routing table?"""
    shown = run("ip", "route", "show", prefix, check=False).stdout
    return any(line.split()[:2] == ["unreachable", prefix] for line in shown.splitlines() if line)


def build_region(region: LabRegion, made_namespaces: list[str], made_links: list[str]) -> None:
    """Create the region's namespace and veth pair, address both ends, bring them (and lo) up.

    Each namespace and link is appended to ``made_*`` as soon as it exists, so a
    failure half-way still leaves the caller a complete list to tear down.
    """
    ns, host_if, ns_if = region.namespace, region.host_if, region.ns_if
    # A namespace or link left by an earlier crashed run with the same octet would break this one.
    run("ip", "link", "del", host_if, check=False)
    run("ip", "netns", "del", ns, check=False)
    run("ip", "netns", "add", ns)
    made_namespaces.append(ns)
    run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
    made_links.append(host_if)
    run("ip", "link", "set", ns_if, "netns", ns)
    run("ip", "addr", "add", f"{region.host_ip}/30", "dev", host_if)
    run("ip", "link", "set", host_if, "up")
    run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{region.ns_ip}/30", "dev", ns_if)
    run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
    run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def try_netem(region: LabRegion) -> bool:
    """Does this kernel have the netem qdisc? (Machines of this kind do not: ROUTING.md section 0.1.)"""
    probe = run("tc", "qdisc", "add", "dev", region.host_if, "root", "netem", "delay", "1ms", check=False)
    if probe.returncode != 0:
        return False
    run("tc", "qdisc", "del", "dev", region.host_if, "root", check=False)
    return True


def apply_netem(region: LabRegion, jitter_ms: float) -> None:
    """Half the RTT on each side's egress. Untested on this kind of machine (no netem)."""
    one_way = f"{region.rtt_ms / 2:.1f}ms"
    jitter = f"{jitter_ms:.1f}ms"
    run("tc", "qdisc", "add", "dev", region.host_if, "root", "netem", "delay", one_way, jitter)
    run("ip", "netns", "exec", region.namespace, "tc", "qdisc", "add", "dev", region.ns_if, "root", "netem",
        "delay", one_way, jitter)


def leftovers(regions: Mapping[str, LabRegion], prefix: str) -> list[str]:
    """Namespaces, links, processes and routes of these regions still present on the machine."""
    found: list[str] = []
    namespaces = run("ip", "netns", "list", check=False).stdout
    links = run("ip", "-o", "link", "show", check=False).stdout
    routes = run("ip", "route", "show", prefix, check=False).stdout.strip()
    for region in regions.values():
        if region.namespace in namespaces.split():
            found.append(f"namespace {region.namespace}")
        if f" {region.host_if}@" in links or f" {region.host_if}:" in links:
            found.append(f"link {region.host_if}")
        for name, process in region.processes.items():
            if process.poll() is None:
                found.append(f"process {region.name}/{name} pid {process.pid}")
    if routes:
        found.append(f"route {routes}")
    return found

"""The lab: regions in network namespaces, each a fake server behind a delay proxy, and their faults.

:class:`NetLab` owns everything it makes — the guard route, namespaces, veth
links and the processes it starts in them — and :meth:`NetLab.down` removes
exactly that (recorded PIDs only). Every fault first asserts the guard route.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from . import faults, netns
from .netns import PROXY_PORT, RTT_FROM_US_EAST_1_MS, LabRegion, run

__all__ = ["NetLab"]

_ROOT = Path(__file__).resolve().parents[2]
"""The repository: child processes import this tree's code (``python -m benchmarks.lab...``)."""


class NetLab:
    """Five (or any number of) regions in network namespaces with real latency between them."""

    def __init__(
        self,
        rtts_ms: Mapping[str, float] = RTT_FROM_US_EAST_1_MS,
        *,
        workdir: Path,
        first_token_ms: float = 150.0,
        token_ms: float = 25.0,
        jitter_ms: float = 2.0,
        delay: str = "auto",
        octet: int | None = None,
        tokens: int = 10,
    ) -> None:
        if delay not in ("auto", "proxy", "netem"):
            raise ValueError("delay must be auto, proxy or netem")
        self.tokens = tokens
        self.workdir = workdir
        self.first_token_ms = first_token_ms
        self.token_ms = token_ms
        self.jitter_ms = jitter_ms
        self.delay = delay
        self.octet = octet if octet is not None else netns.free_octet()
        self.prefix = f"10.251.{self.octet}.0/24"
        self.regions: dict[str, LabRegion] = {
            name: LabRegion.numbered(name, i, self.octet, rtt) for i, (name, rtt) in enumerate(rtts_ms.items())
        }
        self._guard_installed = False
        self._made_namespaces: list[str] = []
        self._made_links: list[str] = []
        self.uses_netem = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def urls(self) -> dict[str, str]:
        """Region name -> base URL."""
        return {name: region.url for name, region in self.regions.items()}

    def up(self, ready_timeout_s: float = 15.0) -> None:
        """Install the guard route, build every region, start its processes, wait until all answer."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        netns.install_guard(self.prefix)
        self._guard_installed = True
        self.assert_guard()
        for region in self.regions.values():
            netns.build_region(region, self._made_namespaces, self._made_links)
            if self.delay != "proxy" and region.index == 0:
                self.uses_netem = netns.try_netem(region)
                if self.delay == "netem" and not self.uses_netem:
                    raise RuntimeError("this kernel has no netem qdisc (use delay='proxy')")
            if self.uses_netem:
                netns.apply_netem(region, self.jitter_ms)
        # Servers first, all at once (each takes a moment to import aiohttp), then a proxy in front of each.
        for region in self.regions.values():
            self._start_server(region)
        for region in self.regions.values():
            self._start_proxy(region)
        for region in self.regions.values():
            self.wait_ready(region.name, ready_timeout_s)

    def down(self) -> list[str]:
        """Kill the lab's processes and remove its namespaces, links and guard route; returns problems."""
        problems: list[str] = []
        for region in self.regions.values():
            faults.kill(region)
        for link in reversed(self._made_links):
            result = run("ip", "link", "del", link, check=False)
            if result.returncode != 0 and "Cannot find device" not in result.stderr:
                problems.append(f"ip link del {link}: {result.stderr.strip()}")
        self._made_links.clear()
        for namespace in reversed(self._made_namespaces):
            result = run("ip", "netns", "del", namespace, check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {namespace}: {result.stderr.strip()}")
        self._made_namespaces.clear()
        if self._guard_installed:
            problem = netns.remove_guard(self.prefix)
            if problem:
                problems.append(problem)
            self._guard_installed = False
        return problems

    def leftovers(self) -> list[str]:
        """Anything of this lab still present on the machine (empty after a clean :meth:`down`)."""
        return netns.leftovers(self.regions, self.prefix)

    def __enter__(self) -> NetLab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- guard ---------------------------------------------------------------------------------

    def guard_present(self) -> bool:
        """Is ``unreachable <lab prefix>`` in the root namespace's routing table?"""
        return netns.guard_present(self.prefix)

    def assert_guard(self) -> None:
        """Refuse to go on without the guard route (packets could leave the machine)."""
        if not self.guard_present():
            raise RuntimeError(f"guard route 'unreachable {self.prefix}' is missing: refusing to inject faults")

    # -- processes -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start (or restart) the region's fake Bedrock and its delay proxy in front of it."""
        region = self.regions[name]
        self._start_server(region)
        self._start_proxy(region)

    def _port_file(self, region: LabRegion) -> Path:
        return self.workdir / f"{region.name}.port"

    def _start_server(self, region: LabRegion) -> None:
        faults.kill(region)
        port_file = self._port_file(region)
        port_file.unlink(missing_ok=True)
        self._spawn(
            region,
            "server",
            [
                "benchmarks.lab.servers",
                "--region",
                region.name,
                "--port-file",
                str(port_file),
                "--first-token-ms",
                str(self.first_token_ms),
                "--token-ms",
                str(self.token_ms),
                "--tokens",
                str(self.tokens),
            ],
        )

    def _start_proxy(self, region: LabRegion) -> None:
        port = self._read_port(region, self._port_file(region))
        self._spawn(
            region,
            "proxy",
            [
                "benchmarks.lab.delayproxy",
                "--listen",
                f"{region.ns_ip}:{PROXY_PORT}",
                "--upstream",
                f"127.0.0.1:{port}",
                "--rtt-ms",
                str(0.0 if self.uses_netem else region.rtt_ms),
                "--jitter-ms",
                str(0.0 if self.uses_netem else self.jitter_ms),
            ],
        )
        region.stopped = False

    def _spawn(self, region: LabRegion, role: str, module_argv: list[str]) -> None:
        log: IO[bytes] = open(self.workdir / f"{region.name}-{role}.log", "ab")
        # This tree's code, not whatever an installed (editable) aybiza points at; no user site.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            # Children must not inherit our stdout: a capturing harness would wait on them forever.
            region.processes[role] = subprocess.Popen(
                ["ip", "netns", "exec", region.namespace, sys.executable, "-s", "-m", *module_argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=_ROOT,
                env=env,
            )
        finally:
            log.close()

    def _read_port(self, region: LabRegion, port_file: Path, timeout_s: float = 20.0) -> int:
        deadline = time.monotonic() + timeout_s
        server = region.processes["server"]
        while time.monotonic() < deadline:
            if port_file.exists():
                return int(port_file.read_text())
            if server.poll() is not None:
                log = (self.workdir / f"{region.name}-server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{region.name}: the fake server exited ({server.returncode}): {log}")
            time.sleep(0.02)
        raise RuntimeError(f"{region.name}: the fake server did not report its port")

    def wait_ready(self, name: str, timeout_s: float = 15.0) -> None:
        """Block until ``GET /ping`` through the region's front gets an HTTP answer (any status)."""
        region = self.regions[name]
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((region.ns_ip, PROXY_PORT), timeout=2) as sock:
                    sock.settimeout(2)
                    sock.sendall(b"GET /ping HTTP/1.1\r\nhost: lab\r\ncontent-length: 0\r\n\r\n")
                    reply = b""
                    while b"\r\n\r\n" not in reply:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        reply += chunk
                    if reply.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in reply:
                        return
                    last = reply[:80].decode("latin-1")
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"region {name} did not come up at {region.url}: {last}")

    # -- faults --------------------------------------------------------------------------------

    def inject(self, name: str, kind: str) -> None:
        """Inject a fault of ``kind`` (one of :data:`~benchmarks.lab.faults.FAULT_KINDS`) into region ``name``."""
        self.assert_guard()
        actions: dict[str, Callable[[str], None]] = {
            "crash": self.crash,
            "blackhole": self.blackhole,
            "reset": self.reset,
            "hang": self.hang,
        }
        actions[kind](name)

    def restore(self, name: str, kind: str) -> None:
        """Undo a fault of ``kind``."""
        if kind == "crash":
            self.start(name)
            self.wait_ready(name)
        elif kind == "hang":
            self.resume(name)
        else:
            self.clear_faults(name)

    def blackhole(self, name: str) -> None:
        """Silently drop every packet on the region's link (both ways)."""
        self.assert_guard()
        faults.blackhole(self.regions[name])

    def reset(self, name: str) -> None:
        """Answer every TCP packet to the region's front with a reset."""
        self.assert_guard()
        faults.reset(self.regions[name])

    def loss(self, name: str, percent: float) -> None:
        """Drop ``percent`` % of packets each way at random."""
        self.assert_guard()
        faults.loss(self.regions[name], percent)

    def clear_faults(self, name: str) -> None:
        """Remove the region's nftables fault table, if any."""
        faults.clear(self.regions[name])

    def crash(self, name: str) -> None:
        """``kill -9`` the region's server and proxy."""
        self.assert_guard()
        faults.kill(self.regions[name])

    def hang(self, name: str) -> None:
        """``kill -STOP`` the region's proxy and server: connections open, nothing answers."""
        self.assert_guard()
        faults.hang(self.regions[name])

    def resume(self, name: str) -> None:
        """``kill -CONT`` a hung region."""
        faults.resume(self.regions[name])

"""An emulated multi-region network on one Linux machine, and failover runs across it.

:class:`NetLab` builds one network namespace per region, joined to the caller's
(root) namespace by a veth pair, with a fake region server behind a delay proxy
(or ``tc netem`` where the kernel has it) giving the measured inter-region RTT::

    root netns (the edge, this process)             netns aylab<K>-<region>
      ayh<K>x<i> 10.251.K.(4i+1)/30  <== veth ==>  ayn<K>x<i> 10.251.K.(4i+2)/30
                                                     :80   delayproxy.py (RTT)
                                                     :8000 fake_region.py (127.0.0.1)
    guard: ip route replace unreachable 10.251.K.0/24

The guard route goes in before anything else and every fault method asserts it
first: without it, packets for a vanished namespace address would follow the
default route off the machine. Links are never taken down to fake a failure;
faults are nftables rules inside the namespace (blackhole, TCP reset, loss) and
signals to the processes the lab started (``kill -9``, ``kill -STOP``).
:meth:`NetLab.down` kills only recorded PIDs and removes every namespace, link
and route it made.

:func:`run_calls` drives concurrent calls through the real routing stack
(health prober, router, failover executor) while a timeline injects faults, and
:func:`summarise` turns the turns into the figures ROUTING.md section 5.4 defines:
failover time (fault -> first chunk from another region, per call that was
mid-turn) and failed turns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import anyio

from aybiza.errors import CallError
from aybiza.routing.failover import FailoverExecutor, FailoverPolicy, Message, RetryBudget, TurnFailed
from aybiza.routing.health import HealthConfig, HealthRegistry
from aybiza.routing.probes import HealthProber
from aybiza.routing.regions import Catalog, Region, default_catalog
from aybiza.routing.router import CallInfo, CallRouting, RoutingPolicy, route
from aybiza.testing.fake_region import FakeRegionClient, answer_for

__all__ = [
    "RTT_FROM_US_EAST_1_MS",
    "FAULT_KINDS",
    "lab_unavailable_reason",
    "LabRegion",
    "NetLab",
    "LabClient",
    "BedrockLabClient",
    "lab_client",
    "lab_catalog",
    "TurnResult",
    "FaultEvent",
    "RunResult",
    "LabSettings",
    "run_calls",
    "summarise",
    "route_check",
]

RTT_FROM_US_EAST_1_MS: Mapping[str, float] = {
    "us-east-1": 5.3,
    "eu-west-2": 77.7,
    "us-west-2": 64.3,
    "eu-central-1": 93.1,
    "ap-southeast-1": 219.1,
}
"""Cloudping p50 over a year from us-east-1 (ROUTING.md section 6.1): the lab's edge sits there."""

FAULT_KINDS = ("crash", "blackhole", "reset", "hang")
"""Fault kinds :meth:`NetLab.inject` knows, each undone by :meth:`NetLab.restore`."""

PROXY_PORT = 80
_NFT_TABLE = "aylab_fault"
_HERE = Path(__file__).resolve().parent


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


def _run(*args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, input=input_text)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


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
        wire: str = "region",
        tokens: int = 10,
    ) -> None:
        if delay not in ("auto", "proxy", "netem"):
            raise ValueError("delay must be auto, proxy or netem")
        if wire not in ("region", "bedrock"):
            raise ValueError("wire must be region (fake_region's stream) or bedrock (ConverseStream)")
        self.wire = wire
        self.tokens = tokens
        self.workdir = workdir
        self.first_token_ms = first_token_ms
        self.token_ms = token_ms
        self.jitter_ms = jitter_ms
        self.delay = delay
        self.octet = octet if octet is not None else self._free_octet()
        self.prefix = f"10.251.{self.octet}.0/24"
        self.regions: dict[str, LabRegion] = {}
        for i, (name, rtt) in enumerate(rtts_ms.items()):
            base = 4 * i
            self.regions[name] = LabRegion(
                name=name,
                index=i,
                namespace=f"aylab{self.octet}-{name}",
                host_if=f"ayh{self.octet}x{i}",
                ns_if=f"ayn{self.octet}x{i}",
                host_ip=f"10.251.{self.octet}.{base + 1}",
                ns_ip=f"10.251.{self.octet}.{base + 2}",
                rtt_ms=rtt,
            )
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
        _run("ip", "route", "replace", "unreachable", self.prefix)
        self._guard_installed = True
        self.assert_guard()
        for region in self.regions.values():
            self._build(region)
        for region in self.regions.values():
            self.start(region.name)
        for region in self.regions.values():
            self.wait_ready(region.name, ready_timeout_s)

    def down(self) -> list[str]:
        """Kill the lab's processes and remove its namespaces, links and guard route; returns problems."""
        problems: list[str] = []
        for region in self.regions.values():
            self._kill(region)
        for link in reversed(self._made_links):
            result = _run("ip", "link", "del", link, check=False)
            if result.returncode != 0 and "Cannot find device" not in result.stderr:
                problems.append(f"ip link del {link}: {result.stderr.strip()}")
        self._made_links.clear()
        for namespace in reversed(self._made_namespaces):
            result = _run("ip", "netns", "del", namespace, check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {namespace}: {result.stderr.strip()}")
        self._made_namespaces.clear()
        if self._guard_installed:
            result = _run("ip", "route", "del", "unreachable", self.prefix, check=False)
            if result.returncode != 0:
                problems.append(f"ip route del {self.prefix}: {result.stderr.strip()}")
            self._guard_installed = False
        return problems

    def leftovers(self) -> list[str]:
        """Anything of this lab still present on the machine (empty after a clean :meth:`down`)."""
        found: list[str] = []
        namespaces = _run("ip", "netns", "list", check=False).stdout
        links = _run("ip", "-o", "link", "show", check=False).stdout
        routes = _run("ip", "route", "show", self.prefix, check=False).stdout.strip()
        for region in self.regions.values():
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
        shown = _run("ip", "route", "show", self.prefix, check=False).stdout
        return any(line.split()[:2] == ["unreachable", self.prefix] for line in shown.splitlines() if line)

    def assert_guard(self) -> None:
        """Refuse to go on without the guard route (packets could leave the machine)."""
        if not self.guard_present():
            raise RuntimeError(f"guard route 'unreachable {self.prefix}' is missing: refusing to inject faults")

    # -- processes -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start (or restart) the region's fake server and its delay proxy in front of it."""
        region = self.regions[name]
        self._kill(region)
        rtt = 0.0 if self.uses_netem else region.rtt_ms
        jitter = 0.0 if self.uses_netem else self.jitter_ms
        port_file = self.workdir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        self._spawn(
            region,
            "server",
            [
                str(_HERE / "fake_region.py"),
                "--region",
                name,
                "--wire",
                self.wire,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
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
        port = self._read_port(region, port_file)
        self._spawn(
            region,
            "proxy",
            [
                str(_HERE / "delayproxy.py"),
                "--listen",
                f"{region.ns_ip}:{PROXY_PORT}",
                "--upstream",
                f"127.0.0.1:{port}",
                "--rtt-ms",
                str(rtt),
                "--jitter-ms",
                str(jitter),
            ],
        )
        region.stopped = False

    def _spawn(self, region: LabRegion, role: str, argv: list[str]) -> None:
        log: IO[bytes] = open(self.workdir / f"{region.name}-{role}.log", "ab")
        try:
            # Children must not inherit our stdout: a capturing harness would wait on them forever.
            region.processes[role] = subprocess.Popen(
                ["ip", "netns", "exec", region.namespace, sys.executable, "-I", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
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
        """Block until ``GET /ping`` through the region's front gets an HTTP answer (its name, for
        the ``region`` wire)."""
        region = self.regions[name]
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((region.ns_ip, PROXY_PORT), timeout=2) as sock:
                    sock.settimeout(2)
                    sock.sendall(b"GET /ping HTTP/1.1\r\nhost: lab\r\ncontent-length: 0\r\n\r\n")
                    reply = b""
                    while b"\r\n\r\n" not in reply or (self.wire == "region" and not reply.endswith(name.encode())):
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        reply += chunk
                    if self.wire == "region" and reply.startswith(b"HTTP/1.1 200") and reply.endswith(name.encode()):
                        return
                    if self.wire == "bedrock" and reply.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in reply:
                        return
                    last = reply[:80].decode("latin-1")
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"region {name} did not come up at {region.url}: {last}")

    def _kill(self, region: LabRegion) -> None:
        for process in region.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        region.processes.clear()
        region.stopped = False

    # -- topology ------------------------------------------------------------------------------

    def _build(self, region: LabRegion) -> None:
        ns, host_if, ns_if = region.namespace, region.host_if, region.ns_if
        # A namespace or link left by an earlier crashed run with the same octet would break this one.
        _run("ip", "link", "del", host_if, check=False)
        _run("ip", "netns", "del", ns, check=False)
        _run("ip", "netns", "add", ns)
        self._made_namespaces.append(ns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        self._made_links.append(host_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{region.host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{region.ns_ip}/30", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        if self.delay != "proxy" and region.index == 0:
            self.uses_netem = self._try_netem(region)
            if self.delay == "netem" and not self.uses_netem:
                raise RuntimeError("this kernel has no netem qdisc (use delay='proxy')")
        if self.uses_netem:
            self._netem(region)

    def _try_netem(self, region: LabRegion) -> bool:
        probe = _run("tc", "qdisc", "add", "dev", region.host_if, "root", "netem", "delay", "1ms", check=False)
        if probe.returncode != 0:
            return False
        _run("tc", "qdisc", "del", "dev", region.host_if, "root", check=False)
        return True

    def _netem(self, region: LabRegion) -> None:
        # Untested on this kind of machine (no netem); half the RTT on each side's egress.
        one_way = f"{region.rtt_ms / 2:.1f}ms"
        jitter = f"{self.jitter_ms:.1f}ms"
        _run("tc", "qdisc", "add", "dev", region.host_if, "root", "netem", "delay", one_way, jitter)
        _run(
            "ip",
            "netns",
            "exec",
            region.namespace,
            "tc",
            "qdisc",
            "add",
            "dev",
            region.ns_if,
            "root",
            "netem",
            "delay",
            one_way,
            jitter,
        )

    @staticmethod
    def _free_octet() -> int:
        used = _run("ip", "-o", "addr", "show", check=False).stdout + _run("ip", "route", "show", check=False).stdout
        candidates = [k for k in range(1, 255) if f"10.251.{k}." not in used]
        if not candidates:
            raise RuntimeError("no free 10.251.K.0/24 lab prefix")
        return random.Random(os.getpid() ^ time.monotonic_ns()).choice(candidates)

    # -- faults --------------------------------------------------------------------------------

    def inject(self, name: str, kind: str) -> None:
        """Inject a fault of ``kind`` (one of :data:`FAULT_KINDS`) into region ``name``."""
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
        region = self.regions[name]
        self._nft(region, f'iifname "{region.ns_if}" drop', f'oifname "{region.ns_if}" drop')

    def reset(self, name: str) -> None:
        """Answer every TCP packet to the region's front with a reset."""
        region = self.regions[name]
        self._nft(region, f'iifname "{region.ns_if}" tcp dport {PROXY_PORT} reject with tcp reset', None)

    def loss(self, name: str, percent: float) -> None:
        """Drop ``percent`` % of packets each way at random."""
        region = self.regions[name]
        share = int(round(percent))
        self._nft(
            region,
            f'iifname "{region.ns_if}" numgen random mod 100 < {share} drop',
            f'oifname "{region.ns_if}" numgen random mod 100 < {share} drop',
        )

    def clear_faults(self, name: str) -> None:
        """Remove the region's nftables fault table, if any."""
        region = self.regions[name]
        _run("ip", "netns", "exec", region.namespace, "nft", "delete", "table", "inet", _NFT_TABLE, check=False)

    def crash(self, name: str) -> None:
        """``kill -9`` the region's server and proxy."""
        self.assert_guard()
        self._kill(self.regions[name])

    def hang(self, name: str) -> None:
        """``kill -STOP`` the region's proxy and server: connections open, nothing answers."""
        self.assert_guard()
        region = self.regions[name]
        for process in region.processes.values():
            os.kill(process.pid, signal.SIGSTOP)
        region.stopped = True

    def resume(self, name: str) -> None:
        """``kill -CONT`` a hung region."""
        region = self.regions[name]
        for process in region.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
        region.stopped = False

    def _nft(self, region: LabRegion, input_rule: str, output_rule: str | None) -> None:
        self.assert_guard()
        self.clear_faults(region.name)
        script = [
            f"table inet {_NFT_TABLE} {{",
            "  chain input { type filter hook input priority 0; policy accept; " + input_rule + "; }",
        ]
        if output_rule:
            script.append("  chain output { type filter hook output priority 0; policy accept; " + output_rule + "; }")
        script.append("}")
        _run("ip", "netns", "exec", region.namespace, "nft", "-f", "-", input_text="\n".join(script) + "\n")


# -- clients ------------------------------------------------------------------------------------


class LabClient(Protocol):
    """What a run needs from a client: stream a turn from a region, probe a region, close."""

    def stream_turn(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        """Stream the answer to ``messages`` from ``region``."""
        ...

    async def probe(self, region: Region) -> None:
        """Raise unless the region answers."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class BedrockLabClient:
    """The real boto3 ConverseStream path (:class:`aybiza.processors.llm.bedrock.BedrockStreamer`,
    with its production deadlines) against the lab's fake Bedrock servers.

    Sets dummy AWS credentials in the environment if none are set (the fakes ignore them).
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        model_id: str = "anthropic.claude-3-haiku-20240307-v1:0",
        probe_timeout_s: float = 1.5,
    ) -> None:
        import httpx

        from aybiza.processors.llm.bedrock import BedrockStreamer

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "lab")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "lab")
        self._streamers = {
            name: BedrockStreamer(region=name, model_id=model_id, endpoint_url=url) for name, url in urls.items()
        }
        self._probes = {name: httpx.AsyncClient(base_url=url, timeout=probe_timeout_s) for name, url in urls.items()}

    async def stream_turn(self, region: str, messages: Sequence[Message]) -> AsyncIterator[str]:
        """A :data:`~aybiza.routing.failover.StreamTurn` over ConverseStream."""
        from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest, TextDelta

        conversation = tuple(
            ChatMessage("assistant" if m["role"] == "assistant" else "user", m["content"]) for m in messages
        )
        reply = self._streamers[region].stream_reply(ReplyRequest(system="", messages=conversation))
        try:
            async for event in reply:
                if isinstance(event, TextDelta) and event.text:
                    yield event.text
        finally:
            await reply.aclose()

    async def probe(self, region: Region) -> None:
        """Any HTTP answer below 500 from the region's endpoint means it is reachable."""
        import httpx

        try:
            response = await self._probes[region.name].get("/ping")
        except httpx.TransportError as exc:
            raise ConnectionError(f"{region.name}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise ConnectionError(f"{region.name}: probe answered {response.status_code}")

    async def aclose(self) -> None:
        """Close the probe clients (the boto3 clients are shared by the process)."""
        for client in self._probes.values():
            await client.aclose()


def lab_catalog(lab: NetLab, catalog: Catalog | None = None) -> Catalog:
    """The catalog restricted to the lab's regions, each pointed at its lab address.

    Regions the lab does not emulate are dropped, so nothing (not even a probe)
    goes to a real endpoint.
    """
    pointed = (catalog or default_catalog()).with_endpoints(lab.urls, probe_path="/ping")
    return dataclasses.replace(pointed, regions=tuple(r for r in pointed.regions if r.name in lab.regions))


def lab_client(lab: NetLab, tokens: int = 10) -> LabClient:
    """The client matching the lab's wire."""
    if lab.wire == "bedrock":
        return BedrockLabClient(lab.urls)
    return FakeRegionClient(lab.urls, tokens=tokens)


# -- driving calls through the routing stack ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabSettings:
    """The routing stack's knobs for a lab run."""

    health: HealthConfig = HealthConfig()
    failover: FailoverPolicy = FailoverPolicy(first_token_timeout_s=1.0, stall_timeout_s=0.5)
    routing: RoutingPolicy = RoutingPolicy(data_residency=True)
    probe_interval_s: float = 2.0
    probe_unhealthy_interval_s: float = 1.0
    probe_edge_interval_s: float = 0.5
    probe_timeout_s: float = 1.5
    think_s: float = 0.1
    tokens: int = 10


@dataclass(slots=True)
class TurnResult:
    """One caller-visible turn: when it started, who answered, what was heard."""

    call: int
    caller: str
    started_at: float
    ended_at: float
    ok: bool
    region: str
    answered_by: str | None
    first_token_at: float | None
    attempts: list[tuple[str, str, float, float | None, float | None]]
    error: str = ""

    @property
    def regions_tried(self) -> list[str]:
        """Regions a request went to, in order."""
        return [region for region, outcome, *_ in self.attempts if outcome != "skipped"]


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault that was in effect from ``at`` (monotonic seconds) until ``until``."""

    kind: str
    region: str
    at: float
    until: float | None = None


@dataclass(slots=True)
class RunResult:
    """Every turn of a run and the faults injected during it."""

    turns: list[TurnResult] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0


FaultStep = tuple[float, str, str, str]
"""``(seconds after start, "inject" | "restore", region, kind)``."""


async def run_calls(
    lab: NetLab,
    callers: Sequence[str],
    duration_s: float,
    timeline: Sequence[FaultStep] = (),
    settings: LabSettings | None = None,
    catalog: Catalog | None = None,
    min_turns: int = 0,
) -> RunResult:
    """Run one call per caller number, turn after turn, while ``timeline`` injects faults.

    Stops after ``duration_s`` once at least ``min_turns`` turns finished (and the
    timeline is done). Faults still in effect at the end are restored.
    """
    settings = settings or LabSettings()
    catalog = lab_catalog(lab, catalog)
    client = lab_client(lab, settings.tokens)
    registry = HealthRegistry(
        catalog.names, settings.health, baselines_ms={name: r.rtt_ms for name, r in lab.regions.items()}
    )
    prober = HealthProber(
        registry,
        catalog.regions,
        client.probe,
        interval_s=settings.probe_interval_s,
        unhealthy_interval_s=settings.probe_unhealthy_interval_s,
        edge_interval_s=settings.probe_edge_interval_s,
        timeout_s=settings.probe_timeout_s,
    )
    executor = FailoverExecutor(client.stream_turn, health=registry, budget=RetryBudget(), policy=settings.failover)
    result = RunResult()
    active: dict[tuple[str, str], float] = {}
    try:
        for _ in range(2):  # measure latency and warm every pool before the first call
            await prober.probe_once()
        result.started_at = time.monotonic()
        stop_at = result.started_at + duration_s
        timeline_done = anyio.Event()

        def finished() -> bool:
            return time.monotonic() >= stop_at and timeline_done.is_set() and len(result.turns) >= min_turns

        async def faults() -> None:
            for offset, action, region, kind in sorted(timeline):
                await anyio.sleep(max(0.0, result.started_at + offset - time.monotonic()))
                if action == "inject":
                    # The fault counts from just before the command: failover times err on the long side.
                    at = time.monotonic()
                    await anyio.to_thread.run_sync(lab.inject, region, kind)
                    active[(region, kind)] = at
                else:
                    await anyio.to_thread.run_sync(lab.restore, region, kind)
                    at = active.pop((region, kind))
                    result.faults.append(FaultEvent(kind, region, at, time.monotonic()))
            timeline_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(prober.run)
            tg.start_soon(faults)
            async with anyio.create_task_group() as calls:
                for index, number in enumerate(callers):
                    calls.start_soon(_call, index, number, executor, registry, catalog, settings, result, finished)
            tg.cancel_scope.cancel()
    finally:
        for (region, kind), at in list(active.items()):
            await anyio.to_thread.run_sync(lab.restore, region, kind)
            result.faults.append(FaultEvent(kind, region, at, time.monotonic()))
        result.ended_at = time.monotonic()
        await client.aclose()
    return result


async def _call(
    index: int,
    number: str,
    executor: FailoverExecutor,
    registry: HealthRegistry,
    catalog: Catalog,
    settings: LabSettings,
    result: RunResult,
    finished: Callable[[], bool],
) -> None:
    routing = CallRouting(CallInfo.from_number(number), catalog, settings.routing)
    messages: list[Message] = []
    # Calls that start together stay in lockstep; stagger them over about one turn, with jittered pauses.
    rng = random.Random(index)
    await anyio.sleep((index * 0.137) % 0.6)
    turn_number = 0
    while not finished():
        turn_number += 1
        messages.append({"role": "user", "content": f"caller {index} question {turn_number}"})
        started = time.monotonic()
        expected = "".join(answer_for(messages, settings.tokens))
        heard: list[str] = []
        region = ""
        turn = None
        error = ""
        try:
            current = routing.next_turn(registry.snapshot())
            region = current.region
            turn = executor.turn(current.regions, messages)
            async for chunk in turn:
                heard.append(chunk)
        except (TurnFailed, CallError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        text = "".join(heard)
        if not error and text != expected:
            error = f"heard {text!r}, expected {expected!r}"
        record = turn.record if turn is not None else None
        result.turns.append(
            TurnResult(
                call=index,
                caller=number,
                started_at=started,
                ended_at=time.monotonic(),
                ok=not error,
                region=region,
                answered_by=record.answered_by if record else None,
                first_token_at=record.first_token_at if record else None,
                attempts=[
                    (a.region, a.outcome, a.started_at, a.first_token_at, a.ended_at)
                    for a in (record.attempts if record else [])
                ],
                error=error,
            )
        )
        messages.append({"role": "assistant", "content": text or "(silence)"})
        await anyio.sleep(settings.think_s * rng.uniform(0.5, 1.5))


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def summarise(result: RunResult, allowed_zone_regions: Sequence[str] | None = None) -> dict[str, Any]:
    """Figures for a run: failed turns, failover time per fault kind, latency of normal turns.

    *Failover time* is measured, per call that was mid-turn in the faulted region
    when the fault took effect, from the fault to the first chunk from another
    region. ``allowed_zone_regions`` (if given) counts answers from elsewhere as
    residency violations.
    """
    turns = result.turns
    failed = [t for t in turns if not t.ok]
    by_kind: dict[str, list[float]] = {}
    mid_turn: dict[str, int] = {}
    late_hits: dict[str, int] = {}
    for fault in result.faults:
        times = by_kind.setdefault(fault.kind, [])
        until = fault.until if fault.until is not None else result.ended_at
        late_hits[fault.kind] = late_hits.get(fault.kind, 0) + sum(
            1
            for turn in turns
            for a in turn.attempts
            if a[0] == fault.region and a[1] not in ("skipped", "ok") and fault.at < a[2] < until
        )
        for turn in turns:
            hit = [
                a
                for a in turn.attempts
                if a[0] == fault.region
                and a[1] not in ("skipped", "ok")
                and a[2] <= fault.at
                and (a[4] is None or a[4] >= fault.at)
            ]
            if not hit:
                continue
            mid_turn[fault.kind] = mid_turn.get(fault.kind, 0) + 1
            rescue = [a for a in turn.attempts if a[0] != fault.region and a[3] is not None and a[3] >= fault.at]
            if rescue:
                times.append(min(a[3] for a in rescue if a[3] is not None) - fault.at)
    ttfts = [
        t.first_token_at - t.started_at
        for t in turns
        if t.ok and t.first_token_at is not None and len(t.regions_tried) == 1
    ]
    violations = 0
    if allowed_zone_regions is not None:
        violations = sum(1 for t in turns for r in t.regions_tried if r not in allowed_zone_regions)
    kinds: dict[str, Any] = {}
    for kind, times in by_kind.items():
        kinds[kind] = {
            "faults": sum(1 for f in result.faults if f.kind == kind),
            "calls_mid_turn": mid_turn.get(kind, 0),
            "requests_to_faulted_region_after_fault": late_hits.get(kind, 0),
            "failovers_measured": len(times),
            "failover_ms_p50": _ms(_percentile(times, 0.5)),
            "failover_ms_p95": _ms(_percentile(times, 0.95)),
            "failover_ms_max": _ms(max(times) if times else None),
        }
    return {
        "turns": len(turns),
        "failed_turns": len(failed),
        "failed_examples": [t.error for t in failed[:5]],
        "turns_retried": sum(1 for t in turns if len(t.regions_tried) > 1),
        "answered_by": dict(Counter(t.answered_by or "none" for t in turns)),
        "ttft_ms_p50": _ms(_percentile(ttfts, 0.5)),
        "ttft_ms_p95": _ms(_percentile(ttfts, 0.95)),
        "worst_turn_first_token_ms": _ms(
            max((t.first_token_at - t.started_at for t in turns if t.first_token_at is not None), default=None)
        ),
        "residency_violations": violations,
        "fault_kinds": kinds,
        "duration_s": round(result.ended_at - result.started_at, 2),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


async def route_check(
    lab: NetLab, numbers: Mapping[str, str], settings: LabSettings | None = None
) -> dict[str, dict[str, Any]]:
    """Probe the lab, route each caller with the measured health, and run one real turn each.

    Returns per label: the routed region, who answered, the measured RTT of that region.
    """
    settings = settings or LabSettings()
    catalog = lab_catalog(lab)
    client = lab_client(lab, settings.tokens)
    registry = HealthRegistry(catalog.names, settings.health)
    prober = HealthProber(registry, catalog.regions, client.probe, timeout_s=settings.probe_timeout_s)
    executor = FailoverExecutor(client.stream_turn, health=registry, policy=settings.failover)
    out: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(3):
            await prober.probe_once()
        snapshot = registry.snapshot()
        for label, number in numbers.items():
            chosen = route(CallInfo.from_number(number), snapshot, catalog, settings.routing)
            messages: list[Message] = [{"role": "user", "content": f"hello from {label}"}]
            text, record = await executor.complete(chosen.regions, messages)
            view = snapshot.get(chosen.region)
            out[label] = {
                "region": chosen.region,
                "fallbacks": list(chosen.fallbacks),
                "answered_by": record.answered_by,
                "measured_rtt_ms": round(view.latency_ms, 1) if view and view.latency_ms else None,
                "heard_ok": text == "".join(answer_for(messages, settings.tokens)),
            }
    finally:
        await client.aclose()
    return out

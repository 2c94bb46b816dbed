"""An emulated multi-region network on one Linux machine, and failover runs across it.

A test and benchmark harness, not product code. :class:`NetLab` builds one
network namespace per region, joined to the caller's (root) namespace by a veth
pair, with a fake region server behind a delay proxy (or ``tc netem`` where the
kernel has it) giving the measured inter-region RTT::

    root netns (the edge, this process)             netns aylab<K>-<region>
      ayh<K>x<i> 10.251.K.(4i+1)/30  <== veth ==>  ayn<K>x<i> 10.251.K.(4i+2)/30
                                                     :80   delayproxy (RTT)
                                                     :port fake Bedrock (127.0.0.1)
    guard: ip route replace unreachable 10.251.K.0/24

The guard route goes in before anything else and every fault asserts it first:
without it, packets for a vanished namespace address would follow the default
route off the machine. Links are never taken down to fake a failure; faults are
nftables rules inside the namespace (blackhole, TCP reset, loss) and signals to
the processes the lab started (``kill -9``, ``kill -STOP``). :meth:`NetLab.down`
kills only recorded PIDs and removes every namespace, link and route it made.

Modules, along the seams:

* :mod:`.netns` — namespaces, veth pairs, the guard route (``ip``, ``tc``);
* :mod:`.faults` — nftables rules and signals for one region;
* :mod:`.lab` — :class:`NetLab`: the regions, their processes, fault injection;
* :mod:`.servers`, :mod:`.delayproxy` — what runs inside each namespace;
* :mod:`.calls` — concurrent calls through production's model path
  (``RoutedBedrock`` turn by turn: ``RoutingService``, its prober, ``CallRouting``
  per call, the failover executor, boto3 ConverseStream) while faults hit;
* :mod:`.summary` — the run's records and its figures (ROUTING.md section 5.4).
"""

from __future__ import annotations

from .calls import LabSettings, LabStack, lab_catalog, route_check, run_calls
from .faults import FAULT_KINDS
from .lab import NetLab
from .netns import RTT_FROM_US_EAST_1_MS, LabRegion, lab_unavailable_reason
from .summary import FaultEvent, FaultStep, RunResult, TurnResult, summarise

__all__ = [
    "RTT_FROM_US_EAST_1_MS",
    "FAULT_KINDS",
    "lab_unavailable_reason",
    "LabRegion",
    "NetLab",
    "lab_catalog",
    "LabSettings",
    "LabStack",
    "TurnResult",
    "FaultEvent",
    "FaultStep",
    "RunResult",
    "run_calls",
    "summarise",
    "route_check",
]

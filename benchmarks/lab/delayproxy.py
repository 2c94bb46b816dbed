"""A userspace TCP delay proxy: real round-trip time where the kernel has no ``tc netem``.

Run inside a lab namespace in front of a fake region server::

    python -m benchmarks.lab.delayproxy --listen 10.251.7.2:80 --upstream 127.0.0.1:8000 --rtt-ms 78

Each accepted connection waits one RTT before it is connected upstream (the
kernel completed the client's handshake instantly; this stands in for it), and
every chunk in either direction is delivered RTT/2 (+- jitter) after it arrived,
in order. A request therefore sees about 2 x RTT to its first byte, like TCP plus
a request without TLS. Loss and resets are not emulated here: the lab uses
nftables for those. Standard library only, so the process starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
from collections.abc import Sequence

__all__ = ["DelayProxy", "main"]


class DelayProxy:
    """Forwards TCP connections to ``upstream`` with a fixed one-way delay per chunk."""

    def __init__(
        self, upstream: tuple[str, int], rtt_s: float, jitter_s: float = 0.0, rng: random.Random | None = None
    ) -> None:
        self.upstream = upstream
        self.rtt_s = rtt_s
        self.jitter_s = jitter_s
        self._rng = rng or random.Random()

    def one_way_s(self) -> float:
        """Half the RTT, with jitter, never negative."""
        jitter = self._rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        return max(0.0, self.rtt_s / 2 + jitter)

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Serve one client connection."""
        try:
            await asyncio.sleep(self.rtt_s)
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            try:
                await asyncio.gather(
                    self._pump(client_reader, up_writer),
                    self._pump(up_reader, client_writer),
                )
            finally:
                up_writer.close()
        finally:
            client_writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""
                # Keep order: a chunk never overtakes the previous one even with jitter.
                last_due = max(last_due, loop.time() + self.one_way_s())
                queue.put_nowait((last_due, data))
                if not data:
                    break
            await delivery
        except OSError:
            pass
        finally:
            if not delivery.done():
                delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivery


async def _serve(listen: tuple[str, int], proxy: DelayProxy) -> None:
    server = await asyncio.start_server(proxy.handle, *listen, reuse_address=True, backlog=256)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="+- jitter per one-way chunk")
    args = parser.parse_args(argv)
    proxy = DelayProxy(_address(args.upstream), args.rtt_ms / 1000.0, args.jitter_ms / 1000.0)
    asyncio.run(_serve(_address(args.listen), proxy))


if __name__ == "__main__":
    main()

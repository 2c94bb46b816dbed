"""A fake LLM region: a tiny HTTP/1.1 server that streams an answer with set timing.

Run one per lab namespace (standard library only, so it starts fast)::

    python -m benchmarks.lab.servers --region eu-west-2 --port 8000 --first-token-ms 150 --token-ms 25

With ``--wire bedrock`` it serves Bedrock's ConverseStream instead, through
:class:`aybiza.testing.fake_bedrock.FakeBedrock` (same answers, same timing), so
the lab can drive the real boto3 client.

``GET /ping`` answers ``200 <region>``; ``POST /v1/turn`` with
``{"messages": [{"role": ..., "content": ...}, ...]}`` streams the answer as
chunked ``text/plain``, one token per chunk, with the header ``x-region``. The
answer is a pure function of the conversation (:func:`answer_for`), the same in
every region, so a test can check that a turn continued elsewhere was heard
exactly once and that the full context arrived. A trailing assistant message is
a prefill: the stream continues after it.

:class:`FakeRegionClient` is the matching client: a ``stream_turn`` for the
failover executor and a health ``probe`` sharing one warm connection pool per region.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from aybiza.routing.regions import Region

__all__ = ["answer_for", "continue_answer", "bedrock_messages", "RegionServer", "FakeRegionClient", "main"]

_WORDS = (
    "alpha ",
    "bravo ",
    "charlie ",
    "delta ",
    "echo ",
    "foxtrot ",
    "golf ",
    "hotel ",
    "india ",
    "juliet ",
    "kilo ",
    "lima ",
    "mike ",
    "november ",
    "oscar ",
    "papa ",
)


def answer_for(messages: Sequence[Mapping[str, str]], tokens: int = 10) -> list[str]:
    """The answer every region gives to a conversation (ignoring a trailing prefill), as tokens."""
    history = list(messages)
    if history and history[-1].get("role") == "assistant":
        history.pop()
    users = [m.get("content", "") for m in history if m.get("role") == "user"]
    head = [f"turn {len(users)} ", f"of {len(history)} ", f"re {users[-1] if users else ''!s}: "]
    body = [_WORDS[i % len(_WORDS)] for i in range(max(0, tokens - len(head)))]
    return (head + body)[: max(tokens, 1)]


def continue_answer(messages: Sequence[Mapping[str, str]], tokens: int = 10) -> list[str]:
    """The tokens still to send: the answer minus a trailing assistant prefill."""
    answer = answer_for(messages, tokens)
    if not messages or messages[-1].get("role") != "assistant":
        return answer
    prefix = messages[-1].get("content", "")
    spoken = 0
    while spoken < len(answer) and prefix.startswith("".join(answer[: spoken + 1])):
        spoken += 1
    rest = answer[spoken:]
    done = "".join(answer[:spoken])
    if prefix != done and rest and rest[0].startswith(prefix[len(done) :]):
        rest = [rest[0][len(prefix) - len(done) :], *rest[1:]]  # the prefill ended mid-token
    return rest


class RegionServer:
    """Serves /ping and /v1/turn for one fake region."""

    def __init__(self, region: str, first_token_s: float = 0.15, token_s: float = 0.025, tokens: int = 10) -> None:
        self.region = region
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.tokens = tokens

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection until the client leaves."""
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if method == "GET" and path == "/ping":
                    await self._respond(writer, 200, self.region.encode())
                elif method == "POST" and path == "/v1/turn":
                    await self._stream(writer, json.loads(body or b"{}"))
                else:
                    await self._respond(writer, 404, b"not found")
        except (OSError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
            f"x-region: {self.region}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, request: Any) -> None:
        messages = request.get("messages", []) if isinstance(request, dict) else []
        tokens = int(request.get("tokens", self.tokens)) if isinstance(request, dict) else self.tokens
        writer.write(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
            f"x-region: {self.region}\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(self.first_token_s)
        for index, token in enumerate(continue_answer(messages, tokens)):
            if index:
                await asyncio.sleep(self.token_s)
            data = token.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


class FakeRegionClient:
    """Streams turns from fake regions and probes them, one keep-alive pool per region."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 10.0,
        tokens: int = 10,
    ) -> None:
        import httpx

        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=64)
        self.urls = dict(urls)
        self.tokens = tokens
        self._clients: dict[str, httpx.AsyncClient] = {
            name: httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) for name, url in urls.items()
        }

    async def stream_turn(self, region: str, messages: Sequence[Mapping[str, str]]) -> AsyncIterator[str]:
        """The :data:`~aybiza.routing.failover.StreamTurn` for these regions."""
        import httpx

        from aybiza.errors import BadRequestError, OverloadedError, ThrottledError

        client = self._clients[region]
        payload = {"messages": [dict(m) for m in messages], "tokens": self.tokens}
        try:
            async with client.stream("POST", "/v1/turn", json=payload) as response:
                if response.status_code == 429:
                    raise ThrottledError("429 from fake region", provider="fake", region=region)
                if response.status_code >= 500:
                    raise OverloadedError(f"{response.status_code} from fake region", provider="fake", region=region)
                if response.status_code != 200:
                    raise BadRequestError(f"{response.status_code} from fake region", provider="fake", region=region)
                served_by = response.headers.get("x-region")
                if served_by != region:
                    raise RuntimeError(f"asked {region} but {served_by} answered: lab wiring is wrong")
                async for text in response.aiter_text():
                    if text:
                        yield text
        except httpx.TransportError as exc:
            raise ConnectionError(f"{region}: {type(exc).__name__}: {exc}") from exc

    async def probe(self, region: Region) -> None:
        """A health :data:`~aybiza.routing.health.Probe`: ``GET /ping`` on the warm pool."""
        import httpx

        try:
            response = await self._clients[region.name].get("/ping")
        except httpx.TransportError as exc:
            raise ConnectionError(f"{region.name}: {type(exc).__name__}") from exc
        if response.status_code != 200 or response.text != region.name:
            raise ConnectionError(f"{region.name}: probe answered {response.status_code}")

    def client(self, region: str) -> httpx.AsyncClient:
        """The region's HTTP client (for tests that need to look inside)."""
        return self._clients[region]

    async def aclose(self) -> None:
        """Close every pool."""
        for client in self._clients.values():
            await client.aclose()


async def _serve(host: str, port: int, server: RegionServer, port_file: str | None) -> None:
    listener = await asyncio.start_server(server.handle, host, port, reuse_address=True, backlog=256)
    _announce(port_file, listener.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with listener:
        await stop.wait()


def _announce(port_file: str | None, port: int) -> None:
    """Write the listening port where the lab waits for it (atomically: write, then rename)."""
    if port_file:
        with open(port_file + ".tmp", "w", encoding="ascii") as handle:
            handle.write(str(port))
        os.replace(port_file + ".tmp", port_file)


def bedrock_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """A ConverseStream body's messages as ``{"role", "content"}`` text messages."""
    out = []
    for message in body.get("messages", []):
        blocks = message.get("content", []) if isinstance(message, Mapping) else []
        text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, Mapping))
        out.append({"role": str(message.get("role", "")), "content": text})
    return out


def _serve_bedrock(args: argparse.Namespace) -> None:
    """Serve ConverseStream with :class:`aybiza.testing.fake_bedrock.FakeBedrock` (needs aiohttp)."""
    from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock

    def reply(request: BedrockRequest) -> BedrockReply:
        text = "".join(continue_answer(bedrock_messages(request.body), args.tokens))
        return BedrockReply(
            text=text,
            chunk_chars=8,
            first_token_delay=args.first_token_ms / 1000.0,
            chunk_delay=args.token_ms / 1000.0,
        )

    fake = FakeBedrock(script=reply)
    fake.start()
    _announce(args.port_file, fake.port)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="fake LLM region server")
    parser.add_argument("--region", required=True)
    parser.add_argument(
        "--wire",
        choices=("region", "bedrock"),
        default="region",
        help="this module's HTTP stream, or Bedrock ConverseStream (FakeBedrock)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (see --port-file)")
    parser.add_argument("--port-file", help="write the listening port here once ready")
    parser.add_argument("--first-token-ms", type=float, default=150.0)
    parser.add_argument("--token-ms", type=float, default=25.0)
    parser.add_argument("--tokens", type=int, default=10)
    args = parser.parse_args(argv)
    if args.wire == "bedrock":
        _serve_bedrock(args)
        return
    server = RegionServer(args.region, args.first_token_ms / 1000.0, args.token_ms / 1000.0, args.tokens)
    asyncio.run(_serve(args.host, args.port, server, args.port_file))


if __name__ == "__main__":
    main()

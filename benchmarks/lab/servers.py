"""A lab region's model: Bedrock ConverseStream (FakeBedrock) with a known answer and set timing.

Run one per lab namespace, behind the delay proxy::

    python -m benchmarks.lab.servers --region eu-west-2 --port-file /tmp/eu-west-2.port \
        --first-token-ms 150 --token-ms 25

It serves ``POST /model/{id}/converse-stream`` through
:class:`aybiza.testing.fake_bedrock.FakeBedrock`, so the lab's calls go through
the real boto3 client, exactly as production's do. The answer is a pure function
of the conversation (:func:`answer_for`), the same in every region, so a run can
check that a turn continued elsewhere was heard exactly once and that the whole
context arrived. A trailing assistant message is a prefill: the stream continues
after it (:func:`continue_answer`). Any other path (the lab's ``/ping``) gets an
HTTP 404, which is an answer: the region is up.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest

__all__ = ["answer_for", "continue_answer", "bedrock_messages", "lab_reply", "main"]

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


def bedrock_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """A ConverseStream body's messages as ``{"role", "content"}`` text messages."""
    out = []
    for message in body.get("messages", []):
        blocks = message.get("content", []) if isinstance(message, Mapping) else []
        text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, Mapping))
        out.append({"role": str(message.get("role", "")), "content": text})
    return out


def lab_reply(
    tokens: int = 10, first_token_s: float = 0.15, token_s: float = 0.025
) -> Callable[[BedrockRequest], BedrockReply]:
    """FakeBedrock's script: the rest of :func:`answer_for`, 8 characters a delta, with set timing."""
    from aybiza.testing.fake_bedrock import BedrockReply  # aiohttp: only where a server runs

    def reply(request: BedrockRequest) -> BedrockReply:
        text = "".join(continue_answer(bedrock_messages(request.body), tokens))
        return BedrockReply(text=text, chunk_chars=8, first_token_delay=first_token_s, chunk_delay=token_s)

    return reply


def _announce(port_file: str | None, port: int) -> None:
    """Write the listening port where the lab waits for it (atomically: write, then rename)."""
    if port_file:
        with open(port_file + ".tmp", "w", encoding="ascii") as handle:
            handle.write(str(port))
        os.replace(port_file + ".tmp", port_file)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring); serves until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="a lab region's fake Bedrock")
    parser.add_argument("--region", required=True, help="the region this server plays (for its logs)")
    parser.add_argument("--port-file", help="write the (free, loopback) port here once listening")
    parser.add_argument("--first-token-ms", type=float, default=150.0)
    parser.add_argument("--token-ms", type=float, default=25.0)
    parser.add_argument("--tokens", type=int, default=10)
    args = parser.parse_args(argv)

    from aybiza.testing.fake_bedrock import FakeBedrock

    fake = FakeBedrock(script=lab_reply(args.tokens, args.first_token_ms / 1000.0, args.token_ms / 1000.0))
    fake.start()
    _announce(args.port_file, fake.port)
    print(f"{args.region}: fake Bedrock on {fake.url}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    fake.stop()


if __name__ == "__main__":
    main()

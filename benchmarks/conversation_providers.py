"""The production providers for ``benchmarks.conversation``: the shipped Deepgram and Bedrock fakes, in one process.

``python -m benchmarks.conversation_providers [--cpu N]`` starts
:class:`~aybiza.testing.fake_deepgram.FakeDeepgram` (streaming STT on
``/v1/listen``, Aura TTS on ``/v1/speak``) and
:class:`~aybiza.testing.fake_bedrock.FakeBedrock` (ConverseStream) on
loopback ports, prints ``{"deepgram": URL, "bedrock": URL}`` as one line and
serves until stdin closes (or it is terminated). So the server under test
does its real WebSocket and HTTP/eventstream work to both, while the fakes'
own CPU lands on another core (``--cpu``).

Each caller utterance is transcribed as one of the load generator's
questions and answered with :data:`ANSWER`, which Aura "speaks" as a tone at
:data:`SECONDS_PER_CHAR`: about 1.6 s, as long as a caller's question, so
that agent and caller each speak ~40 % of a call. The fakes remember every
session for tests to read; a load run does not need that, so what closed
sessions and long-lived ones accumulate is dropped every second (the
fakes' memory is not the server's, but the run must not swap).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock
from aybiza.testing.fake_deepgram import FakeDeepgram

__all__ = ["ANSWER", "API_KEY", "SECONDS_PER_CHAR", "main"]

API_KEY = "aybiza-bench-deepgram-key"
ANSWER = "We open at eight tomorrow morning. Is there anything else?"
SECONDS_PER_CHAR = 0.028  # ~1.6 s of agent audio for ANSWER
QUESTION = "what time do you open tomorrow"
REPLY = BedrockReply(text=ANSWER, input_tokens=80, output_tokens=14)


def _reply(request: BedrockRequest) -> BedrockReply:
    return REPLY


def _question(audio: bytes) -> str:
    return QUESTION


def _prune(deepgram: FakeDeepgram, bedrock: FakeBedrock) -> None:
    """Forget what the fakes recorded: closed sessions, and the audio and messages of open ones."""
    deepgram.listens[:] = [s for s in deepgram.listens if not s.closed]
    deepgram.speaks[:] = [s for s in deepgram.speaks if not s.closed]
    for session in deepgram.listens:
        session.audio.clear()
        session.events.clear()
        session.sent.clear()
        session.messages.clear()
    for speak in deepgram.speaks:
        speak.messages.clear()
    del bedrock.requests[:-16]


def main(argv: list[str] | None = None) -> int:
    """Serve both fakes until stdin closes."""
    parser = argparse.ArgumentParser(description="Deepgram and Bedrock fakes for the conversation benchmark")
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    with FakeDeepgram(transcripts=_question, api_key=API_KEY, seconds_per_char=SECONDS_PER_CHAR) as deepgram, \
            FakeBedrock(script=_reply) as bedrock:
        print(json.dumps({"deepgram": deepgram.url, "bedrock": bedrock.url}), flush=True)
        while not stop.wait(1.0):
            _prune(deepgram, bedrock)
    return 0


if __name__ == "__main__":
    sys.exit(main())

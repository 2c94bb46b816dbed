"""Fake provider servers that speak the real wire protocols, for tests and local runs.

* :class:`FakeDeepgram` — ``/v1/listen`` and ``/v1/speak`` WebSockets.
* :class:`FakeBedrock` — ConverseStream with AWS event-stream framing.
* :class:`FakeOpenAI` — an OpenAI-compatible ``/v1/chat/completions`` SSE stream.
* :class:`FakeTwilio` — Twilio's REST call resource (redirecting a live call), Basic auth checked.

Each serves on a free loopback port from its own thread (``with`` or ``async with``).
They need ``aiohttp``, which the provider extras install.
"""

from __future__ import annotations

from ._server import LoopbackServer, wait_until
from .fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock
from .fake_deepgram import FakeDeepgram, ListenSession, SpeakSession
from .fake_openai import ChatReply, FakeOpenAI
from .fake_twilio import CallUpdate, FakeTwilio

__all__ = [
    "BedrockReply",
    "BedrockRequest",
    "CallUpdate",
    "ChatReply",
    "FakeBedrock",
    "FakeDeepgram",
    "FakeOpenAI",
    "FakeTwilio",
    "ListenSession",
    "LoopbackServer",
    "SpeakSession",
    "wait_until",
]

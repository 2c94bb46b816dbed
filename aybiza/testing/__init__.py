"""Fake provider servers that speak the real wire protocols, for tests and local runs.

* :class:`FakeDeepgram` — ``/v1/listen`` and ``/v1/speak`` WebSockets.
* :class:`FakeBedrock` — ConverseStream with AWS event-stream framing (tool calls included), and Converse.
* :class:`FakeOpenAI` — an OpenAI-compatible ``/v1/chat/completions`` SSE stream (tool calls included), or one
  JSON completion with ``stream: false``.
* :class:`FakeTwilio` — Twilio's REST call resource (redirecting a live call, ringing a second leg,
  conferences), Basic auth checked.
* :class:`ToolServer` — an HTTP service for an agent's tools: scripted answers, requests recorded.
* :class:`WebhookReceiver` — a receiver of post-call webhooks: every POST recorded as it arrived.

Each serves on a free loopback port from its own thread (``with`` or ``async with``).
They need ``aiohttp``, which the provider extras install.
"""

from __future__ import annotations

from ._server import LoopbackServer, wait_until
from .fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock, ToolUseReply
from .fake_deepgram import FakeDeepgram, ListenSession, SpeakSession
from .fake_openai import ChatReply, FakeOpenAI
from .fake_twilio import CallUpdate, CreatedCall, FakeTwilio
from .tool_server import ToolAnswer, ToolRequest, ToolServer
from .webhook_receiver import ReceivedWebhook, WebhookReceiver

__all__ = [
    "BedrockReply",
    "BedrockRequest",
    "CallUpdate",
    "ChatReply",
    "CreatedCall",
    "FakeBedrock",
    "FakeDeepgram",
    "FakeOpenAI",
    "FakeTwilio",
    "ListenSession",
    "ReceivedWebhook",
    "LoopbackServer",
    "SpeakSession",
    "ToolAnswer",
    "ToolRequest",
    "ToolServer",
    "ToolUseReply",
    "WebhookReceiver",
    "wait_until",
]

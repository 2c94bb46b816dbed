"""A caller that behaves like Twilio: ``aybiza call`` and the end-to-end tests use it.

It asks the server's signed webhook (``POST /twiml``) for TwiML exactly as
Twilio would, connects to the ``<Stream>`` with the one-time token, streams
20 ms μ-law frames at real-time pace (silence when not talking, as a phone
does), plays the agent's audio back at 8,000 bytes a second, echoes each
mark when playback reaches it and honours ``clear``. It records what the
caller heard and the time from the end of each utterance to the first
reply audio.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import websockets
from twilio.request_validator import RequestValidator

from ..codecs import ULAW_SILENCE, lin2ulaw, resample
from ..processors.tts.base import SpeechSynthesizer
from .playback import PlaybackBuffer
from .twilio_caller import ServerClear, ServerMark, ServerMedia, TwilioCallerProtocol, new_sid

__all__ = ["Say", "Wait", "Press", "Do", "Script", "CallReport", "TurnTiming", "place_call", "caller_speech",
           "phone_speech"]

FRAME = 160  # 20 ms of 8 kHz μ-law
FRAME_S = 0.02


@dataclass(frozen=True)
class Say:
    """Speak ``audio`` (8 kHz μ-law); ``barge_in_after`` starts it that long after reply audio arrives."""

    audio: bytes
    barge_in_after: float | None = None


@dataclass(frozen=True)
class Wait:
    """Stay silent until the agent has finished speaking (or ``seconds`` pass, whichever is first)."""

    seconds: float = 20.0
    until_idle: bool = True


@dataclass(frozen=True)
class Press:
    """Press keypad digits."""

    digits: str


@dataclass(frozen=True)
class Do:
    """Run ``action`` at this point of the script (a fake Twilio's side effect, such as its AMD callback)."""

    action: Callable[[], Awaitable[None]]


Script = Sequence[Say | Wait | Press | Do]

Announce = Callable[[], Awaitable[tuple[str, dict[str, str]]]]
"""How a call was announced: the Stream URL and ``<Parameter>``s of the TwiML the server answered."""


@dataclass
class TurnTiming:
    """One utterance: when the caller stopped and when the reply started (monotonic seconds)."""

    speech_end: float
    first_reply_audio: float | None = None
    heard_before: int = 0  # bytes of ``CallReport.heard`` played by then: what follows is what came after

    @property
    def latency(self) -> float | None:
        """Seconds from the end of the caller's speech to the first reply audio."""
        return None if self.first_reply_audio is None else self.first_reply_audio - self.speech_end


@dataclass
class CallReport:
    """What happened on the call, as the caller saw it."""

    call_sid: str = ""
    heard: bytearray = field(default_factory=bytearray)  # μ-law actually played
    received_bytes: int = 0
    marks_played: list[str] = field(default_factory=list)
    marks_cleared: list[str] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)  # monotonic arrival times of `clear`
    media_at: list[float] = field(default_factory=list)  # monotonic arrival times of agent audio messages
    turns: list[TurnTiming] = field(default_factory=list)
    first_audio_at: float | None = None
    barge_in_started_at: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    stream_url: str = ""  # where the Media Stream connected (the TwiML's URL when following it)


def _http_base(stream_url: str) -> str:
    parts = urlsplit(stream_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def _announce(http_base: str, public_url: str, auth_token: str, caller: str, call_sid: str,
                    agent: str | None, account_sid: str) -> tuple[str, dict[str, str]]:
    """POST the signed voice webhook; return the stream URL and custom parameters from the TwiML."""
    path = "/twiml" + (f"?agent={agent}" if agent else "")
    params = {"CallSid": call_sid, "AccountSid": account_sid, "From": caller, "To": "+18005550100",
              "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
    signature = RequestValidator(auth_token).compute_signature(public_url.rstrip("/") + path, params)
    async with httpx.AsyncClient(base_url=http_base, timeout=10) as client:
        response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    if response.status_code != 200:
        raise RuntimeError(f"/twiml answered {response.status_code}: {response.text.strip()}")
    root = ET.fromstring(response.text)
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise RuntimeError("TwiML has no <Connect><Stream>")
    custom = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), custom


async def ring(stream_url: str, *, auth_token: str, caller: str = "+15555550123",
               public_url: str | None = None) -> tuple[str, str]:
    """Only the inbound webhook, as when Twilio's stream never arrives after it: the call's sid and the stream URL
    the TwiML named."""
    call_sid = new_sid("CA")
    twiml_stream_url, _ = await _announce(_http_base(stream_url), public_url or _http_base(stream_url), auth_token,
                                          caller, call_sid, None, new_sid("AC"))
    return call_sid, twiml_stream_url


async def place_call(stream_url: str, script: Script, *, auth_token: str, public_url: str | None = None,
                     caller: str = "+15555550123", agent: str | None = None, hangup_after: float = 2.0,
                     call_timeout: float = 120.0, call_sid: str | None = None,
                     account_sid: str | None = None, announce: Announce | None = None,
                     follow_twiml: bool = False) -> CallReport:
    """Call the server at ``stream_url`` like Twilio and run ``script``; return what the caller saw.

    Pass the ``call_sid`` of an earlier stream to reconnect the same call (as after a server failure), and
    the ``account_sid`` a server with ``TWILIO_ACCOUNT_SID`` expects (default: a random one). ``announce``
    replaces the inbound webhook (an outbound call's, posted by a fake Twilio): its Stream URL is connected.
    ``follow_twiml``: connect where the inbound webhook's TwiML says, like Twilio (a node of a cluster may send
    the call to another node); else to ``stream_url``, whose server answers the webhook either way.
    """
    call_sid = call_sid or new_sid("CA")
    account_sid = account_sid or new_sid("AC")  # the webhook and the stream name the same account, as Twilio's do
    report = CallReport(call_sid=call_sid)
    public = public_url or _http_base(stream_url)
    if announce is not None:
        twiml_stream_url, custom = await announce()
        stream_url = twiml_stream_url
    else:
        twiml_stream_url, custom = await _announce(_http_base(stream_url), public, auth_token, caller, call_sid,
                                                   agent, account_sid)
        if follow_twiml:
            stream_url = twiml_stream_url
    report.stream_url = stream_url
    protocol = TwilioCallerProtocol(custom_parameters=custom, call_sid=call_sid, account_sid=account_sid)
    player = PlaybackBuffer(keep_audio=True)
    player.heard = report.heard  # what plays is what the caller heard
    header = RequestValidator(auth_token).compute_signature(twiml_stream_url, {})
    outbox: deque[bytes] = deque()
    async with websockets.connect(stream_url, additional_headers={"X-Twilio-Signature": header},
                                  max_size=2**22) as ws:
        await ws.send(protocol.connected())
        await ws.send(protocol.start())
        done = anyio.Event()

        async def receive() -> None:
            try:
                async for message in ws:
                    event = protocol.receive(message)
                    now = time.monotonic()
                    if isinstance(event, ServerMedia):
                        report.received_bytes += len(event.payload)
                        report.media_at.append(now)
                        report.first_audio_at = report.first_audio_at or now
                        for turn in report.turns:
                            if turn.first_reply_audio is None and now >= turn.speech_end:
                                turn.first_reply_audio = now
                        player.media(event.payload, now)
                    elif isinstance(event, ServerMark):
                        for name in player.mark(event.name, now):
                            report.marks_played.append(name)
                            await ws.send(protocol.mark(name))
                    elif isinstance(event, ServerClear):
                        report.clears.append(now)
                        for name in player.clear(now):
                            report.marks_cleared.append(name)
                            await ws.send(protocol.mark(name))
            except websockets.ConnectionClosed:
                pass
            finally:
                report.close_code = ws.close_code
                report.close_reason = ws.close_reason or ""
                done.set()

        async def stream_audio() -> None:
            next_at = time.monotonic()
            while not done.is_set():
                frame = outbox.popleft() if outbox else bytes([ULAW_SILENCE]) * FRAME
                try:
                    await ws.send(protocol.media(frame))
                except websockets.ConnectionClosed:
                    return
                for name in player.due(time.monotonic()):
                    report.marks_played.append(name)
                    await ws.send(protocol.mark(name))
                next_at += FRAME_S
                await anyio.sleep(max(0.0, next_at - time.monotonic()))

        async def run_script() -> None:
            for step in script:
                if isinstance(step, Press):
                    for digit in step.digits:
                        await ws.send(protocol.dtmf(digit))
                elif isinstance(step, Wait):
                    await _wait_idle(player, report, step, done)
                elif isinstance(step, Do):
                    await step.action()
                elif isinstance(step, Say):
                    if step.barge_in_after is not None:
                        await _wait_reply_audio(report, step.barge_in_after, done)
                        report.barge_in_started_at = time.monotonic()
                    frames = [step.audio[i : i + FRAME].ljust(FRAME, bytes([ULAW_SILENCE]))
                              for i in range(0, len(step.audio), FRAME)]
                    outbox.extend(frames)
                    while outbox and not done.is_set():
                        await anyio.sleep(FRAME_S / 2)
                    report.turns.append(TurnTiming(speech_end=time.monotonic(), heard_before=len(report.heard)))
            await anyio.sleep(hangup_after)

        with anyio.move_on_after(call_timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                async with anyio.create_task_group() as streaming:
                    streaming.start_soon(stream_audio)
                    await run_script()
                    streaming.cancel_scope.cancel()
                if not done.is_set():
                    try:
                        await ws.send(protocol.stop())
                    except websockets.ConnectionClosed:
                        pass
                with anyio.move_on_after(5):
                    await done.wait()
                tg.cancel_scope.cancel()
    return report


async def _wait_idle(player: PlaybackBuffer, report: CallReport, step: Wait, done: anyio.Event) -> None:
    deadline = time.monotonic() + step.seconds
    heard_something = report.received_bytes
    while time.monotonic() < deadline and not done.is_set():
        await anyio.sleep(0.05)
        if not step.until_idle:
            continue
        # idle = audio arrived since we started waiting and all of it has played
        if report.received_bytes > heard_something and player.idle(time.monotonic()):
            quiet_since = time.monotonic()
            while player.idle(time.monotonic()) and time.monotonic() - quiet_since < 0.6 and not done.is_set():
                await anyio.sleep(0.05)
            if player.idle(time.monotonic()):
                return


async def _wait_reply_audio(report: CallReport, delay: float, done: anyio.Event) -> None:
    while not done.is_set():
        turn = report.turns[-1] if report.turns else None
        if turn is not None and turn.first_reply_audio is not None:
            await anyio.sleep(max(0.0, turn.first_reply_audio + delay - time.monotonic()))
            return
        await anyio.sleep(0.01)


def caller_speech(text: str, *, engine: str = "espeak", language: str = "en") -> bytes:
    """Synthesize what the caller says as 8 kHz μ-law (espeak-ng or flite: not the agent's voice).

    A synthetic voice, labelled as such wherever it is measured.
    """
    from ..processors.tts.espeak import EspeakSynthesizer
    from ..processors.tts.flite import FliteSynthesizer

    return phone_speech(FliteSynthesizer() if engine == "flite" else EspeakSynthesizer(), text, language)


def phone_speech(synthesizer: SpeechSynthesizer, text: str, language: str) -> bytes:
    """``text`` in ``synthesizer``'s voice as a phone carries it (8 kHz μ-law).

    The same text is the same audio every time the voice renders it the same: it is resampled in one piece (the
    chunks a pipe happens to deliver, each resampled alone, made every rendering differ at their edges, and what a
    recogniser heard with them).
    """
    chunks = list(synthesizer.synthesize(text, language))
    rates = {rate for _, rate in chunks}
    if len(rates) > 1:
        raise ValueError(f"{synthesizer.name} changed its rate within one utterance: {sorted(rates)}")
    pcm = b"".join(chunk for chunk, _ in chunks)
    return lin2ulaw(resample(pcm, rates.pop(), 8000)) if pcm else b""

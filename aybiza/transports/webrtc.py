"""The browser transport: an aiortc peer connection per call <-> the call's pipeline.

The page posts an SDP offer; :class:`WebRTCCalls` answers it and runs the
call in the process's task group until the page hangs up (``hangup`` on
the data channel) or the connection closes or fails. Caller audio (Opus,
decoded by aiortc to 48 kHz) becomes 20 ms :class:`InputAudio` frames at
16 kHz, and agent audio leaves on a paced track (:mod:`.webrtc_media`). Live
events go to the page over the ``events`` data channel
(:mod:`.webrtc_events`); keys pressed on the page come back on it as DTMF.

:class:`WebRTCPeer` is what a call's session needs from a browser call
(its pump, its output stage); :class:`WebRTCCalls` answers offers and runs
each call in the process's task group.

ICE uses host candidates (enough on one machine or a LAN); deployments
behind NAT list STUN/TURN servers in ``AYBIZA_ICE_SERVERS`` (comma
separated ``stun:``/``turn:`` URLs; ``AYBIZA_ICE_USERNAME`` and
``AYBIZA_ICE_CREDENTIAL`` for TURN), used by both the server and the page.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from anyio.abc import TaskGroup
from av import AudioFrame

from ..codecs import Resampler, ulaw2lin
from ..errors import ConfigError, EndReason, ProtocolError
from ..pipeline import (
    DTMF,
    AgentSpeaking,
    AgentTurnDone,
    CallContext,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Processor,
    Stage,
)
from ..session.transport import Push
from .twilio import DTMF_DIGITS
from .webrtc_events import EventChannel, route_event, with_event_taps
from .webrtc_media import AudioInput, PacedAudioTrack

__all__ = [
    "WEB_DIR",
    "Offer",
    "WebRTCCalls",
    "WebRTCOutput",
    "WebRTCPeer",
    "demo_page",
    "ice_servers",
    "parse_offer",
]

WEB_DIR = Path(__file__).with_name("web")
"""The demo page's static files."""
MAX_SDP_CHARS = 64 * 1024
log = logging.getLogger("aybiza.webrtc")


def ice_servers(urls: str, username: str = "", credential: str = "") -> list[RTCIceServer]:
    """STUN/TURN servers from a comma-separated list (``Settings.ice_servers``; none: host candidates only)."""
    listed = [url for url in urls.replace(" ", ",").split(",") if url]
    for url in listed:
        if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            raise ConfigError(f"AYBIZA_ICE_SERVERS: {url!r} is not a stun:/turn: URL")
    return [
        RTCIceServer(urls=url, username=username or None, credential=credential or None) if url.startswith("turn")
        else RTCIceServer(urls=url)
        for url in listed
    ]


def demo_page(ice_servers: Sequence[RTCIceServer] = ()) -> str:
    """The demo page's HTML with the ICE servers the browser should use."""
    config: dict[str, Any] = {"iceServers": [
        {key: value for key, value in (("urls", s.urls), ("username", s.username), ("credential", s.credential))
         if value}
        for s in ice_servers
    ]}
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    return html.replace('{"iceServers": []}', json.dumps(config).replace("</", "<\\/"), 1)


@dataclass(frozen=True, slots=True)
class Offer:
    """A browser's request to start a call (``language``: the browser's, a prior for the call's)."""

    sdp: str
    agent: str | None = None
    language: str | None = None


_MAX_OFFER_KEYS = 8
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$")
# A DTLS certificate fingerprint (RFC 8122): without one there is no secure media, and aiortc fails later.
_FINGERPRINT = re.compile(r"^a=fingerprint:[A-Za-z0-9-]{1,16} [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){15,63}\s*$",
                          re.MULTILINE)


def parse_offer(body: object) -> Offer:
    """Validate ``{"sdp", "type": "offer", "agent"?, "language"?}``; raise ProtocolError saying what is wrong.

    The offer is one flat object of a few strings: nothing nested, no more than a few keys.
    """
    if not isinstance(body, dict):
        raise ProtocolError("the offer must be a JSON object")
    if len(body) > _MAX_OFFER_KEYS or any(isinstance(v, dict | list) for v in body.values()):
        raise ProtocolError(f"the offer must be one flat JSON object of at most {_MAX_OFFER_KEYS} fields")
    sdp, kind, agent, language = body.get("sdp"), body.get("type"), body.get("agent"), body.get("language")
    if kind != "offer":
        raise ProtocolError(f"type must be 'offer', not {kind!r}")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ProtocolError("sdp must be an SDP offer (text starting with v=0)")
    if len(sdp) > MAX_SDP_CHARS:
        raise ProtocolError(f"sdp is longer than {MAX_SDP_CHARS} characters")
    if agent is not None and (not isinstance(agent, str) or not agent):
        raise ProtocolError("agent must be a non-empty string")
    if language is not None and (not isinstance(language, str) or not _LANGUAGE_TAG.fullmatch(language)):
        raise ProtocolError("language must be a BCP-47 tag such as en-GB")
    if _FINGERPRINT.search(sdp) is None:
        raise ProtocolError("the offer has no a=fingerprint line (DTLS): no secure media without it")
    return Offer(sdp, agent, language)


class WebRTCOutput(Processor):
    """Last stage of a browser call: agent audio -> the paced track; barge-in flushes it."""

    name = "webrtc-output"
    consumes = frozenset({OutputAudio, AgentTurnDone, Interruption})
    steers = frozenset({AgentSpeaking})

    def __init__(self, track: PacedAudioTrack, events: EventChannel) -> None:
        super().__init__()
        self.track = track
        self.events = events
        self._resampler: Resampler | None = None
        self._turn_open: int | None = None
        self._timed_turn = 0
        self._samples_sent = 0
        self._speaking = False
        self._idle = anyio.Event()
        self._idle.set()
        self._playing_changed = False
        track.on_playing = self._playing
        track.on_idle = self._on_track_idle

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, OutputAudio):
            await self._audio(frame)
        elif isinstance(frame, AgentTurnDone):
            await self._turn_done(frame.turn_id)
        elif isinstance(frame, Interruption):
            await self._interrupt()
        await self.push(frame)

    async def drained(self) -> None:
        """Return once the track has sent every queued sample."""
        await self._idle.wait()

    async def _audio(self, frame: OutputAudio) -> None:
        if self._turn_open != frame.turn_id:
            self._turn_open = frame.turn_id
            self._resampler = None
        if self._resampler is None or self._resampler.from_rate != frame.sample_rate:
            self._resampler = Resampler(frame.sample_rate, self.track.sample_rate)
        pcm = frame.pcm if frame.pcm or frame.ulaw is None else ulaw2lin(frame.ulaw)
        self.track.enqueue(self._resampler.process(pcm), frame.turn_id)
        if not self._speaking:
            self._speaking = True
            self._idle = anyio.Event()
            await self.steer(AgentSpeaking(True))

    async def _turn_done(self, turn_id: int) -> None:
        if self._resampler is not None and self._turn_open == turn_id:
            self.track.enqueue(self._resampler.flush(), turn_id)
        self._resampler = None
        self._turn_open = None
        await self._update_speaking()

    async def _interrupt(self) -> None:
        dropped = self.track.flush()
        self._resampler = None
        self._turn_open = None
        ctx = self.ctx
        if ctx is not None and ctx.log.isEnabledFor(logging.DEBUG):
            ctx.log.debug("barge-in: dropped %.2f s of queued agent audio", dropped)
        self.events.send({"type": "agent_audio", "state": "idle"})
        await self._update_speaking()

    def _playing(self, turn_id: int) -> None:
        """The track started sending ``turn_id``'s audio: that is when the caller starts hearing it."""
        self.events.send({"type": "agent_audio", "state": "playing", "turn_id": turn_id})
        ctx = self.ctx
        if ctx is None or turn_id <= self._timed_turn:
            return
        self._timed_turn = turn_id
        if ctx.user_turn_ended_at is not None:
            seconds = time.monotonic() - ctx.user_turn_ended_at
            ctx.user_turn_ended_at = None
            ctx.ledger.time(Stage.VOICE_TO_VOICE, seconds)
            stages = ctx.ledger.timings(turn_id) | {Stage.VOICE_TO_VOICE.value: seconds}
            # The page shows each stage in milliseconds.
            self.events.send({"type": "latency", "turn_id": turn_id, "voice_to_voice_ms": round(seconds * 1000),
                              "stages": {stage: round(value * 1000) for stage, value in stages.items()}})

    def _on_track_idle(self) -> None:
        """The track ran dry (called from its sender task): settle the speaking state on the loop."""
        self.events.send({"type": "agent_audio", "state": "idle"})
        if self._turn_open is None and self._speaking:
            self._speaking = False
            self._idle.set()
            self._playing_changed = True

    async def settle(self) -> None:
        """Tell the stages before this one that the caller stopped hearing the agent (when the track said so)."""
        if self._playing_changed:
            self._playing_changed = False
            await self.steer(AgentSpeaking(False))

    async def _update_speaking(self) -> None:
        speaking = self._turn_open is not None or self.track.playing
        if self._speaking and not speaking:
            self._speaking = False
            self._idle.set()
            await self.steer(AgentSpeaking(False))


class WebRTCPeer:
    """One browser call: its peer connection, tracks and data channel, as a call's transport."""

    kind = "webrtc"
    sources: frozenset[type[Frame]] = frozenset({InputAudio, DTMF})

    def __init__(self, ctx: CallContext, *, ice: Sequence[RTCIceServer] = (), connect_timeout_s: float = 20.0,
                 media_timeout_s: float = 10.0) -> None:
        self.ctx = ctx
        self.connect_timeout_s = connect_timeout_s
        # Browsers send audio all the time (silence too); none for this long means the page is gone,
        # which ICE consent checks would otherwise notice only after about 30 s.
        self.media_timeout_s = media_timeout_s
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice)))
        self.events = EventChannel()
        self.track = PacedAudioTrack()
        self._output = WebRTCOutput(self.track, self.events)
        self.input = AudioInput()
        self._remote: MediaStreamTrack | None = None
        self._connected = anyio.Event()
        self._ended = anyio.Event()
        self._reason = EndReason.DISCONNECTED
        self._closed = False
        # Keys pressed on the page arrive on the data channel (a callback); the pump pushes them.
        self._keys_in, self._keys_out = anyio.create_memory_object_stream[DTMF](16)

    @property
    def output(self) -> WebRTCOutput:
        """The pipeline's last stage."""
        return self._output

    @property
    def control(self) -> None:
        """A browser call has no provider-side call control."""
        return None

    @property
    def open(self) -> bool:
        """The page is still connected."""
        return self._connected.is_set() and not self._ended.is_set() and not self._closed

    def arrange(self, stages: Sequence[Processor]) -> list[Processor]:
        """The stages with an event tap after each, so the page sees transcripts and replies as they happen."""
        return with_event_taps(stages, self.events)

    async def negotiate(self, sdp: str) -> RTCSessionDescription:
        """Apply the browser's offer and return the answer (ICE candidates included)."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as error:  # aiortc raises many types on a malformed offer; the input is untrusted
            raise ProtocolError(f"unusable SDP offer: {type(error).__name__}: {error}") from error
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise ProtocolError("the offer has no audio")
        pc.addTrack(self.track)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription
        if answer is None:  # setLocalDescription always sets it; this keeps the type checker honest
            raise ProtocolError("no answer")
        return answer

    def end(self, reason: EndReason) -> None:
        """End the call (hang-up, connection lost); the first reason wins."""
        if not self._ended.is_set():
            self._reason = reason
            self._ended.set()
            self._connected.set()  # wake a call still waiting to connect

    async def wait_connected(self) -> bool:
        """Wait (up to the connect timeout) for the media to connect; False, the call ended, if it did not."""
        with anyio.move_on_after(self.connect_timeout_s):
            await self._connected.wait()
        if not self._connected.is_set():
            self.end(EndReason.NO_CONNECTION)
        return not self._ended.is_set()

    async def pump(self, push: Push) -> EndReason:
        """Wait for the connection, then push the browser's audio until the page leaves."""
        with anyio.move_on_after(self.connect_timeout_s):
            await self._connected.wait()
        if not self._connected.is_set():
            self.end(EndReason.NO_CONNECTION)
        if self._ended.is_set():
            return self._reason
        self.ctx.log.info("browser connected")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_audio, push)
            tg.start_soon(self._read_keys, push)
            await self._ended.wait()
            tg.cancel_scope.cancel()
        return self._reason

    async def _read_keys(self, push: Push) -> None:
        async for key in self._keys_out:
            await push(key)

    async def drained(self) -> None:
        """The page has been sent every queued sample."""
        await self._output.drained()

    async def close(self, reason: EndReason, detail: str) -> None:
        """Tell the page why, stop the outgoing track and close the peer connection."""
        if self._closed:
            return
        self._closed = True
        self.events.send({"type": "end", "reason": reason.value})
        self.track.stop()
        await self.pc.close()

    async def _read_audio(self, push: Push) -> None:
        remote = self._remote
        if remote is None:
            self.end(EndReason.DISCONNECTED)
            return
        convert = self.input.push
        settle = self._output.settle
        timeout = self.media_timeout_s
        while True:
            frame = None
            with anyio.move_on_after(timeout):
                try:
                    frame = await remote.recv()
                except MediaStreamError:
                    self.end(EndReason.DISCONNECTED)
                    return
            if frame is None:
                self.ctx.log.info("no audio from the browser for %g s", timeout)
                self.end(EndReason.MEDIA_TIMEOUT)
                return
            if isinstance(frame, AudioFrame):
                for chunk in convert(frame, time.monotonic()):
                    await push(chunk)
            await settle()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._remote is None:
            self._remote = track

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "events":
            return

        def send(message: str) -> None:
            # aiortc queues a message even when the connection is gone, then fails in a task of its own.
            if channel.readyState != "open" or self.pc.connectionState not in ("new", "connecting", "connected"):
                raise ConnectionError("data channel closed")
            channel.send(message)

        def attach() -> None:
            self.events.send({"type": "call", "call_id": self.ctx.call_id, "agent": self.ctx.agent_id})
            self.events.send(route_event(self.ctx))
            self.events.attach(send)

        channel.on("message", self._on_message)
        channel.on("close", self.events.detach)
        if channel.readyState == "open":
            attach()
        else:
            channel.on("open", attach)

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message) if isinstance(message, str) and len(message) < 4096 else None
            kind = event.get("type") if isinstance(event, dict) else None
        except (ValueError, RecursionError):
            event, kind = None, None
        if kind == "hangup":
            self.end(EndReason.HANGUP)
        elif (kind == "dtmf" and isinstance(event, dict) and isinstance(digit := event.get("digit"), str)
              and digit in DTMF_DIGITS):  # a list or object would be unhashable: the page's input must not raise
            try:
                self._keys_in.send_nowait(DTMF(digit))
            except anyio.WouldBlock:  # a page pressing faster than the call reads: the key is dropped
                self.ctx.log.debug("dropped a key press")
        elif self.ctx.log.isEnabledFor(logging.DEBUG):
            self.ctx.log.debug("ignored data channel message %.80r", message)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("closed", "failed"):
            self.end(EndReason.DISCONNECTED)


RunCall = Callable[[WebRTCPeer], Awaitable[object]]
"""Runs one browser call to its end (the server's session)."""


class WebRTCCalls:
    """The process's browser calls: answers offers and runs each call in one task group."""

    def __init__(self, run_call: RunCall, *, ice: Sequence[RTCIceServer] = (), connect_timeout_s: float = 20.0,
                 media_timeout_s: float = 10.0) -> None:
        self.run_call = run_call
        self.ice = list(ice)
        self.connect_timeout_s = connect_timeout_s
        self.media_timeout_s = media_timeout_s
        self.calls: dict[str, WebRTCPeer] = {}
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Accept calls while the block runs; calls still live at the end are cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def open(self, ctx: CallContext, sdp: str) -> RTCSessionDescription:
        """Answer the offer and start the call; ProtocolError if the offer is unusable."""
        tg = self._tg
        if tg is None:
            raise RuntimeError("WebRTCCalls.open outside running()")
        peer = WebRTCPeer(ctx, ice=self.ice, connect_timeout_s=self.connect_timeout_s,
                          media_timeout_s=self.media_timeout_s)
        try:
            answer = await peer.negotiate(sdp)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await peer.close(EndReason.PROTOCOL_ERROR, "")
            raise
        self.calls[ctx.call_id] = peer
        tg.start_soon(self._run, peer, name=f"webrtc:{ctx.call_id}")
        return answer

    async def _run(self, peer: WebRTCPeer) -> None:
        try:
            await self.run_call(peer)
        finally:
            self.calls.pop(peer.ctx.call_id, None)
            with anyio.CancelScope(shield=True):
                await peer.close(EndReason.SHUTDOWN, "")

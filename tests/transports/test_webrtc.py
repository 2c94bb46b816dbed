"""The WebRTC transport without a browser: pacing track, input conversion, events, offer, ICE, loopback calls.

The loopback calls go through :class:`aybiza.calls.BrowserCalls` (admission, the call's session) on a real
:class:`~aybiza.runtime.Runtime` whose stack is a stand-in stage, so no model loads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from aybiza.agents import AgentConfig
from aybiza.calls import BrowserCalls
from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.errors import ConfigError, ProtocolError
from aybiza.pipeline import (
    DTMF,
    AgentSpeaking,
    AgentText,
    AgentTurnDone,
    CallContext,
    CallLedger,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Processor,
    QualityReport,
    Stage,
    Transcript,
    UserTurn,
)
from aybiza.routing.router import CallRouting
from aybiza.runtime import Runtime
from aybiza.stack import SpeechStack
from aybiza.tools.toolbox import CallActions
from aybiza.transports.webrtc import Offer, WebRTCOutput, demo_page, ice_servers, parse_offer
from aybiza.transports.webrtc_events import EventChannel, EventTap, event_for, with_event_taps
from aybiza.transports.webrtc_media import AudioInput, PacedAudioTrack, mono_pcm16

from ._runtime import stand_in_runtime


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _tone(rate: int, seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _pcm(frame: AudioFrame) -> npt.NDArray[np.int16]:
    return np.frombuffer(bytes(frame.planes[0])[: frame.samples * 2], dtype=np.int16)


def _peak_hz(samples: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# --- the pacing track -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_track_serves_20_ms_frames_on_a_monotonic_schedule() -> None:
    clock = FakeClock()
    track = PacedAudioTrack(clock=clock, sleep=clock.sleep)
    served_at, frames = [], []
    for _ in range(6):
        frames.append(await track.recv())
        served_at.append(clock.now - 100.0)
        clock.now += 0.005  # the sender spends 5 ms encoding: the schedule absorbs it, it does not add up
    assert served_at == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10])
    assert [frame.pts for frame in frames] == [0, 960, 1920, 2880, 3840, 4800]
    assert {(frame.samples, frame.sample_rate, frame.format.name, frame.layout.name) for frame in frames} == {
        (960, 48000, "s16", "mono")
    }


@pytest.mark.anyio
async def test_track_sends_silence_when_idle() -> None:
    clock = FakeClock()
    track = PacedAudioTrack(clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert not _pcm(await track.recv()).any()
    assert not track.playing


@pytest.mark.anyio
async def test_track_plays_queued_audio_in_order_then_pads_and_falls_silent() -> None:
    clock = FakeClock()
    track = PacedAudioTrack(clock=clock, sleep=clock.sleep)
    started: list[int] = []
    idle: list[bool] = []
    track.on_playing = started.append
    track.on_idle = lambda: idle.append(True)
    audio = np.arange(1, 960 * 2 + 480 + 1, dtype=np.int16)  # 2.5 frames of non-zero samples
    track.enqueue(audio[:1000].tobytes(), turn_id=3)
    track.enqueue(audio[1000:].tobytes(), turn_id=3)
    assert track.playing and track.buffered_s == pytest.approx(0.05)
    out = np.concatenate([_pcm(await track.recv()) for _ in range(4)])
    assert np.array_equal(out[: len(audio)], audio)
    assert not out[len(audio):].any()  # the half frame is padded with silence, then silence
    assert started == [3] and idle == [True]
    assert not track.playing


@pytest.mark.anyio
async def test_track_does_not_burst_after_a_stall() -> None:
    clock = FakeClock()
    track = PacedAudioTrack(clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await track.recv()
    clock.now += 0.5  # the event loop was blocked for half a second
    stalled_at = clock.now
    await track.recv()
    await track.recv()
    assert clock.now - stalled_at == pytest.approx(0.02)  # back on a 20 ms cadence, not 25 frames at once


@pytest.mark.anyio
async def test_track_ends_like_an_aiortc_track() -> None:
    track = PacedAudioTrack()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


# --- the output stage -------------------------------------------------------------------------------


class Started:
    """A started output stage on a fake clock, the events it sent the page and the control frames it steered up."""

    def __init__(self, output: WebRTCOutput, sent: list[dict[str, object]], controls: list[Frame]) -> None:
        self.output = output
        self.sent = sent
        self.controls = controls

    def speaking(self) -> list[bool]:
        return [frame.speaking for frame in self.controls if isinstance(frame, AgentSpeaking)]


async def _started_output(ctx: CallContext, tg: anyio.abc.TaskGroup) -> Started:
    clock = FakeClock()
    track = PacedAudioTrack(clock=clock, sleep=clock.sleep)
    events = EventChannel()
    sent: list[dict[str, object]] = []
    events.attach(lambda message: sent.append(json.loads(message)))
    output = WebRTCOutput(track, events)
    controls: list[Frame] = []

    async def steer(frame: Frame) -> None:  # the top of the control path (as a pipeline wires it)
        controls.append(frame)

    output.steer = steer
    await output.start(ctx, tg)
    return Started(output, sent, controls)


@pytest.mark.anyio
async def test_output_resamples_agent_audio_to_the_track_and_tracks_speaking() -> None:
    ctx = CallContext("CAout", transport="webrtc", ledger=CallLedger())
    async with anyio.create_task_group() as tg:
        started = await _started_output(ctx, tg)
        output = started.output
        tone = _tone(22050, 0.5)
        for chunk in np.array_split(tone, 5):
            await output.process(OutputAudio(chunk.tobytes(), 22050, 1, 0.0))
        assert started.speaking() == [True]
        await output.process(AgentTurnDone(1))
        assert output.track.buffered_s == pytest.approx(0.5, abs=0.001)  # nothing lost at the turn's end
        assert started.speaking() == [True]  # queued is still to be heard
        heard = np.concatenate([_pcm(await output.track.recv()) for _ in range(25)])
        assert _peak_hz(heard, 48000) == pytest.approx(440, abs=5)
        await output.settle()  # the pump settles after each input frame: the track ran dry
        assert started.speaking() == [True, False]
        with anyio.fail_after(1):
            await output.drained()


@pytest.mark.anyio
async def test_phone_audio_given_as_ulaw_is_decoded_for_the_browser() -> None:
    ctx = CallContext("CAulaw", transport="webrtc", ledger=CallLedger())
    async with anyio.create_task_group() as tg:
        started = await _started_output(ctx, tg)
        await started.output.process(OutputAudio(b"", 8000, 1, 0.0, ulaw=b"\x80" * 800))  # 0.1 s of μ-law
        assert started.output.track.buffered_s == pytest.approx(0.1, abs=0.005)


@pytest.mark.anyio
async def test_interruption_flushes_queued_agent_audio_at_once() -> None:
    ctx = CallContext("CAbarge", transport="webrtc", ledger=CallLedger())
    async with anyio.create_task_group() as tg:
        started = await _started_output(ctx, tg)
        output = started.output
        await output.process(OutputAudio(_tone(16000, 2.0).tobytes(), 16000, 1, 0.0))
        assert _pcm(await output.track.recv()).any()
        await output.process(Interruption(at=0.0))
        assert started.speaking() == [True, False]
        assert output.track.buffered_s == 0
        assert not _pcm(await output.track.recv()).any()
        # the next turn plays normally
        await output.process(OutputAudio(_tone(16000, 0.1).tobytes(), 16000, 2, 0.0))
        await output.process(AgentTurnDone(2))
        assert _pcm(await output.track.recv()).any()
        assert started.speaking() == [True, False, True]
    assert {"type": "agent_audio", "state": "idle"} in started.sent


@pytest.mark.anyio
async def test_voice_to_voice_is_measured_when_the_reply_starts_playing() -> None:
    ctx = CallContext("CAv2v", transport="webrtc", ledger=CallLedger())
    async with anyio.create_task_group() as tg:
        started = await _started_output(ctx, tg)
        output = started.output
        await output.process(OutputAudio(_tone(16000, 0.1).tobytes(), 16000, 0, 0.0))  # greeting: not timed
        await output.track.recv()
        assert ctx.ledger.samples == []
        ctx.user_turn_ended_at = 0.0  # monotonic time the caller stopped speaking
        ctx.ledger.time(Stage.STT_FINAL, 0.2)  # measured before the turn: belongs to turn 1
        ctx.ledger.turn = 1  # the turn-taker ended the caller's turn
        await output.process(OutputAudio(_tone(16000, 0.1).tobytes(), 16000, 1, 0.0))
        assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.STT_FINAL]  # queued is not heard
        for _ in range(6):
            await output.track.recv()
    assert [(stage, turn) for stage, _, turn in ctx.ledger.samples] == [(Stage.STT_FINAL, 1),
                                                                       (Stage.VOICE_TO_VOICE, 1)]
    latency = [event for event in started.sent if event["type"] == "latency"]
    assert len(latency) == 1 and latency[0]["turn_id"] == 1
    assert latency[0]["stages"] == {"stt_final": 200, "voice_to_voice": latency[0]["voice_to_voice_ms"]}  # ms
    assert ctx.user_turn_ended_at is None


# --- the input path ---------------------------------------------------------------------------------


def test_browser_stereo_48k_becomes_20_ms_mono_frames_at_16k() -> None:
    tone = _tone(48000, 1.0)
    converter = AudioInput()
    frames: list[InputAudio] = []
    for index, chunk in enumerate(np.split(tone, 50)):  # 50 Opus frames of 20 ms, as aiortc decodes them
        stereo = np.stack([chunk, chunk], axis=1).reshape(1, -1)
        frame = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frames += converter.push(frame, now=float(index))
    assert {(len(f.pcm), f.sample_rate) for f in frames} == {(640, 16000)}
    assert 48 <= len(frames) <= 50  # a few ms are held back by the resampler, never more than a frame
    assert frames[-1].captured_at == 49.0
    pcm = np.frombuffer(b"".join(f.pcm for f in frames), dtype=np.int16)
    assert _peak_hz(pcm, 16000) == pytest.approx(440, abs=5)
    assert np.abs(pcm[1000:]).max() == pytest.approx(0.5 * 32767, rel=0.05)


def test_planar_float_frames_are_downmixed() -> None:
    left = _tone(48000, 0.02).astype(np.float32) / 32767
    frame = AudioFrame.from_ndarray(np.stack([left, np.zeros_like(left)]), format="fltp", layout="stereo")
    mono = np.frombuffer(mono_pcm16(frame), dtype=np.int16)
    assert len(mono) == 960
    assert np.abs(mono).max() == pytest.approx(0.25 * 32767, rel=0.01)  # (L + R) / 2


# --- events -----------------------------------------------------------------------------------------


class Collect(Processor):
    """Keeps what passes by, and passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)
        await self.push(frame)


class SaysHello(Processor):
    """Stands in for STT + model: turns any audio into a transcript and an agent reply."""

    async def process(self, frame: Frame) -> None:
        await self.push(frame)
        if isinstance(frame, InputAudio):
            await self.push(Transcript("hello", final=True))
            await self.push(AgentText("Hi there.", turn_id=1))


@pytest.mark.anyio
async def test_taps_report_each_event_once_and_forward_every_frame() -> None:
    channel = EventChannel()
    sent: list[dict[str, object]] = []
    sink = Collect()
    stages = with_event_taps([Processor(), SaysHello(), Processor()], channel)
    assert sum(isinstance(stage, EventTap) for stage in stages) == 3
    for upstream, downstream in zip(stages, [*stages[1:], sink], strict=True):
        upstream.link(downstream)
    audio = InputAudio(b"\x00" * 640, 16000, 0.0)
    await stages[0].process(audio)
    await stages[0].process(QualityReport(0.9, "high"))
    assert sink.frames[0] is audio and len(sink.frames) == 4
    channel.attach(lambda message: sent.append(json.loads(message)))  # held back until the channel opens
    assert [event["type"] for event in sent] == ["transcript", "agent_text", "quality"]
    assert sent[0] == {"type": "transcript", "text": "hello", "final": True, "language": "en"}


def test_frames_the_page_does_not_show_have_no_event() -> None:
    assert event_for(InputAudio(b"", 16000, 0.0)) is None
    assert event_for(OutputAudio(b"", 16000, 1, 0.0)) is None
    assert event_for(UserTurn("hi", 2)) == {"type": "user_turn", "turn_id": 2, "text": "hi", "language": "en"}


def test_a_closed_channel_keeps_events_for_the_next_attach() -> None:
    channel = EventChannel()

    def broken(message: str) -> None:
        raise ConnectionError("closed")

    channel.attach(broken)
    channel.send({"type": "agent_done", "turn_id": 1})
    assert not channel.attached
    got: list[str] = []
    channel.attach(got.append)
    assert got == ['{"type":"agent_done","turn_id":1}']


# --- offer, ICE settings, page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([], "JSON object"),
        ({"sdp": "v=0\r\n", "type": "answer"}, "type must be 'offer'"),
        ({"sdp": "hello", "type": "offer"}, "SDP offer"),
        ({"sdp": "v=0\r\n" + "a" * 70000, "type": "offer"}, "longer"),
        ({"sdp": "v=0\r\n", "type": "offer", "agent": 7}, "agent"),
    ],
)
def test_bad_offers_are_refused_with_a_reason(body: object, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        parse_offer(body)


SDP = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"  # the least an offer must carry


def test_offer_names_an_agent() -> None:
    assert parse_offer({"sdp": SDP, "type": "offer", "agent": "dental"}) == Offer(SDP, "dental")


def test_offer_may_carry_the_browsers_language() -> None:
    offer = parse_offer({"sdp": SDP, "type": "offer", "language": "es-ES"})
    assert offer.language == "es-ES"
    for bad in ("Spanish", "", 7, "es_ES", "x" * 40):
        with pytest.raises(ProtocolError, match="language"):
            parse_offer({"sdp": SDP, "type": "offer", "language": bad})


def test_ice_servers_come_from_the_settings(tmp_path: Path) -> None:
    assert ice_servers("") == []
    servers = ice_servers("stun:stun.example.org:3478, turn:turn.example.org:3478?transport=udp", "user", "secret")
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        ("stun:stun.example.org:3478", None, None),
        ("turn:turn.example.org:3478?transport=udp", "user", "secret"),
    ]
    with pytest.raises(ConfigError, match="stun:/turn:"):
        ice_servers("https://example.org")
    settings = Settings(data_dir=tmp_path, ice_servers="stun:stun.example.org:3478 turns:turn.example.org:5349",
                        ice_username="user", ice_credential="secret")
    browser = BrowserCalls(Runtime(settings))  # the server and the page use the settings' servers
    assert [(s.urls, s.username) for s in browser.ice] == [("stun:stun.example.org:3478", None),
                                                          ("turns:turn.example.org:5349", "user")]
    assert browser.calls.ice == browser.ice


def test_demo_page_carries_the_ice_servers_and_loads_nothing_remote() -> None:
    html = demo_page(ice_servers("stun:stun.example.org:3478"))
    assert '{"iceServers": [{"urls": "stun:stun.example.org:3478"}]}' in html
    web = Path(__file__).resolve().parents[2] / "aybiza" / "transports" / "web"
    for name in ("index.html", "app.js", "style.css"):
        text = (web / name).read_text()
        assert "http://" not in text and "https://" not in text, name  # no CDN: the page works offline


# --- whole calls between two aiortc peers, through the session -----------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await anyio.sleep(0.02)


class Listener(Processor):
    """Stands in for the recogniser and turn-taking: keeps what reaches it, passes it on, never interrupts."""

    name = "listener"
    consumes = frozenset({InputAudio, DTMF})
    produces = frozenset({Interruption})

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)
        await self.push(frame)


GREETING = _tone(16000, 0.6).tobytes()


class ListeningStack(SpeechStack):
    """A browser call's stages for these tests: the listener; the agent greets with a tone."""

    def __init__(self, settings: Settings, engines: Engines) -> None:
        super().__init__(settings, engines)
        self.listeners: list[Listener] = []

    def build(self, ctx: CallContext, agent: AgentConfig, *, call_routing: CallRouting | None = None,
              history: Sequence[Mapping[str, str]] = (), resumed: bool = False, turn_offset: int = 0,
              actions: CallActions | None = None) -> tuple[list[Processor], list[Frame]]:
        listener = Listener()
        self.listeners.append(listener)
        return [listener], [AgentText("Hello.", 0), OutputAudio(GREETING, 16000, 0, 0.0), AgentTurnDone(0)]


def _runtime(root: Path, **values: object) -> Runtime:
    return stand_in_runtime(root, ListeningStack, **values)


async def _offer(browser: RTCPeerConnection, **fields: str) -> Offer:
    await browser.setLocalDescription(await browser.createOffer())
    assert browser.localDescription is not None
    return parse_offer({"sdp": browser.localDescription.sdp, "type": "offer", **fields})


def _ended(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ended")]


@pytest.mark.anyio
async def test_a_peer_talks_hears_the_agent_presses_a_key_and_hangs_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aybiza.call")
    runtime = _runtime(tmp_path)
    stack = runtime.stack
    assert isinstance(stack, ListeningStack)
    browser_calls = BrowserCalls(runtime)
    browser = RTCPeerConnection()
    microphone = PacedAudioTrack()
    microphone.enqueue(_tone(48000, 2.0, hz=300).tobytes(), turn_id=0)
    browser.addTrack(microphone)
    channel = browser.createDataChannel("events")
    events: list[dict[str, object]] = []
    channel.on("message", lambda message: events.append(json.loads(message)))
    loud_frames = 0

    async def listen(track: MediaStreamTrack) -> None:
        nonlocal loud_frames
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:  # the server closed the connection
                return
            assert isinstance(frame, AudioFrame)
            if np.abs(frame.to_ndarray()).max() > 3000:
                loud_frames += 1

    def heard() -> list[Frame]:
        return stack.listeners[0].frames if stack.listeners else []

    try:
        with anyio.fail_after(15):
            async with browser_calls.calls.running(), anyio.create_task_group() as tg:
                browser.on("track", lambda track: tg.start_soon(listen, track))
                answer = await browser_calls.answer(await _offer(browser, language="en-GB"), "127.0.0.1")
                assert answer is not None
                sdp, kind, call_id = answer
                assert call_id.startswith("WR") and runtime.admission.counts == {"webrtc": 1}
                await browser.setRemoteDescription(RTCSessionDescription(sdp, kind))
                await _until(lambda: loud_frames >= 20  # 0.4 s of the greeting reached the browser
                             and sum(isinstance(f, InputAudio) for f in heard()) >= 50)
                for junk in ("not json", "[]", '{"type": "dtmf", "digit": "X"}', '{"type": "dtmf", "digit": [1]}',
                             '{"type": {"nested": true}}', "x" * 5000):  # the page is not trusted
                    channel.send(junk)
                channel.send(json.dumps({"type": "dtmf", "digit": "7"}))
                await _until(lambda: DTMF("7") in heard())
                channel.send(json.dumps({"type": "hangup"}))
                await _until(lambda: not browser_calls.calls.calls)
                tg.cancel_scope.cancel()
    finally:
        await browser.close()
    assert _ended(caplog) == ["call ended: hangup"]
    assert [f for f in heard() if isinstance(f, DTMF)] == [DTMF("7")]
    inputs = [f for f in heard() if isinstance(f, InputAudio)]
    assert {(len(f.pcm), f.sample_rate) for f in inputs} == {(640, 16000)}
    spoken = np.frombuffer(b"".join(f.pcm for f in inputs[5:50]), dtype=np.int16)
    assert _peak_hz(spoken, 16000) == pytest.approx(300, abs=10)  # the caller's tone survived Opus
    assert {"call", "route"} <= {event["type"] for event in events}
    assert {"type": "call", "call_id": call_id, "agent": "default"} in events
    assert {"type": "agent_text", "turn_id": 0, "text": "Hello.", "language": "en"} in events
    assert {"type": "agent_audio", "state": "playing", "turn_id": 0} in events
    assert runtime.admission.active == 0 and runtime.calls == {}
    assert runtime.metrics.snapshot()["calls_total"] == 1 and runtime.metrics.snapshot()["errors"] == {}


@pytest.mark.anyio
async def test_a_peer_that_stops_sending_audio_is_hung_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aybiza.call")
    runtime = _runtime(tmp_path)
    browser_calls = BrowserCalls(runtime)
    browser_calls.calls.media_timeout_s = 0.3
    browser = RTCPeerConnection()
    microphone = PacedAudioTrack()
    browser.addTrack(microphone)
    try:
        with anyio.fail_after(10):
            async with browser_calls.calls.running():
                answer = await browser_calls.answer(await _offer(browser), "127.0.0.1")
                assert answer is not None
                await browser.setRemoteDescription(RTCSessionDescription(answer[0], answer[1]))
                await _until(lambda: browser.connectionState == "connected")
                await anyio.sleep(0.5)
                assert _ended(caplog) == []  # silence keeps the call up: the browser sends it
                microphone.stop()  # the page vanished without hanging up
                await _until(lambda: bool(_ended(caplog)))
    finally:
        await browser.close()
    assert _ended(caplog) == ["call ended: media_timeout"]
    assert any("no audio from the browser for 0.3 s" in r.getMessage() for r in caplog.records)
    assert runtime.admission.active == 0


@pytest.mark.anyio
async def test_an_offer_without_audio_is_refused_and_gives_its_slot_back(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    browser_calls = BrowserCalls(runtime)
    browser = RTCPeerConnection()
    browser.createDataChannel("events")
    try:
        async with browser_calls.calls.running():
            with pytest.raises(ProtocolError, match="no audio"):
                await browser_calls.answer(await _offer(browser), "127.0.0.1")
    finally:
        await browser.close()
    assert browser_calls.calls.calls == {} and runtime.admission.active == 0


@pytest.mark.anyio
async def test_offers_beyond_the_browser_budget_are_refused(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, max_calls=5, max_browser_calls=1)
    browser_calls = BrowserCalls(runtime)
    held = runtime.admission.admit("webrtc")  # one browser call is live
    assert held is not None
    async with browser_calls.calls.running():
        assert await browser_calls.answer(Offer("v=0\r\n"), "127.0.0.1") is None  # answered 503: no SDP parsed
    assert runtime.admission.counts == {"webrtc": 1}
    assert runtime.admission.admit("twilio") is not None  # phone callers keep their slots


@pytest.mark.anyio
async def test_an_answered_offer_that_never_connects_leaves_no_call_and_no_record(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, browser_connect_timeout_s=0.5)
    browser_calls = BrowserCalls(runtime)
    browser = RTCPeerConnection()
    browser.addTrack(PacedAudioTrack())
    try:
        with anyio.fail_after(10):
            async with browser_calls.calls.running():
                answer = await browser_calls.answer(await _offer(browser), "203.0.113.9")
                assert answer is not None and runtime.admission.counts == {"webrtc": 1}
                # the "browser" never applies the answer: no ICE, no DTLS, no media
                await _until(lambda: runtime.admission.active == 0)
    finally:
        await browser.close()
    assert runtime.calls == {} and runtime.metrics.snapshot()["calls_total"] == 0  # no session ran
    assert browser_calls.calls.calls == {}
    assert 'aybiza_refused_total{endpoint="webrtc_offer",reason="no_connection"} 1.0' in (
        runtime.metrics.render()[0].decode())


def test_an_offer_without_a_dtls_fingerprint_is_refused() -> None:
    with pytest.raises(ProtocolError, match="fingerprint"):
        parse_offer({"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
                     "type": "offer"})


@pytest.mark.parametrize("body", [{"sdp": SDP, "type": "offer", "agent": {"deep": [1]}},
                                  {"sdp": SDP, "type": "offer", **{f"k{n}": "v" for n in range(20)}}])
def test_an_offer_is_one_small_flat_object(body: object) -> None:
    with pytest.raises(ProtocolError, match="flat JSON object"):
        parse_offer(body)

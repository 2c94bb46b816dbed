"""The benchmark callers speak Twilio's protocol exactly and behave like a phone."""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aybiza.testing.twilio_caller import TwilioCallerProtocol  # noqa: E402
from aybiza.transports.twilio import Media, Started, TwilioProtocol  # noqa: E402
from benchmarks.loadgen import Behaviour, Call, CallerAudio, TwilioMessages, Utterance, join_turns  # noqa: E402

FRAME = base64.b64encode(b"\xff" * 160).decode()


def test_fast_messages_are_byte_for_byte_what_the_reference_caller_sends() -> None:
    reference = TwilioCallerProtocol(custom_parameters={"call_token": "t"})
    fast = TwilioMessages(reference.stream_sid, reference.call_sid, reference.account_sid, {"call_token": "t"})
    pairs = [(reference.connected(), fast.connected()), (reference.start(), fast.start())]
    pairs += [(reference.media(b"\xff" * 160), fast.media(FRAME)) for _ in range(3)]
    pairs += [(reference.mark("turn-0"), fast.mark("turn-0")), (reference.media(b"\xff" * 160), fast.media(FRAME)),
              (reference.stop(), fast.stop())]
    for expected, actual in pairs:
        assert actual == expected


def test_the_server_protocol_accepts_the_fast_messages() -> None:
    messages = TwilioMessages("MZ" + "0" * 32, "CA" + "1" * 32, "AC" + "2" * 32, {"call_token": "t"})
    server = TwilioProtocol(check_token=lambda custom: custom == {"call_token": "t"})
    server.receive(messages.connected())
    (started,) = server.receive(messages.start())
    assert isinstance(started, Started) and started.call_sid == "CA" + "1" * 32
    events = [server.receive(messages.media(FRAME))[0] for _ in range(3)]
    assert [(e.chunk, e.timestamp_ms, e.payload) for e in events if isinstance(e, Media)] == [
        (1, 0, b"\xff" * 160), (2, 20, b"\xff" * 160), (3, 40, b"\xff" * 160)]


def _call(behaviour: Behaviour, now: float = 0.0) -> Call:
    audio = CallerAudio(utterances=(("s1", "s2", "s3"),), silence=("q",), source="test")
    fleet = SimpleNamespace(audio=audio)
    return Call(fleet, ws=None, messages=TwilioMessages("MZ", "CA", "AC", {}), behaviour=behaviour,  # type: ignore[arg-type]
                rng=random.Random(0), now=now)


def _media(seconds: float) -> str:
    payload = base64.b64encode(b"\xff" * int(8000 * seconds)).decode()
    return json.dumps({"event": "media", "streamSid": "MZ", "media": {"payload": payload}})


def test_agent_audio_plays_in_real_time_and_marks_wait_for_it() -> None:
    call = _call(Behaviour())
    call.on_message(_media(1.0), now=10.0)
    call.on_message(json.dumps({"event": "mark", "streamSid": "MZ", "mark": {"name": "turn-1"}}), now=10.1)
    assert call.playback.played_until == 11.0
    assert call.marks_due(10.9) == [] and call.marks_due(11.0) == ["turn-1"], "echoed once the audio has played"
    call.on_message(_media(1.0), now=12.0)
    call.on_message(json.dumps({"event": "mark", "streamSid": "MZ", "mark": {"name": "turn-2"}}), now=12.1)
    call.on_message(json.dumps({"event": "clear", "streamSid": "MZ"}), now=12.5)
    assert call.playback.played_until == 12.5 and call.marks_due(12.5) == ["turn-2"], "clear: echo now"


def test_a_fixed_caller_speaks_after_its_greeting_pause_and_flags_the_utterance_end() -> None:
    call = _call(Behaviour(greeting_s=(1.0, 1.0), gap_s=(2.0, 2.0)))
    assert call.next_frame(0.5) == ("q", False)
    assert [call.next_frame(1.0 + i * 0.02) for i in range(3)] == [("s1", False), ("s2", False), ("s3", True)]
    assert call.next_frame(1.1) == ("q", False) and call.quiet_until == 1.04 + 2.0


def test_a_turn_taking_caller_waits_for_the_reply_to_finish_before_speaking_again() -> None:
    call = _call(Behaviour(wait_for_reply=True, greeting_s=(0, 0), pause_after_reply_s=0.5, turns=2))
    assert call.next_frame(0.0) == ("q", False), "waits for the greeting"
    call.on_message(_media(1.0), now=0.1)  # greeting plays until 1.1
    assert call.next_frame(1.0) == ("q", False)
    assert call.next_frame(1.6) == ("s1", False), "greeting over + 0.5 s pause"
    call.next_frame(1.62)
    call.next_frame(1.64)
    call.utterances.append(Utterance(spoken_at=1.64))
    assert call.next_frame(2.0) == ("q", False), "no reply yet"
    call.on_message(_media(0.5), now=2.5)
    assert call.utterances[0].reply_at == 2.5
    assert call.next_frame(2.9) == ("q", False)
    assert call.next_frame(3.5) == ("s1", False)


def test_utterances_are_joined_to_the_recorded_turn_that_began_after_them() -> None:
    call = _call(Behaviour(record=True))
    assert call.sent_at is not None
    call.sent_at.extend(10.0 + 0.02 * i for i in range(100))
    call.utterances += [Utterance(spoken_at=10.2, frame=10, spoken_wall=5000.0, reply_at=11.3),
                        Utterance(spoken_at=11.5, frame=75, spoken_wall=5001.3, reply_at=12.6),
                        Utterance(spoken_at=12.0, frame=90, spoken_wall=5001.8)]  # no reply heard
    timings = {"stt_final": 0.151, "llm_first_sentence": 0.352, "llm_first_token": 0.351, "tts_first_byte": 0.101,
               "voice_to_voice": 1.08}
    record = {"turns": [{"turn_id": 0, "at": 4999.0, "user": "", "timings": {"tts_first_byte": 0.1}},
                        {"turn_id": 1, "at": 5000.55, "user": "what time", "timings": timings},
                        {"turn_id": 2, "at": 5001.85, "user": "what time", "timings": {"stt_final": 0.15}}]}
    rows, unmatched = join_turns([call], {"CA": record}, window_frames=20)
    assert unmatched == 2, "the second turn's record lacks timings; the third utterance got no reply"
    assert rows == [{"spoken_at": 10.2, "window_sent": call.sent_at[30], "reply_at": 11.3, **timings}]

"""A browser-like caller without a browser: an aiortc peer that does what the demo page does.

It posts an SDP offer to ``/webrtc/offer`` (with an agent and a language, as
the page does), opens the ``events`` data channel, sends the caller's audio
on a paced microphone track (silence around it, like a real microphone),
records the agent audio it receives and the events the server sends, and
hangs up over the data channel. Tests and tools use it where a headless
Chromium would be heavier than the question asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from ..codecs import resample
from ..transports.webrtc_media import TRACK_RATE, PacedAudioTrack

__all__ = ["BrowserReport", "place_browser_call"]


@dataclass
class BrowserReport:
    """What the browser-like caller heard and was told."""

    call_id: str = ""
    heard: bytearray = field(default_factory=bytearray)  # PCM16 mono at 48 kHz, as received
    events: list[dict[str, Any]] = field(default_factory=list)
    status: int = 0

    def event_types(self) -> list[str]:
        """The ``type`` of every event, in order."""
        return [str(event.get("type")) for event in self.events]


async def place_browser_call(http_base: str, speech: bytes, speech_rate: int, *, agent: str | None = None,
                             language: str = "en-US", lead_s: float = 6.0, listen_s: float = 10.0,
                             timeout_s: float = 60.0) -> BrowserReport:
    """Call the server at ``http_base`` like the demo page; say ``speech`` (PCM16) after ``lead_s`` of silence.

    Listens ``listen_s`` after the speech, then hangs up over the data channel.
    """
    report = BrowserReport()
    pc = RTCPeerConnection()
    microphone = PacedAudioTrack()
    pc.addTrack(microphone)
    channel = pc.createDataChannel("events")
    channel.on("message", lambda message: report.events.append(json.loads(message)))

    async def listen(track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, AudioFrame):
                samples = frame.to_ndarray().reshape(-1, frame.layout.nb_channels).mean(axis=1)
                report.heard += samples.astype(np.int16).tobytes()

    try:
        with anyio.fail_after(timeout_s):
            async with anyio.create_task_group() as tg:
                pc.on("track", lambda track: tg.start_soon(listen, track))
                await pc.setLocalDescription(await pc.createOffer())
                assert pc.localDescription is not None
                body: dict[str, Any] = {"sdp": pc.localDescription.sdp, "type": "offer", "language": language}
                if agent:
                    body["agent"] = agent
                async with httpx.AsyncClient(timeout=10) as client:
                    response = await client.post(f"{http_base}/webrtc/offer", json=body)
                report.status = response.status_code
                if response.status_code != 200:
                    tg.cancel_scope.cancel()
                    return report
                answer = response.json()
                report.call_id = answer["call_id"]
                await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
                await anyio.sleep(lead_s)
                microphone.enqueue(resample(speech, speech_rate, TRACK_RATE), turn_id=1)
                await anyio.sleep(len(speech) / (2 * speech_rate) + listen_s)
                if channel.readyState == "open":
                    channel.send(json.dumps({"type": "hangup"}))
                await anyio.sleep(1.0)
                tg.cancel_scope.cancel()
    finally:
        await pc.close()
    return report

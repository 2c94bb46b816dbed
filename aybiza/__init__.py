"""aybiza: a real-time voice AI platform (Twilio Media Streams and WebRTC in, a voice agent out)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

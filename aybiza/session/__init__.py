"""A call from admission to archive, whatever the transport: the session, its transports' contract, its failsafe."""

from __future__ import annotations

from .admission import Admission, RateLimit, Ticket, Waiting
from .failsafe import FailsafeVoice
from .session import CallSession
from .transport import CallControl, CallTransport

__all__ = ["Admission", "CallControl", "CallSession", "CallTransport", "FailsafeVoice", "RateLimit", "Ticket",
           "Waiting"]

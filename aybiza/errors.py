"""The error tree of aybiza.

::

    AybizaError
     ├── ConfigError              bad settings or agent file; fix and restart
     │    └── ModelIntegrityError a packaged model's bytes do not match its pinned hash
     ├── CallError                ends one call, never the process
     │    ├── ProtocolError       a peer sent something we cannot accept
     │    │    └── AuthError      a bad signature or call token
     │    └── CallEnded           a stage ends the call on purpose, with its EndReason
     └── ProviderError            an STT/LLM/TTS provider failed a request
          ├── RetryableError      try the same request in another region
          │    ├── ThrottledError      429 / ThrottlingException / 529
          │    ├── OverloadedError     5xx, service unavailable, model overloaded
          │    └── ProviderTimeout     connect, first-token or stream-stall deadline
          └── FatalProviderError  retrying elsewhere will not help
               ├── BadRequestError     validation error, blank text, bad model id
               └── CredentialsError    missing or refused credentials

``retryable`` on every ``ProviderError`` says whether the router may move the
request to the next region.

Every call ends with an :class:`EndReason`: the caller hung up or left, the
agent ended or transferred it, or a typed failure (the caller then heard an
apology in the local voice first). Records, metrics and logs carry the
reason's value.
"""

from __future__ import annotations

import enum

__all__ = [
    "EndReason",
    "CallEnded",
    "AybizaError",
    "ConfigError",
    "ModelIntegrityError",
    "CallError",
    "ProtocolError",
    "AuthError",
    "ProviderError",
    "RetryableError",
    "ThrottledError",
    "OverloadedError",
    "ProviderTimeout",
    "FatalProviderError",
    "BadRequestError",
    "CredentialsError",
]


class AybizaError(Exception):
    """Base of every error aybiza raises on purpose."""


class ConfigError(AybizaError):
    """Settings, agent files or model files are wrong; the process should not start."""


class ModelIntegrityError(ConfigError):
    """A model file's SHA-256 differs from the pinned upstream hash."""


class CallError(AybizaError):
    """Something that ends one call and nothing else."""


class ProtocolError(CallError):
    """The peer (Twilio, a browser) sent a message we cannot accept."""


class AuthError(ProtocolError):
    """A signature or one-time call token did not check out."""


class ProviderError(AybizaError):
    """A provider (STT, LLM, TTS) failed a request."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", region: str = "") -> None:
        super().__init__(message)
        self.provider = provider
        self.region = region


class RetryableError(ProviderError):
    """Retrying the same request in another region may succeed."""

    retryable = True


class ThrottledError(RetryableError):
    """The provider is rate limiting us."""


class OverloadedError(RetryableError):
    """The provider answered 5xx or said it is overloaded."""


class ProviderTimeout(RetryableError):
    """A connect, first-token or stream-stall deadline passed."""


class FatalProviderError(ProviderError):
    """The request itself is wrong; no region will accept it."""


class BadRequestError(FatalProviderError):
    """Validation error: bad model id, blank text block, malformed request."""


class CredentialsError(FatalProviderError):
    """Credentials are missing or refused."""


class EndReason(enum.StrEnum):
    """Why a call ended; the value is what records and metrics show."""

    HANGUP = "hangup"  # the caller hung up (Twilio stop, the page's hang-up)
    DISCONNECTED = "disconnected"  # the connection dropped
    NO_CONNECTION = "no_connection"  # a browser that never connected its media
    MEDIA_TIMEOUT = "media_timeout"  # no caller audio for too long
    AGENT_ENDED = "agent_ended"  # the agent said goodbye and hung up
    CALLER_SILENT = "caller_silent"  # the caller said nothing through the reprompts: the agent said goodbye
    TRANSFERRED = "transferred"  # handed to a person
    SHUTDOWN = "shutdown"  # the server stopped
    PROTOCOL_ERROR = "protocol_error"  # the peer sent something we cannot accept
    AUTH_FAILED = "auth_failed"  # bad signature or call token
    AGENT_UNAVAILABLE = "agent_unavailable"  # the agent's configuration cannot be loaded
    NO_ELIGIBLE_REGION = "no_eligible_region"  # no healthy region may take the call
    RESIDENCY_REFUSED = "residency_refused"  # the agent's data residency cannot be met for this caller
    MODEL_UNAVAILABLE = "model_unavailable"  # no region answered the caller's turns
    STT_UNAVAILABLE = "stt_unavailable"  # no recogniser could listen (the fallback failed too)
    TTS_UNAVAILABLE = "tts_unavailable"  # no voice could speak (the local voice failed too)
    INTERNAL_ERROR = "internal_error"  # a stage raised something unexpected
    INTERRUPTED = "interrupted"  # the process died mid-call (archived by a survivor)
    VOICEMAIL = "voicemail"  # an outbound call reached a machine: the agent left its voicemail message
    FAX = "fax"  # an outbound call reached a fax machine: hung up
    # Outbound calls that never reached the agent, as Twilio's status callback says (aybiza/outbound/status.py).
    NO_ANSWER = "no_answer"  # it rang out (or was canceled) unanswered
    BUSY = "busy"  # the line was busy
    DIAL_FAILED = "dial_failed"  # Twilio could not place it (a bad number, a carrier's refusal)

    @property
    def normal(self) -> bool:
        """The call ended the way calls end, not through a failure."""
        return self in _NORMAL

    @property
    def peer_fault(self) -> bool:
        """The caller's side broke the protocol: no apology is owed (or deliverable)."""
        return self in (EndReason.PROTOCOL_ERROR, EndReason.AUTH_FAILED)


_NORMAL = frozenset({EndReason.HANGUP, EndReason.DISCONNECTED, EndReason.AGENT_ENDED, EndReason.CALLER_SILENT,
                     EndReason.TRANSFERRED, EndReason.VOICEMAIL, EndReason.FAX,
                     EndReason.SHUTDOWN, EndReason.NO_CONNECTION, EndReason.MEDIA_TIMEOUT,
                     EndReason.NO_ANSWER, EndReason.BUSY})


class CallEnded(CallError):
    """A stage ends its call on purpose: ``reason`` says why, the message gives the detail."""

    def __init__(self, reason: EndReason, detail: str = "") -> None:
        super().__init__(detail or reason.value)
        self.reason = reason
        self.detail = detail

"""The error tree of aybiza.

::

    AybizaError
     ├── ConfigError              bad settings or agent file; fix and restart
     │    └── ModelIntegrityError a packaged model's bytes do not match its pinned hash
     ├── CallError                ends one call, never the process
     │    └── ProtocolError       a peer sent something we cannot accept
     │         └── AuthError      a bad signature or call token
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
"""

from __future__ import annotations

__all__ = [
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

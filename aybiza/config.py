"""Settings from the environment (``AYBIZA_*``) and an optional YAML file (``AYBIZA_CONFIG``).

Precedence: constructor arguments (the CLI) > environment > YAML file >
defaults. The defaults are the embedded offline stack: no keys, no network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = ["Settings", "child_environment", "limit_math_threads"]

STT = Literal["whisper", "sphinx", "deepgram"]
LLM = Literal["faq", "bedrock", "openai"]
TTS = Literal["piper", "espeak", "flite", "deepgram"]


class Settings(BaseSettings):
    """Everything that configures one aybiza process."""

    model_config = SettingsConfigDict(env_prefix="AYBIZA_", extra="ignore", frozen=True, populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="Listen address; beyond loopback needs AYBIZA_API_TOKEN")
    port: int = 8080
    public_url: str = Field(default="", description="Base URL Twilio reaches us at; default http://HOST:PORT")
    data_dir: Path = Path("var")
    agents_dir: Path = Path("agents")
    default_agent: str = "default"

    stt: STT = "whisper"
    llm: LLM = "faq"
    tts: TTS = "piper"
    whisper_model_dir: Path | None = None
    whisper_multilingual_dir: Path | None = Field(
        default=None, description="faster-whisper model for languages other than English; default: packaged base")
    whisper_beam_size: int = Field(default=5, description="5: +6 points of spoken FAQ accuracy, no slower here")
    deepgram_voice: str = "aura-2-thalia-en"
    deepgram_voices: dict[str, str] = Field(
        default_factory=lambda: {"en": "aura-2-thalia-en", "es": "aura-2-celeste-es"},
        description="Aura voice per primary language; other languages are spoken by the local voice")
    deepgram_api_key: str = Field(default="", validation_alias=AliasChoices("DEEPGRAM_API_KEY",
                                                                            "AYBIZA_DEEPGRAM_API_KEY"))
    deepgram_url: str = Field(default="", description="Deepgram base URL (listen and speak); default production")
    bedrock_region: str = Field(default="us-east-1", description="Region when routing picks none")
    bedrock_endpoint_url: str = Field(
        default="", validation_alias=AliasChoices("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AYBIZA_BEDROCK_ENDPOINT_URL"),
        description="One Bedrock runtime endpoint for every region (a proxy, a VPC endpoint, a test server)")
    bedrock_api_key: str = Field(default="", validation_alias=AliasChoices("AWS_BEARER_TOKEN_BEDROCK"),
                                 description="A Bedrock API key (bearer token) instead of SigV4 credentials")
    model_tier: str = Field(default="fast", description="premium | advanced | fast | economy (or a design alias)")
    model_overrides: dict[str, str] = Field(default_factory=dict, description="tier or tier@region -> model id")
    thinking_budget: int = 1024
    openai_model: str = "llama3.2"
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_api_key: str = Field(default="not-needed", validation_alias=AliasChoices("OPENAI_API_KEY",
                                                                                    "AYBIZA_OPENAI_API_KEY"))

    redis_url: str = Field(default="", description="Shared cache and call state for several processes")
    archive_url: str = Field(default="", description="postgresql://... for the call archive; default SQLite")
    retention_days: float | None = Field(default=None, description="Purge archived transcripts after N days")
    catalog_path: Path | None = Field(default=None, description="Region catalog YAML; default: the packaged one")
    health_probes: bool = Field(default=True, description="Probe the regions' endpoints; false to trust passive health")
    agent_ttl_s: float = Field(default=300.0, gt=0, validation_alias=AliasChoices("AYBIZA_AGENT_TTL",
                                                                                   "AYBIZA_AGENT_TTL_S"),
                               description="Seconds an agent file is cached before edits are picked up")

    # Scale-out (issue 16): nodes on one Redis register, /twiml sends each call to the freest, SIGTERM drains.
    webhook_url: str = Field(default="", description="Base URL Twilio posts /twiml to (the load balancer in front "
                             "of the nodes; its signatures are over this URL); default: the public URL")
    node_heartbeat_s: float = Field(default=1.0, gt=0, description="Seconds between a node's registrations in Redis")
    node_missed_heartbeats: int = Field(default=3, ge=2, description="A node silent this many heartbeats is gone")
    drain_timeout_s: float = Field(default=300.0, ge=0, description="On SIGTERM, live calls may finish within "
                                   "this; then they are handed to other nodes")

    twilio_auth_token: str = Field(default="", validation_alias=AliasChoices("TWILIO_AUTH_TOKEN",
                                                                              "AYBIZA_TWILIO_AUTH_TOKEN"))
    twilio_validate: bool = Field(default=True, description="Check X-Twilio-Signature; false for local use only")
    twilio_account_sid: str = Field(default="", validation_alias=AliasChoices("TWILIO_ACCOUNT_SID",
                                                                              "AYBIZA_TWILIO_ACCOUNT_SID"))
    twilio_api_url: str = Field(default="https://api.twilio.com",
                                description="Twilio's REST API base URL (call control); a gateway or a test server")
    call_token_ttl_s: float = Field(default=120.0, gt=0, description="An announced call's stream must start this "
                                    "soon; after it the call is archived as no_connection")
    max_call_tokens: int = Field(default=2000, ge=1, description="Announced calls waiting for their stream")
    max_message_bytes: int = 64 * 1024
    max_calls: int = 500
    max_browser_calls: int = Field(default=4, ge=0, description="Browser (WebRTC) calls at once, inside max_calls")
    max_browser_calls_per_ip: int = Field(default=2, ge=0, description="Browser calls at once from one address")
    browser_calls: Literal["local", "token", "open"] = Field(
        default="local", description="local: only while the server is reachable on loopback alone; "
        "token: offers need AYBIZA_BROWSER_TOKEN; open: anyone (rate limited)")
    browser_token: str = Field(default="", description="Bearer token for /webrtc/offer when browser_calls=token")
    browser_offers_per_minute: float = Field(default=12.0, gt=0, description="Offers per minute from one address")
    browser_offer_burst: int = Field(default=6, ge=1, description="Offers one address may send at once")
    browser_connect_timeout_s: float = Field(default=10.0, gt=0,
                                             description="An answered offer must connect within this")
    max_pending_streams: int = Field(default=256, ge=1, description="Media Streams waiting for their start")
    max_pending_streams_per_ip: int = Field(default=32, ge=1,
                                            description="Media Streams waiting for their start, per address")
    stream_start_timeout_s: float = Field(default=10.0, gt=0, description="A stream must send start within this")
    media_timeout_s: float = Field(default=10.0, gt=0, description="A started call with no media this long ends")
    media_rate: float = Field(default=2.0, gt=1, description="Media faster than this x real time is dropped")
    media_burst_s: float = Field(default=5.0, gt=0, description="Audio a stream may send ahead of real time")
    media_flood_close_s: float = Field(default=5.0, gt=0,
                                       description="Seconds of audio dropped for pace before the call is closed")

    vad_aggressiveness: int = 2
    end_of_turn: Literal["fast", "balanced", "patient", "silence"] = Field(
        default="balanced", description="end-of-turn profile (VAD silence + smart-turn); silence: end_of_turn_ms only")
    end_of_turn_ms: int = Field(default=400, description="silence that ends a turn when end_of_turn is 'silence'")
    preroll_ms: int = 200
    barge_in: bool = True
    barge_in_start_ms: int = Field(default=160, description="speech over the agent that stops it (a click is not)")
    reply_timeout_s: float = Field(default=3.0, gt=0, description="no reply this long after a turn: a holding line")
    silence_reprompt_s: float = Field(default=10.0, gt=0, description="caller silent this long: 'are you still there?'")
    silence_reprompts: int = Field(default=2, ge=0, description="reprompts before the polite goodbye")
    # -- preemptive replies (issue 16) --
    preemptive: bool = Field(default=True, description="start the model on a final transcript before the end of "
                             "turn is confirmed; its words are held until it is, discarded if the caller goes on")
    preempt_interim_ms: int = Field(default=50, ge=0, le=2000, description="also start it on an interim transcript "
                                    "whose words and the caller (by the VAD) have been still this long; 0: finals only")
    whisper_early_ms: int = Field(default=100, ge=0, le=2000, description="the embedded recogniser starts on the "
                                  "caller's pause this long, before the end of turn is confirmed; 0: at the end")

    api_token: str = Field(default="", description="Bearer token for /api, /dashboard and /metrics; required "
                           "beyond loopback; unset on loopback: a local token in the data directory")
    metrics_token: str = Field(default="", description="Bearer token for /metrics alone (a scraper's)")
    allowed_hosts: str = Field(default="", description="Extra Host names (comma separated) for the browser "
                               "routes and the API; the public URL's host and loopback names always pass; * any")
    forwarded_allow_ips: str = Field(default="127.0.0.1", description="Proxies trusted for X-Forwarded-For")
    header_timeout_s: float = Field(default=10.0, gt=0, description="A connection must send a request head within")
    keepalive_timeout_s: int = Field(default=5, ge=1, description="An idle keep-alive connection is closed after")
    max_connections: int = Field(default=1000, ge=8, description="HTTP connections before a request completes")
    max_connections_per_ip: int = Field(default=50, ge=1, description="The same, per address (proxies exempt)")
    ws_ping_interval_s: float = Field(default=20.0, gt=0, description="WebSocket ping interval")
    ws_ping_timeout_s: float = Field(default=20.0, gt=0, description="A WebSocket pong must come within this")

    ice_servers: str = Field(default="", description="Comma-separated stun:/turn: URLs for WebRTC")
    ice_username: str = ""
    ice_credential: str = ""

    # Outbound calls with answering-machine detection (issue 14, item 3); an agent's own outbound_* fields win.
    outbound_from: str = Field(default="", description="Caller id of outbound calls (E.164, the account's number)")
    outbound_max_calls: int = Field(default=10, ge=0, description="An agent's outbound calls ringing or live at once")
    outbound_dials_per_minute: float = Field(default=30.0, gt=0, description="An agent's dials a minute")
    outbound_dial_burst: int = Field(default=5, ge=1, description="An agent's dials at once before the rate applies")
    outbound_ring_s: int = Field(default=30, ge=5, le=600, description="How long an outbound call rings")
    amd_timeout_s: int = Field(default=30, ge=3, le=59, description="Twilio's answering-machine detection time")
    amd_wait_s: float = Field(default=35.0, gt=0, description="The greeting waits this long for the AMD verdict")
    # Post-call webhook (issue 14, item 6): retries of each agent's results webhook from the durable outbox.
    webhook_max_attempts: int = Field(default=8, ge=1, le=50, description="Attempts before a delivery is failed")
    webhook_retry_base_s: float = Field(default=5.0, gt=0, description="First retry delay; doubles per attempt")
    webhook_retry_max_s: float = Field(default=900.0, gt=0, description="Longest delay between two attempts")
    webhook_poll_s: float = Field(default=5.0, gt=0, description="How often the outbox is checked for due retries")

    # Call recording and PII redaction (issue 14, items 4-5): docs in README "Recording and redaction".
    record_calls: bool = Field(default=False, description="Record every call (else agents with record: true)")
    recording_s3_bucket: str = Field(default="", description="S3 bucket for recordings; default: the data directory")
    recording_s3_prefix: str = Field(default="recordings/", description="Key prefix of recordings in the bucket")
    recording_s3_endpoint_url: str = Field(default="", description="S3 endpoint (MinIO, a VPC endpoint, a test "
                                           "server); default AWS")
    recording_s3_region: str = Field(default="us-east-1", description="Region of the recordings bucket")
    redact_pii: bool = Field(default=True, description="Mask card numbers, phone numbers and emails in what is "
                             "stored and logged (an agent's redact_pii overrides)")

    # Startup speed: what startup derives from models and agents (FAQ embeddings, joined model files) is kept
    # here and reused while its inputs are unchanged; several processes (or test servers) may share one.
    cache_dir: Path | None = Field(default=None, description="Rebuildable startup cache; default the data directory")

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "text"

    # Drain without other nodes (clean-up): a lone node's calls end with a goodbye, not after 300 s of waiting.
    drain_alone_s: float = Field(default=20.0, ge=0, validation_alias=AliasChoices("AYBIZA_DRAIN_ALONE_S",
                                                                                    "AYBIZA_DRAIN_SECONDS"),
                                 description="On SIGTERM with no other node (no Redis): live calls may finish "
                                 "within this, then hear the goodbye and end")

    # Traces (OpenTelemetry): the standard OTEL_* names, read here like every setting and passed to the exporter.
    otel_endpoint: str = Field(default="", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
                               description="OTLP/HTTP base URL; traces go to its /v1/traces; unset: no tracing")
    otel_traces_endpoint: str = Field(default="", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                                      description="The traces URL itself (wins over the base URL)")
    otel_headers: str = Field(default="", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                                                                         "OTEL_EXPORTER_OTLP_HEADERS"),
                              description="Headers of each export: key=value,key2=value2 (values URL-encoded)")
    otel_service_name: str = Field(default="aybiza", validation_alias=AliasChoices("OTEL_SERVICE_NAME"),
                                   description="service.name of the spans")
    otel_sdk_disabled: bool = Field(default=False, validation_alias=AliasChoices("OTEL_SDK_DISABLED"),
                                    description="true: no tracing even with an endpoint")

    def secret(self, name: str) -> str | None:
        """A tool's secret by the name an agent file gives it: the environment variable ``AYBIZA_SECRET_<NAME>``.

        Read when a tool is called (a rotated secret needs no restart); only that
        prefix, so an agent file can never send the server's own keys anywhere.
        """
        return os.environ.get(f"AYBIZA_SECRET_{name.upper()}") or None

    @property
    def startup_cache_dir(self) -> Path:
        """Where rebuildable startup work is cached (``cache_dir``, else the data directory)."""
        return self.cache_dir or self.data_dir

    @property
    def base_url(self) -> str:
        """The public base URL without a trailing slash."""
        url = self.public_url or f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"
        return url.rstrip("/")

    @property
    def webhook_base_url(self) -> str:
        """Where Twilio posts ``/twiml`` (scale-out: the load balancer), without a trailing slash."""
        return (self.webhook_url or self.base_url).rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("AYBIZA_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for an ``aybiza serve`` this process starts: its own (provider keys, ``AYBIZA_*``
    settings, the AWS chain: the child's Settings read it as the operator's would), with ``overrides`` on top."""
    return {**os.environ, **overrides}


def limit_math_threads() -> None:
    """One BLAS/OpenMP thread per process (set before numpy loads them).

    Model inference already runs in worker threads; oversubscribed BLAS
    slows everything down under load.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

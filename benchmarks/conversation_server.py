"""The server ``benchmarks.conversation`` calls: ``aybiza serve``'s app on real provider clients.

``python -m benchmarks.conversation_server --port P --stack production --deepgram URL --bedrock URL``
builds the settings of a production deployment — Deepgram streaming STT and
Aura TTS through the real ``deepgram-sdk``, Claude through boto3's
ConverseStream, the default end-of-turn profile (smart-turn) — with only the
providers' URLs pointing at ``benchmarks.conversation_providers``; checks the
keys against them at startup as ``aybiza serve`` does; and serves
``create_app(settings, Engines(settings))`` with the bench instruments of
``benchmarks.scripted_server`` (a FrameClock first in every call,
``/bench/stats``) under the same uvicorn limits.

``--stack embedded`` serves the embedded default instead (faster-whisper,
the FAQ agent that ships in ``agents/``, Piper): every caller utterance is
recognised on this process's core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aybiza.config import Settings
from benchmarks.conversation_providers import API_KEY
from benchmarks.scripted_server import API_TOKEN, AUTH_TOKEN, GC_PAUSES, BenchInstruments, bench_settings, build_app

__all__ = ["AWS_ENV", "conversation_settings", "main"]

ROOT = Path(__file__).resolve().parents[1]
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIDAYBIZABENCH", "AWS_SECRET_ACCESS_KEY": "aybiza-bench-secret",
           "AWS_EC2_METADATA_DISABLED": "true"}
"""boto3's credentials for the fake Bedrock (it signs every request, the fake checks the signature's shape)."""


def conversation_settings(stack: str, port: int, data_dir: Path, *, deepgram: str = "", bedrock: str = "",
                          end_of_turn: str = "", log_level: str = "WARNING") -> Settings:
    """Settings for ``stack`` (``production`` or ``embedded``) on ``port``, call store in ``data_dir``.

    ``end_of_turn`` overrides the end-of-turn profile (default: the setting's default, smart-turn).
    """
    common: dict[str, Any] = {"max_calls": 100_000, "log_level": log_level, "health_probes": False}
    if end_of_turn:
        common["end_of_turn"] = end_of_turn
    if stack == "production":
        base = bench_settings(port, data_dir, log_level=log_level)
        # production's end-of-turn profile, not the scripted bench's fixed silence
        update = {"end_of_turn": Settings.model_fields["end_of_turn"].default, **common}
        return base.model_copy(update={"deepgram_url": deepgram, "deepgram_api_key": API_KEY,
                                       "bedrock_endpoint_url": bedrock, **update})
    if stack == "embedded":
        return Settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                        twilio_auth_token=AUTH_TOKEN, api_token=API_TOKEN, data_dir=data_dir,
                        agents_dir=ROOT / "agents", default_agent="default", **common)
    raise ValueError(f"unknown stack {stack!r}")


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description="aybiza serve on production or embedded providers, for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stack", choices=["production", "embedded"], default="production")
    parser.add_argument("--deepgram", default="", help="the fake Deepgram's base URL")
    parser.add_argument("--bedrock", default="", help="the fake Bedrock's endpoint URL")
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--end-of-turn", default="", choices=["", "fast", "balanced", "patient", "silence"])
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    os.environ.update(AWS_ENV)
    from aybiza.config import limit_math_threads
    from aybiza.engines import Engines
    from aybiza.logs import configure
    from aybiza.serving import serve

    limit_math_threads()
    GC_PAUSES.install()
    settings = conversation_settings(args.stack, args.port, args.data_dir or Path(tempfile.mkdtemp(prefix="aybiza-")),
                                     deepgram=args.deepgram, bedrock=args.bedrock, end_of_turn=args.end_of_turn,
                                     log_level=args.log_level)
    configure(settings.log_level, settings.log_format)
    engines = Engines(settings)
    engines.check()  # as aybiza serve: credentials present, then the keys asked of the (fake) providers
    for warning in engines.verify_keys():
        print(f"conversation server: warning: {warning}", file=sys.stderr)
    serve(build_app(settings, engines, BenchInstruments()), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

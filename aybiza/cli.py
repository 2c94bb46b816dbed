"""``aybiza serve | call | dial ...``: the command line."""

from __future__ import annotations

import argparse
import sys
import wave
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from .agents import load_agent
    from .config import Settings, limit_math_threads
    from .engines import Engines
    from .errors import AybizaError
    from .logs import configure
    from .server import create_app
    from .serving import serve

    limit_math_threads()
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "stt": args.stt, "llm": args.llm,
                                   "tts": args.tts}.items() if v is not None}
    settings = Settings(**overrides)
    configure(settings.log_level, settings.log_format, redact_pii=settings.redact_pii)
    engines = Engines(settings)
    try:
        load_agent(settings.default_agent, settings.agents_dir)
        engines.check()
        for warning in engines.verify_keys():
            print(f"aybiza: warning: {warning}", file=sys.stderr)
        app = create_app(settings, engines, freeze_heap=True)
    except AybizaError as error:
        print(f"aybiza: cannot serve: {error}", file=sys.stderr)
        return 2
    serve(app, settings)
    return 0


def _read_wav_as_ulaw(path: Path) -> bytes:
    import numpy as np

    from .codecs import lin2ulaw, resample

    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16-bit PCM WAV")
        rate, channels = wav.getframerate(), wav.getnchannels()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return lin2ulaw(resample(pcm.tobytes(), rate, 8000))


def _call(args: argparse.Namespace) -> int:
    import anyio
    import httpx
    from websockets.exceptions import WebSocketException

    from .codecs import ulaw2lin
    from .config import Settings
    from .testing.caller import Press, Say, Wait, caller_speech, place_call
    from .twilio_auth import auth_token_for

    settings = Settings()
    token = args.auth_token or auth_token_for(settings, create=False)
    if not token:
        raise SystemExit("no Twilio auth token: set TWILIO_AUTH_TOKEN or pass --auth-token")
    script: list[Say | Wait | Press] = [Wait(seconds=args.greeting_timeout)]
    if args.dtmf:
        script.append(Press(args.dtmf))
    utterances = [caller_speech(text, engine=args.voice) for text in args.say]
    utterances += [_read_wav_as_ulaw(Path(p)) for p in args.audio]
    for audio in utterances:
        script += [Say(audio), Wait(seconds=args.reply_timeout)]
    url = stream_url(args.url)
    try:
        report = anyio.run(lambda: place_call(url, script, auth_token=token, public_url=args.public_url,
                                              caller=args.caller, agent=args.agent))
    except (OSError, httpx.HTTPError, WebSocketException, RuntimeError) as error:
        raise SystemExit(f"could not call {url}: {type(error).__name__}: {error or 'no detail'}"
                         " (is `aybiza serve` running there? Its Twilio auth token and AYBIZA_PUBLIC_URL are"
                         " --auth-token and --public-url here)") from None
    for number, turn in enumerate(report.turns, 1):
        latency = f"{turn.latency * 1000:.0f} ms" if turn.latency is not None else "no reply"
        print(f"turn {number}: speech end -> first reply audio: {latency}")
    print(f"heard {len(report.heard) / 8000:.1f} s of agent audio; marks played {len(report.marks_played)}, "
          f"cleared {len(report.marks_cleared)}; closed {report.close_code} {report.close_reason}".rstrip())
    if args.out:
        with wave.open(args.out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(ulaw2lin(bytes(report.heard)))
        print(f"wrote {args.out}")
    return 0 if report.turns or not utterances else 1


def stream_url(url: str) -> str:
    """The Media Stream URL for ``--url``: a server's address as a user writes it (``http://host:8080``,
    ``localhost:8080``) or the stream URL itself (``ws://host:8080/twilio/stream``)."""
    from .transports.urls import media_stream_url, websocket_url

    parts = urlsplit(websocket_url(url if "://" in url else f"ws://{url}"))
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise SystemExit(f"--url {url!r}: give the server's address (http://host:port) or its ws:// stream URL")
    if parts.path.strip("/"):
        return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return media_stream_url(f"{parts.scheme}://{parts.netloc}")


def _calls(args: argparse.Namespace) -> int:
    import json

    import anyio

    from .config import Settings
    from .edge.calls import read_calls
    from .reports import calls_report

    settings = Settings()
    if args.id or args.json:
        body = anyio.run(lambda: read_calls(settings.data_dir, redis_url=settings.redis_url or None,
                                            archive_url=settings.archive_url or None, limit=args.limit,
                                            call_id=args.id))
        print(json.dumps(body, indent=2, default=str))
        return 0 if not args.id or body.get("call") else 1
    print(calls_report(settings, args.limit), end="")
    return 0


def _costs(args: argparse.Namespace) -> int:
    from .config import Settings
    from .reports import costs_report, scenario_report

    settings = Settings()
    if args.scenario or args.measured:
        overrides = {"calls_per_month": args.calls_per_month, "minutes_per_call": args.minutes_per_call,
                     "cache_hit_ratio": args.cache_hit_ratio, "gated_silence_share": args.gated_share}
        print(scenario_report(settings, measured=args.measured, overrides=overrides), end="")
    else:
        print(costs_report(settings), end="")
    return 0


def _route(args: argparse.Namespace) -> int:
    from .config import Settings
    from .errors import AybizaError
    from .reports import route_report

    try:
        report = route_report(Settings(), args.caller, residency=args.residency, probe=not args.no_probe)
    except AybizaError as error:
        print(f"aybiza: cannot route: {error}", file=sys.stderr)
        return 2
    print(report, end="")
    return 0


def _read_audio(path: Path, *, telephone: bool) -> tuple[bytes, int]:
    """A recording as mono PCM16 and its rate (WAV read directly, anything else through sox); ``telephone``: through
    8 kHz G.711 μ-law first, as a phone call would deliver it."""
    import shutil
    import subprocess

    import numpy as np

    from .codecs import lin2ulaw, resample, ulaw2lin

    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise wave.Error("not 16-bit")
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
        pcm = samples.tobytes()
    except (wave.Error, EOFError):
        if shutil.which("sox") is None:
            raise SystemExit(f"{path}: not a 16-bit WAV, and sox (to read other formats) is not installed") from None
        rate = 16000
        pcm = subprocess.run(["sox", "-V1", str(path), "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r",
                              str(rate), "-"], check=True, capture_output=True).stdout
    if telephone:
        return ulaw2lin(lin2ulaw(resample(pcm, rate, 8000))), 8000
    if rate not in (8000, 16000, 32000, 48000):
        return resample(pcm, rate, 16000), 16000
    return pcm, rate


def _spoken_language(engines: object, pcm: bytes, rate: int) -> tuple[str, float]:
    from .processors.language import DEFAULT_LANGUAGES

    recognizer = engines.whisper("es")  # type: ignore[attr-defined]  # the multilingual model
    result: tuple[str, float] = recognizer.detect_language(pcm, rate, frozenset(DEFAULT_LANGUAGES))
    return result


def _transcribe(args: argparse.Namespace) -> int:
    from .config import Settings, limit_math_threads
    from .engines import Engines

    limit_math_threads()
    pcm, rate = _read_audio(Path(args.file), telephone=args.telephone)
    engines = Engines(Settings())
    language = args.language or _spoken_language(engines, pcm, rate)[0] or "en"
    print(engines.whisper(language).transcribe(pcm, rate, language))
    return 0


def _listen(args: argparse.Namespace) -> int:
    from .config import Settings, limit_math_threads
    from .engines import Engines
    from .listen import listen
    from .processors.endpoint import PROFILES

    limit_math_threads()
    pcm, rate = _read_audio(Path(args.file), telephone=not args.wideband)
    engines = Engines(Settings())
    if args.end_of_turn == "silence":
        heard = listen(pcm, rate, silence_ms=args.silence_ms)
    else:
        model = engines.smart_turn
        heard = listen(pcm, rate, profile=PROFILES[args.end_of_turn], score=model.calibrated_probability)
    line = "" if args.wideband else " (through 8 kHz μ-law)"
    print(f"{args.file}: {len(pcm) / 2 / rate:.2f} s at {rate} Hz{line}")
    print("speech segments:")
    for start, stop in heard.segments:
        print(f"  {start:7.2f} - {stop:7.2f} s")
    print(f"turn ends ({args.end_of_turn}):")
    for turn_end in heard.turn_ends:
        probability = f", p={turn_end.probability:.2f}" if turn_end.probability is not None else ""
        print(f"  {turn_end.at:7.2f} s  ({(turn_end.at - turn_end.speech_ended_at) * 1000:4.0f} ms after speech, "
              f"by {turn_end.by}{probability})")
    print("quality per second:")
    for second, score, tier in heard.quality:
        print(f"  {second:4d} s  {score:.2f}  {tier}")
    language, confidence = _spoken_language(engines, pcm, rate)
    print(f"language: {language or 'unknown'} ({confidence:.2f})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench_cli import bench_main

    return bench_main(list(args.suites), quick=not args.full, out=args.out)


def _eval(args: argparse.Namespace) -> int:
    from .evals.cli import eval_main

    return eval_main(args.scenarios, server=args.server, json_out=args.json, auth_token=args.auth_token,
                     api_token=args.api_token, public_url=args.public_url, agents_dir=args.agents_dir,
                     only=args.only, server_log=args.server_log, judge_latency=not args.no_latency,
                     parallel=args.parallel)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aybiza`` command."""
    parser = argparse.ArgumentParser(prog="aybiza", description="Real-time voice AI platform.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the platform (TwiML webhook, Twilio stream, API)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--stt", choices=["whisper", "sphinx", "deepgram"])
    serve.add_argument("--llm", choices=["faq", "bedrock", "openai"])
    serve.add_argument("--tts", choices=["piper", "espeak", "flite", "deepgram"])
    serve.set_defaults(func=_serve)

    call = commands.add_parser("call", help="call a server like Twilio would and record the reply")
    call.add_argument("--url", default="ws://127.0.0.1:8080/twilio/stream",
                      help="the server (http://host:port) or its Media Stream URL (ws://host:port/twilio/stream)")
    call.add_argument("--public-url", help="the server's AYBIZA_PUBLIC_URL (for signatures)")
    call.add_argument("--say", action="append", default=[], help="say this (synthesized); repeatable")
    call.add_argument("--audio", action="append", default=[], help="say this WAV file; repeatable")
    call.add_argument("--voice", choices=["espeak", "flite"], default="espeak", help="caller's synthetic voice")
    call.add_argument("--dtmf", help="press these digits after the greeting")
    call.add_argument("--out", help="write what the caller heard to this WAV file")
    call.add_argument("--caller", default="+15555550123", help="the caller's number (From)")
    call.add_argument("--agent", help="agent id")
    call.add_argument("--auth-token", help="Twilio auth token (default: TWILIO_AUTH_TOKEN or the local one)")
    call.add_argument("--greeting-timeout", type=float, default=20.0)
    call.add_argument("--reply-timeout", type=float, default=30.0)
    call.set_defaults(func=_call)

    calls = commands.add_parser("calls", help="recent call records (live and archived)")
    calls.add_argument("--limit", type=int, default=20)
    calls.add_argument("--id", help="print one call's full record as JSON")
    calls.add_argument("--json", action="store_true", help="print the list as JSON")
    calls.set_defaults(func=_calls)

    costs = commands.add_parser("costs", help="cost per call, model and region; or a monthly scenario")
    costs.add_argument("--scenario", action="store_true", help="the monthly cost of a deployment (design inputs)")
    costs.add_argument("--measured", action="store_true", help="the scenario with ratios measured on real calls")
    costs.add_argument("--calls-per-month", type=float)
    costs.add_argument("--minutes-per-call", type=float)
    costs.add_argument("--cache-hit-ratio", type=float)
    costs.add_argument("--gated-share", type=float, help="share of audio gated as silence")
    costs.set_defaults(func=_costs)

    route = commands.add_parser("route", help="probe the regions; where a call from a number goes, and why")
    route.add_argument("--from", dest="caller", required=True, help="the caller's number, e.g. +447700900123")
    route.add_argument("--residency", choices=["EU", "US", "APAC", "caller"],
                       help="keep the call's data in this zone, or in the caller's own zone ('caller')")
    route.add_argument("--no-probe", action="store_true", help="do not probe the regions (health shows unknown)")
    route.set_defaults(func=_route)

    transcribe = commands.add_parser("transcribe", help="transcribe a recording with the embedded recogniser")
    transcribe.add_argument("file", help="a WAV file (other formats through sox)")
    transcribe.add_argument("--language", help="the language spoken (default: identified from the audio)")
    transcribe.add_argument("--telephone", action="store_true", help="pass it through 8 kHz μ-law first")
    transcribe.set_defaults(func=_transcribe)

    listen = commands.add_parser("listen", help="what a call would hear in a recording: speech, turn ends, quality, "
                                 "language")
    listen.add_argument("file", help="a WAV file (other formats through sox)")
    listen.add_argument("--end-of-turn", choices=["fast", "balanced", "patient", "silence"], default="balanced")
    listen.add_argument("--silence-ms", type=int, default=400, help="with --end-of-turn silence")
    listen.add_argument("--wideband", action="store_true", help="do not pass it through 8 kHz μ-law (a browser call)")
    listen.set_defaults(func=_listen)

    bench = commands.add_parser("bench", help="latency benchmarks against their budgets")
    bench.add_argument("suites", nargs="*", help="hop edge ingress turn capacity failover soak cache "
                       "providers_overhead accuracy endpoint voices conversation compare (default: all)")
    bench.add_argument("--full", action="store_true", help="full-length runs (soak: 10 minutes)")
    bench.add_argument("--out", type=Path, metavar="DIR",
                       help="write the report (JSON, Markdown, plots) here (default: ./bench-results)")
    bench.set_defaults(func=_bench)

    from .outbound.cli import add_dial_command  # outbound calls (issue 14, item 3)

    add_dial_command(commands)
    # Scenario evals (issue 14, item 7).
    evals = commands.add_parser("eval", help="scripted calls against a server, checked turn by turn")
    evals.add_argument("scenarios", type=Path, help="a scenario file (agents/default.scenarios.yaml ships)")
    evals.add_argument("--server", help="a running server's base URL (default: start one, as aybiza serve)")
    evals.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    evals.add_argument("--auth-token", help="with --server: Twilio auth token (default: TWILIO_AUTH_TOKEN or local)")
    evals.add_argument("--api-token", help="with --server: API token (default: AYBIZA_API_TOKEN or local)")
    evals.add_argument("--public-url", help="with --server: its AYBIZA_PUBLIC_URL, if not its base URL")
    evals.add_argument("--agents-dir", type=Path, help="agent files, to recognise FAQ answers (default: settings)")
    evals.add_argument("--only", action="append", help="run only this scenario (by name); repeatable")
    evals.add_argument("--server-log", type=Path, help="without --server: keep the server's log here")
    evals.add_argument("--no-latency", action="store_true", help="report latency budgets without failing on them")
    evals.add_argument("--parallel", type=int, default=2, choices=range(1, 17), metavar="N",
                       help="calls placed at a time (1-16, default 2)")
    evals.set_defaults(func=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aybiza`` command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

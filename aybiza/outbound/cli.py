"""``aybiza dial +1... --agent ID``: place an outbound call through a running server's ``POST /api/calls``.

The server dials (it holds the Twilio account); this command only asks, with
the API token (``--token``, ``AYBIZA_API_TOKEN``, or the local token of a
loopback server in ``<data dir>/api_token``), prints the server's answer and,
with ``--wait``, follows the call's record until it ends (its outcome:
``hangup``, ``voicemail`` ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

__all__ = ["add_dial_command"]

_POLL_S = 1.0


def add_dial_command(commands: Any) -> None:
    """The ``dial`` sub-command on the ``aybiza`` parser's sub-commands."""
    dial = commands.add_parser("dial", help="place an outbound call through a running server (POST /api/calls)")
    dial.add_argument("to", help="whom to call: an E.164 number (+14155550123) or a sip: URI")
    dial.add_argument("--agent", required=True, help="the agent that talks (or leaves the voicemail message)")
    dial.add_argument("--from", dest="from_", help="caller id, one of the account's numbers "
                      "(default: the server's AYBIZA_OUTBOUND_FROM)")
    dial.add_argument("--server", default="http://127.0.0.1:8080", help="the server's base URL")
    dial.add_argument("--token", help="API token (default: AYBIZA_API_TOKEN or the local one in the data dir)")
    dial.add_argument("--wait", action="store_true", help="follow the call until it ends; print its outcome")
    dial.add_argument("--wait-timeout", type=float, default=600.0, help="give up following after this many seconds")
    dial.set_defaults(func=_dial)


def _token(args: argparse.Namespace) -> str:
    from ..config import Settings
    from ..private import read_secret

    if args.token:
        return str(args.token)
    settings = Settings()
    if settings.api_token:
        return settings.api_token
    path = settings.data_dir / "api_token"
    if path.is_file():
        return read_secret(path)
    raise SystemExit(f"no API token: pass --token, set AYBIZA_API_TOKEN, or run where {path} is readable")


def _dial(args: argparse.Namespace) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {_token(args)}"}
    body = {"to": args.to, "agent": args.agent} | ({"from": args.from_} if args.from_ else {})
    server = args.server.rstrip("/")
    with httpx.Client(base_url=server, headers=headers, timeout=20) as client:
        response = client.post("/api/calls", json=body)
        answer = _json(response)
        print(json.dumps(answer))
        if response.status_code != 201:
            print(f"aybiza: dial refused ({response.status_code}): {answer.get('message', response.text)}",
                  file=sys.stderr)
            return 1
        if not args.wait:
            return 0
        return _follow(client, str(answer["call_id"]), args.wait_timeout)


def _follow(client: Any, call_id: str, timeout_s: float) -> int:
    """Poll the call's record until it ended; print its outcome (0), or give up (1)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/api/calls/{call_id}")
        if response.status_code == 200 and (record := response.json()).get("status") != "active":
            print(json.dumps({key: record.get(key) for key in ("call_id", "status", "outcome", "direction",
                                                                 "answered_by", "outcome_detail")}))
            return 0
        time.sleep(_POLL_S)
    print(f"aybiza: call {call_id} did not end within {timeout_s:g} s (or was never answered)", file=sys.stderr)
    return 1


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text.strip()[:300]}
    return body if isinstance(body, dict) else {"message": str(body)[:300]}

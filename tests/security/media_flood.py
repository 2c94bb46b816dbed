"""An attacker's Media Stream, run as its own process: ``start`` with a valid token, then 20 ms frames of noise
as fast as one client can send them, until the server closes the stream.

``python media_flood.py URL TOKEN CALL_SID ACCOUNT_SID CALLER`` prints one JSON line: close code and reason,
messages sent, seconds, and how many times real time that was.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from aybiza.testing.twilio_caller import TwilioCallerProtocol


def main(url: str, token: str, call_sid: str, account_sid: str, caller: str) -> None:
    protocol = TwilioCallerProtocol(custom_parameters={"call_token": token, "caller": caller}, call_sid=call_sid,
                                    account_sid=account_sid)
    noise = base64.b64encode(os.urandom(160)).decode()
    sent = 0
    with connect(url, open_timeout=30) as ws:
        ws.send(protocol.connected())
        ws.send(protocol.start())
        started = time.monotonic()
        try:
            while time.monotonic() - started < 60:
                ws.send(protocol.media(b"\x00").replace('"AA=="', f'"{noise}"'))  # 20 ms of noise
                sent += 1
            ws.recv(timeout=10)
        except (ConnectionClosed, TimeoutError):
            pass
        elapsed = time.monotonic() - started
        code, reason = ws.close_code, ws.close_reason or ""
    print(json.dumps({"code": code, "reason": reason, "sent": sent, "seconds": round(elapsed, 3),
                      "times_real_time": round(sent * 0.02 / max(elapsed, 1e-6))}))


if __name__ == "__main__":
    main(*sys.argv[1:6])

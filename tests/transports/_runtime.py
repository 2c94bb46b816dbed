"""A real Runtime for transport tests: agents in a temporary directory, espeak-ng as the local voice, stand-in stages.

Only the stack is replaced (no model loads); admission, call tokens, the session, the failsafe voice and the
metrics are the product's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.runtime import Runtime
from aybiza.stack import SpeechStack

AGENT = """\
id: {id}
name: Test Desk
greeting: Hello.
system_prompt: You answer the phone.
fallback: Sorry?
apology: Sorry, a problem.
goodbye: Goodbye.
handoff: One moment.
{extra}
"""


def stand_in_runtime(root: Path, stack: Callable[[Settings, Engines], SpeechStack], **values: Any) -> Runtime:
    """A Runtime whose agents are ``default`` and ``desk`` (which transfers to +14155550100), on ``stack``."""
    agents = root / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "default.yaml").write_text(AGENT.format(id="default", extra=""))
    (agents / "desk.yaml").write_text(AGENT.format(id="desk", extra="transfer_to: '+14155550100'"))
    defaults: dict[str, Any] = {"data_dir": root / "var", "agents_dir": agents, "tts": "espeak",
                                "twilio_auth_token": "t0ken"}
    runtime = Runtime(Settings(**(defaults | values)))
    runtime.stack = stack(runtime.settings, runtime.engines)
    return runtime

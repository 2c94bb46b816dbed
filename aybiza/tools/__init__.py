"""What an agent can do on a call: tools the model calls and actions an FAQ binds.

* :mod:`.specs` — the agent file's ``tools`` list (HTTP tools and built-ins) and FAQ actions;
* :mod:`.schema` — the JSON-schema subset tool arguments are declared and checked in;
* :mod:`.http` — calling an HTTP tool (URL, method, timeout, secret auth header, fields kept);
* :mod:`.digits` — collecting keypad digits (N digits or a terminator, timeout, re-prompt);
* :mod:`.tones` — DTMF tones to send digits in-band, and the hold tune;
* :mod:`.toolbox` — a call's tools: a round of calls run to results, recorded on the call.

Importing this package imports nothing else: the agent configuration
(:mod:`aybiza.agents`) uses :mod:`.specs` without pulling in the model stages.
"""

from __future__ import annotations

__all__: list[str] = []

"""Scenario evals: scripted phone calls against a running server, checked turn by turn (``aybiza eval``).

* :mod:`.scenarios` — the scenario file (what the caller says or presses, what must come back);
* :mod:`.checks` — each expectation against the call record and what the caller measured;
* :mod:`.runner` — places the calls through the Twilio-like caller and reads their records over the API;
* :mod:`.local` — a server of its own, assembled as ``aybiza serve``, with the fake Twilio REST API;
* :mod:`.report` — the pass/fail table and the JSON.
"""

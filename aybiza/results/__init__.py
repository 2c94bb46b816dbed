"""Post-call results: what an agent's webhook receives when a call ends, and how it gets there.

* :mod:`.spec` — the agent's ``webhook:`` block (URL, secret name, fields to extract);
* :mod:`.signing` — the ``X-Aybiza-Signature`` header (HMAC-SHA256 over timestamp and body) and its check;
* :mod:`.summary` — a summary and the agent's fields, from the model when one is configured, else extractive;
* :mod:`.outbox` — the durable outbox in the call archive's database (SQLite or PostgreSQL);
* :mod:`.delivery` — the background sender: retries with exponential backoff and jitter, bounded attempts.
"""

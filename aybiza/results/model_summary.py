"""A call's summary and fields from the configured model: one non-streamed request asking for JSON.

Bedrock (Converse) or an OpenAI-compatible server (``/chat/completions``
with ``stream: false`` and ``response_format: json_object``), whichever the
server answers calls with. The model sees the conversation as the archive
stored it (digits already masked) and the agent's field names and
descriptions, and must answer with ``{"summary": ..., "fields": {...}}``.
Anything else — an error, a timeout, prose instead of JSON — falls back to
the extractive summary (:mod:`.summary`), marked as such: a webhook is never
held back because a model was having a bad day. Runs in the background
sender, never on a call.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx

from ..agents import AgentConfig
from ..config import Settings
from ..edge.records import CallRecord
from ..routing.tiers import resolve_model
from .spec import WebhookSpec
from .summary import CallResults, extractive_results

if TYPE_CHECKING:
    from ..engines import Engines
    from .delivery import Summarizer

__all__ = ["model_summarizer", "summary_prompt", "parse_results"]

log = logging.getLogger("aybiza.results")

_SYSTEM = ("You summarise finished phone calls for a business's records. Reply with one JSON object and nothing "
           "else.")
_TIMEOUT_S = 20.0
_MAX_TOKENS = 400
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def summary_prompt(record: CallRecord, spec: WebhookSpec) -> str:
    """What the model is asked: the transcript, the fields wanted, and the JSON shape to answer in."""
    lines = []
    for turn in record.turns:
        if turn.user:
            lines.append(f"Caller: {turn.user}")
        if turn.agent:
            lines.append(f"Agent: {turn.agent}")
    wanted = "\n".join(f"- {f.name}" + (f": {f.description}" if f.description else "") for f in spec.fields)
    shape = json.dumps({"summary": "...", "fields": {f.name: "... or null" for f in spec.fields}})
    return (f"Transcript of a call to agent {record.agent_id} (it ended: {record.outcome or 'unknown'}):\n"
            + ("\n".join(lines) or "(nothing was said)")
            + "\n\nWrite a summary of one or two sentences"
            + (f" and fill in these fields (null when the call does not say):\n{wanted}" if spec.fields else "")
            + f"\n\nAnswer with only this JSON object: {shape}")


def parse_results(text: str, spec: WebhookSpec, source: str) -> CallResults:
    """The model's JSON answer as results; ValueError when it is not one."""
    match = _OBJECT.search(text)
    if match is None:
        raise ValueError("no JSON object in the answer")
    data = json.loads(match.group(0))
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError("the answer has no summary")
    given = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    fields = {f.name: _scalar(given.get(f.name)) for f in spec.fields}
    return CallResults(summary.strip()[:2000], fields, source)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return None if value.strip().lower() in ("", "null", "none", "unknown") else value[:500]
    return json.dumps(value)[:500]


def model_summarizer(settings: Settings, engines: Engines | None) -> Summarizer | None:
    """The summarizer for the configured model (None on the embedded stack: extractive)."""
    if settings.llm == "openai":
        return _OpenAISummarizer(settings)
    if settings.llm == "bedrock" and engines is not None:
        return _BedrockSummarizer(settings, engines)
    return None


class _OpenAISummarizer:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.openai_base_url.rstrip("/") + "/chat/completions"
        self.model = settings.openai_model
        self.api_key = settings.openai_api_key

    async def __call__(self, record: CallRecord, agent: AgentConfig | None, spec: WebhookSpec) -> CallResults:
        body = {"model": self.model, "stream": False, "temperature": 0, "max_tokens": _MAX_TOKENS,
                "response_format": {"type": "json_object"},
                "messages": [{"role": "system", "content": _SYSTEM},
                             {"role": "user", "content": summary_prompt(record, spec)}]}
        try:
            async with httpx.AsyncClient(timeout=_TIMEOUT_S) as client:
                response = await client.post(self.url, json=body,
                                             headers={"Authorization": f"Bearer {self.api_key}"})
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
            return parse_results(str(text), spec, f"model:{self.model}")
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as error:
            log.warning("call %s: model summary failed (%s: %s); extractive instead", record.call_id,
                        type(error).__name__, error)
            return extractive_results(record, agent, spec)


class _BedrockSummarizer:
    def __init__(self, settings: Settings, engines: Engines) -> None:
        self.settings = settings
        self.engines = engines

    async def __call__(self, record: CallRecord, agent: AgentConfig | None, spec: WebhookSpec) -> CallResults:
        settings = self.settings
        region = record.route.get("region") or settings.bedrock_region
        if region == "local":
            region = settings.bedrock_region
        try:
            model = resolve_model(settings.model_tier, region, settings.model_overrides, thinking=False).model_id
            client = self.engines.bedrock(region, read_timeout=_TIMEOUT_S)
            response = await anyio.to_thread.run_sync(lambda: client.converse(
                modelId=model, system=[{"text": _SYSTEM}],
                messages=[{"role": "user", "content": [{"text": summary_prompt(record, spec)}]}],
                inferenceConfig={"maxTokens": _MAX_TOKENS, "temperature": 0}))
            text = "".join(block.get("text", "") for block in response["output"]["message"]["content"])
            return parse_results(text, spec, f"model:{model}")
        except Exception as error:  # botocore's errors, a bad answer: the summary must not stop the webhook
            log.warning("call %s: model summary failed (%s: %s); extractive instead", record.call_id,
                        type(error).__name__, error)
            return extractive_results(record, agent, spec)

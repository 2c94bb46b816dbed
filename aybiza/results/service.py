"""The post-call results service of a server process, built from Settings on its call store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Settings
from ..edge.agent_configs import AgentConfigs
from ..edge.calls import CallStore
from ..observability.metrics import Metrics
from .delivery import PostCallResults, RetryPolicy
from .outbox import open_outbox

if TYPE_CHECKING:
    from ..engines import Engines

__all__ = ["open_post_call_results"]


def open_post_call_results(settings: Settings, store: CallStore, agents: AgentConfigs, metrics: Metrics,
                           engines: Engines | None = None) -> PostCallResults:
    """Deliveries in the outbox next to ``store``'s archive; summaries by the configured model, if any."""
    from .model_summary import model_summarizer

    policy = RetryPolicy(max_attempts=settings.webhook_max_attempts, base_s=settings.webhook_retry_base_s,
                         max_s=settings.webhook_retry_max_s)
    return PostCallResults(open_outbox(store.archive), secret=settings.secret, agent=agents.get,
                           registry=metrics.registry, summarizer=model_summarizer(settings, engines),
                           policy=policy, poll_s=settings.webhook_poll_s)

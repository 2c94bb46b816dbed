"""Read one number out of a Prometheus ``/metrics`` page, as tests and checks ask it.

The page is parsed by prometheus_client's own text parser (the format has
escapes, timestamps and ``# HELP`` lines a regular expression gets wrong).
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["metric"]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` (``..._total``, ``..._count``) whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                total += sample.value
    return total

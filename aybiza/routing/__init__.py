"""Per-call decisions: region, model tier, cost."""

"""Speech-to-text stages, one module per provider."""

"""Text-to-speech stages, one module per provider."""

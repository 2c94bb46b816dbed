"""Model stages (LLMs and the FAQ responder), one module per provider."""

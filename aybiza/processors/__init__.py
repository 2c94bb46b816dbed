"""What happens to frames: edge preprocessing, turns, STT, LLM and TTS stages."""

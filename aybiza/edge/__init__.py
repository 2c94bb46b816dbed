"""State that outlives a frame: cache and call records."""

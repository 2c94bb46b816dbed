"""The operator console: call list, one call's timeline and player, and the dashboard's pictures (issue 17)."""

"""Call recording: two time-aligned channels (caller left, agent right) to the data directory or S3.

:mod:`.recorder` lays the audio out and streams the WAV; :mod:`.storage`
files it (and reads it back for the API); :mod:`.call` hooks a call's
transport; :mod:`.info` is what the call record links. Nothing is imported
here, so the call record can import :mod:`.info` alone. See README
"Recording and redaction".
"""

"""The edges of a call: bytes on a socket <-> frames."""

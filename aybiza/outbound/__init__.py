"""Outbound calls: dialling through Twilio's REST API, per-agent limits, answering-machine detection."""

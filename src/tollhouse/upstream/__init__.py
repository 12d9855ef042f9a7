"""Forwarding to the upstream: the HTTP client and the table of its transport errors."""

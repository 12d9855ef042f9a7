"""The request path: one ASGI pipeline from a client's request to the upstream's answer."""

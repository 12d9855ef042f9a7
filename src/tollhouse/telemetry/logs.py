"""Logging set-up: plain lines on stderr, one place."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own "Exception in ASGI application" traces are useful; its access log is not.
    logging.getLogger("uvicorn.access").disabled = True

"""tollhouse: cost and rate-limit sidecar for OpenAI-style agent APIs."""

from importlib.metadata import version as _version

__version__ = _version("tollhouse")

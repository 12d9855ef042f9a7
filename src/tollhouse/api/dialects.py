"""Request dialects: the OpenAI path an Azure OpenAI request path stands for.

Apps on Azure OpenAI call ``/openai/...`` (with an ``api-version`` query parameter),
``/openai/deployments/{deployment}/chat/completions`` and the newer v1 surface
``/openai/v1/...``. Each is the twin of an OpenAI ``/v1/...`` path, so one route
table serves both: classification reads the canonical path, while the request is
forwarded exactly as it came.
"""

from __future__ import annotations

from typing import Final

OPENAI: Final = "/v1/"
AZURE: Final = "/openai/"
# The prefixes of the paths tollhouse serves.
SERVED: Final = (OPENAI, AZURE)
_AZURE_V1: Final = "/openai/v1/"
_DEPLOYMENTS: Final = "/openai/deployments/"
# The endpoints Azure serves per model deployment (the rest it serves once per resource).
DEPLOYMENT_ENDPOINTS: Final = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "audio/transcriptions",
        "audio/translations",
        "audio/speech",
        "images/generations",
        "images/edits",
    }
)


def served(path: str) -> bool:
    """Whether a path is one of the dialects' (``/v1/...`` or ``/openai/...``)."""
    return path.startswith(SERVED)


def canonical_path(path: str) -> str:
    """The OpenAI path ``path`` stands for; an OpenAI path is its own.

    ``/openai/v1/x`` and ``/openai/x`` stand for ``/v1/x``. Under
    ``/openai/deployments/{deployment}/`` the deployment names a model, never an
    object, and is dropped: a deployment endpoint stands for ``/v1/{endpoint}``,
    anything else for a path no OpenAI route has (``/openai/deployments/...``
    without the deployment). The query (``api-version``) chooses a version of the
    API, never the operation, so it has no part in this.
    """
    if not path.startswith(AZURE):
        return path
    if path.startswith(_AZURE_V1):
        return path[len("/openai") :]
    if path.startswith(_DEPLOYMENTS):
        _, _, endpoint = path[len(_DEPLOYMENTS) :].partition("/")
        if endpoint in DEPLOYMENT_ENDPOINTS:
            return OPENAI + endpoint
        return _DEPLOYMENTS + endpoint
    return OPENAI + path[len(AZURE) :]

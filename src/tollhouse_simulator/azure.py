"""Azure OpenAI's dialect: its paths served by the handlers of their OpenAI twins.

Azure serves ``/openai/...`` (which needs an ``api-version``; without one it answers
404 "Resource not found"), ``/openai/deployments/{deployment}/chat/completions``
and the v1 surface ``/openai/v1/...`` (no ``api-version``, or ``v1`` / ``preview``).
A key comes in the ``api-key`` header, or as a bearer token. The errors Azure gives
before a request reaches the API are shaped ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from tollhouse_simulator import errors
from tollhouse_simulator.errors import SimulatorError

PREFIX: Final = "/openai/"
SCOPE_KEY: Final = "simulator.azure"  # set on the scope of a request in Azure's dialect
_V1: Final = "/openai/v1/"
_DEPLOYMENTS: Final = "/openai/deployments/"
# The per-deployment endpoints the simulator serves (Azure has more: embeddings, audio...).
DEPLOYMENT_ENDPOINTS: Final = frozenset({"chat/completions"})
V1_VERSIONS: Final = frozenset({"v1", "preview"})
DATED_VERSION: Final = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
ACCESS_DENIED: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)


class AzureError(SimulatorError):
    """An error Azure answers itself, in its own shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message, code=code)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found() -> AzureError:
    return AzureError(404, "404", "Resource not found")


def twin_path(path: str) -> str | None:
    """The OpenAI path an Azure path is served as; None for one Azure does not serve."""
    if path.startswith(_V1):
        return path[len("/openai") :]
    if path.startswith(_DEPLOYMENTS):
        _, _, endpoint = path[len(_DEPLOYMENTS) :].partition("/")
        return "/v1/" + endpoint if endpoint in DEPLOYMENT_ENDPOINTS else None
    if path.startswith(PREFIX):
        return "/v1/" + path[len(PREFIX) :]
    return None


def check_version(path: str, query: str) -> None:
    """Raises Azure's error for a missing or unsupported ``api-version``."""
    versions = [
        value for name, value in parse_qsl(query, keep_blank_values=True) if name == "api-version"
    ]
    if path.startswith(_V1):
        if versions and versions[-1] not in V1_VERSIONS:
            raise AzureError(400, "BadRequest", "API version not supported")
        return
    if not versions:
        raise not_found()
    if DATED_VERSION.match(versions[-1]) is None:
        raise AzureError(400, "BadRequest", "API version not supported")


def check_key(headers: dict[str, str], keys: frozenset[str] | None) -> None:
    """An ``api-key``, or a bearer token, that the simulator accepts."""
    key = headers.get("api-key", "").strip()
    if not key:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key or (keys is not None and key not in keys):
        raise AzureError(401, "401", ACCESS_DENIED)


def routed(scope: Scope, twin: str) -> Scope:
    """The request's scope with its path replaced by its OpenAI twin, for the router."""
    raw: bytes | None = scope.get("raw_path")
    raw_twin = twin_path(raw.decode("latin-1")) if raw else None
    raw_path = raw_twin.encode("latin-1") if raw_twin else quote(twin).encode()
    return {**scope, "path": twin, "raw_path": raw_path, SCOPE_KEY: True}


async def handle_unrouted(request: Request, exc: Exception) -> Response:
    """A path no route serves: Azure's "Resource not found" in its dialect, else OpenAI's."""
    if request.scope.get(SCOPE_KEY):
        return not_found().response()
    return await errors.handle_unrouted(request, exc)

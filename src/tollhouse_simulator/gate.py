"""What every request passes first: the request log, the API key, rate limits, the beta header.

A request in Azure OpenAI's dialect is checked as Azure checks it (``azure.py``) and
routed to the handler of its OpenAI twin.

Plain ASGI, so streamed responses pass through untouched apart from the headers it adds.
"""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollhouse_simulator import azure
from tollhouse_simulator.errors import SimulatorError
from tollhouse_simulator.ratelimit import request_class
from tollhouse_simulator.state import RecordedRequest, Simulator

ADMIN_PREFIX = "/v1/organization/"  # admin keys only: checked by its routes
BETA_PREFIXES = ("/v1/assistants", "/v1/threads", "/v1/vector_stores")
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def mask_key(key: str) -> str:
    """Shows only the ends of a key, as OpenAI's error does (``sk-ab***xyz``)."""
    head = min(5, len(key) // 3)
    tail = min(4, len(key) // 4)
    return f"{key[:head]}***{key[len(key) - tail :] if tail else ''}"


def check_key(authorization: str | None, keys: frozenset[str] | None) -> None:
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise SimulatorError(401, NO_KEY, code="invalid_api_key")
    if keys is not None and key not in keys:
        raise SimulatorError(
            401,
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


def check_beta(path: str, beta: str | None) -> None:
    if not path.startswith(BETA_PREFIXES):
        return
    values = {value.strip() for value in (beta or "").split(",")}
    if "assistants=v2" not in values:
        raise SimulatorError(
            400,
            "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please "
            "try again by setting the header 'OpenAI-Beta: assistants=v2'.",
            code="invalid_beta",
        )


class Gate:
    def __init__(self, app: ASGIApp, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim = self.simulator
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        dialect = path.startswith(azure.PREFIX)
        twin = azure.twin_path(path) if dialect else path
        kind = request_class(method, twin or path)
        query = scope.get("query_string", b"").decode("latin-1")
        sim.record(RecordedRequest(method, path, query, headers), kind)
        added = {"x-request-id": "req_" + secrets.token_hex(16)}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in added.items():
                    response_headers[name] = value
                sim.counters[f"status:{message['status']}"] += 1
            await send(message)

        try:
            if dialect:
                azure.check_version(path, query)
                azure.check_key(headers, sim.config.api_keys)
                if twin is None:
                    raise azure.not_found()
                scope = azure.routed(scope, twin)
            elif not path.startswith(ADMIN_PREFIX):
                check_key(headers.get("authorization"), sim.config.api_keys)
            added.update(sim.limiter.admit(kind, sim.now()))
            if not dialect:  # Azure does not ask for the Assistants beta header
                check_beta(path, headers.get("openai-beta"))
        except SimulatorError as error:
            await error.response()(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

"""OpenAI-shaped errors: the exception handlers raise, and the one place that renders them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)


class SimulatorError(Exception):
    """An error answered to the client as ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> SimulatorError:
    return SimulatorError(400, message, param=param, code=code)


def not_found(kind: str, object_id: str) -> SimulatorError:
    """The 404 for an unknown id, worded per object kind ("No thread found with id 'x'.")."""
    return SimulatorError(404, f"No {kind} found with id '{object_id}'.")


def no_such_file(file_id: str) -> SimulatorError:
    """Files are worded apart from the other kinds, naming the parameter."""
    return SimulatorError(404, f"No such File object: {file_id}", param="id")


def not_in_store(file_id: str, vector_store_id: str) -> SimulatorError:
    return SimulatorError(
        404, f"No file found with id '{file_id}' in vector store '{vector_store_id}'."
    )


def invalid_url(method: str, path: str) -> SimulatorError:
    return SimulatorError(404, f"Invalid URL ({method} {path})")


async def handle_simulator_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, SimulatorError):
        raise exc
    return exc.response()


async def handle_unrouted(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 for a path no route serves, answered like OpenAI's invalid URL."""
    return invalid_url(request.method, request.url.path).response()

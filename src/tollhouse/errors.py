"""OpenAI-shaped error responses, and the one place exceptions become HTTP statuses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class ErrorResponse:
    """A complete error answer: status, extra headers and the JSON envelope."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    headers: Headers = field(default_factory=list)

    def body(self) -> bytes:
        envelope = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return json.dumps(envelope).encode()

    def asgi_headers(self, body: bytes | None = None) -> Headers:
        length = len(body if body is not None else self.body())
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
            *self.headers,
        ]


class TollhouseError(Exception):
    """Base class of errors a client is answered with; each knows its response."""

    def response(self) -> ErrorResponse:
        raise NotImplementedError


def not_found(method: str, path: str) -> ErrorResponse:
    return ErrorResponse(
        status=404,
        message=f"Invalid URL ({method} {path})",
        type="invalid_request_error",
    )

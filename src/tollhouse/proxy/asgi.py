"""ASGI plumbing for the request path: reading the client's body, answering errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from tollhouse.api.errors import ErrorResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class StreamAborted(Exception):
    """A response that had started could not be completed; the connection must drop."""


async def request_body(receive: Receive) -> bytes | AsyncIterator[bytes] | None:
    """The request body: bytes when it came in one message, else a chunk stream."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    first: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return first or None

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    return chunks()


class BodyTooLarge(Exception):
    """The request body is larger than the caller allows."""


async def whole_body(receive: Receive, limit: int) -> bytes:
    """The request body read whole, however it was framed; raises ``BodyTooLarge``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLarge
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_error(send: Send, error: ErrorResponse) -> None:
    body = error.body()
    await send(
        {"type": "http.response.start", "status": error.status, "headers": error.asgi_headers(body)}
    )
    await send({"type": "http.response.body", "body": body})

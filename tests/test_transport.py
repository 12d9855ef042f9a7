"""The proxy is transparent: whatever the upstream answers reaches the client unchanged.

These upstreams are small ASGI apps that do what the simulator never does
(odd statuses, non-JSON errors, slow answers, streams that stop halfway).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator

import httpx2 as httpx
import openai
import pytest
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import ProxyFactory
from tests.servers import serve
from tollhouse.ledger.models import ResponseToolCall


def echo_app() -> Starlette:
    """Answers with what it received, plus a few headers a proxy must leave alone."""

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
                "body": body.decode("latin-1"),
            },
            status_code=int(request.headers.get("x-want-status", "200")),
            headers={"x-ratelimit-remaining-requests": "41", "x-request-id": "req_123"},
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "DELETE", "PUT"])])


def header_values(echoed: dict[str, object], name: str) -> list[str]:
    return [v for k, v in echoed["headers"] if k == name]  # type: ignore[attr-defined]


def test_request_reaches_upstream_unchanged(make_proxy: ProxyFactory) -> None:
    with serve(echo_app()) as upstream, make_proxy(upstream.url + "/v1") as proxy:
        response = httpx.post(
            proxy.url + "/v1/threads/thread_abc/runs?include[]=step_details.tool_calls%5B*%5D&x=1",
            content=b'{"assistant_id": "asst_1"}',
            headers={
                "Authorization": "Bearer sk-test",
                "OpenAI-Beta": "assistants=v2",
                "Content-Type": "application/json",
                "X-Custom": "kept",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped",
            },
        )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert echoed["raw_path"] == "/v1/threads/thread_abc/runs"
    assert echoed["query"] == "include[]=step_details.tool_calls%5B*%5D&x=1"
    assert echoed["body"] == '{"assistant_id": "asst_1"}'
    assert header_values(echoed, "authorization") == ["Bearer sk-test"]
    assert header_values(echoed, "openai-beta") == ["assistants=v2"]
    assert header_values(echoed, "x-custom") == ["kept"]
    assert header_values(echoed, "content-length") == ["26"]
    assert header_values(echoed, "x-hop") == []
    assert header_values(echoed, "host") == [upstream.url.removeprefix("http://")]
    # nothing the client did not send is added
    assert header_values(echoed, "user-agent") == [response.request.headers["user-agent"]]
    # upstream headers come back untouched
    assert response.headers["x-ratelimit-remaining-requests"] == "41"
    assert response.headers["x-request-id"] == "req_123"


def test_malformed_json_is_forwarded_as_is(make_proxy: ProxyFactory) -> None:
    with serve(echo_app()) as upstream, make_proxy(upstream.url) as proxy:
        response = httpx.post(
            proxy.url + "/v1/assistants",
            content=b'{"model": "gpt-4o",,,',
            headers={"x-want-status": "400", "content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["body"] == '{"model": "gpt-4o",,,'


def test_non_json_error_bodies_and_odd_statuses_pass_through(make_proxy: ProxyFactory) -> None:
    async def teapot(request: Request) -> Response:
        return PlainTextResponse(
            "<html>gateway says no</html>", status_code=418, headers={"x-extra": "yes"}
        )

    app = Starlette(routes=[Route("/v1/assistants", teapot)])
    with serve(app) as upstream, make_proxy(upstream.url + "/v1") as proxy:
        response = httpx.get(proxy.url + "/v1/assistants")
        assert response.status_code == 418
        assert response.text == "<html>gateway says no</html>"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-extra"] == "yes"
        assert (
            proxy.sample(
                "tollhouse_requests_total",
                tenant="default",
                **{"class": "GET"},
                operation="assistants.list",
                outcome="forwarded",
            )
            == 1
        )


def test_upstream_429_passes_through_untouched(make_proxy: ProxyFactory) -> None:
    error = {
        "error": {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }

    async def limited(request: Request) -> Response:
        return JSONResponse(
            error,
            status_code=429,
            headers={
                "retry-after": "7",
                "retry-after-ms": "6500",
                "x-ratelimit-limit-requests": "300",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "6.5s",
            },
        )

    app = Starlette(routes=[Route("/v1/threads", limited, methods=["POST"])])
    with serve(app) as upstream, make_proxy(upstream.url + "/v1") as proxy:
        with pytest.raises(openai.RateLimitError) as caught:
            proxy.client().beta.threads.create()
    response = caught.value.response
    assert response.json() == error
    assert response.headers["retry-after"] == "7"
    assert response.headers["retry-after-ms"] == "6500"
    assert response.headers["x-ratelimit-reset-requests"] == "6.5s"
    assert caught.value.code == "rate_limit_exceeded"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_upstream_down_is_a_502_with_an_openai_shaped_body(make_proxy: ProxyFactory) -> None:
    with make_proxy(f"http://127.0.0.1:{closed_port()}/v1") as proxy:
        with pytest.raises(openai.InternalServerError) as caught:
            proxy.client().beta.assistants.list()
        assert caught.value.status_code == 502
        body = caught.value.response.json()["error"]
        assert set(body) == {"message", "type", "param", "code"}
        assert body["code"] == "upstream_unavailable"
        assert "connection failed" in body["message"]
        assert "127.0.0.1" not in body["message"]  # where the upstream is stays in the log
        outcome = proxy.sample(
            "tollhouse_requests_total",
            tenant="default",
            **{"class": "GET"},
            operation="assistants.list",
            outcome="upstream_error",
        )
        assert outcome == 1


def test_upstream_timeout_is_a_504(make_proxy: ProxyFactory) -> None:
    release = threading.Event()

    async def slow(request: Request) -> Response:
        await asyncio.to_thread(release.wait, 30)
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/assistants", slow)])
    with serve(app) as upstream, make_proxy(upstream.url, read_timeout=0.2) as proxy:
        response = httpx.get(proxy.url + "/v1/assistants")
        release.set()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.json()["error"]["type"] == "server_error"
    assert "127.0.0.1" not in response.json()["error"]["message"]


def test_paths_outside_v1_are_not_forwarded(make_proxy: ProxyFactory) -> None:
    with serve(echo_app()) as upstream, make_proxy(upstream.url) as proxy:
        response = httpx.get(proxy.url + "/admin/secrets")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /admin/secrets)"


def test_unknown_v1_paths_are_forwarded_and_counted_as_unknown(make_proxy: ProxyFactory) -> None:
    with serve(echo_app()) as upstream, make_proxy(upstream.url) as proxy:
        response = httpx.put(proxy.url + "/v1/some/new/thing", content=b"x")
        assert response.status_code == 200
        assert response.json()["path"] == "/v1/some/new/thing"
        assert (
            proxy.sample(
                "tollhouse_requests_total",
                tenant="default",
                **{"class": "UNKNOWN"},
                operation="unknown",
                outcome="forwarded",
            )
            == 1
        )


def test_client_disconnect_mid_stream_cancels_the_upstream(make_proxy: ProxyFactory) -> None:
    upstream_saw_cancel = threading.Event()
    first_sent = threading.Event()

    async def events(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield b'event: thread.run.created\ndata: {"id": "run_1"}\n\n'
                first_sent.set()
                await asyncio.Event().wait()  # holds the stream open until cancelled
            finally:
                upstream_saw_cancel.set()

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/threads/{tid}/runs", events, methods=["POST"])])
    with serve(app) as upstream, make_proxy(upstream.url) as proxy:
        with httpx.stream("POST", proxy.url + "/v1/threads/thread_1/runs", json={}) as response:
            first = next(response.iter_raw())
            assert first.startswith(b"event: thread.run.created")
        # the client closed its connection; the upstream's generator must be cancelled
        assert upstream_saw_cancel.wait(10)
        assert first_sent.is_set()
        aborts = proxy.sample("tollhouse_stream_aborts_total", reason="client_disconnect")
        in_flight_settled = _wait_for(lambda: proxy.sample("tollhouse_in_flight_requests") == 0)
    assert aborts == 1
    assert in_flight_settled


def _wait_for(predicate: object, attempts: int = 500) -> bool:
    """Polls a condition another thread will make true (bounded; no fixed sleeps)."""
    event = threading.Event()
    for _ in range(attempts):
        if predicate():  # type: ignore[operator]
            return True
        event.wait(0.01)
    return False


def test_upstream_breaking_mid_stream_drops_the_client_connection(
    make_proxy: ProxyFactory,
) -> None:
    async def broken(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"event: thread.run.created\ndata: {}\n\n"
            raise RuntimeError("upstream died")

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/threads/runs", broken, methods=["POST"])])
    with serve(app) as upstream, make_proxy(upstream.url) as proxy:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012
            with httpx.stream("POST", proxy.url + "/v1/threads/runs", json={}) as response:
                for chunk in response.iter_raw():
                    received += chunk
        assert received == b"event: thread.run.created\ndata: {}\n\n"
        assert proxy.sample("tollhouse_stream_aborts_total", reason="upstream_error") == 1


def test_what_a_stream_showed_before_the_upstream_broke_is_metered(
    make_proxy: ProxyFactory,
) -> None:
    """A response stream that dies after a web search still counts that search."""
    created = {
        "type": "response.created",
        "sequence_number": 0,
        "response": {
            "id": "resp_broken",
            "object": "response",
            "created_at": 1_764_000_000,
            "status": "in_progress",
            "model": "gpt-4o",
            "output": [],
            "tools": [{"type": "web_search"}],
        },
    }
    searched = {
        "type": "response.output_item.done",
        "sequence_number": 1,
        "output_index": 0,
        "item": {
            "type": "web_search_call",
            "id": "ws_broken",
            "status": "completed",
            "action": {"type": "search", "query": "gpu prices"},
        },
    }

    async def broken(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for event in (created, searched):
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            raise RuntimeError("upstream died")

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/responses", broken, methods=["POST"])])
    with serve(app) as upstream, make_proxy(upstream.url) as proxy:
        with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012
            with httpx.stream("POST", proxy.url + "/v1/responses", json={}) as response:
                for _ in response.iter_raw():
                    pass
        proxy.flush()
        with Session(proxy.tollhouse.engine) as session:
            call = session.get(ResponseToolCall, "ws_broken")
    assert call is not None
    assert (call.response_id, call.type) == ("resp_broken", "web_search_call")


def test_admin_endpoints(make_proxy: ProxyFactory) -> None:
    with serve(echo_app()) as upstream, make_proxy(upstream.url) as proxy:
        httpx.get(proxy.url + "/v1/assistants")
        metrics = httpx.get(proxy.admin.url + "/metrics")
        health = httpx.get(proxy.admin.url + "/healthz")
        ready = httpx.get(proxy.admin.url + "/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert json.loads(ready.text)["status"] == "ready"
    assert "tollhouse_build_info{version=" in metrics.text
    assert (
        'tollhouse_requests_total{class="GET",operation="assistants.list",'
        'outcome="forwarded",tenant="default"} 1.0' in metrics.text
    )


def test_upstream_answers_are_counted_by_status_class(make_proxy: ProxyFactory) -> None:
    with serve(echo_app()) as upstream, make_proxy(upstream.url) as proxy:
        httpx.get(proxy.url + "/v1/assistants")
        httpx.get(proxy.url + "/v1/assistants", headers={"x-want-status": "503"})
        httpx.get(proxy.url + "/v1/assistants", headers={"x-want-status": "429"})
        ok = proxy.sample("tollhouse_upstream_responses_total", code="2xx", **{"class": "GET"})
        failed = proxy.sample("tollhouse_upstream_responses_total", code="5xx", **{"class": "GET"})
        limited = proxy.sample("tollhouse_upstream_responses_total", code="429", **{"class": "GET"})
    assert (ok, failed, limited) == (1, 1, 1)

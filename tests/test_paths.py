"""One table of raw request paths: which are refused with a 400, and why."""

from __future__ import annotations

import json

import pytest

from tollhouse.api.paths import path_problem

TABLE: list[tuple[bytes, str | None]] = [
    # fine
    (b"/v1/assistants", None),
    (b"/v1/threads/thread_abc/runs/run_abc/steps", None),
    (b"/v1/threads/thread_%41bc", None),
    (b"/v1/files/file-abc/content", None),
    (b"/v1/files/.hidden", None),
    (b"/v1/files/a..b", None),
    (b"/v1/files/...", None),
    (b"/v1/files/%2e%2e%2e", None),
    (b"/v1/files/%252e%252e", None),  # decoded once it is '%2e%2e', not '..'
    (b"/v1/files/caf\xc3\xa9", None),
    (b"/", None),
    # empty segments
    (b"/v1//threads/x", "segment 2 is empty"),
    (b"/v1/assistants/", "segment 3 is empty"),
    (b"//v1/assistants", "segment 1 is empty"),
    (b"/v1/threads/thread_a//messages", "segment 4 is empty"),
    # dot segments, literal or encoded
    (b"/v1/threads/thread_a/../thread_b/messages", "segment 4 is '..'"),
    (b"/v1/threads/./thread_a", "segment 3 is '.'"),
    (b"/v1/files/file-abc/..", "segment 4 is '..'"),
    (b"/v1/files/%2e%2E", "segment 3 is '..'"),
    (b"/v1/files/.%2e", "segment 3 is '..'"),
    (b"/v1/files/%2E", "segment 3 is '.'"),
    # encoded slashes and backslashes, literal backslashes
    (b"/v1/threads/a%2F..%2Fb", "segment 3 contains an encoded slash or backslash"),
    (b"/v1/threads/a%2f..%2fb", "segment 3 contains an encoded slash or backslash"),
    (b"/v1/threads/a%5C..%5Cb", "segment 3 contains an encoded slash or backslash"),
    (b"/v1/threads/a%5cb", "segment 3 contains an encoded slash or backslash"),
    (b"/v1/threads/a\\..\\b", "segment 3 contains a backslash"),
    # control characters, literal or encoded
    (b"/v1/files/file-abc%00", "segment 3 contains a control character"),
    (b"/v1/files/file-abc%0d%0aX-Injected:%201", "segment 3 contains a control character"),
    (b"/v1/files/file\x01abc", "segment 3 contains a control character"),
    (b"/v1/files/file-abc%7F", "segment 3 contains a control character"),
    # matrix parameters and blanks, which some servers cut or trim
    (b"/v1/threads/thread_a/messages/msg_b;x", "segment 5 contains a semicolon or a blank"),
    (b"/v1/threads/thread_a%3Bx", "segment 3 contains a semicolon or a blank"),
    (b"/v1/vector_stores/vs%20abc", "segment 3 contains a semicolon or a blank"),
    (b"/v1/files/%09file-abc", "segment 3 contains a control character"),
    # malformed percent escapes
    (b"/v1/files/file-abc%", "segment 3 contains a '%' that is not followed by two hex digits"),
    (b"/v1/files/file%zzabc", "segment 3 contains a '%' that is not followed by two hex digits"),
    (b"/v1/files/file%2", "segment 3 contains a '%' that is not followed by two hex digits"),
    # not a path at all
    (b"*", "it does not start with '/'"),
    (b"", "it does not start with '/'"),
]


@pytest.mark.parametrize(("raw_path", "reason"), TABLE, ids=[repr(p)[2:-1] for p, _ in TABLE])
def test_path_problem(raw_path: bytes, reason: str | None) -> None:
    problem = path_problem(raw_path)
    if reason is None:
        assert problem is None
        return
    assert problem is not None
    assert (problem.status, problem.type, problem.code) == (
        400,
        "invalid_request_error",
        "invalid_path",
    )
    assert problem.message.startswith("Invalid URL path ")
    assert f": {reason}; " in problem.message
    assert "encoded slashes" in problem.message
    assert json.loads(problem.body())["error"]["code"] == "invalid_path"


def test_the_echoed_path_is_bounded_and_printable() -> None:
    raw = b"/v1/files/\x01" + b"a" * 100_000
    problem = path_problem(raw)
    assert problem is not None
    assert len(problem.message) < 600
    assert "\x01" not in problem.message
    assert "\\x01" in problem.message
    assert f"the first 200 of {len(raw)} characters" in problem.message

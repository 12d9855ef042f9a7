"""Request paths that could name something other than what they appear to, refused up front."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_to_bytes

from tollhouse.api.errors import ErrorResponse

# Anything that could make a path problem; a path without any of these is fine, and
# nearly every request is decided by this one search.
_SUSPECT: Final = re.compile(rb"[\x00-\x1f\x7f\\%;]|//|/\.|/$")
# Matrix parameters and blanks: some servers cut a segment at them, or trim it.
_CUT: Final = re.compile(rb"[;\s]")
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL: Final = re.compile(rb"[\x00-\x1f\x7f]")
_SHOWN_CHARS: Final = 200
_RULE: Final = (
    "empty segments, '.' or '..' segments, encoded slashes or backslashes, "
    "semicolons, blanks, control characters and malformed percent escapes are not allowed"
)


def path_problem(raw_path: bytes) -> ErrorResponse | None:
    """A 400 for a raw request path (as sent, before percent-decoding, without the query).

    The upstream and tollhouse must agree on which object a path names: tollhouse
    checks ownership on the path it sees, the upstream acts on the path it
    normalises, so any segment the two could read differently is refused here.
    """
    if raw_path[:1] == b"/" and _SUSPECT.search(raw_path) is None:
        return None
    reason = _reason(raw_path)
    if reason is None:
        return None
    return ErrorResponse(
        status=400,
        message=f"Invalid URL path {_shown(raw_path)}: {reason}; {_RULE}.",
        type="invalid_request_error",
        code="invalid_path",
    )


def _reason(raw_path: bytes) -> str | None:
    if raw_path[:1] != b"/":
        return "it does not start with '/'"
    if raw_path == b"/":
        return None
    for number, segment in enumerate(raw_path[1:].split(b"/"), start=1):
        where = f"segment {number}"
        if not segment:
            return f"{where} is empty"
        if b"\\" in segment:
            return f"{where} contains a backslash"
        if _BAD_ESCAPE.search(segment) is not None:
            return f"{where} contains a '%' that is not followed by two hex digits"
        decoded = unquote_to_bytes(segment) if b"%" in segment else segment
        if decoded in (b".", b".."):
            return f"{where} is {decoded.decode()!r}"
        if b"/" in decoded or b"\\" in decoded:
            return f"{where} contains an encoded slash or backslash"
        if _CONTROL.search(decoded) is not None:
            return f"{where} contains a control character"
        if _CUT.search(decoded) is not None:
            return f"{where} contains a semicolon or a blank"
    return None


def _shown(raw_path: bytes) -> str:
    """The path for the message: bounded, with anything unprintable escaped."""
    shown = repr(raw_path[:_SHOWN_CHARS].decode("latin-1"))
    if len(raw_path) > _SHOWN_CHARS:
        shown += f" (the first {_SHOWN_CHARS} of {len(raw_path)} characters)"
    return shown

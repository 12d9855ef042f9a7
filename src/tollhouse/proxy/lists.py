"""Lists the upstream serves organisation-wide, shown to each tenant as if it were alone.

``GET /v1/assistants`` (and files, vector stores) answers with every tenant's
objects. tollhouse walks the upstream's pages from the caller's cursor, keeps
the caller's own objects, and answers one page of them with ``limit``, ``order``,
``after``, ``before``, ``first_id``, ``last_id`` and ``has_more`` as the upstream
would for that tenant alone. It looks one object past the page, so ``has_more``
is true only when another of the caller's objects exists. Each upstream page
after the first spends a GET token of the caller's and of the organisation's;
at most ``max_pages`` upstream pages are read for one answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from tollhouse.upstream.forward import Forwarder, Headers, UpstreamResponse

# The operations whose lists hold every tenant's objects.
SHARED_LISTS: Final = frozenset(
    {"assistants.list", "files.list", "vector_stores.list", "containers.list"}
    | {"chat.completions.list"}
)
UPSTREAM_PAGE: Final = 100  # the largest page the reference allows
DEFAULT_LIMIT: Final = 20
MAX_PAGES: Final = 10
SPARSE: Final = 10  # how much further a walk that found nothing of the caller's may go
_FRAMING: Final = frozenset({b"content-length", b"content-encoding", b"transfer-encoding"})

Visible = Callable[[list[str]], Awaitable[set[str]]]
MayFetch = Callable[[], Awaitable[bool]]


class BadPaging(ValueError):
    """Paging parameters no page can be made of; the message is OpenAI's wording."""

    def __init__(self, message: str, param: str, code: str) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class ListRequest:
    limit: int
    backwards: bool  # a `before` cursor: the page is the objects just before it
    cursor: str | None
    rest: list[tuple[str, str]]  # the other query parameters, passed on as they are

    @classmethod
    def parse(cls, query: str) -> ListRequest:
        """The paging a list request asks for; raises ``BadPaging``.

        Paging is judged here, not upstream: the upstream sees other pages than the
        caller asked for, and a page it made of a bad limit would be the whole
        organisation's.
        """
        params = parse_qsl(query, keep_blank_values=True)
        names = [name for name, _ in params]
        for name in ("limit", "after", "before", "order"):
            if names.count(name) > 1:
                raise BadPaging(f"Invalid '{name}': given more than once.", name, "invalid_value")
        values = dict(params)
        limit = values.get("limit", str(DEFAULT_LIMIT)).strip()
        if not limit.lstrip("-").isdigit():
            message = "Invalid type for 'limit': expected an integer, but got a string instead."
            raise BadPaging(message, "limit", "invalid_type")
        if int(limit) < 1:
            raise BadPaging(
                "Invalid 'limit': integer below minimum value. Expected a value >= 1, "
                f"but got {int(limit)} instead.",
                "limit",
                "integer_below_min_value",
            )
        if int(limit) > UPSTREAM_PAGE:
            raise BadPaging(
                f"Invalid 'limit': integer above maximum value. Expected a value <= "
                f"{UPSTREAM_PAGE}, but got {int(limit)} instead.",
                "limit",
                "integer_above_max_value",
            )
        after, before = values.get("after", "").strip(), values.get("before", "").strip()
        if after and before:
            message = "Invalid paging: give 'after' or 'before', not both."
            raise BadPaging(message, "before", "invalid_value")
        rest = [(k, v) for k, v in params if k not in ("limit", "after", "before")]
        return cls(int(limit), bool(before), before or after or None, rest)

    def upstream_query(self, cursor: str | None) -> str:
        params = [*self.rest, ("limit", str(UPSTREAM_PAGE))]
        if cursor is not None:
            params.append(("before" if self.backwards else "after", cursor))
        return urlencode(params)


@dataclass(slots=True)
class FilteredPage:
    status: int
    headers: Headers
    body: bytes
    upstream_pages: int


def _page(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("object") != "list":
        return None
    data = document.get("data")
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and isinstance(item.get("id"), str) for item in data
    ):
        return None
    return document


async def filtered_list(
    forwarder: Forwarder,
    raw_path: str,
    request: ListRequest,
    headers: Headers,
    visible: Visible,
    may_fetch: MayFetch,
    max_pages: int = MAX_PAGES,
) -> FilteredPage | UpstreamResponse:
    """One page of the caller's own objects; the upstream's first answer if it is not a list.

    An unusable first answer (an error, not a list) is returned unread for the
    proxy to relay as it is; one on a later page ends the walk where it is.
    """
    headers = [(k, v) for k, v in headers if k.lower() not in (b"accept-encoding",)]
    headers.append((b"accept-encoding", b"identity"))
    kept: list[dict[str, Any]] = []
    template: dict[str, Any] | None = None
    answer_headers: Headers = []
    cursor, pages, more = request.cursor, 0, True
    # Past the bound a walk stops once it has something; with nothing yet it goes on
    # further, so an answer is an empty page only at the end of the list.
    while more and len(kept) <= request.limit and pages < max_pages * (1 if kept else SPARSE):
        if pages and not await may_fetch():
            break
        response = await forwarder.send(
            "GET", raw_path, request.upstream_query(cursor), headers, None
        )
        if pages == 0 and (response.status != 200 or "json" not in response.content_type):
            return response
        try:
            body = await response.read()
        finally:
            response.close()
        page = _page(body) if response.status == 200 else None
        if page is None:
            if pages == 0:
                return FilteredPage(response.status, response.headers, body, 1)
            break
        pages += 1
        if template is None:
            template, answer_headers = page, response.headers
        data: list[dict[str, Any]] = page["data"]
        own = await visible([item["id"] for item in data])
        mine = [item for item in data if item["id"] in own]
        kept = mine + kept if request.backwards else kept + mine
        more = page.get("has_more") is True and bool(data)
        cursor = data[0]["id"] if request.backwards else data[-1]["id"] if data else cursor
    assert template is not None
    shown = kept[-request.limit :] if request.backwards else kept[: request.limit]
    document = {
        **template,
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(kept) > request.limit or more,
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    kept_headers = [(k, v) for k, v in answer_headers if k.lower() not in _FRAMING]
    kept_headers.append((b"content-length", str(len(body)).encode()))
    return FilteredPage(200, kept_headers, body, pages)

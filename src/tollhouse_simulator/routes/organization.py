"""Endpoints for /v1/organization/usage/* and /v1/organization/costs: the bill, by UTC day.

Admin keys only: any other key is refused as OpenAI refuses it (401 for an unknown
key, 403 for a project key without the usage scope). Only ``bucket_width=1d`` is
simulated; pages hold ``limit`` buckets and go on with ``page=<next_page>``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.billing import DAY, Day, organization_usage
from tollhouse_simulator.errors import SimulatorError, bad_request
from tollhouse_simulator.gate import NO_KEY, mask_key
from tollhouse_simulator.state import Simulator, simulator_of

PROJECT = "proj_simulator"  # the one project all simulated usage belongs to
NO_SCOPE = (
    "You have insufficient permissions for this operation. Missing scopes: api.usage.read. "
    "Check that you have the correct role in your organization (Owner), and if you're using "
    "a restricted API key, that it has the necessary scopes."
)
Results = Callable[[Day, "Query"], list[dict[str, Any]]]


def check_admin_key(authorization: str | None, admin_key: str) -> None:
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise SimulatorError(401, NO_KEY, code="invalid_api_key")
    if key == admin_key:
        return
    if key.startswith("sk-admin-"):
        raise SimulatorError(
            401,
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    raise SimulatorError(403, NO_SCOPE)


class Query:
    """The query string of a usage or costs request, checked."""

    def __init__(self, request: Request, groups: frozenset[str], max_limit: int) -> None:
        params = request.query_params
        self.start = _integer(params.get("start_time"), "start_time", required=True)
        self.end = _integer(params.get("end_time"), "end_time") or None
        width = params.get("bucket_width", "1d")
        if width != "1d":
            raise bad_request(
                f"Invalid value for 'bucket_width': the simulator serves only '1d', got '{width}'.",
                param="bucket_width",
                code="invalid_value",
            )
        self.group_by = frozenset(_listed(params.getlist, "group_by"))
        unknown = sorted(self.group_by - groups)
        if unknown:
            raise bad_request(
                f"Invalid value for 'group_by': '{unknown[0]}' is not one of {sorted(groups)}.",
                param="group_by",
                code="invalid_value",
            )
        self.limit = _integer(params.get("limit"), "limit") or 7
        if not 1 <= self.limit <= max_limit:
            raise bad_request(
                f"Invalid 'limit': expected a value between 1 and {max_limit}, got {self.limit}.",
                param="limit",
                code="invalid_value",
            )
        self.page = _page(params.get("page"))
        projects = _listed(params.getlist, "project_ids")
        self.models = frozenset(_listed(params.getlist, "models"))
        self.in_project = not projects or PROJECT in projects

    def project(self) -> str | None:
        return PROJECT if "project_id" in self.group_by else None

    def model(self, name: str) -> str | None:
        return name if "model" in self.group_by else None

    def wants(self, model: str) -> bool:
        return not self.models or model in self.models


def _listed(getlist: Callable[[str], list[str]], name: str) -> list[str]:
    return [value for key in (name, f"{name}[]") for value in getlist(key)]


def _integer(value: str | None, name: str, required: bool = False) -> int:
    if value is None:
        if required:
            raise bad_request(f"Missing required parameter: '{name}'.", param=name)
        return 0
    try:
        return int(value)
    except ValueError:
        raise bad_request(
            f"Invalid '{name}': expected an integer, got '{value}'.", param=name
        ) from None


def _page(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor.removeprefix("page_")).decode())
    except ValueError:
        raise bad_request(
            f"Invalid 'page': '{cursor}' is not a page cursor.", param="page"
        ) from None


def _cursor(start: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(start).encode()).decode()


def usage_page(sim: Simulator, query: Query, results: Results) -> dict[str, Any]:
    """One page of daily buckets from ``page`` (else ``start_time``) on."""
    first = query.page if query.page is not None else query.start
    stop = query.end if query.end is not None else int(sim.now()) // DAY * DAY + DAY
    end = min(stop, first - first % DAY + query.limit * DAY)
    buckets = []
    for day in organization_usage(sim, first, end) if first < end else []:
        found = results(day, query) if query.in_project else []
        buckets.append(
            {
                "object": "bucket",
                "start_time": max(day.start, first),
                "end_time": min(day.start + DAY, end),
                "results": found,
            }
        )
    more = end < stop
    return {
        "object": "page",
        "data": buckets,
        "has_more": more,
        "next_page": _cursor(end) if more else None,
    }


def _completions(day: Day, query: Query) -> list[dict[str, Any]]:
    grouped: dict[str | None, list[int]] = {}
    for model, used in sorted(day.tokens.items()):
        if query.wants(model):
            sums = grouped.setdefault(query.model(model), [0, 0, 0, 0])
            for index, value in enumerate((used.input, used.cached, used.output, used.requests)):
                sums[index] += value
    return [
        {
            "object": "organization.usage.completions.result",
            "input_tokens": read,
            "input_cached_tokens": cached,
            "input_uncached_tokens": read - cached,
            "output_tokens": wrote,
            "num_model_requests": requests,
            "project_id": query.project(),
            "user_id": None,
            "api_key_id": None,
            "model": model,
            "batch": False if "batch" in query.group_by else None,
            "service_tier": "default" if "service_tier" in query.group_by else None,
        }
        for model, (read, cached, wrote, requests) in grouped.items()
    ]


def _sessions(day: Day, query: Query) -> list[dict[str, Any]]:
    count = sum(day.sessions.values())
    return _one(
        count,
        {
            "object": "organization.usage.code_interpreter_sessions.result",
            "num_sessions": count,
            "project_id": query.project(),
        },
    )


def _vector_stores(day: Day, query: Query) -> list[dict[str, Any]]:
    return _one(
        day.vector_store_bytes,
        {
            "object": "organization.usage.vector_stores.result",
            "usage_bytes": day.vector_store_bytes,
            "project_id": query.project(),
        },
    )


def _file_searches(day: Day, query: Query) -> list[dict[str, Any]]:
    return _one(
        day.file_search_calls,
        {
            "object": "organization.usage.file_searches.result",
            "num_requests": day.file_search_calls,
            "project_id": query.project(),
            "user_id": None,
            "api_key_id": None,
            "vector_store_id": None,
        },
    )


def _web_searches(day: Day, query: Query) -> list[dict[str, Any]]:
    grouped: dict[str | None, int] = {}
    for model, calls in sorted(day.web_search_calls.items()):
        if query.wants(model):
            key = query.model(model)
            grouped[key] = grouped.get(key, 0) + calls
    return [
        {
            "object": "organization.usage.web_searches.result",
            "num_model_requests": calls,
            "num_requests": calls,
            "project_id": query.project(),
            "user_id": None,
            "api_key_id": None,
            "model": model,
            "context_level": None,
        }
        for model, calls in grouped.items()
    ]


def _costs(markup: float) -> Results:
    def results(day: Day, query: Query) -> list[dict[str, Any]]:
        lines = day.costs(markup)
        if "line_item" not in query.group_by:
            total = sum(dollars for _, _, dollars in lines)
            lines = [("", 0.0, total)] if lines else []
        return [
            {
                "object": "organization.costs.result",
                "amount": {"value": dollars, "currency": "usd"},
                "line_item": line or None,
                "project_id": query.project(),
                "api_key_id": None,
                "quantity": quantity if line else None,
            }
            for line, quantity, dollars in lines
        ]

    return results


def _one(count: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    return [result] if count else []


def endpoint(results: Results | None, groups: Iterable[str], max_limit: int = 31) -> Any:
    allowed = frozenset(groups)

    async def handle(request: Request) -> Response:
        sim = simulator_of(request)
        check_admin_key(request.headers.get("authorization"), sim.config.admin_api_key)
        query = Query(request, allowed, max_limit)
        found = results if results is not None else _costs(sim.config.bill_markup)
        return JSONResponse(usage_page(sim, query, found))

    return handle


def routes() -> list[Route]:
    usage = "/v1/organization/usage"
    completion_groups = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
    web_groups = ("project_id", "user_id", "api_key_id", "model", "context_level")
    file_groups = ("project_id", "user_id", "api_key_id", "vector_store_id")
    return [
        Route(f"{usage}/completions", endpoint(_completions, completion_groups)),
        Route(f"{usage}/code_interpreter_sessions", endpoint(_sessions, ("project_id",))),
        Route(f"{usage}/vector_stores", endpoint(_vector_stores, ("project_id",))),
        Route(f"{usage}/file_search_calls", endpoint(_file_searches, file_groups)),
        Route(f"{usage}/web_search_calls", endpoint(_web_searches, web_groups)),
        Route(
            "/v1/organization/costs",
            endpoint(None, ("project_id", "line_item", "api_key_id"), max_limit=180),
        ),
    ]

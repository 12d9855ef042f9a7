"""The organisation's bill: what the simulator did, per UTC day, and what it costs.

The upstream bills what it served, whoever sent it; this is the other side tollhouse's
ledger is compared with. It is read from the simulator's own objects when asked:
finished runs, responses and every chat completion answered (tokens per model), Code
Interpreter sessions (a thread's calls within the hour of its session's first call; one
per container), File Search and web search calls, and the bytes vector stores hold at
the end of the day (or now, for today). Objects deleted upstream are no longer counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tollhouse_simulator.state import Simulator

DAY = 86_400
SESSION_SECONDS = 3_600
MILLION = 1_000_000
_FINISHED_AT = ("completed_at", "failed_at", "cancelled_at", "expired_at", "incomplete_at")

# USD per million tokens: input, cached input, output (OpenAI's list prices).
TOKEN_PRICES: Mapping[str, tuple[float, float, float]] = {
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-2024-08-06": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "o3-mini": (1.10, 0.55, 4.40),
    "o4-mini": (1.10, 0.275, 4.40),
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
}
SESSION_PRICES = {"1g": 0.03, "4g": 0.12, "16g": 0.48, "64g": 1.92}  # per session (container)
FILE_SEARCH_CALL = 2.50 / 1000  # Responses only: Assistants file search has no call fee
WEB_SEARCH_CALL = 10.00 / 1000
STORAGE_GB_DAY = 0.10
GIB = 1 << 30
FREE_BYTES = GIB

LINE_SESSIONS = "Code Interpreter sessions"
LINE_FILE_SEARCH = "File search tool calls"
LINE_WEB_SEARCH = "Web search tool calls"
LINE_STORAGE = "File search storage"


@dataclass
class Tokens:
    input: int = 0
    cached: int = 0
    output: int = 0
    requests: int = 0


@dataclass
class Day:
    """What the organisation used in one UTC day."""

    start: int
    tokens: dict[str, Tokens] = field(default_factory=lambda: defaultdict(Tokens))
    sessions: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by memory
    file_search_calls: int = 0
    paid_file_search_calls: int = 0  # made by responses
    web_search_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    vector_store_bytes: int = 0

    def costs(self, markup: float = 1.0) -> list[tuple[str, float, float]]:
        """``(line item, quantity, USD)`` per line of the bill; models without a price are
        left out, as the bill of an upstream that does not know them would."""
        lines: list[tuple[str, float, float]] = []
        for model, used in sorted(self.tokens.items()):
            prices = TOKEN_PRICES.get(model)
            if prices is None:
                continue
            uncached = used.input - used.cached
            for kind, quantity, price in (
                ("input", uncached, prices[0]),
                ("cached input", used.cached, prices[1]),
                ("output", used.output, prices[2]),
            ):
                if quantity:
                    lines.append((f"{model}, {kind}", quantity, quantity * price / MILLION))
        sessions = sum(self.sessions.values())
        if sessions:
            dollars = sum(SESSION_PRICES.get(m, 0.03) * n for m, n in self.sessions.items())
            lines.append((LINE_SESSIONS, sessions, dollars))
        if self.file_search_calls:
            dollars = self.paid_file_search_calls * FILE_SEARCH_CALL
            lines.append((LINE_FILE_SEARCH, self.file_search_calls, dollars))
        web = sum(self.web_search_calls.values())
        if web:
            lines.append((LINE_WEB_SEARCH, web, web * WEB_SEARCH_CALL))
        if self.vector_store_bytes:
            billed = max(self.vector_store_bytes - FREE_BYTES, 0) / GIB
            lines.append((LINE_STORAGE, self.vector_store_bytes / GIB, billed * STORAGE_GB_DAY))
        return [(line, quantity, dollars * markup) for line, quantity, dollars in lines]


def session_starts(times: Iterable[float]) -> list[float]:
    """When a thread's sessions start: a call opens one unless the last opened within the hour."""
    starts: list[float] = []
    for at in sorted(times):
        if not starts or at >= starts[-1] + SESSION_SECONDS:
            starts.append(at)
    return starts


def organization_usage(sim: Simulator, start: int, end: int) -> list[Day]:
    """The organisation's usage per UTC day in [start, end), as of the simulator's clock."""
    now = sim.now()
    first, last = start - start % DAY, end - (end % DAY or DAY)
    days = {at: Day(at) for at in range(first, last + 1, DAY)}

    def day(at: float) -> Day | None:
        return days.get(int(at) - int(at) % DAY) if start <= at < end else None

    for thread_id in list(sim.active_runs):
        sim.advance_thread(thread_id, now)
    _runs(sim, day)
    _responses(sim, now, day)
    for at, model, usage in sim.chat_log:
        found = day(at)
        if found is not None:
            _add_tokens(found, model, usage, "prompt_tokens", "completion_tokens")
    for container in sim.containers:
        found = day(container.created_at)
        if found is not None:
            found.sessions[container.memory_limit] += 1
    for found in days.values():
        found.vector_store_bytes = _stored_bytes(sim, min(found.start + DAY - 1, now))
    return [days[at] for at in sorted(days)]


def _add_tokens(found: Day, model: str, usage: Mapping[str, Any], read: str, wrote: str) -> None:
    details = usage.get(f"{read}_details") or usage.get("input_tokens_details") or {}
    used = found.tokens[model]
    used.input += int(usage.get(read) or 0)
    used.cached += int(details.get("cached_tokens") or 0)
    used.output += int(usage.get(wrote) or 0)
    used.requests += 1


def _tool_calls(steps: Iterable[dict[str, Any]]) -> Iterator[tuple[int, str]]:
    for step in steps:
        details = step.get("step_details") or {}
        for call in details.get("tool_calls") or ():
            yield int(step["created_at"]), str(call.get("type"))


def _runs(sim: Simulator, day: Any) -> None:
    for runs in sim.runs.values():
        session_calls: list[int] = []
        for run in runs:
            obj = run.obj
            if obj.get("usage"):
                at = next((obj[f] for f in _FINISHED_AT if obj.get(f)), obj["created_at"])
                found = day(at)
                if found is not None:
                    usage = obj["usage"]
                    _add_tokens(found, obj["model"], usage, "prompt_tokens", "completion_tokens")
            for at, kind in _tool_calls(run.steps):
                if kind == "code_interpreter":
                    session_calls.append(at)
                elif kind == "file_search" and (found := day(at)) is not None:
                    found.file_search_calls += 1
        for at in session_starts(session_calls):
            if (found := day(at)) is not None:
                found.sessions["1g"] += 1


def _responses(sim: Simulator, now: float, day: Any) -> None:
    for response in sim.responses:
        response.advance(now)
        obj = response.obj
        found = day(obj.get("completed_at") or obj["created_at"])
        if found is None:
            continue
        if obj.get("usage"):
            _add_tokens(found, obj["model"], obj["usage"], "input_tokens", "output_tokens")
        for item in response.output:
            if item.get("type") == "file_search_call":
                found.file_search_calls += 1
                found.paid_file_search_calls += 1
            elif item.get("type") == "web_search_call":
                found.web_search_calls[obj["model"]] += 1


def _stored_bytes(sim: Simulator, at: float) -> int:
    return sum(
        int(store.render(at)["usage_bytes"])
        for store in sim.vector_stores
        if store.created_at <= at
    )

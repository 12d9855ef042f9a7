"""What a request may cost before it is sent, and what a metered object did cost.

The worst case is what admission reserves against a spend budget. A model call whose
body names a priced model is priced at the input its body holds (counted as the token
budgets count it, ``metering.estimate``) plus the most output it allows
(``max_output_tokens``, ``max_completion_tokens`` / ``max_tokens`` times ``n``, or the
budgets' ``default_output_tokens``); a run naming ``max_prompt_tokens`` and
``max_completion_tokens`` is priced at those. Anything else (a run without both limits,
whose thread the body does not show; a container; a file added to a vector store) is
reserved at the policy's ``worst_case_usd`` for its operation. Pure: a table, a body
and a date in, ``Decimal`` USD out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from tollhouse.config.policy import Budgets
from tollhouse.metering.costs import container_cost, token_cost, tool_call_cost, usage_cost
from tollhouse.metering.estimate import Api, Estimator
from tollhouse.metering.meter import RunSeen
from tollhouse.metering.meter import Seen as Sighting
from tollhouse.metering.pricing import PricingTable
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    ToolItemSeen,
)

MODEL_CALLS: Mapping[str, Api] = {
    "responses.create": "responses",
    "chat.completions.create": "chat",
}
RUN_CREATES = frozenset({"threads.runs.create", "threads.create_and_run"})
_CHAT_LIMITS = ("max_completion_tokens", "max_tokens")


def worst_case(
    operation: str,
    body: object,
    budgets: Budgets,
    pricing: PricingTable,
    estimator: Estimator,
    day: date,
) -> Decimal:
    """The most ``operation`` with this JSON ``body`` is reserved at; see the module doc."""
    fallback = budgets.worst_case_usd[operation]  # type: ignore[index]
    if not isinstance(body, Mapping) or not isinstance(body.get("model"), str):
        return fallback
    model: str = body["model"]
    api = MODEL_CALLS.get(operation)
    if api is not None:
        given: dict[str, Any] = dict(body)
        limits = ("max_output_tokens",) if api == "responses" else _CHAT_LIMITS
        if not any(_positive(body.get(name)) for name in limits):
            given[limits[0]] = budgets.default_output_tokens
        tokens = estimator.estimate(given, api)
        cost = token_cost(pricing, model, tokens.input_tokens, tokens.output_tokens, day)
        return fallback if cost is None else cost
    if operation in RUN_CREATES:
        prompt = _positive(body.get("max_prompt_tokens"))
        completion = _positive(body.get("max_completion_tokens"))
        if prompt and completion:
            cost = token_cost(pricing, model, prompt, completion, day)
            return fallback if cost is None else cost
    return fallback


@dataclass(frozen=True, slots=True)
class Metered:
    """One object's cost, known once: the object, when it counts, and what it cost."""

    object_id: str
    at: float | None  # Unix seconds: its period is the one charged (None: the current one)
    usd: Decimal


def metered_cost(observation: Sighting, pricing: PricingTable, day: date) -> Metered | None:
    """The cost an observation makes final, if any: a finished run's or response's tokens,
    a chat completion's, a Responses tool call's fee, a container's minimum."""
    if isinstance(observation, RunSeen):
        usage = observation.usage
        if not observation.terminal or usage is None:
            return None
        cost = token_cost(
            pricing, observation.model, usage.prompt_tokens, usage.completion_tokens, day
        )
        at = observation.finished_at or observation.created_at
        return _metered(observation.id, at, cost)
    if isinstance(observation, ResponseSeen):
        if not observation.terminal or observation.usage is None:
            return None
        tier = observation.service_tier
        cost = usage_cost(pricing, observation.model, observation.usage, tier, day)
        at = observation.finished_at or observation.created_at
        return _metered(observation.id, at, cost)
    if isinstance(observation, ChatCompletionSeen):
        if observation.usage is None:
            return None
        tier = observation.service_tier
        cost = usage_cost(pricing, observation.model, observation.usage, tier, day)
        return _metered(observation.id, observation.created_at, cost)
    if isinstance(observation, ToolItemSeen):
        cost = tool_call_cost(pricing, observation.type, None, observation.tool, day)
        return _metered(observation.id, None, cost)
    if isinstance(observation, ContainerSeen) and not observation.auto:
        cost = container_cost(pricing, observation.memory_limit, 0, day)
        return _metered(observation.id, observation.created_at, cost)
    return None


def pending_object(observation: Sighting) -> str | None:
    """The id of a costly object still running (a queued run, a background response):
    its request's reservation stays in flight until the object's cost is known."""
    if isinstance(observation, RunSeen | ResponseSeen) and not observation.terminal:
        return observation.id
    return None


def _metered(object_id: str, at: float | None, cost: Decimal | None) -> Metered | None:
    if not cost:  # unpriced (never counted as 0: the ledger reports it) or free
        return None
    return Metered(object_id, None if at is None else float(at), cost)


def _positive(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None

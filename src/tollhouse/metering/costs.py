"""What usage costs under a pricing table: tokens, tool calls, containers and storage.

Pure: a table, quantities and a date in, ``Decimal`` USD out, or None where the table
has no price (never zero). Money is rounded only for presentation (:func:`usd`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from math import ceil, floor

from tollhouse.metering.pricing import CodeInterpreterPrice, MinutePrice, PricingTable
from tollhouse.metering.responses import TokenUsage

GIB = 2**30
# Storage shares are carried to 1e-10 USD so that they sum exactly to the org total.
STORAGE_PLACES = 10


def token_cost(
    table: PricingTable,
    model: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    at: date,
    *,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    tier: str | None = None,
) -> Decimal | None:
    """What tokens cost: a run's prompt and completion tokens, or a response's input and
    output tokens. None when unpriced (model, or tier for it): metered, never priced at 0.

    ``cached_tokens`` and ``cache_write_tokens`` are the part of the prompt read from and
    written to the prompt cache (``input_tokens_details``); they cost ``cached_input`` and
    ``cache_write``, or the full input rate where the period has no such price. Run usage
    has neither, so a run's prompt is priced at the full input rate (an upper bound).
    Reasoning tokens are part of the completion (output) tokens and cost the output rate.
    ``tier`` is the service tier the response reports; see :meth:`tier_multiplier`.
    """
    counts = (prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)
    if min(counts) < 0:
        raise ValueError("token counts cannot be negative")
    if cached_tokens + cache_write_tokens > prompt_tokens:
        raise ValueError("cached and cache-write tokens are part of, so at most, the prompt")
    if model is None:
        return None
    price = table.token_price(model, at)
    multiplier = table.tier_multiplier(model, tier, at)
    if price is None or multiplier is None:
        return None
    cached = price.input if price.cached_input is None else price.cached_input
    written = price.input if price.cache_write is None else price.cache_write
    fresh = prompt_tokens - cached_tokens - cache_write_tokens
    per_million = (
        fresh * price.input
        + cached_tokens * cached
        + cache_write_tokens * written
        + completion_tokens * price.output
    )
    return (per_million * multiplier).scaleb(-6)


def usage_cost(
    pricing: PricingTable, model: str | None, usage: TokenUsage, tier: str | None, day: date
) -> Decimal | None:
    """What a response's or chat completion's tokens cost; None when unpriced."""
    try:
        return token_cost(
            pricing,
            model,
            usage.input_tokens,
            usage.output_tokens,
            day,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            tier=tier,
        )
    except ValueError:  # counts the upstream got wrong (cached beyond the input)
        return None


def tool_call_cost(
    table: PricingTable, kind: str, model: str | None, version: str | None, at: date
) -> Decimal | None:
    """The fee for one Responses API tool call, on top of its tokens; None: unpriced.

    ``kind`` is the output item's type (``web_search_call``, ``file_search_call``,
    ``mcp_call``, ``function_call``, ...): one item is one billed call. ``version`` is the
    tool type the request declared (``web_search``, ``web_search_preview``, or a dated
    one), None if unknown. Search content tokens are input tokens (see :func:`token_cost`).
    """
    price = table.call_price(kind, model, version, at)
    return None if price is None else price.per_1000.scaleb(-3)


def _container_units(price: CodeInterpreterPrice | MinutePrice, active_seconds: float) -> int:
    if active_seconds < 0:
        raise ValueError("a container cannot be active for negative time")
    if isinstance(price, MinutePrice):
        return max(price.minimum_minutes, ceil(active_seconds / 60))
    return max(1, ceil(active_seconds / price.session_seconds))


def container_cost(
    table: PricingTable, memory_limit: str | None, active_seconds: float, started_on: date
) -> Decimal | None:
    """What one Responses container costs, by the billing in effect the day it started.

    ``active_seconds``: from the container's creation until it expired or was deleted;
    ``memory_limit`` None is the API's default (1g). Per-session billing: the time is cut
    into sessions of ``session_seconds`` from creation and every started session is paid,
    at least one. Per-minute billing: every started minute is paid, at least
    ``minimum_minutes``. None: no price for that memory limit on that day.
    """
    price = table.container_price(memory_limit, started_on)
    if price is None:
        return None
    unit = price.per_minute if isinstance(price, MinutePrice) else price.per_session
    return _container_units(price, active_seconds) * unit


def container_sessions(
    table: PricingTable, memory_limit: str | None, active_seconds: float, started_on: date
) -> int | None:
    """How many sessions :func:`container_cost` charges: the started session blocks, or
    one per container under per-minute billing (to reconcile with the usage API)."""
    price = table.container_price(memory_limit, started_on)
    if price is None:
        return None
    units = _container_units(price, active_seconds)
    return 1 if isinstance(price, MinutePrice) else units


def storage_costs(
    table: PricingTable, bytes_by_tenant: Mapping[str, float], day: date
) -> dict[str, Decimal]:
    """One day's File Search storage cost per tenant, from each tenant's average bytes.

    The free allowance is organisation-wide: it is subtracted once from the total, and
    the organisation's cost is shared in proportion to each tenant's bytes (so each
    tenant gets the same fraction of the free GB as of the bytes). Shares are carried to
    1e-10 USD, leftover units going to the largest remainders, so they add up exactly.
    """
    price = table.storage(day)
    amounts = {tenant: Fraction(str(b)) for tenant, b in bytes_by_tenant.items()}
    if any(amount < 0 for amount in amounts.values()):
        raise ValueError("stored bytes cannot be negative")
    total = sum(amounts.values(), Fraction(0))
    billable = max(total - Fraction(price.free_gb) * price.gb_bytes, Fraction(0))
    org_cost = billable / price.gb_bytes * Fraction(price.per_gb_day)
    org_units = floor(org_cost * 10**STORAGE_PLACES + Fraction(1, 2))
    if org_units == 0:
        return {tenant: Decimal(0) for tenant in amounts}
    exact = {tenant: org_units * amount / total for tenant, amount in amounts.items()}
    units = {tenant: floor(share) for tenant, share in exact.items()}
    leftover = org_units - sum(units.values())
    by_remainder = sorted(exact, key=lambda t: (units[t] - exact[t], t))
    for tenant in by_remainder[:leftover]:
        units[tenant] += 1
    return {tenant: Decimal(n).scaleb(-STORAGE_PLACES) for tenant, n in units.items()}


def gb_days(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """Integrate ``(unix seconds, bytes)`` samples over ``[start, end)`` into binary GB-days.

    Usage is a step function: each sample's bytes hold until the next sample (the last
    one until ``end``); before the first sample usage is 0. Of samples with the same
    time, the last one given wins.
    """
    if end < start:
        raise ValueError("end is before start")
    ordered = sorted(samples, key=lambda sample: sample[0])
    byte_seconds = 0.0
    for index, (at, size) in enumerate(ordered):
        if size < 0:
            raise ValueError("stored bytes cannot be negative")
        until = ordered[index + 1][0] if index + 1 < len(ordered) else end
        held = min(until, end) - max(at, start)
        if held > 0:
            byte_seconds += size * held
    return byte_seconds / (GIB * 86_400)


def usd(value: Decimal) -> str:
    """Money for people: dollars to 4 decimal places, half up (a run can cost < 1 cent)."""
    rounded = value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return f"-${-rounded}" if rounded < 0 else f"${abs(rounded)}"

"""Admission in model tokens: a call's estimate reserved for its model, settled with its usage.

``TokenQuota.reserve`` draws an estimate from the tenant's and the organisation's token
buckets for the call's model (from both or neither, one atomic step per backend) and
returns a ``TokenDecision`` that knows how to answer the client: OpenAI's 429 for tokens,
or the ``x-ratelimit-*-tokens`` headers of an admitted answer. ``settle`` refunds or
charges the difference once the call's usage is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tollhouse.api.errors import ErrorResponse
from tollhouse.config.policy import Policy, TokenRate
from tollhouse.quota.admission import ORG, Headers, go_duration, token_headers
from tollhouse.quota.backends import Buckets
from tollhouse.quota.bucket import Level, Limit, remaining
from tollhouse.quota.reserve import Reservation, Settled

# Bucket keys: ``{tenant}:tokens:{model}`` never meets a request bucket's ``{tenant}:{class}``.
TOKENS_KEY = "tokens"
UNIT_NAMES = {
    "second": "tokens per sec (TPS)",
    "minute": "tokens per min (TPM)",
    "hour": "tokens per hour (TPH)",
    "day": "tokens per day (TPD)",
}


def token_limit(rule: TokenRate | None) -> Limit | None:
    """The bucket of a token limit; None when there is none or it is unlimited."""
    if rule is None or rule.per_second is None:
        return None
    return Limit(rate=rule.per_second, capacity=float(rule.burst or rule.tokens_per_unit or 0))


@dataclass(frozen=True, slots=True)
class TokenView:
    """One token bucket as a client sees it."""

    rule: TokenRate
    limit: Limit
    level: Level

    @property
    def remaining(self) -> int:
        return remaining(self.level)

    @property
    def used(self) -> int:
        return max(0, math.ceil(self.limit.capacity - self.level.tokens))

    def headers(self, prefix: bytes = b"x-ratelimit-") -> Headers:
        return token_headers(self.rule.tokens_per_unit or 0, self.limit, self.level, prefix)


@dataclass(frozen=True, slots=True)
class TokenDecision:
    tenant: str
    model: str  # the model the call asked for
    requested: int
    allowed: bool
    shadow: bool  # a bucket refused, in shadow mode: let through and counted
    wait: float  # refused: seconds until the estimate fits; inf: it never will
    refused_by: str | None  # "tenant" or "organization"
    tenant_view: TokenView | None
    org_view: TokenView | None
    reservation: Reservation | None

    @property
    def too_large(self) -> bool:
        return not self.allowed and math.isinf(self.wait)

    def headers(self) -> Headers:
        """``x-ratelimit-*-tokens`` of the bucket with the fewest tokens left for the caller."""
        views = [view for view in (self.tenant_view, self.org_view) if view is not None]
        if not views:
            return []
        return min(views, key=lambda view: view.level.tokens).headers()

    def refusal(self) -> ErrorResponse:
        view = self.tenant_view if self.refused_by == "tenant" else self.org_view
        assert view is not None
        rule = view.rule
        where = (
            f"for tenant '{self.tenant}'"
            if self.refused_by == "tenant"
            else "in the organization (shared by all tenants)"
        )
        unit = UNIT_NAMES[rule.unit]
        if self.too_large:
            message = (
                f"Request too large for {self.model} {where} on {unit}: Limit "
                f"{rule.tokens_per_unit}, Requested {self.requested}. The input or output "
                "tokens must be reduced in order to run successfully."
            )
            # No wait lets it through: the official clients are told not to retry.
            headers = [(b"x-should-retry", b"false"), *view.headers()]
            return ErrorResponse(429, message, "tokens", "rate_limit_exceeded", headers=headers)
        retry = go_duration(self.wait)
        message = (
            f"Rate limit reached for {self.model} {where} on {unit}: Limit "
            f"{rule.tokens_per_unit}, Used {view.used}, Requested {self.requested}. "
            f"Please try again in {retry}."
        )
        headers = [
            (b"retry-after", str(max(1, math.ceil(self.wait))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(self.wait * 1000))).encode()),
            *view.headers(),
        ]
        return ErrorResponse(429, message, "tokens", "rate_limit_exceeded", headers=headers)


class TokenQuota:
    """Reserves and settles model tokens under the policy in force."""

    def __init__(self, buckets: Buckets, policy: Callable[[], Policy]) -> None:
        self._buckets = buckets
        self._policy = policy

    def applies(self, tenant: str) -> bool:
        """Whether a model call of ``tenant`` may meet a token limit."""
        return self._policy().limits_tokens(tenant)

    async def reserve(self, tenant: str, model: str, tokens: int) -> TokenDecision | None:
        """Reserve ``tokens`` for a call to ``model``; None when no limit applies to it."""
        policy = self._policy()
        own = policy.tenant_tokens(tenant, model)
        org = policy.organization_token_limit(model)
        t_rule, o_rule = own[1] if own else None, org[1] if org else None
        t_limit, o_limit = token_limit(t_rule), token_limit(o_rule)
        if t_limit is None and o_limit is None:
            return None
        t_name = own[0] if own else model
        o_name = org[0] if org else model
        enforce_tenant = not policy.in_shadow_mode(tenant)
        reserved = await self._buckets.reserve(
            f"{tenant}:{TOKENS_KEY}:{t_name}",
            t_limit,
            f"{ORG}:{TOKENS_KEY}:{o_name}",
            o_limit,
            tokens,
            enforce_tenant,
            not policy.shadow_mode,
        )
        result = reserved.result
        t_view = _view(t_rule, t_limit, result.tenant)
        o_view = _view(o_rule, o_limit, result.org)
        refused_by = None
        if not result.allowed:
            tenant_blocks = result.tenant_refused and enforce_tenant
            refused_by = "tenant" if tenant_blocks else "organization"
        return TokenDecision(
            tenant=tenant,
            model=model or "the model",
            requested=tokens,
            allowed=result.allowed,
            shadow=result.allowed and (result.tenant_refused or result.org_refused),
            wait=result.wait,
            refused_by=refused_by,
            tenant_view=t_view,
            org_view=o_view,
            reservation=reserved.reservation,
        )

    async def settle(self, reservation: Reservation, actual: int) -> Settled:
        """Refund or charge the difference between ``actual`` and what was reserved, once."""
        return await self._buckets.settle(reservation, actual)


def _view(rule: TokenRate | None, limit: Limit | None, level: Level | None) -> TokenView | None:
    if rule is None or limit is None or level is None:
        return None
    return TokenView(rule, limit, level)

"""Admission: one token from the tenant's bucket and one from the organisation's.

``Quota.admit`` decides, waits when a class is shaped, and returns a ``Decision``
that knows how to answer the client: the OpenAI-shaped 429 with ``retry-after``
and ``x-ratelimit-*`` headers, or tollhouse's own view as ``x-tollhouse-ratelimit-*``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from tollhouse.api.classify import RequestClass
from tollhouse.api.errors import ErrorResponse
from tollhouse.config.policy import Policy, RateLimit
from tollhouse.quota.backends import Buckets
from tollhouse.quota.bucket import Level, Limit, PairTake, remaining, reset_seconds

ORG = "_org"
Headers = list[tuple[bytes, bytes]]


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: ``12ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    seconds = math.ceil(seconds * 1000 - 1e-6) / 1000  # whole milliseconds, never too early
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes >= 1:
        return f"{int(minutes)}m{text}"
    return text


def token_headers(
    per_minute: int, limit: Limit, level: Level, prefix: bytes = b"x-ratelimit-"
) -> Headers:
    """OpenAI's ``…-tokens`` headers for a token-per-minute bucket (one in debt shows 0)."""
    return [
        (prefix + b"limit-tokens", str(per_minute).encode()),
        (prefix + b"remaining-tokens", str(remaining(level)).encode()),
        (prefix + b"reset-tokens", go_duration(reset_seconds(level, limit)).encode()),
    ]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one (tenant, class) admission needs, worked out once per policy."""

    tenant_rule: RateLimit | None
    tenant_limit: Limit | None
    org_rule: RateLimit | None
    org_limit: Limit | None
    max_wait: float
    max_queue: int
    enforce_tenant: bool
    enforce_org: bool
    spread: float


@dataclass(frozen=True, slots=True)
class BucketView:
    """One bucket as a client sees it in headers."""

    rule: RateLimit
    limit: Limit
    level: Level

    @property
    def remaining(self) -> int:
        return remaining(self.level)

    @property
    def reset(self) -> float:
        """Seconds until the bucket is full, after the clients told to retry have been served."""
        return reset_seconds(self.level, self.limit)

    def headers(self, prefix: bytes) -> Headers:
        return [
            (prefix + b"limit-requests", str(self.rule.requests_per_unit).encode()),
            (prefix + b"remaining-requests", str(self.remaining).encode()),
            (prefix + b"reset-requests", go_duration(self.reset).encode()),
        ]


@dataclass(frozen=True, slots=True)
class Decision:
    tenant: str
    request_class: RequestClass
    allowed: bool
    shadow: bool  # a bucket refused, but in shadow mode: let through and counted
    wait: float  # allowed: seconds spent shaped; refused: when this client should retry
    refused_by: str | None  # "tenant" or "organization"
    tenant_view: BucketView | None
    org_view: BucketView | None

    @property
    def outcome(self) -> str:
        if not self.allowed:
            return "throttled"
        return "shadow_throttled" if self.shadow else "forwarded"

    def levels(self, tenant_label: str) -> list[tuple[str, int, int]]:
        """(tenant label or ``_org``, requests remaining, requests per unit) of each bucket."""
        views = ((tenant_label, self.tenant_view), (ORG, self.org_view))
        return [
            (label, view.remaining, view.rule.requests_per_unit or 0)
            for label, view in views
            if view is not None
        ]

    def headers(self) -> Headers:
        """tollhouse's view of the tenant's budget, added to successful responses."""
        view = self.tenant_view or self.org_view
        return view.headers(b"x-tollhouse-ratelimit-") if view else []

    def refusal(self) -> ErrorResponse:
        view = self.tenant_view if self.refused_by == "tenant" else self.org_view
        assert view is not None
        retry = go_duration(self.wait)
        rule = view.rule
        who = (
            f"tenant '{self.tenant}'"
            if self.refused_by == "tenant"
            else "the organization (shared by all tenants)"
        )
        message = (
            f"Rate limit reached for {who} on {self.request_class} requests: "
            f"limit {rule.requests_per_unit} per {rule.unit}, burst {int(view.limit.capacity)}. "
            f"Please try again in {retry}."
        )
        headers = [
            (b"retry-after", str(max(1, math.ceil(self.wait))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(self.wait * 1000))).encode()),
            *view.headers(b"x-ratelimit-"),
        ]
        return ErrorResponse(429, message, "requests", "rate_limit_exceeded", headers=headers)


class Quota:
    """Admits requests under a policy; ``update`` swaps the policy, keeping bucket levels."""

    def __init__(
        self,
        buckets: Buckets,
        policy: Policy | Callable[[], Policy],
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._buckets = buckets
        self._sleep = sleep
        self._waiting: dict[RequestClass, int] = dict.fromkeys(RequestClass, 0)
        self.update(policy)

    @property
    def policy(self) -> Policy:
        return self._source()

    def update(self, policy: Policy | Callable[[], Policy]) -> None:
        """Admit under ``policy`` from now on: a policy, or where to read the one in force."""
        self._source = policy if callable(policy) else lambda: policy
        self._planned_for: Policy | None = None
        self._plans: dict[tuple[str | None, RequestClass, RateLimit | None], _Plan] = {}

    def _plan(
        self, tenant: str, request_class: RequestClass, limit: RateLimit | None = None
    ) -> _Plan:
        policy = self._source()
        if policy is not self._planned_for:  # a new policy is in force: plan again
            self._planned_for, self._plans = policy, {}
        key = (tenant if tenant in policy.tenants else None, request_class, limit)
        plan = self._plans.get(key)
        if plan is None:
            tenant_rule = policy.tenant_limit(tenant, request_class)
            org_rule = policy.organization.get(request_class)
            shaping = policy.shaping.get(request_class)
            plan = _Plan(
                tenant_rule=tenant_rule,
                tenant_limit=bucket_limit(tenant_rule),
                org_rule=org_rule,
                org_limit=bucket_limit(org_rule),
                max_wait=shaping.max_wait if shaping else 0.0,
                max_queue=shaping.max_queue if shaping else 0,
                enforce_tenant=not policy.in_shadow_mode(tenant),
                enforce_org=not policy.shadow_mode,
                spread=policy.retries.spread_seconds,
            )
            if limit is not None:  # an internal tenant's own limit: enforced, never shaped
                plan = replace(
                    plan,
                    tenant_rule=limit,
                    tenant_limit=bucket_limit(limit),
                    max_wait=0.0,
                    enforce_tenant=True,
                )
            self._plans[key] = plan
        return plan

    async def admit(
        self, tenant: str, request_class: RequestClass, limit: RateLimit | None = None
    ) -> Decision:
        """Admit one request; ``limit`` replaces the policy's tenant limit (internal tenants)."""
        plan = self._plan(tenant, request_class, limit)
        queue_full = self._waiting[request_class] >= plan.max_queue
        taken = await self._buckets.take(
            f"{tenant}:{request_class}",
            plan.tenant_limit,
            f"{ORG}:{request_class}",
            plan.org_limit,
            0.0 if queue_full else plan.max_wait,
            plan.enforce_tenant,
            plan.enforce_org,
            plan.spread,
        )
        if taken.allowed and taken.wait > 0:
            self._waiting[request_class] += 1
            try:
                await self._sleep(taken.wait)
            finally:
                self._waiting[request_class] -= 1
        return self._decision(tenant, request_class, plan, taken)

    @staticmethod
    def _decision(
        tenant: str, request_class: RequestClass, plan: _Plan, taken: PairTake
    ) -> Decision:
        tenant_view = (
            BucketView(plan.tenant_rule, plan.tenant_limit, taken.tenant)
            if plan.tenant_rule and plan.tenant_limit and taken.tenant
            else None
        )
        org_view = (
            BucketView(plan.org_rule, plan.org_limit, taken.org)
            if plan.org_rule and plan.org_limit and taken.org
            else None
        )
        refused_by = None
        if not taken.allowed:
            tenant_blocks = taken.tenant_refused and plan.enforce_tenant
            refused_by = "tenant" if tenant_blocks else "organization"
        return Decision(
            tenant=tenant,
            request_class=request_class,
            allowed=taken.allowed,
            shadow=taken.allowed and (taken.tenant_refused or taken.org_refused),
            wait=taken.wait,
            refused_by=refused_by,
            tenant_view=tenant_view,
            org_view=org_view,
        )


def bucket_limit(rule: RateLimit | None) -> Limit | None:
    """The token bucket for a policy's limit; None when there is no limit or it is unlimited."""
    if rule is None or rule.per_second is None:
        return None
    return Limit(rate=rule.per_second, capacity=float(rule.burst or rule.requests_per_unit or 0))

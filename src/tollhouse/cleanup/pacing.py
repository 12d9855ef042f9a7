"""The cleaner's upstream calls, each paced through the quota as the internal tenant.

The cleaner is the tenant ``_tollhouse_cleanup``. Each of its requests takes a token
from its own bucket and one from the organisation's bucket for the class, exactly
as a tenant's request does, so live traffic and the cleaner share the organisation
budget. Its own bucket holds ``delete_share`` of the organisation's limit, with a
burst of one, sized so that in any minute it takes at most that share: the rest
of the budget stays free for live traffic. When a bucket is empty it waits for
the token instead of being refused.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tollhouse.api.classify import RequestClass
from tollhouse.config.policy import PUBLISHED_LIMITS, UNIT_SECONDS, RateLimit
from tollhouse.quota.admission import Quota
from tollhouse.upstream.forward import Forwarder, UpstreamError, json_object

CLEANER_TENANT = "_tollhouse_cleanup"
PAGE = 100
MIN_WAIT = 0.001  # a wait shorter than the clock can measure would spin
Sleep = Callable[[float], Awaitable[object]]


def share_limit(organization: RateLimit, published: int, share: float) -> RateLimit:
    """The cleaner's bucket: ``share`` of the organisation's per-minute limit at most, per minute.

    A bucket of rate r and burst b lets through at most b + 60 r tokens in any
    minute; with b = 1 and r = budget - 1 per minute that is the budget.
    """
    if organization.requests_per_unit is None:  # unlimited: pace by the published limit
        per_minute = float(published)
    else:
        per_minute = organization.requests_per_unit * 60 / UNIT_SECONDS[organization.unit]
    budget = math.floor(share * per_minute)
    return RateLimit(requests_per_unit=max(1, budget - 1), unit="minute", burst=1)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class PacedClient:
    def __init__(
        self,
        forwarder: Forwarder,
        quota: Quota,
        api_key: str,
        sleep: Sleep = asyncio.sleep,
        timeout: float = 30.0,
    ) -> None:
        self._forwarder = forwarder
        self._quota = quota
        self._api_key = api_key
        self._sleep = sleep
        self._timeout = timeout

    def limit(self, request_class: RequestClass) -> RateLimit:
        policy = self._quota.policy
        return share_limit(
            policy.organization[request_class],
            PUBLISHED_LIMITS[request_class],
            policy.cleanup.delete_share,
        )

    async def take(self, request_class: RequestClass) -> None:
        """Wait until the cleaner's bucket and the organisation's both give a token."""
        while True:
            decision = await self._quota.admit(
                CLEANER_TENANT, request_class, limit=self.limit(request_class)
            )
            if decision.allowed:
                return
            await self._sleep(max(decision.wait, MIN_WAIT))

    async def send(self, method: str, path: str, query: str = "") -> Answer:
        """One request, without pacing (the caller took the token); a timeout is an error."""
        status, body = await self._forwarder.fetch(
            method, path, query, self._api_key, self._timeout
        )
        return Answer(status, json_object(body))

    async def get(self, path: str, query: str = "") -> Answer:
        await self.take(RequestClass.GET)
        return await self.send("GET", path, query)

    async def pages(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """Every item of a list endpoint, page after page."""
        after = ""
        while True:
            query = f"limit={PAGE}&order=asc" + (f"&after={after}" if after else "")
            answer = await self.get(path, query)
            if answer.status != 200:
                raise UpstreamError(self._forwarder.name, f"GET {path}: status {answer.status}")
            for item in answer.body.get("data") or []:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    yield item
            if not answer.body.get("has_more") or not answer.body.get("last_id"):
                return
            after = str(answer.body["last_id"])

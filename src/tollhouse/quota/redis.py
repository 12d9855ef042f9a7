"""Token buckets shared by replicas in Redis: one Lua step per admission.

When Redis cannot be reached, admissions fall back to buckets in this process,
each holding ``1 / replicas`` of its limit, so that the replicas together stay
under the organisation's limits; the fallback is reported through a callback
(a metric) and Redis is tried again after ``retry_seconds``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tollhouse.quota.bucket import EARLY, NO_QUEUE, Level, Limit, PairTake
from tollhouse.quota.memory import RESERVATION_TTL, MemoryBuckets
from tollhouse.quota.reserve import PairReserve, Reservation, Reserved, Settled

log = logging.getLogger(__name__)

LUA = files("tollhouse.quota").joinpath("token_bucket.lua").read_text
RESERVE_LUA = files("tollhouse.quota").joinpath("token_reserve.lua").read_text
SETTLE_LUA = files("tollhouse.quota").joinpath("token_settle.lua").read_text
IDLE_TTL_MS = 3_600_000


def _level(raw: bytes, at: float, queue: bytes) -> Level | None:
    if raw == b"-":
        return None
    return Level(float(raw), at, NO_QUEUE if queue == b"-" else float(queue))


def _tokens(raw: bytes, at: float) -> Level | None:
    return None if raw == b"-" else Level(float(raw), at)


def _rate(limit: Limit | None) -> tuple[float, float]:
    return (limit.rate, limit.capacity) if limit is not None else (0.0, 0.0)


def _share(limit: Limit | None, replicas: int) -> Limit | None:
    if limit is None:
        return None
    return replace(limit, rate=limit.rate / replicas, capacity=max(1.0, limit.capacity / replicas))


class RedisBuckets:
    name = "redis"

    def __init__(
        self,
        url: str,
        replicas: int = 1,
        prefix: str = "tollhouse:bucket:",
        on_fallback: Callable[[bool], None] = lambda active: None,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=1.0,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=30,
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._script = self._client.register_script(LUA())
        self._reserve = self._client.register_script(RESERVE_LUA())
        self._settle = self._client.register_script(SETTLE_LUA())
        self._prefix = prefix
        self._replicas = max(1, replicas)
        self._local = MemoryBuckets(clock)
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._down_until: float | None = None
        self._on_fallback = on_fallback

    async def take(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        max_wait: float = 0.0,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
        spread: float = 0.0,
    ) -> PairTake:
        if self._down_until is not None and self._clock() < self._down_until:
            return self._fallback(
                tenant_key,
                tenant_limit,
                org_key,
                org_limit,
                max_wait,
                enforce_tenant,
                enforce_org,
                spread,
            )
        args = (
            tenant_limit.rate if tenant_limit else 0,
            tenant_limit.capacity if tenant_limit else 0,
            org_limit.rate if org_limit else 0,
            org_limit.capacity if org_limit else 0,
            max_wait,
            int(enforce_tenant),
            int(enforce_org),
            IDLE_TTL_MS,
            spread,
        )
        try:
            reply = await self._script(
                keys=[self._prefix + tenant_key, self._prefix + org_key], args=args
            )
        except (RedisError, OSError) as exc:
            self._went_away(exc)
            return self._fallback(
                tenant_key,
                tenant_limit,
                org_key,
                org_limit,
                max_wait,
                enforce_tenant,
                enforce_org,
                spread,
            )
        self._came_back()
        allowed, wait, t_refused, o_refused, t_tokens, o_tokens, now, t_queue, o_queue = reply
        at = float(now)
        return PairTake(
            bool(allowed),
            float(wait),
            bool(t_refused),
            bool(o_refused),
            _level(t_tokens, at, t_queue),
            _level(o_tokens, at, o_queue),
        )

    def _fallback(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        max_wait: float,
        enforce_tenant: bool,
        enforce_org: bool,
        spread: float,
    ) -> PairTake:
        return self._local.take_now(
            tenant_key,
            _share(tenant_limit, self._replicas),
            org_key,
            _share(org_limit, self._replicas),
            max_wait,
            enforce_tenant,
            enforce_org,
            spread,
        )

    async def reserve(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        tokens: int,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
    ) -> Reserved:
        """Draw ``tokens`` from both buckets or from neither, in one step on the server."""
        if tokens < 0:
            raise ValueError(f"cannot reserve {tokens} tokens")
        share = (tenant_key, _share(tenant_limit, self._replicas), org_key)
        local = (*share, _share(org_limit, self._replicas), tokens, enforce_tenant, enforce_org)
        if self._down_until is not None and self._clock() < self._down_until:
            return self._local.reserve_now(*local, local=True)
        reservation_id = uuid.uuid4().hex
        args = (
            *_rate(tenant_limit),
            *_rate(org_limit),
            tokens,
            int(enforce_tenant),
            int(enforce_org),
            IDLE_TTL_MS,
            int(RESERVATION_TTL * 1000),
            EARLY,
        )
        keys = [self._prefix + tenant_key, self._prefix + org_key, self._open_key(reservation_id)]
        try:
            reply = await self._reserve(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._went_away(exc)
            return self._local.reserve_now(*local, local=True)
        self._came_back()
        allowed, wait, t_refused, o_refused, t_tokens, o_tokens, now, t_taken, o_taken = reply
        at = float(now)
        result = PairReserve(
            bool(allowed),
            float(wait),
            bool(t_refused),
            bool(o_refused),
            _tokens(t_tokens, at),
            _tokens(o_tokens, at),
            int(t_taken),
            int(o_taken),
        )
        if not result.allowed:
            return Reserved(result, None)
        reservation = Reservation(
            reservation_id,
            tenant_key,
            tenant_limit,
            org_key,
            org_limit,
            result.tenant_taken,
            result.org_taken,
        )
        return Reserved(result, reservation)

    async def settle(self, reservation: Reservation, actual: int) -> Settled:
        """Refund or charge the difference between ``actual`` and what was drawn, once."""
        if reservation.local:
            return self._local.settle_now(reservation, actual)
        t_rate, t_cap = _rate(reservation.tenant_limit if reservation.tenant_taken else None)
        o_rate, o_cap = _rate(reservation.org_limit if reservation.org_taken else None)
        args = (
            t_rate,
            t_cap,
            actual - reservation.tenant_taken,
            o_rate,
            o_cap,
            actual - reservation.org_taken,
            IDLE_TTL_MS,
        )
        keys = [
            self._prefix + reservation.tenant_key,
            self._prefix + reservation.org_key,
            self._open_key(reservation.id),
        ]
        try:
            applied, t_tokens, o_tokens, now = await self._settle(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            # The reservation stands as drawn: what was reserved stays spent.
            log.warning("redis buckets unreachable, reservation %s kept: %s", reservation.id, exc)
            return Settled(False, None, None)
        at = float(now)
        return Settled(bool(applied), _tokens(t_tokens, at), _tokens(o_tokens, at))

    def _open_key(self, reservation_id: str) -> str:
        return f"{self._prefix}reservation:{reservation_id}"

    def _went_away(self, exc: Exception) -> None:
        log.warning("redis buckets unreachable, using local buckets for now: %s", exc)
        self._down_until = self._clock() + self._retry_seconds
        self._on_fallback(True)

    def _came_back(self) -> None:
        if self._down_until is not None:
            log.info("redis buckets reachable again")
            self._down_until = None
            self._on_fallback(False)

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)

"""Token buckets shared by replicas in Redis: one Lua step per admission.

When Redis cannot be reached, admissions fall back to buckets in this process,
each holding ``1 / replicas`` of its limit, so that the replicas together stay
under the organisation's limits; the fallback is reported through a callback
(a metric) and Redis is tried again after ``retry_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tollhouse.buckets.bucket import NO_QUEUE, Level, Limit, PairTake
from tollhouse.buckets.memory import MemoryBuckets

log = logging.getLogger(__name__)

LUA = files("tollhouse.buckets").joinpath("token_bucket.lua").read_text
IDLE_TTL_MS = 3_600_000


def _level(raw: bytes, at: float, queue: bytes) -> Level | None:
    if raw == b"-":
        return None
    return Level(float(raw), at, NO_QUEUE if queue == b"-" else float(queue))


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
            log.warning("redis buckets unreachable, using local buckets for now: %s", exc)
            self._down_until = self._clock() + self._retry_seconds
            self._on_fallback(True)
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
        if self._down_until is not None:
            log.info("redis buckets reachable again")
            self._down_until = None
            self._on_fallback(False)
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

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)

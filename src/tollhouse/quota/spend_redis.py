"""Spend budgets in Redis, shared by the replicas: one Lua step per change.

Holds end on the Redis server's clock. Which calendar period a moment is in is worked
out by each replica (``budget.periods``, from its own clock and the policy's time zone),
so replicas agree on the period as closely as their clocks agree.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from tollhouse.quota.backends import Parked, PeriodKey, SpendUnavailable

_LUA = files("tollhouse.quota")
RESERVE_LUA = _LUA.joinpath("spend_reserve.lua").read_text
RELEASE_LUA = _LUA.joinpath("spend_release.lua").read_text
PARK_LUA = _LUA.joinpath("spend_park.lua").read_text
COMMIT_LUA = _LUA.joinpath("spend_commit.lua").read_text
SEED_LUA = _LUA.joinpath("spend_seed.lua").read_text


class RedisSpend:
    name = "redis"

    def __init__(
        self, url: str, prefix: str = "tollhouse:spend:", max_connections: int = 64
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
        self._reserve = self._client.register_script(RESERVE_LUA())
        self._release = self._client.register_script(RELEASE_LUA())
        self._park = self._client.register_script(PARK_LUA())
        self._commit = self._client.register_script(COMMIT_LUA())
        self._seed = self._client.register_script(SEED_LUA())
        self._prefix = prefix

    @staticmethod
    async def _run(script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise SpendUnavailable(str(exc)) from exc

    def _pair(self, key: str) -> list[str]:
        return [self._prefix + key, self._prefix + key + ":deadlines"]

    def _marks(self, object_id: str) -> list[str]:
        return [self._prefix + "metered:" + object_id, self._prefix + "parked:" + object_id]

    async def reserve(
        self, hold: str, periods: list[PeriodKey], amount: int, ttl: float
    ) -> tuple[int | None, list[int]]:
        keys = [k for key, _, _ in periods for k in self._pair(key)]
        args: list[object] = [hold, amount, int(ttl * 1000)]
        for _, limit, expires in periods:
            args += [limit, expires]
        refused, *spent = await self._run(self._reserve, keys, args)
        return (None if int(refused) < 0 else int(refused)), [int(s) for s in spent]

    async def release(self, hold: str, keys: list[str]) -> None:
        await self._run(self._release, [k for key in keys for k in self._pair(key)], [hold])

    async def park(self, hold: str, keys: list[str], object_id: str, ttl: float) -> bool:
        value = "\n".join([hold, *keys])
        parked = await self._run(self._park, self._marks(object_id), [value, int(ttl * 1000)])
        return bool(parked)

    async def commit(
        self, object_id: str, periods: list[PeriodKey], amount: int, ttl: float
    ) -> tuple[bool, Parked | None]:
        keys = [*self._marks(object_id), *(self._prefix + key for key, _, _ in periods)]
        args = [amount, int(ttl * 1000), *(expires for _, _, expires in periods)]
        added, parked = await self._run(self._commit, keys, args)
        if not parked:
            return bool(added), None
        hold, *held = (parked.decode() if isinstance(parked, bytes) else str(parked)).split("\n")
        return bool(added), (hold, held)

    async def seed(self, periods: list[PeriodKey], amounts: list[int]) -> None:
        args: list[object] = []
        for (_, _, expires), amount in zip(periods, amounts, strict=True):
            args += [amount, expires]
        await self._run(self._seed, [self._prefix + key for key, _, _ in periods], args)

    async def spent(self, periods: list[PeriodKey]) -> list[int]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, _, _ in periods:
                    pipe.hmget(self._prefix + key, "committed", "in_flight")
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SpendUnavailable(str(exc)) from exc
        return [sum(int(v) for v in reply if v is not None) for reply in replies]

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)

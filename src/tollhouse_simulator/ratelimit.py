"""Requests-per-minute limits per request class: token buckets and OpenAI's 429."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tollhouse_simulator.errors import SimulatorError


def request_class(method: str, path: str) -> str:
    """GET, POST, RUN_CREATE or DELETE, as the reference's endpoint table classes them."""
    if method == "POST":
        parts = path.rstrip("/").split("/")
        if parts[:3] == ["", "v1", "threads"] and (
            parts[3:] == ["runs"] or (len(parts) == 5 and parts[4] == "runs")
        ):
            return "RUN_CREATE"
    return method


def go_duration(seconds: float) -> str:
    """Formats like Go's time.Duration at millisecond precision: 0s, 12ms, 1.5s, 6m0s, 1h0m0s."""
    millis = max(0, round(seconds * 1000))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass
class Bucket:
    """A continuously refilled bucket holding up to ``limit`` requests, refilled in a minute."""

    limit: int
    tokens: float
    updated: float

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.limit), self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def reset_seconds(self) -> float:
        return (self.limit - self.tokens) / self.rate

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(math.floor(self.tokens)),
            "x-ratelimit-reset-requests": go_duration(self.reset_seconds()),
        }


class RateLimiter:
    def __init__(self, limits: Mapping[str, int], organization: str) -> None:
        self._limits = dict(limits)
        self._organization = organization
        self._buckets: dict[str, Bucket] = {}

    def admit(self, request_class: str, now: float) -> dict[str, str]:
        """Spends one request; returns the headers to add, or raises the 429 to answer."""
        limit = self._limits.get(request_class)
        if limit is None:
            return {}
        bucket = self._buckets.setdefault(request_class, Bucket(limit, float(limit), now))
        bucket.refill(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return bucket.headers()
        wait = (1.0 - bucket.tokens) / bucket.rate
        headers = {
            **bucket.headers(),
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        }
        used = limit - math.floor(bucket.tokens)
        raise SimulatorError(
            429,
            f"Rate limit reached for {request_class} requests in organization "
            f"{self._organization} on requests per min (RPM): Limit {limit}, Used {used}, "
            f"Requested 1. Please try again in {go_duration(wait)}. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )

"""Containers the code interpreter runs in, and their files; status follows the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tollhouse_simulator.bodies import Body, invalid_type, optional_int, optional_object
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.store import Table

MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
DEFAULT_MEMORY_LIMIT = "1g"
DEFAULT_IDLE_MINUTES = 20
DATA_DIR = "/mnt/data"


@dataclass
class ContainerFile:
    id: str
    container_id: str
    created_at: int
    bytes: int
    path: str
    source: str
    disk: Path

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "container.file",
            "container_id": self.container_id,
            "created_at": self.created_at,
            "bytes": self.bytes,
            "path": self.path,
            "source": self.source,
        }


@dataclass
class Container:
    id: str
    name: str
    created_at: int
    last_active_at: int
    idle_minutes: int
    memory_limit: str
    network_policy: dict[str, Any] | None = None
    files: Table[ContainerFile] = field(default_factory=Table)

    def expires_at(self) -> int:
        return self.last_active_at + self.idle_minutes * 60

    def status(self, now: float) -> str:
        return "expired" if now >= self.expires_at() else "active"

    def touch(self, now: float) -> None:
        self.last_active_at = max(self.last_active_at, int(now))

    def render(self, now: float) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "object": "container",
            "name": self.name,
            "created_at": self.created_at,
            "status": self.status(now),
            "last_active_at": self.last_active_at,
            "expires_after": {"anchor": "last_active_at", "minutes": self.idle_minutes},
            "memory_limit": self.memory_limit,
        }
        if self.network_policy is not None:
            shown["network_policy"] = self.network_policy
        return shown


def memory_limit(body: Body, param: str = "memory_limit") -> str:
    value = body.get("memory_limit")
    if value is None:
        return DEFAULT_MEMORY_LIMIT
    if value not in MEMORY_LIMITS:
        raise bad_request(
            f"Invalid value: '{value}'. Supported values are: '1g', '4g', '16g', and '64g'.",
            param=param,
            code="invalid_value",
        )
    return str(value)


def idle_minutes(body: Body) -> int:
    value = optional_object(body, "expires_after")
    if value is None:
        return DEFAULT_IDLE_MINUTES
    if value.get("anchor") != "last_active_at":
        raise bad_request(
            "Invalid 'expires_after.anchor': expected 'last_active_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    minutes = optional_int(value, "minutes", 1)
    if minutes is None:
        raise bad_request(
            "Missing required parameter: 'expires_after.minutes'.",
            param="expires_after.minutes",
            code="missing_required_parameter",
        )
    return minutes


def network_policy(body: Body, param: str = "network_policy") -> dict[str, Any] | None:
    value = body.get("network_policy")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    if value.get("type") == "disabled":
        return {"type": "disabled"}
    domains = value.get("allowed_domains")
    if value.get("type") != "allowlist" or not isinstance(domains, list):
        raise bad_request(
            f"Invalid '{param}': expected {{'type': 'disabled'}} or {{'type': 'allowlist', "
            "'allowed_domains': [...]}.",
            param=param,
            code="invalid_value",
        )
    return {"type": "allowlist", "allowed_domains": [str(domain) for domain in domains]}

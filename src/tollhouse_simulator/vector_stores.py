"""Vector stores, their files and file batches; status, counts and usage derived from the clock."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tollhouse_simulator.bodies import Body, optional_int, optional_object
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.store import Table

DAY = 86_400
AUTO_CHUNKING = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}
FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")


@dataclass
class VectorStoreFile:
    file_id: str
    vector_store_id: str
    created_at: int
    ready_at: float
    size: int
    attributes: dict[str, Any]
    chunking_strategy: dict[str, Any]
    batch_id: str | None = None
    cancelled: bool = False

    def status(self, now: float) -> str:
        if self.cancelled:
            return "cancelled"
        return "completed" if now >= self.ready_at else "in_progress"

    def usage_bytes(self, now: float) -> int:
        return self.size if self.status(now) == "completed" else 0

    def render(self, now: float) -> dict[str, Any]:
        return {
            "id": self.file_id,
            "object": "vector_store.file",
            "usage_bytes": self.usage_bytes(now),
            "created_at": self.created_at,
            "vector_store_id": self.vector_store_id,
            "status": self.status(now),
            "last_error": None,
            "chunking_strategy": self.chunking_strategy,
            "attributes": self.attributes,
        }


@dataclass
class FileBatch:
    id: str
    vector_store_id: str
    created_at: int
    file_ids: list[str]
    cancelled: bool = False


def file_counts(files: list[VectorStoreFile], now: float) -> dict[str, int]:
    counts = Counter(f.status(now) for f in files)
    return {status: counts[status] for status in FILE_STATUSES} | {"total": len(files)}


@dataclass
class VectorStore:
    id: str
    created_at: int
    name: str
    metadata: dict[str, str]
    expires_after: dict[str, Any] | None
    last_active_at: int
    files: Table[VectorStoreFile] = field(default_factory=Table)
    batches: Table[FileBatch] = field(default_factory=Table)

    def touch(self, now: float) -> None:
        self.last_active_at = max(self.last_active_at, int(now))

    def expires_at(self) -> int | None:
        if self.expires_after is None:
            return None
        return self.last_active_at + int(self.expires_after["days"]) * DAY

    def status(self, now: float) -> str:
        expires_at = self.expires_at()
        if expires_at is not None and now >= expires_at:
            return "expired"
        if any(f.status(now) == "in_progress" for f in self.files):
            return "in_progress"
        return "completed"

    def render(self, now: float) -> dict[str, Any]:
        files = list(self.files)
        return {
            "id": self.id,
            "object": "vector_store",
            "created_at": self.created_at,
            "name": self.name,
            "usage_bytes": sum(f.usage_bytes(now) for f in files),
            "file_counts": file_counts(files, now),
            "status": self.status(now),
            "expires_after": self.expires_after,
            "expires_at": self.expires_at(),
            "last_active_at": self.last_active_at,
            "metadata": self.metadata,
        }

    def attach(
        self,
        file_id: str,
        size: int,
        now: float,
        *,
        processing_seconds: float,
        attributes: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> VectorStoreFile:
        """Attaches a file; one already attached keeps its progress and takes the new settings."""
        self.touch(now)
        existing = self.files.get(file_id)
        if existing is not None and not existing.cancelled:
            existing.attributes = dict(attributes or existing.attributes)
            existing.chunking_strategy = chunking_strategy or existing.chunking_strategy
            existing.batch_id = batch_id or existing.batch_id
            return existing
        self.files.remove(file_id)
        attached = VectorStoreFile(
            file_id=file_id,
            vector_store_id=self.id,
            created_at=int(now),
            ready_at=now + processing_seconds,
            size=size,
            attributes=dict(attributes or {}),
            chunking_strategy=chunking_strategy or AUTO_CHUNKING,
            batch_id=batch_id,
        )
        return self.files.insert(file_id, int(now), attached)

    def batch_files(self, batch: FileBatch) -> list[VectorStoreFile]:
        found = (self.files.get(file_id) for file_id in batch.file_ids)
        return [f for f in found if f is not None and f.batch_id == batch.id]

    def render_batch(self, batch: FileBatch, now: float) -> dict[str, Any]:
        counts = file_counts(self.batch_files(batch), now)
        if batch.cancelled:
            status = "cancelled"
        elif counts["in_progress"]:
            status = "in_progress"
        else:
            status = "completed"
        return {
            "id": batch.id,
            "object": "vector_store.files_batch",
            "created_at": batch.created_at,
            "vector_store_id": self.id,
            "status": status,
            "file_counts": counts,
        }

    def cancel_batch(self, batch: FileBatch, now: float) -> None:
        """Stops the batch's files that are still processing; finished ones stay."""
        pending = [f for f in self.batch_files(batch) if f.status(now) == "in_progress"]
        for attached in pending:
            attached.cancelled = True
        batch.cancelled = batch.cancelled or bool(pending)


def expires_after(body: Body) -> dict[str, Any] | None:
    value = optional_object(body, "expires_after")
    if value is None:
        return None
    if value.get("anchor") != "last_active_at":
        raise bad_request(
            "Invalid 'expires_after.anchor': expected 'last_active_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    days = optional_int(value, "days", 1, 365)
    if days is None:
        raise bad_request(
            "Missing required parameter: 'expires_after.days'.",
            param="expires_after.days",
            code="missing_required_parameter",
        )
    return {"anchor": "last_active_at", "days": days}


def chunking_strategy(body: Body) -> dict[str, Any] | None:
    """The strategy as the API reports it (``auto`` is reported as its static settings)."""
    value = optional_object(body, "chunking_strategy")
    if value is None:
        return None
    if value.get("type") == "auto":
        return AUTO_CHUNKING
    static = value.get("static")
    if value.get("type") != "static" or not isinstance(static, dict):
        raise bad_request(
            "Invalid 'chunking_strategy': expected {'type': 'auto'} or {'type': 'static', "
            "'static': {...}}.",
            param="chunking_strategy",
            code="invalid_value",
        )
    size = optional_int(static, "max_chunk_size_tokens", 100, 4096)
    overlap = optional_int(static, "chunk_overlap_tokens", 0)
    if size is None or overlap is None or overlap > size // 2:
        raise bad_request(
            "Invalid 'chunking_strategy.static': max_chunk_size_tokens (100-4096) and "
            "chunk_overlap_tokens (at most half of it) are required.",
            param="chunking_strategy.static",
            code="invalid_value",
        )
    return {
        "type": "static",
        "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap},
    }


def attributes(body: Body) -> dict[str, Any] | None:
    value = optional_object(body, "attributes")
    if value is None:
        return None
    if len(value) > 16:
        raise bad_request("Invalid 'attributes': at most 16 keys are allowed.", param="attributes")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str | int | float | bool):
            raise bad_request(
                f"Invalid 'attributes.{key[:64]}': keys are at most 64 characters and values "
                "are strings, numbers or booleans.",
                param="attributes",
            )
        if isinstance(item, str) and len(item) > 512:
            raise bad_request(
                f"Invalid 'attributes.{key}': string values are at most 512 characters.",
                param="attributes",
            )
    return dict(value)

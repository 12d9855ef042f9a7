"""Uploaded files: their records and their bytes on disk."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tollhouse_simulator.errors import bad_request

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
SEARCHABLE_BYTES = 4 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


@dataclass
class FileRecord:
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    path: Path
    expires_at: int | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }

    def text(self) -> str | None:
        """The start of the file as text, for search; None once its bytes are gone."""
        try:
            with self.path.open("rb") as handle:
                return handle.read(SEARCHABLE_BYTES).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise bad_request(
            "Missing required parameter: 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in UPLOAD_PURPOSES:
        allowed = ", ".join(repr(p) for p in UPLOAD_PURPOSES)
        raise bad_request(
            f"'{purpose}' is not one of [{allowed}] - 'purpose'",
            param="purpose",
            code="invalid_value",
        )
    return purpose


def file_expiry(anchor: str | None, seconds: str | int | None) -> int | None:
    """Seconds after creation the file expires, from ``expires_after``; None when not given."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise bad_request(
            "Invalid 'expires_after.anchor': expected 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    try:
        value = int(seconds) if seconds is not None else None
    except ValueError:
        value = None
    if value is None or not 3600 <= value <= 2_592_000:
        raise bad_request(
            "Invalid 'expires_after.seconds': expected an integer between 3600 and 2592000.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return value


def copy_to(source: BinaryIO, target: Path) -> int:
    """Copies a file object to ``target`` chunk by chunk; returns the bytes written."""
    with target.open("wb") as handle:
        shutil.copyfileobj(source, handle, COPY_CHUNK)
        return handle.tell()

"""Uploads in parts: the upload record, its parts on disk, and assembling the final file."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tollhouse_simulator.files import COPY_CHUNK, FileRecord

UPLOAD_LIFETIME = 3600
MAX_UPLOAD_BYTES = 8 * 1024**3


@dataclass
class UploadRecord:
    id: str
    created_at: int
    filename: str
    bytes: int
    purpose: str
    mime_type: str
    directory: Path
    file_expires_after: int | None = None
    cancelled: bool = False
    file: FileRecord | None = None
    parts: dict[str, tuple[int, Path]] = field(default_factory=dict)

    @property
    def expires_at(self) -> int:
        return self.created_at + UPLOAD_LIFETIME

    def status(self, now: float) -> str:
        if self.file is not None:
            return "completed"
        if self.cancelled:
            return "cancelled"
        return "expired" if now >= self.expires_at else "pending"

    def render(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "upload",
            "created_at": self.created_at,
            "filename": self.filename,
            "bytes": self.bytes,
            "purpose": self.purpose,
            "status": self.status(now),
            "expires_at": self.expires_at,
            "file": None if self.file is None else self.file.render(),
        }

    def discard_parts(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.parts.clear()


def part_object(part_id: str, created_at: int, upload_id: str) -> dict[str, Any]:
    return {
        "id": part_id,
        "object": "upload.part",
        "created_at": created_at,
        "upload_id": upload_id,
    }


def assemble(paths: list[Path], target: Path) -> int:
    """Concatenates the parts into ``target`` chunk by chunk; returns the bytes written."""
    with target.open("wb") as output:
        for path in paths:
            with path.open("rb") as part:
                shutil.copyfileobj(part, output, COPY_CHUNK)
        return output.tell()

"""A local file of ledger batches that could not be written yet, replayed later.

One JSON line per batch. Appends are flushed and fsynced, so a crash loses at
most the line being written; a torn last line is skipped on replay.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tollhouse.classify import Kind
from tollhouse.ledger import Batch, Owned, Sample, Seen
from tollhouse.meter import ObjectSeen, RunSeen, StepSeen, ToolCallSeen, Usage

log = logging.getLogger(__name__)


def _usage(data: dict[str, Any] | None) -> Usage | None:
    return Usage(**data) if data else None


def _observation(data: dict[str, Any]) -> RunSeen | StepSeen:
    kind = data.pop("type")
    if kind == "run":
        return RunSeen(**{**data, "usage": _usage(data.get("usage"))})
    calls = tuple(ToolCallSeen(**call) for call in data.pop("tool_calls"))
    return StepSeen(**{**data, "tool_calls": calls, "usage": _usage(data.get("usage"))})


def _object(data: dict[str, Any]) -> ObjectSeen:
    return ObjectSeen(**{**data, "kind": Kind(data["kind"])})


def _plain(value: Any) -> Any:
    """Dataclasses (slotted, frozen) to JSON-ready dicts."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def dumps(batch: Batch) -> str:
    seen = []
    for item in batch.seen:
        observation = _plain(item.observation)
        observation["type"] = "run" if isinstance(item.observation, RunSeen) else "step"
        seen.append({"tenant": item.tenant, "observation": observation})
    return json.dumps(
        {
            "owned": [{"tenant": o.tenant, "object": _plain(o.object)} for o in batch.owned],
            "seen": seen,
            "samples": [_plain(s) for s in batch.samples],
            "requests": [[*key, count] for key, count in batch.requests.items()],
            "touched": batch.touched,
        },
        separators=(",", ":"),
    )


def loads(line: str) -> Batch:
    data = json.loads(line)
    return Batch(
        owned=[Owned(o["tenant"], _object(o["object"])) for o in data["owned"]],
        seen=[Seen(s["tenant"], _observation(s["observation"])) for s in data["seen"]],
        samples=[Sample(**s) for s in data["samples"]],
        requests={(t, c, o, m): n for t, c, o, m, n in data["requests"]},
        touched=data.get("touched", {}),
    )


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, batch: Batch) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            spool.write(dumps(batch) + "\n")
            spool.flush()
            os.fsync(spool.fileno())

    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def read(self) -> list[Batch]:
        batches = []
        with self.path.open(encoding="utf-8") as spool:
            for number, line in enumerate(spool, 1):
                try:
                    batches.append(loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("spool %s line %d is unreadable, skipped: %s", self.path, number, exc)
        return batches

    def rewrite(self, batches: list[Batch]) -> None:
        """Keep only ``batches`` (atomically: a crash leaves the old or the new file)."""
        staging = self.path.with_suffix(self.path.suffix + ".tmp")
        with staging.open("w", encoding="utf-8") as spool:
            spool.writelines(dumps(batch) + "\n" for batch in batches)
            spool.flush()
            os.fsync(spool.fileno())
        staging.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

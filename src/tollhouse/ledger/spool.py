"""Ledger batches waiting for the database: an append-only log of segment files."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tollhouse.api.classify import Kind
from tollhouse.ledger.follow import Exchanged
from tollhouse.ledger.store import Batch, Owned, Sample, Seen
from tollhouse.metering.assistants import AssistantSeen
from tollhouse.metering.meter import ObjectSeen, RunSeen, StepSeen, ToolCallSeen, Usage
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    SuccessorSeen,
    TokenUsage,
    ToolItemSeen,
)

log = logging.getLogger(__name__)

# The open segment is closed once it is this large, so a replay's progress is kept
# per segment of bounded size and a drained segment's space is given back early.
SEGMENT_BYTES = 8 * 1024 * 1024
_MARK_WIDTH = 20  # a replay mark: the committed byte offset, zero-padded, one line


def _usage(data: dict[str, Any] | None) -> Usage | None:
    return Usage(**data) if data else None


# How each observation is tagged in a spooled batch.
_TYPES: dict[type, str] = {
    RunSeen: "run",
    StepSeen: "step",
    ResponseSeen: "response",
    ToolItemSeen: "tool_item",
    ContainerSeen: "container",
    ChatCompletionSeen: "chat_completion",
    AssistantSeen: "assistant",
}


def _token_usage(data: dict[str, Any] | None) -> TokenUsage | None:
    return TokenUsage(**data) if data else None


def _successor(kind: str, data: dict[str, Any]) -> SuccessorSeen | AssistantSeen:
    if kind == "assistant":
        tuples = {name: tuple(data[name]) for name in ("tools", "vector_store_ids")}
        return AssistantSeen(**{**data, **tuples})
    if kind == "response":
        return ResponseSeen(**{**data, "usage": _token_usage(data.get("usage"))})
    if kind == "chat_completion":
        return ChatCompletionSeen(**{**data, "usage": _token_usage(data.get("usage"))})
    if kind == "tool_item":
        return ToolItemSeen(**data)
    return ContainerSeen(**data)


def _observation(data: dict[str, Any]) -> RunSeen | StepSeen | SuccessorSeen | AssistantSeen:
    kind = data.pop("type")
    if kind not in ("run", "step"):
        return _successor(kind, data["fields"])  # a tool item has a field named "type"
    if kind == "run":
        return RunSeen(**{**data, "usage": _usage(data.get("usage"))})
    calls = tuple(ToolCallSeen(**call) for call in data.pop("tool_calls"))
    return StepSeen(**{**data, "tool_calls": calls, "usage": _usage(data.get("usage"))})


def _exchanged(data: dict[str, Any]) -> Exchanged:
    tuples = {name: tuple(data[name]) for name in ("runs", "responses")}
    return Exchanged(**{**data, **tuples})


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
        tag = _TYPES[type(item.observation)]
        if tag in ("run", "step"):
            observation = _plain(item.observation)
            observation["type"] = tag
        else:
            observation = {"type": tag, "fields": _plain(item.observation)}
        seen.append({"tenant": item.tenant, "observation": observation})
    return json.dumps(
        {
            "owned": [{"tenant": o.tenant, "object": _plain(o.object)} for o in batch.owned],
            "seen": seen,
            "samples": [_plain(s) for s in batch.samples],
            "requests": [[*key, count] for key, count in batch.requests.items()],
            "touched": batch.touched,
            "exchanges": [_plain(e) for e in batch.exchanges],
            "id": batch.id,
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
        exchanges=[_exchanged(e) for e in data.get("exchanges", ())],
        **({"id": data["id"]} if "id" in data else {}),  # older spools carry no id
    )


@dataclass
class _Segment:
    """A closed segment: ``offset`` bytes of it are in the ledger, the rest waits."""

    path: Path
    offset: int
    bytes: int
    batches: int

    @property
    def mark(self) -> Path:
        return self.path.with_name(self.path.name + ".replayed")


@dataclass(frozen=True)
class _Next:
    """The next batch to replay, read from ``segment``; it ends at byte ``end``."""

    segment: _Segment
    end: int
    size: int
    batch: Batch


class SpoolError(OSError):
    """The spool could not take a batch."""


class Spool:
    """Batches waiting for the database, as an append-only log of segment files.

    Appends go to the open segment, the file at ``path``: each batch is one JSON line
    handed to the kernel in one ``write`` before ``append`` returns (a process crash
    keeps it), and a batch holding owners is also fsynced (a power cut keeps it). A
    replay closes the open segment by renaming it to ``path.N`` (``N`` counting up)
    when no closed segment is left, reads closed segments only, oldest first, and
    deletes one once every batch in it is in the database; appends meanwhile start a
    new open segment. How far a segment has been replayed is kept beside it, in
    ``path.N.replayed``. Nothing already in the spool is read or rewritten by an
    append, and a replay that keeps failing retries the batch it has already read, so
    the cost of a failed write does not grow with the spool.

    A record cut short by a crash can only be a segment's last (a segment is never
    appended to after a restart): it is skipped with a log line. At start, a file left
    at ``path`` (the open segment of a process that stopped, or the single-file spool
    of earlier versions, which has the same format) becomes the newest closed segment.
    """

    def __init__(
        self,
        path: Path,
        fsync: Callable[[int], None] = os.fsync,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.path = path
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # the open segment, the closed list and the sizes
        self._replaying = threading.Lock()  # one replay at a time
        self._fd: int | None = None  # the open segment, from its first append on
        self._open_bytes = 0
        self._open_batches = 0
        self._closed: deque[_Segment] = deque()
        self._closed_bytes = 0
        self._closed_batches = 0
        self._number = 0  # of the newest segment
        self._next: _Next | None = None
        self._recover()

    # -- size -------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes waiting (exported as ``tollhouse_spool_bytes``)."""
        return self._closed_bytes + self._open_bytes

    @property
    def batches(self) -> int:
        """Batches waiting (exported as ``tollhouse_spool_batches``)."""
        return self._closed_batches + self._open_batches

    def pending(self) -> bool:
        return bool(self._closed) or self._open_bytes > 0

    # -- appending --------------------------------------------------------------------

    def append(self, batch: Batch) -> None:
        """Add ``batch`` at the end; raises ``SpoolError`` if the disk refuses it."""
        record = (dumps(batch) + "\n").encode()
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    self._sync_directory()  # the new file's name survives a power cut too
                _write(self._fd, record)
                if batch.owned:
                    self._fsync(self._fd)
            except OSError as exc:
                self._abandon_open()
                raise SpoolError(f"spool {self.path}: {exc}") from exc
            self._open_bytes += len(record)
            self._open_batches += 1
            if self._open_bytes >= self._segment_bytes:
                self._close_open()

    def _abandon_open(self) -> None:
        """After a failed append: cut off what it wrote and close the segment."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._open_bytes)
        except OSError as exc:  # replay skips a partial last record anyway
            log.warning("spool %s: a partial record could not be cut off: %s", self.path, exc)
        self._close_open()

    def _close_open(self) -> None:
        """Rename the open segment to the next ``path.N`` (with ``self._lock`` held)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._open_bytes == 0:
            self.path.unlink(missing_ok=True)
            return
        self._number += 1
        closed = self.path.with_name(f"{self.path.name}.{self._number:010d}")
        os.rename(self.path, closed)
        self._closed.append(_Segment(closed, 0, self._open_bytes, self._open_batches))
        self._closed_bytes += self._open_bytes
        self._closed_batches += self._open_batches
        self._open_bytes = self._open_batches = 0

    def _sync_directory(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # -- replaying --------------------------------------------------------------------

    def replay(self, apply: Callable[[Batch], object], limit: int | None = None) -> int:
        """Hand waiting batches to ``apply``, oldest first; returns how many it took.

        A batch leaves the spool only once ``apply`` has returned for it. If ``apply``
        raises, the exception propagates and that batch and every later one stay;
        the next replay starts with the same batch, without reading it again.
        """
        applied = 0
        with self._replaying:
            while limit is None or applied < limit:
                upcoming = self._upcoming()
                if upcoming is None:
                    break
                apply(upcoming.batch)
                self._advance(upcoming.segment, upcoming.end, upcoming.size, counted=True)
                self._next = None
                applied += 1
        return applied

    def _upcoming(self) -> _Next | None:
        if self._next is not None:
            return self._next
        while True:
            with self._lock:
                if not self._closed:
                    self._close_open()  # what was appended so far is replayed now
                if not self._closed:
                    return None
                segment = self._closed[0]
            self._next = self._read_next(segment)
            if self._next is not None:
                return self._next
            self._drop(segment)

    def _read_next(self, segment: _Segment) -> _Next | None:
        """The first readable batch after ``segment.offset``; None at its end."""
        with segment.path.open("rb") as file:
            file.seek(segment.offset)
            while True:
                start = file.tell()
                line = file.readline()
                if not line:
                    return None
                if not line.endswith(b"\n"):
                    log.warning(
                        "spool %s ends in a record cut short (the process stopped while "
                        "writing it): %d bytes skipped",
                        segment.path,
                        len(line),
                    )
                    self._advance(segment, start + len(line), len(line), counted=False)
                    return None
                batch = _parse(line, segment.path, start)
                if batch is not None:
                    return _Next(segment, start + len(line), len(line), batch)
                self._advance(segment, start + len(line), len(line), counted=True)

    def _advance(self, segment: _Segment, end: int, size: int, counted: bool) -> None:
        """Bytes up to ``end`` of ``segment`` are in the ledger (or were unreadable)."""
        fd = os.open(segment.mark, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"%0*d\n" % (_MARK_WIDTH, end), 0)
        finally:
            os.close(fd)
        with self._lock:
            segment.offset = end
            segment.bytes -= size
            self._closed_bytes -= size
            if counted:
                segment.batches -= 1
                self._closed_batches -= 1

    def _drop(self, segment: _Segment) -> None:
        """Delete a segment whose batches are all in the ledger (the file before its mark)."""
        segment.path.unlink(missing_ok=True)
        segment.mark.unlink(missing_ok=True)
        with self._lock:
            self._closed.popleft()
            self._closed_bytes -= segment.bytes
            self._closed_batches -= segment.batches

    # -- start-up ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Take over the segments a previous process left, in order."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(re.escape(self.path.name) + r"\.(\d+)(\.replayed)?")
        numbers: dict[int, Path] = {}
        marks: list[Path] = []
        for entry in directory.iterdir():
            match = pattern.fullmatch(entry.name)
            if match is not None:
                if match[2]:
                    marks.append(entry)
                else:
                    numbers[int(match[1])] = entry
        for number in sorted(numbers):
            self._closed.append(_recovered(numbers[number]))
        live = {segment.mark for segment in self._closed}
        for mark in marks:
            if mark not in live:  # its segment was deleted just before it
                mark.unlink(missing_ok=True)
        self._number = max(numbers, default=0)
        if self.path.exists():
            self._open_bytes = self.path.stat().st_size
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._open_batches = _count_records(self.path, 0)
            self._close_open()
        self._closed_bytes = sum(segment.bytes for segment in self._closed)
        self._closed_batches = sum(segment.batches for segment in self._closed)
        if self._closed:
            log.info(
                "spool %s: %d batches (%d bytes) from before the start wait for the ledger",
                self.path,
                self._closed_batches,
                self._closed_bytes,
            )

    # -- looking in -------------------------------------------------------------------

    def read(self) -> list[Batch]:
        """Every batch waiting, oldest first (for inspection: replay does not use it)."""
        with self._replaying, self._lock:
            parts = [(segment.path, segment.offset) for segment in self._closed]
            if self.path.exists():
                parts.append((self.path, 0))
            batches = []
            for path, offset in parts:
                with path.open("rb") as file:
                    file.seek(offset)
                    for start, line in _lines(file):
                        batch = _parse(line, path, start) if line.endswith(b"\n") else None
                        if batch is not None:
                            batches.append(batch)
            return batches

    def rewrite(self, batches: list[Batch]) -> None:
        """Keep only ``batches`` (a maintenance operation: replay never rewrites)."""
        self.clear()
        for batch in batches:
            self.append(batch)

    def clear(self) -> None:
        """Drop everything waiting."""
        with self._replaying, self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.path.unlink(missing_ok=True)
            for segment in self._closed:
                segment.path.unlink(missing_ok=True)
                segment.mark.unlink(missing_ok=True)
            self._closed.clear()
            self._next = None
            self._open_bytes = self._open_batches = 0
            self._closed_bytes = self._closed_batches = 0

    def close(self) -> None:
        """Close the open segment's file (it stays where it is, for the next start)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _lines(file: Any) -> Iterator[tuple[int, bytes]]:
    start = file.tell()
    for line in file:
        yield start, line
        start += len(line)


def _parse(line: bytes, path: Path, start: int) -> Batch | None:
    try:
        return loads(line.decode())
    except (ValueError, KeyError, TypeError) as exc:
        log.error("spool %s: unreadable record at byte %d skipped: %s", path, start, exc)
        return None


def _count_records(path: Path, offset: int) -> int:
    count = 0
    with path.open("rb") as file:
        file.seek(offset)
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _recovered(path: Path) -> _Segment:
    segment = _Segment(path, 0, 0, 0)
    try:
        segment.offset = int(segment.mark.read_bytes().strip() or b"0")
    except FileNotFoundError:
        segment.offset = 0
    except ValueError:
        log.warning("spool %s: unreadable replay mark, replaying it from the start", path)
        segment.offset = 0
    size = path.stat().st_size
    segment.offset = min(segment.offset, size)
    segment.bytes = size - segment.offset
    segment.batches = _count_records(path, segment.offset)
    return segment

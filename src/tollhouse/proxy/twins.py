"""Twins: fresh ids of the same shape as another tenant's, that exist nowhere.

A request naming another tenant's object is forwarded with that id replaced by
its twin, and the upstream's answer is relayed with the twin mapped back. The
caller then gets, status for status and byte for byte, whatever the upstream
answers for a missing object, in the upstream's own time, and the other
tenant's id never reaches the upstream on the caller's behalf.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote

from tollhouse.api.references import ID_SHAPE
from tollhouse.proxy.codings import decode, encode

_ALPHABET = string.ascii_letters + string.digits
_LOWER = string.ascii_lowercase + string.digits
CURSORS = frozenset({"after", "before"})


def twin(object_id: str) -> str:
    """A random id with ``object_id``'s prefix, length and alphabet."""
    cut = max(object_id.rfind("_"), object_id.rfind("-")) + 1
    prefix, body = object_id[:cut], object_id[cut:]
    alphabet = _ALPHABET if any(c.isupper() for c in body) else _LOWER
    while True:
        made = prefix + "".join(secrets.choice(alphabet) for _ in body)
        if made != object_id or not body:
            return made


class Twins:
    """The twins of one request: original id -> twin, and back."""

    def __init__(self, foreign: Iterable[str] = ()) -> None:
        self.of: dict[str, str] = {}
        for object_id in foreign:
            self.add(object_id)

    def __bool__(self) -> bool:
        return bool(self.of)

    def add(self, object_id: str) -> str:
        made = self.of.get(object_id)
        if made is None:
            made = self.of[object_id] = twin(object_id)
        return made

    def path(self, raw_path: str) -> str:
        """The raw path with every segment naming a foreign id (once decoded) replaced."""
        return "/".join(self.of.get(unquote(s), s) for s in raw_path.split("/"))

    def query(self, query: str) -> str:
        """The query with every value naming a foreign id replaced; the rest unchanged.

        A value is compared without surrounding blanks, which an upstream may trim.
        """
        if not query:
            return query
        parts = []
        for part in query.split("&"):
            name, equals, value = part.partition("=")
            original = unquote(value.replace("+", " ")).strip()
            if equals and original in self.of:
                part = f"{name}={quote(self.of[original], safe='')}"
            parts.append(part)
        return "&".join(parts)

    def restore(self, body: bytes, coding: bytes = b"") -> bytes:
        """An answer's body with each twin mapped back to the id the caller sent."""
        return encode(self.restore_plain(decode(body, coding)), coding)

    def restore_plain(self, body: bytes) -> bytes:
        for original, made in self.of.items():
            body = body.replace(made.encode(), original.encode())
        return body

    def longest(self) -> int:
        return max((len(made) for made in self.of.values()), default=0)


class StreamRestorer:
    """Maps twins back in a stream cut anywhere: holds back what could start a twin."""

    def __init__(self, twins: Twins) -> None:
        self._twins = twins
        self._keep = max(twins.longest() - 1, 0)
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._twins.restore_plain(self._held + chunk)
        cut = max(len(data) - self._keep, 0)
        self._held = data[cut:]
        return data[:cut]

    def end(self) -> bytes:
        held, self._held = self._held, b""
        return self._twins.restore_plain(held)


def query_ids(query: str) -> tuple[list[str], list[str]]:
    """The ids a query names: its ``after`` / ``before`` cursors, and any other id-shaped value."""
    cursors, others = [], []
    for name, value in parse_qsl(query, keep_blank_values=True):
        value = value.strip()
        if name.strip() in CURSORS and value:
            cursors.append(value)
        elif ID_SHAPE.match(value):
            others.append(value)
    return cursors, others

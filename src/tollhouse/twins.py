"""Twins: fresh ids of the same shape as another tenant's, that exist nowhere.

A request naming another tenant's object is forwarded with that id replaced by
its twin, and the upstream's answer is relayed with the twin mapped back. The
caller then gets, status for status and byte for byte, whatever the upstream
answers for a missing object, in the upstream's own time, and the other
tenant's id never reaches the upstream on the caller's behalf.
"""

from __future__ import annotations

import gzip
import secrets
import string
import zlib
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote

_ALPHABET = string.ascii_letters + string.digits
_LOWER = string.ascii_lowercase + string.digits
# Encodings a twinned answer can be decoded from, to map its twins back.
DECODABLE = (b"gzip", b"deflate", b"identity")
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
        """The query with foreign ids in ``after`` / ``before`` replaced; the rest unchanged."""
        if not query:
            return query
        parts = []
        for part in query.split("&"):
            name, _, value = part.partition("=")
            original = unquote(value.replace("+", " "))
            if unquote(name) in CURSORS and original in self.of:
                part = f"{name}={quote(self.of[original], safe='')}"
            parts.append(part)
        return "&".join(parts)

    def restore(self, body: bytes, encoding: bytes = b"") -> bytes:
        """An answer's body with each twin mapped back to the id the caller sent."""
        encoding = encoding.strip().lower()
        if encoding == b"gzip":
            return gzip.compress(self._restore(gzip.decompress(body)))
        if encoding == b"deflate":
            return zlib.compress(self._restore(_inflate(body)))
        return self._restore(body)

    def _restore(self, body: bytes) -> bytes:
        for original, made in self.of.items():
            body = body.replace(made.encode(), original.encode())
        return body


def _inflate(body: bytes) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error:  # raw deflate, as some servers send it
        return zlib.decompress(body, -zlib.MAX_WBITS)


def cursor_ids(query: str) -> list[str]:
    """The ids a list request names as its ``after`` / ``before`` cursors."""
    return [v for k, v in parse_qsl(query, keep_blank_values=True) if k in CURSORS and v]


def accepted_encodings(value: bytes) -> bytes:
    """An ``accept-encoding`` value narrowed to encodings ``Twins.restore`` can decode."""
    kept = [
        part.strip()
        for part in value.split(b",")
        if part.split(b";")[0].strip().lower() in DECODABLE
    ]
    return b", ".join(kept) or b"identity"

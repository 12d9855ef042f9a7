"""Content codings tollhouse can undo, to read or rewrite a body the upstream compressed."""

from __future__ import annotations

import gzip
import zlib
from typing import Final

# What an answer tollhouse must read or rewrite may be encoded with.
DECODABLE: Final = (b"gzip", b"deflate", b"identity")


class Undecodable(ValueError):
    """A body in a coding tollhouse does not know, or corrupt."""


def decode(body: bytes, coding: bytes) -> bytes:
    coding = coding.strip().lower()
    try:
        if coding == b"gzip":
            return gzip.decompress(body)
        if coding == b"deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:  # raw deflate, as some servers send it
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error) as exc:
        raise Undecodable(str(exc)) from None
    if coding in (b"", b"identity"):
        return body
    raise Undecodable(f"unknown content coding {coding.decode('latin-1')!r}")


def encode(body: bytes, coding: bytes) -> bytes:
    coding = coding.strip().lower()
    if coding == b"gzip":
        return gzip.compress(body)
    if coding == b"deflate":
        return zlib.compress(body)
    return body


def accepted(value: bytes) -> bytes:
    """An ``accept-encoding`` value narrowed to codings tollhouse can undo."""
    kept = [
        part.strip()
        for part in value.split(b",")
        if part.split(b";")[0].strip().lower() in DECODABLE
    ]
    return b", ".join(kept) or b"identity"

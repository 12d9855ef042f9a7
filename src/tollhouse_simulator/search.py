"""Word-match search over file text: chunking, scoring and attribute filters (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tollhouse_simulator.errors import bad_request

WORDS_PER_CHUNK = 200
_WORD = re.compile(r"[\w']+")
_COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")


@dataclass(frozen=True)
class Document:
    file_id: str
    filename: str
    text: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    file_id: str
    filename: str
    score: float
    text: str
    attributes: Mapping[str, Any]


def split_chunks(text: str, words_per_chunk: int = WORDS_PER_CHUNK) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


def terms(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


def score(query: str, chunk: str) -> float:
    """1.0 for the whole query as a substring, else 0.9 times the share of its words found."""
    wanted = terms(query)
    if not wanted:
        return 0.0
    if query.strip().lower() in chunk.lower():
        return 1.0
    return round(0.9 * len(wanted & terms(chunk)) / len(wanted), 4)


def search(
    documents: Iterable[Document],
    queries: list[str],
    *,
    max_results: int,
    score_threshold: float = 0.0,
    filters: Mapping[str, Any] | None = None,
) -> list[Hit]:
    hits: list[Hit] = []
    for document in documents:
        if filters is not None and not matches(filters, document.attributes):
            continue
        for chunk in split_chunks(document.text):
            best = max((score(query, chunk) for query in queries), default=0.0)
            if best > 0 and best >= score_threshold:
                hits.append(
                    Hit(document.file_id, document.filename, best, chunk, document.attributes)
                )
    hits.sort(key=lambda hit: -hit.score)
    return hits[:max_results]


def validate_filter(value: object, param: str = "filters") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"Invalid '{param}': expected an object.", param=param)
    kind = value.get("type")
    if kind in ("and", "or"):
        nested = value.get("filters")
        if not isinstance(nested, list):
            raise bad_request(f"Invalid '{param}.filters': expected an array.", param=param)
        for index, item in enumerate(nested):
            validate_filter(item, f"{param}.filters[{index}]")
        return value
    if kind not in _COMPARISONS or not isinstance(value.get("key"), str) or "value" not in value:
        raise bad_request(
            f"Invalid '{param}': expected a comparison filter (type one of "
            f"{', '.join(_COMPARISONS)}, with key and value) or a compound filter (and, or).",
            param=param,
        )
    return value


def matches(condition: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    kind = condition["type"]
    if kind == "and":
        return all(matches(item, attributes) for item in condition["filters"])
    if kind == "or":
        return any(matches(item, attributes) for item in condition["filters"])
    actual = attributes.get(condition["key"])
    expected = condition["value"]
    if kind == "eq":
        return bool(actual == expected)
    if kind == "ne":
        return bool(actual != expected)
    if kind == "in":
        return isinstance(expected, list) and actual in expected
    if kind == "nin":
        return isinstance(expected, list) and actual not in expected
    if not isinstance(actual, int | float) or not isinstance(expected, int | float):
        return False
    return {
        "gt": actual > expected,
        "gte": actual >= expected,
        "lt": actual < expected,
        "lte": actual <= expected,
    }[kind]

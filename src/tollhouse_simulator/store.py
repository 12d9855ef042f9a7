"""In-memory tables of API objects, random ids, and cursor pagination over them."""

from __future__ import annotations

import itertools
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tollhouse_simulator.errors import bad_request

T = TypeVar("T")

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A random id with OpenAI's prefix convention (``asst_``, ``file-``...), 24 base62 chars."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ListParams:
    limit: int
    order: str
    after: str | None
    before: str | None


def list_params(
    query: Mapping[str, str],
    *,
    default_limit: int = 20,
    max_limit: int = 100,
    default_order: str = "desc",
) -> ListParams:
    """Parses ``limit``/``order``/``after``/``before``, answering 400 like OpenAI when invalid."""
    raw_limit = query.get("limit")
    limit = default_limit
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise bad_request(
                f"Invalid 'limit': expected an integer, but got '{raw_limit}' instead.",
                param="limit",
                code="invalid_type",
            ) from None
        if limit < 1:
            raise bad_request(
                "Invalid 'limit': integer below minimum value. "
                f"Expected a value >= 1, but got {limit} instead.",
                param="limit",
                code="integer_below_min_value",
            )
        if limit > max_limit:
            raise bad_request(
                "Invalid 'limit': integer above maximum value. "
                f"Expected a value <= {max_limit}, but got {limit} instead.",
                param="limit",
                code="integer_above_max_value",
            )
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise bad_request(
            f"Invalid value for 'order': expected one of 'asc' or 'desc', got '{order}'.",
            param="order",
            code="invalid_value",
        )
    return ListParams(limit, order, query.get("after") or None, query.get("before") or None)


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[tuple[str, T]]
    has_more: bool

    def json(self, render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
        data = [render(value) for _, value in self.rows]
        return {
            "object": "list",
            "data": data,
            "first_id": self.rows[0][0] if self.rows else None,
            "last_id": self.rows[-1][0] if self.rows else None,
            "has_more": self.has_more,
        }


class Table(Generic[T]):
    """Objects by id, ordered by (created_at, insertion order).

    Deleted ids keep their position, so a client paginating with ``after=<deleted id>``
    (a cleaner deleting what it lists) still gets the next page.
    """

    def __init__(self) -> None:
        self._rows: dict[str, T] = {}
        self._positions: dict[str, tuple[int, int]] = {}
        self._seq = itertools.count()

    def insert(self, object_id: str, created_at: int, value: T) -> T:
        self._rows[object_id] = value
        self._positions[object_id] = (created_at, next(self._seq))
        return value

    def get(self, object_id: str) -> T | None:
        return self._rows.get(object_id)

    def remove(self, object_id: str) -> T | None:
        return self._rows.pop(object_id, None)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._rows.values()))

    def page(self, params: ListParams, keep: Callable[[T], bool] | None = None) -> Page[T]:
        position = self._positions.__getitem__
        ordered = sorted(self._rows, key=position, reverse=params.order == "desc")
        rows = [(i, self._rows[i]) for i in ordered if keep is None or keep(self._rows[i])]

        def later(first: str, second: tuple[int, int]) -> bool:
            if params.order == "asc":
                return position(first) > second
            return position(first) < second

        if params.after is not None:
            after = self._cursor(params.after, "after")
            rows = [row for row in rows if later(row[0], after)]
        if params.before is not None:
            before = self._cursor(params.before, "before")
            rows = [row for row in rows if not later(row[0], before) and row[0] != params.before]
            return Page(rows[-params.limit :], len(rows) > params.limit)
        return Page(rows[: params.limit], len(rows) > params.limit)

    def _cursor(self, cursor: str, param: str) -> tuple[int, int]:
        position = self._positions.get(cursor)
        if position is None:
            raise bad_request(
                f"Invalid '{param}': no object found with id '{cursor}'.", param=param
            )
        return position

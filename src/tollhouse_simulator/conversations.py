"""Conversations: the object and its items, which responses read and add to."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tollhouse_simulator.inputs import Item
from tollhouse_simulator.store import Table

MAX_ITEMS_PER_REQUEST = 20


@dataclass
class Conversation:
    id: str
    created_at: int
    metadata: dict[str, str]
    items: Table[Item] = field(default_factory=Table)

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
        }

    def add(self, items: list[Item], now: float) -> list[Item]:
        """Appends copies of the items; one already in the conversation stays where it is."""
        added = []
        for item in items:
            if item["id"] not in self.items:
                added.append(self.items.insert(item["id"], int(now), copy.deepcopy(item)))
        return added

    def history(self) -> list[Item]:
        """The items oldest first, as a response reads them."""
        return [copy.deepcopy(item) for item in self.items]

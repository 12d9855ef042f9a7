"""Objects an answer under a tenant's own parent holds without the request naming them."""

from __future__ import annotations

from typing import Any

import pytest

from tollhouse.classify import Kind
from tollhouse.sightings import sightings

MESSAGE = {
    "id": "msg_reply",
    "object": "thread.message",
    "thread_id": "thread_1",
    "created_at": 5,
    "content": [
        {"type": "image_file", "image_file": {"file_id": "file-plot"}},
        {"type": "text", "text": {"annotations": [{"file_path": {"file_id": "file-csv"}}]}},
    ],
    "attachments": [{"file_id": "file-named-by-caller"}],
}
STEP = {
    "id": "step_1",
    "object": "thread.run.step",
    "step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_2"}},
}
THREAD = {
    "id": "thread_1",
    "object": "thread",
    "created_at": 1,
    "tool_resources": {"file_search": {"vector_store_ids": ["vs_helper"]}},
}


@pytest.mark.parametrize(
    ("document", "created", "expected"),
    [
        (MESSAGE, False, {("msg_reply", Kind.MESSAGE), ("file-plot", Kind.FILE),
                          ("file-csv", Kind.FILE)}),
        ({"object": "list", "data": [STEP]}, False, {("msg_2", Kind.MESSAGE)}),
        (THREAD, True, {("thread_1", Kind.THREAD), ("vs_helper", Kind.VECTOR_STORE)}),
        (THREAD, False, {("thread_1", Kind.THREAD)}),
        ({"object": "thread.run", "id": "run_1", "thread_id": "thread_1",
          "assistant_id": "asst_shared"}, False, {("run_1", Kind.RUN)}),
        ("not an object", False, set()),
    ],
)  # fmt: skip
def test_sightings(document: Any, created: bool, expected: set[tuple[str, Kind]]) -> None:
    assert {(s.id, s.kind) for s in sightings(document, created)} == expected


def test_a_message_sighting_keeps_its_thread_and_time() -> None:
    message = next(s for s in sightings(MESSAGE) if s.kind == Kind.MESSAGE)
    assert (message.parent_id, message.created_at) == ("thread_1", 5)

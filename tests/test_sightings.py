"""Objects an answer under a tenant's own parent holds without the request naming them."""

from __future__ import annotations

from typing import Any

import pytest

from tollhouse.api.classify import Kind
from tollhouse.proxy.sightings import sightings

MESSAGE = {
    "id": "msg_reply",
    "object": "thread.message",
    "thread_id": "thread_1",
    "role": "assistant",
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
    "thread_id": "thread_1",
    "step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_2"}},
}
THREAD = {
    "id": "thread_1",
    "object": "thread",
    "created_at": 1,
    "tool_resources": {"file_search": {"vector_store_ids": ["vs_helper"]}},
}


ECHO = {  # a create's answer echoes what its request wrote: none of it is a sighting
    "id": "asst_1",
    "object": "assistant",
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "x": {"object": "thread", "id": "thread_theirs"},
                    "y": {"object": "thread.message", "id": "msg_theirs", "thread_id": "thread_1"},
                    "message_id": "msg_theirs",
                    "file_id": "file-theirs",
                },
            },
        }
    ],
    "metadata": {"file_id": "file-theirs"},
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "output": [
        {"type": "code_interpreter_call", "id": "ci_1", "container_id": "cntr_auto"},
        {"type": "message", "content": [{"type": "output_text", "text": "cntr_x"}]},
    ],
}


def mine(thread_id: str) -> bool:
    return thread_id == "thread_1"


@pytest.mark.parametrize(
    ("document", "created", "expected"),
    [
        (MESSAGE, False, {("msg_reply", Kind.MESSAGE), ("file-plot", Kind.FILE),
                          ("file-csv", Kind.FILE)}),
        (MESSAGE | {"role": "user"}, False, {("msg_reply", Kind.MESSAGE)}),
        (MESSAGE | {"thread_id": "thread_other"}, False, set()),
        ({"object": "list", "data": [STEP]}, False, {("msg_2", Kind.MESSAGE)}),
        (STEP | {"thread_id": "thread_other"}, False, set()),
        (THREAD, True, {("vs_helper", Kind.VECTOR_STORE)}),
        (THREAD, False, set()),
        (ECHO, True, set()),
        (RESPONSE, True, {("cntr_auto", Kind.CONTAINER)}),
        ({"type": "response.completed", "sequence_number": 9, "response": RESPONSE}, False,
         {("cntr_auto", Kind.CONTAINER)}),
        ({"type": "response.output_item.done", "item": RESPONSE["output"][0]}, False,
         {("cntr_auto", Kind.CONTAINER)}),
        ("not an object", False, set()),
    ],
)  # fmt: skip
def test_sightings(document: Any, created: bool, expected: set[tuple[str, Kind]]) -> None:
    assert {(s.id, s.kind) for s in sightings(document, mine, created)} == expected


def test_a_message_sighting_keeps_its_thread_and_time() -> None:
    message = next(s for s in sightings(MESSAGE, mine) if s.kind == Kind.MESSAGE)
    assert (message.parent_id, message.created_at) == ("thread_1", 5)

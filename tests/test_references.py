"""The ids a request body names, and the body with some of them replaced."""

from __future__ import annotations

import json

import pytest

from tollhouse.api.classify import Kind
from tollhouse.api.references import UnreadableBody, parse, references, replaced


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"assistant_id": "asst_1"}', [(Kind.ASSISTANT, "asst_1")]),
        (b'{"file_ids": ["file-1", "file-2", 3]}', [(Kind.FILE, "file-1"), (Kind.FILE, "file-2")]),
        (
            b'{"thread": {"messages": [{"attachments": [{"file_id": "file-9"}]}]},'
            b' "tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}}',
            [(Kind.VECTOR_STORE, "vs_1"), (Kind.FILE, "file-9")],
        ),
        (
            b'{"assistant_id": "asst_mine", "assistant_id": "asst_theirs"}',
            [(Kind.ASSISTANT, "asst_mine"), (Kind.ASSISTANT, "asst_theirs")],
        ),
        (b'{"assistant_id": "\\u0061sst_1"}', [(Kind.ASSISTANT, "asst_1")]),
        (
            b'{"tool_resources": {"file_search": {"vector_stores": [{"file_ids": ["file-3"]}]}}}',
            [(Kind.FILE, "file-3")],
        ),
        (b'{"content": [{"type": "image_file", "image_file": {"file_id": "file-4"}}]}',
         [(Kind.FILE, "file-4")]),
        (b'{"metadata": {"note": "asst_1"}}', []),
        (b'{"previous_response_id": "resp_1", "conversation": "conv_1"}',
         [(Kind.RESPONSE, "resp_1"), (Kind.CONVERSATION, "conv_1")]),
        (b'{"conversation": {"id": "conv_2"},'
         b' "input": [{"type": "input_file", "file_id": "file-5"}]}',
         [(Kind.CONVERSATION, "conv_2"), (Kind.FILE, "file-5")]),
        (b'{"tools": [{"type": "code_interpreter", "container": "cntr_1"},'
         b' {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-6"]}},'
         b' {"type": "file_search", "vector_store_ids": ["vs_9"]}]}',
         [(Kind.CONTAINER, "cntr_1"), (Kind.FILE, "file-6"), (Kind.VECTOR_STORE, "vs_9")]),
        (b"[]", []),
        (b'"asst_1"', []),
    ],
)  # fmt: skip
def test_references(body: bytes, expected: list[tuple[Kind, str]]) -> None:
    assert sorted(references(parse(body))) == sorted(expected)


def test_every_one_of_many_ids_is_found() -> None:
    ids = [f"file-{n:06d}" for n in range(5000)]
    assert len(references(parse(json.dumps({"file_ids": ids}).encode()))) == 5000


@pytest.mark.parametrize("body", [b'{"model": "gpt-4o",,,', b"\xff\xfe", b"[" * 100_000])
def test_bodies_that_are_not_json_are_unreadable(body: bytes) -> None:
    with pytest.raises(UnreadableBody):
        parse(body)


def test_a_conversation_named_by_object_is_replaced_in_its_id() -> None:
    body = b'{"conversation": {"id": "conv_a"}, "id": "conv_a"}'
    out = replaced(parse(body), {"conv_a": "conv_z"})
    assert out == b'{"conversation":{"id":"conv_z"},"id":"conv_a"}'


def test_replacing_keeps_everything_else() -> None:
    body = (
        b'{"assistant_id": "asst_a", "assistant_id": "asst_b", "metadata": {"x": "asst_a"},'
        b' "additional_messages": [{"attachments": [{"file_id": "file-a"}]}], "n": 1.5}'
    )
    out = replaced(parse(body), {"asst_a": "asst_z", "file-a": "file-z"})
    assert out == (
        b'{"assistant_id":"asst_z","assistant_id":"asst_b","metadata":{"x":"asst_a"},'
        b'"additional_messages":[{"attachments":[{"file_id":"file-z"}]}],"n":1.5}'
    )

"""One table: every endpoint tollhouse knows, with its operation and class."""

from __future__ import annotations

import pytest

from tollhouse.api.classify import ROUTES, UNKNOWN, Kind, RequestClass, classify

G, P, R, D = RequestClass.GET, RequestClass.POST, RequestClass.RUN_CREATE, RequestClass.DELETE
T = "/v1/threads/thread_abc"
RUN = T + "/runs/run_abc"
VS = "/v1/vector_stores/vs_abc"
RC, CC = RequestClass.RESPONSE_CREATE, RequestClass.CHAT_COMPLETION
RS, U = RequestClass.RESPONSES, RequestClass.UNKNOWN
RESP, CONV = "/v1/responses/resp_1", "/v1/conversations/conv_1"
CONT, CHAT = "/v1/containers/cntr_1", "/v1/chat/completions/chatcmpl-1"

TABLE = [
    ("GET", "/v1/assistants", "assistants.list", G, {}),
    ("POST", "/v1/assistants", "assistants.create", P, {}),
    ("GET", "/v1/assistants/asst_abc", "assistants.retrieve", G, {"assistant_id": "asst_abc"}),
    ("POST", "/v1/assistants/asst_abc", "assistants.update", P, {"assistant_id": "asst_abc"}),
    ("DELETE", "/v1/assistants/asst_abc", "assistants.delete", D, {"assistant_id": "asst_abc"}),
    ("POST", "/v1/threads", "threads.create", P, {}),
    ("POST", "/v1/threads/runs", "threads.create_and_run", R, {}),
    ("GET", T, "threads.retrieve", G, {"thread_id": "thread_abc"}),
    ("POST", T, "threads.update", P, {"thread_id": "thread_abc"}),
    ("DELETE", T, "threads.delete", D, {"thread_id": "thread_abc"}),
    ("GET", T + "/messages", "threads.messages.list", G, {"thread_id": "thread_abc"}),
    ("POST", T + "/messages", "threads.messages.create", P, {"thread_id": "thread_abc"}),
    (
        "GET",
        T + "/messages/msg_1",
        "threads.messages.retrieve",
        G,
        {"thread_id": "thread_abc", "message_id": "msg_1"},
    ),
    (
        "POST",
        T + "/messages/msg_1",
        "threads.messages.update",
        P,
        {"thread_id": "thread_abc", "message_id": "msg_1"},
    ),
    (
        "DELETE",
        T + "/messages/msg_1",
        "threads.messages.delete",
        D,
        {"thread_id": "thread_abc", "message_id": "msg_1"},
    ),
    ("GET", T + "/runs", "threads.runs.list", G, {"thread_id": "thread_abc"}),
    ("POST", T + "/runs", "threads.runs.create", R, {"thread_id": "thread_abc"}),
    ("GET", RUN, "threads.runs.retrieve", G, {"thread_id": "thread_abc", "run_id": "run_abc"}),
    ("POST", RUN, "threads.runs.update", P, {"thread_id": "thread_abc", "run_id": "run_abc"}),
    (
        "POST",
        RUN + "/cancel",
        "threads.runs.cancel",
        P,
        {"thread_id": "thread_abc", "run_id": "run_abc"},
    ),
    (
        "POST",
        RUN + "/submit_tool_outputs",
        "threads.runs.submit_tool_outputs",
        P,
        {"thread_id": "thread_abc", "run_id": "run_abc"},
    ),
    (
        "GET",
        RUN + "/steps",
        "threads.runs.steps.list",
        G,
        {"thread_id": "thread_abc", "run_id": "run_abc"},
    ),
    (
        "GET",
        RUN + "/steps/step_1",
        "threads.runs.steps.retrieve",
        G,
        {"thread_id": "thread_abc", "run_id": "run_abc", "step_id": "step_1"},
    ),
    ("GET", "/v1/vector_stores", "vector_stores.list", G, {}),
    ("POST", "/v1/vector_stores", "vector_stores.create", P, {}),
    ("GET", VS, "vector_stores.retrieve", G, {"vector_store_id": "vs_abc"}),
    ("POST", VS, "vector_stores.update", P, {"vector_store_id": "vs_abc"}),
    ("DELETE", VS, "vector_stores.delete", D, {"vector_store_id": "vs_abc"}),
    ("POST", VS + "/search", "vector_stores.search", P, {"vector_store_id": "vs_abc"}),
    ("GET", VS + "/files", "vector_stores.files.list", G, {"vector_store_id": "vs_abc"}),
    ("POST", VS + "/files", "vector_stores.files.create", P, {"vector_store_id": "vs_abc"}),
    (
        "GET",
        VS + "/files/file-1",
        "vector_stores.files.retrieve",
        G,
        {"vector_store_id": "vs_abc", "file_id": "file-1"},
    ),
    (
        "POST",
        VS + "/files/file-1",
        "vector_stores.files.update",
        P,
        {"vector_store_id": "vs_abc", "file_id": "file-1"},
    ),
    (
        "DELETE",
        VS + "/files/file-1",
        "vector_stores.files.delete",
        D,
        {"vector_store_id": "vs_abc", "file_id": "file-1"},
    ),
    (
        "GET",
        VS + "/files/file-1/content",
        "vector_stores.files.content",
        G,
        {"vector_store_id": "vs_abc", "file_id": "file-1"},
    ),
    (
        "POST",
        VS + "/file_batches",
        "vector_stores.file_batches.create",
        P,
        {"vector_store_id": "vs_abc"},
    ),
    (
        "GET",
        VS + "/file_batches/vsfb_1",
        "vector_stores.file_batches.retrieve",
        G,
        {"vector_store_id": "vs_abc", "batch_id": "vsfb_1"},
    ),
    (
        "POST",
        VS + "/file_batches/vsfb_1/cancel",
        "vector_stores.file_batches.cancel",
        P,
        {"vector_store_id": "vs_abc", "batch_id": "vsfb_1"},
    ),
    (
        "GET",
        VS + "/file_batches/vsfb_1/files",
        "vector_stores.file_batches.list_files",
        G,
        {"vector_store_id": "vs_abc", "batch_id": "vsfb_1"},
    ),
    ("GET", "/v1/files", "files.list", G, {}),
    ("POST", "/v1/files", "files.create", P, {}),
    ("GET", "/v1/files/file-1", "files.retrieve", G, {"file_id": "file-1"}),
    ("DELETE", "/v1/files/file-1", "files.delete", D, {"file_id": "file-1"}),
    ("GET", "/v1/files/file-1/content", "files.content", G, {"file_id": "file-1"}),
    ("POST", "/v1/uploads", "uploads.create", P, {}),
    ("POST", "/v1/uploads/upload_1/parts", "uploads.parts.create", P, {"upload_id": "upload_1"}),
    ("POST", "/v1/uploads/upload_1/complete", "uploads.complete", P, {"upload_id": "upload_1"}),
    ("POST", "/v1/uploads/upload_1/cancel", "uploads.cancel", P, {"upload_id": "upload_1"}),
    # HEAD and OPTIONS: exactly what GET on the same path is
    ("HEAD", "/v1/assistants", "assistants.list", G, {}),
    ("OPTIONS", "/v1/assistants", "assistants.list", G, {}),
    ("HEAD", RUN, "threads.runs.retrieve", G, {"thread_id": "thread_abc", "run_id": "run_abc"}),
    ("OPTIONS", T, "threads.retrieve", G, {"thread_id": "thread_abc"}),
    ("head", "/v1/files/file-1/content", "files.content", G, {"file_id": "file-1"}),
    ("options", VS + "/files", "vector_stores.files.list", G, {"vector_store_id": "vs_abc"}),
    ("HEAD", "/v1/uploads/upload_1/parts", UNKNOWN, U, {}),  # POST only: no GET route
    ("OPTIONS", RUN + "/cancel", UNKNOWN, U, {}),
    ("HEAD", RESP, "responses.retrieve", RS, {"response_id": "resp_1"}),
    # the Responses era: classes of their own, never the Assistants API's limits
    ("POST", "/v1/responses", "responses.create", RC, {}),
    ("POST", "/v1/responses/compact", "responses.compact", RC, {}),
    ("POST", "/v1/responses/input_tokens", "responses.input_tokens", RS, {}),
    ("GET", RESP, "responses.retrieve", RS, {"response_id": "resp_1"}),
    ("DELETE", RESP, "responses.delete", RS, {"response_id": "resp_1"}),
    ("POST", RESP + "/cancel", "responses.cancel", RS, {"response_id": "resp_1"}),
    ("GET", RESP + "/input_items", "responses.input_items", RS, {"response_id": "resp_1"}),
    ("POST", "/v1/conversations", "conversations.create", RS, {}),
    ("GET", CONV, "conversations.retrieve", RS, {"conversation_id": "conv_1"}),
    ("POST", CONV, "conversations.update", RS, {"conversation_id": "conv_1"}),
    ("DELETE", CONV, "conversations.delete", RS, {"conversation_id": "conv_1"}),
    ("POST", CONV + "/items", "conversations.items.create", RS, {"conversation_id": "conv_1"}),
    ("GET", CONV + "/items", "conversations.items.list", RS, {"conversation_id": "conv_1"}),
    (
        "GET",
        CONV + "/items/msg_1",
        "conversations.items.retrieve",
        RS,
        {"conversation_id": "conv_1", "item_id": "msg_1"},
    ),
    (
        "DELETE",
        CONV + "/items/msg_1",
        "conversations.items.delete",
        RS,
        {"conversation_id": "conv_1", "item_id": "msg_1"},
    ),
    ("GET", "/v1/containers", "containers.list", RS, {}),
    ("POST", "/v1/containers", "containers.create", RS, {}),
    ("GET", CONT, "containers.retrieve", RS, {"container_id": "cntr_1"}),
    ("DELETE", CONT, "containers.delete", RS, {"container_id": "cntr_1"}),
    ("POST", CONT + "/files", "containers.files.create", RS, {"container_id": "cntr_1"}),
    ("GET", CONT + "/files", "containers.files.list", RS, {"container_id": "cntr_1"}),
    (
        "GET",
        CONT + "/files/cfile_1",
        "containers.files.retrieve",
        RS,
        {"container_id": "cntr_1", "container_file_id": "cfile_1"},
    ),
    (
        "DELETE",
        CONT + "/files/cfile_1",
        "containers.files.delete",
        RS,
        {"container_id": "cntr_1", "container_file_id": "cfile_1"},
    ),
    (
        "GET",
        CONT + "/files/cfile_1/content",
        "containers.files.content",
        RS,
        {"container_id": "cntr_1", "container_file_id": "cfile_1"},
    ),
    ("POST", "/v1/chat/completions", "chat.completions.create", CC, {}),
    ("GET", "/v1/chat/completions", "chat.completions.list", RS, {}),
    ("GET", CHAT, "chat.completions.retrieve", RS, {"completion_id": "chatcmpl-1"}),
    ("POST", CHAT, "chat.completions.update", RS, {"completion_id": "chatcmpl-1"}),
    ("DELETE", CHAT, "chat.completions.delete", RS, {"completion_id": "chatcmpl-1"}),
    (
        "GET",
        CHAT + "/messages",
        "chat.completions.messages.list",
        RS,
        {"completion_id": "chatcmpl-1"},
    ),
    # unknown paths: a class of their own, whatever the method
    ("GET", "/v1/embeddings/emb_1", UNKNOWN, U, {}),
    ("POST", "/v1/assistants/asst_abc/clone", UNKNOWN, U, {}),
    ("DELETE", "/v1/threads/thread_abc/runs/run_abc", UNKNOWN, U, {}),
    ("PATCH", "/v1/assistants/asst_abc", UNKNOWN, U, {}),
    ("GET", "/v1/threads//runs", UNKNOWN, U, {}),
]


@pytest.mark.parametrize(("method", "path", "name", "request_class", "params"), TABLE)
def test_classify(
    method: str, path: str, name: str, request_class: RequestClass, params: dict[str, str]
) -> None:
    operation = classify(method, path)
    assert operation.name == name
    assert operation.request_class is request_class
    assert dict(operation.params) == params


def test_every_route_is_in_the_table() -> None:
    covered = {name for _, _, name, _, _ in TABLE}
    assert {route.name for route in ROUTES} <= covered
    assert len({(r.method, r.template) for r in ROUTES}) == len(ROUTES)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_are_classified_like_get(method: str) -> None:
    for path in sorted({path for _, path, _, _, _ in TABLE}):
        assert classify(method, path) == classify("GET", path), path


def test_trailing_slash_and_method_case() -> None:
    assert classify("get", "/v1/assistants/").name == "assistants.list"


@pytest.mark.parametrize(
    ("method", "path", "kind", "streams"),
    [
        ("POST", "/v1/assistants", Kind.ASSISTANT, False),
        ("POST", "/v1/threads", Kind.THREAD, False),
        ("POST", "/v1/threads/runs", Kind.RUN, True),
        ("POST", T + "/runs", Kind.RUN, True),
        ("POST", RUN + "/submit_tool_outputs", None, True),
        ("POST", T + "/messages", Kind.MESSAGE, False),
        ("POST", "/v1/vector_stores", Kind.VECTOR_STORE, False),
        ("POST", "/v1/files", Kind.FILE, False),
        ("GET", RUN, None, False),
    ],
)
def test_created_kinds_and_streaming(
    method: str, path: str, kind: Kind | None, streams: bool
) -> None:
    operation = classify(method, path)
    assert operation.creates == kind
    assert operation.streams is streams

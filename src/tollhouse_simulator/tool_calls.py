"""Hosted tool calls a response makes, as phases: web and file search, code, images, MCP."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from typing import Any

from tollhouse_simulator.outputs import Item, Phase, Writer, complete_item, item_events
from tollhouse_simulator.search import Hit
from tollhouse_simulator.steps import code_interpreter_call
from tollhouse_simulator.store import new_id
from tollhouse_simulator.tokens import TOOL_CALL_OVERHEAD, count_tokens

RESULTS_PER_SEARCH = 2


def web_search_phases(w: Writer, query: str) -> list[Phase]:
    item_id = new_id("ws_")
    item: Item = {"id": item_id, "type": "web_search_call", "status": "in_progress"}
    item["action"] = {"type": "search", "query": query}
    slug = "-".join(query.lower().split()[:6]) or "search"
    sources = [
        {"type": "url", "url": f"https://example.com/{slug}/{n}"} for n in range(RESULTS_PER_SEARCH)
    ]
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)
        item_events(w, index, item_id, "response.web_search_call.in_progress")

    def search() -> None:
        item["status"] = "searching"
        item_events(w, index, item_id, "response.web_search_call.searching")

    def end() -> None:
        item["action"]["sources"] = sources
        w.spend(read=RESULTS_PER_SEARCH * count_tokens(f"A page about {query}."))
        w.spend(written=TOOL_CALL_OVERHEAD + count_tokens(query))
        w.note(f"A web search for {query!r} found {len(sources)} pages.")
        item_events(w, index, item_id, "response.web_search_call.completed")
        complete_item(w, index, item)

    return [start, search, end]


def file_search_phases(w: Writer, query: str, search: Callable[[], list[Hit]]) -> list[Phase]:
    item_id = new_id("fs_")
    item: Item = {"id": item_id, "type": "file_search_call", "status": "in_progress"}
    item.update(queries=[query], results=None)
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)
        item_events(w, index, item_id, "response.file_search_call.in_progress")

    def searching() -> None:
        item["status"] = "searching"
        item_events(w, index, item_id, "response.file_search_call.searching")

    def end() -> None:
        hits = search()
        item["results"] = [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": hit.score,
                "text": hit.text,
                "attributes": dict(hit.attributes),
            }
            for hit in hits
        ]
        w.spend(read=sum(count_tokens(hit.text) for hit in hits))
        w.spend(written=TOOL_CALL_OVERHEAD + count_tokens(query))
        names = sorted({hit.filename for hit in hits})
        w.note(f"File search found {len(hits)} passages in {names or 'no files'}.")
        item_events(w, index, item_id, "response.file_search_call.completed")
        complete_item(w, index, item)

    return [start, searching, end]


def code_phases(w: Writer, question: str, container: Callable[[], str]) -> list[Phase]:
    item_id = new_id("ci_")
    call, logs = code_interpreter_call(item_id, question)
    code = call["code_interpreter"]["input"]
    item: Item = {"id": item_id, "type": "code_interpreter_call", "status": "in_progress"}
    item.update(container_id="", code="", outputs=None)
    index = -1

    def start() -> None:
        nonlocal index
        item["container_id"] = container()
        index = w.add(item)
        item_events(w, index, item_id, "response.code_interpreter_call.in_progress")

    def write() -> None:
        item["code"] = code
        w.emit(
            "response.code_interpreter_call_code.delta",
            output_index=index,
            item_id=item_id,
            delta=code,
        )
        w.emit(
            "response.code_interpreter_call_code.done",
            output_index=index,
            item_id=item_id,
            code=code,
        )
        item["status"] = "interpreting"
        item_events(w, index, item_id, "response.code_interpreter_call.interpreting")

    def end() -> None:
        container()  # the container was used: it stays active longer
        item["outputs"] = [{"type": "logs", "logs": logs}]
        w.spend(
            read=count_tokens(f"{code} {logs}"), written=TOOL_CALL_OVERHEAD + count_tokens(code)
        )
        w.note(f"The code interpreter printed {logs.strip()}.")
        item_events(w, index, item_id, "response.code_interpreter_call.completed")
        complete_item(w, index, item)

    return [start, write, end]


def tiny_png() -> str:
    """A 1x1 grey PNG in base64: a real image, as small as one gets."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
    return base64.b64encode(png + chunk(b"IEND", b"")).decode()


def image_phases(w: Writer, partial_images: int) -> list[Phase]:
    item_id = new_id("ig_")
    item: Item = {"id": item_id, "type": "image_generation_call", "status": "in_progress"}
    item["result"] = None
    image = tiny_png()
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)
        item_events(w, index, item_id, "response.image_generation_call.in_progress")

    def generate() -> None:
        item["status"] = "generating"
        item_events(w, index, item_id, "response.image_generation_call.generating")
        for number in range(partial_images):
            w.emit(
                "response.image_generation_call.partial_image",
                output_index=index,
                item_id=item_id,
                partial_image_index=number,
                partial_image_b64=image,
            )

    def end() -> None:
        w.note("An image was generated.")
        item_events(w, index, item_id, "response.image_generation_call.completed")
        complete_item(w, index, item, result=image)

    return [start, generate, end]


def mcp_list_phases(w: Writer, server_label: str, names: list[str]) -> list[Phase]:
    item_id = new_id("mcpl_")
    tools: list[dict[str, Any]] = [
        {
            "name": name,
            "description": f"{name} on {server_label}",
            "input_schema": {"type": "object"},
        }
        for name in names
    ]
    item: Item = {
        "id": item_id,
        "type": "mcp_list_tools",
        "server_label": server_label,
        "tools": [],
    }
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)
        item_events(w, index, item_id, "response.mcp_list_tools.in_progress")

    def end() -> None:
        item["tools"] = tools
        w.spend(read=sum(count_tokens(tool["description"]) for tool in tools))
        item_events(w, index, item_id, "response.mcp_list_tools.completed")
        w.done(index)

    return [start, end]


def mcp_call_phases(w: Writer, server_label: str, name: str, approval: str | None) -> list[Phase]:
    item_id = new_id("mcp_")
    item: Item = {"id": item_id, "type": "mcp_call", "server_label": server_label, "name": name}
    item.update(arguments="", output=None, error=None, status="in_progress")
    item["approval_request_id"] = approval
    arguments = "{}"
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)
        item_events(w, index, item_id, "response.mcp_call.in_progress")

    def call() -> None:
        item["arguments"] = arguments
        fields = {"output_index": index, "item_id": item_id}
        w.emit("response.mcp_call_arguments.delta", **fields, delta=arguments)
        w.emit("response.mcp_call_arguments.done", **fields, arguments=arguments)

    def end() -> None:
        output = f"{name} on {server_label} answered."
        w.spend(read=count_tokens(output), written=TOOL_CALL_OVERHEAD + count_tokens(name))
        w.note(f"The MCP tool {name} answered: {output}")
        item_events(w, index, item_id, "response.mcp_call.completed")
        complete_item(w, index, item, output=output)

    return [start, call, end]


def mcp_approval_phases(w: Writer, server_label: str, name: str) -> list[Phase]:
    item: Item = {"id": new_id("mcpr_"), "type": "mcp_approval_request"}
    item.update(server_label=server_label, name=name, arguments="{}")
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)

    def end() -> None:
        w.spend(written=TOOL_CALL_OVERHEAD + count_tokens(name))
        w.done(index)

    return [start, end]

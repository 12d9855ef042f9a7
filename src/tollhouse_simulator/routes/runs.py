"""Endpoints for runs (including create-and-run) and their steps."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import invalid_type, metadata, optional_bool, read_json
from tollhouse_simulator.errors import bad_request, not_found
from tollhouse_simulator.lifecycle import Run
from tollhouse_simulator.runs import CREATE_AND_RUN_FIELDS, RUN_FIELDS, parse_run, start_run
from tollhouse_simulator.sse import run_stream
from tollhouse_simulator.state import Simulator, simulator_of
from tollhouse_simulator.steps import SEARCH_CONTENT_INCLUDE, render_step
from tollhouse_simulator.store import list_params
from tollhouse_simulator.threads import create_thread
from tollhouse_simulator.timeline import Event
from tollhouse_simulator.tools import tool_resources


def _include_search_content(query: QueryParams) -> bool:
    values = query.getlist("include[]") + query.getlist("include")
    for value in values:
        if value != SEARCH_CONTENT_INCLUDE:
            raise bad_request(
                f"Invalid value for 'include': '{value}'. Supported values are: "
                f"'{SEARCH_CONTENT_INCLUDE}'.",
                param="include",
                code="invalid_value",
            )
    return bool(values)


def _begin(sim: Simulator, run: Run, stream: bool, prelude: list[Event] | None = None) -> Response:
    events = run.timeline.subscribe() if stream else None
    run.start(sim.now())
    if events is None:
        return JSONResponse(run.render())
    return run_stream(sim, run, events, prelude)


async def create_run(request: Request) -> Response:
    sim = simulator_of(request)
    thread_id = request.path_params["thread_id"]
    sim.thread(thread_id)
    include = _include_search_content(request.query_params)
    body = await read_json(request, RUN_FIELDS)
    settings, additional = parse_run(sim, body)
    run = start_run(
        sim,
        thread_id,
        settings,
        sim.now(),
        include_search_content=include,
        additional_messages=additional,
    )
    return _begin(sim, run, bool(body.get("stream")))


async def create_thread_and_run(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, CREATE_AND_RUN_FIELDS)
    settings, _ = parse_run(sim, body)
    thread_body = body.get("thread") or {}
    if not isinstance(thread_body, dict):
        raise invalid_type("thread", "an object", thread_body)
    resources = tool_resources(body)[0]
    if resources and "tool_resources" not in thread_body:
        thread_body = {**thread_body, "tool_resources": resources}
    now = sim.now()
    thread = create_thread(sim, thread_body, now, param="thread.")
    run = start_run(sim, thread["id"], settings, now, include_search_content=False)
    return _begin(sim, run, bool(body.get("stream")), [("thread.created", dict(thread))])


def _run(sim: Simulator, request: Request) -> Run:
    thread_id = request.path_params["thread_id"]
    run = sim.run(thread_id, request.path_params["run_id"])
    sim.advance_thread(thread_id, sim.now())
    return run


async def list_runs(request: Request) -> Response:
    sim = simulator_of(request)
    thread_id = request.path_params["thread_id"]
    runs = sim.thread_runs(thread_id)
    sim.advance_thread(thread_id, sim.now())
    page = runs.page(list_params(request.query_params))
    return JSONResponse(page.json(Run.render))


async def retrieve_run(request: Request) -> Response:
    sim = simulator_of(request)
    return JSONResponse(_run(sim, request).render())


async def update_run(request: Request) -> Response:
    sim = simulator_of(request)
    run = _run(sim, request)
    body = await read_json(request, {"metadata"})
    meta = metadata(body)
    if meta is not None:
        run.obj["metadata"] = meta
    return JSONResponse(run.render())


async def cancel_run(request: Request) -> Response:
    sim = simulator_of(request)
    run = _run(sim, request)
    run.cancel(sim.now())
    return JSONResponse(run.render())


async def submit_tool_outputs(request: Request) -> Response:
    sim = simulator_of(request)
    run = _run(sim, request)
    body = await read_json(request, {"tool_outputs", "stream"})
    stream = bool(optional_bool(body, "stream"))
    outputs = body.get("tool_outputs")
    if outputs is None:
        raise bad_request(
            "Missing required parameter: 'tool_outputs'.",
            param="tool_outputs",
            code="missing_required_parameter",
        )
    if not isinstance(outputs, list):
        raise invalid_type("tool_outputs", "an array", outputs)
    by_call: dict[str, str] = {}
    for index, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("tool_call_id"), str):
            raise bad_request(
                f"Missing required parameter: 'tool_outputs[{index}].tool_call_id'.",
                param=f"tool_outputs[{index}].tool_call_id",
                code="missing_required_parameter",
            )
        output = item.get("output", "")
        if not isinstance(output, str):
            raise invalid_type(f"tool_outputs[{index}].output", "a string", output)
        by_call[item["tool_call_id"]] = output
    run.check_tool_outputs(by_call)
    events = run.timeline.subscribe() if stream else None
    run.submit_tool_outputs(by_call, sim.now())
    if events is None:
        return JSONResponse(run.render())
    return run_stream(sim, run, events)


async def list_steps(request: Request) -> Response:
    sim = simulator_of(request)
    run = _run(sim, request)
    include = _include_search_content(request.query_params)
    page = run.steps.page(list_params(request.query_params))
    return JSONResponse(page.json(lambda step: render_step(step, include)))


async def retrieve_step(request: Request) -> Response:
    sim = simulator_of(request)
    run = _run(sim, request)
    include = _include_search_content(request.query_params)
    step_id = request.path_params["step_id"]
    step = run.steps.get(step_id)
    if step is None:
        raise not_found("run step", step_id)
    return JSONResponse(render_step(step, include))


def routes() -> list[Route]:
    runs = "/v1/threads/{thread_id}/runs"
    run = runs + "/{run_id}"
    return [
        Route("/v1/threads/runs", create_thread_and_run, methods=["POST"]),
        Route(runs, list_runs, methods=["GET"]),
        Route(runs, create_run, methods=["POST"]),
        Route(run, retrieve_run, methods=["GET"]),
        Route(run, update_run, methods=["POST"]),
        Route(run + "/cancel", cancel_run, methods=["POST"]),
        Route(run + "/submit_tool_outputs", submit_tool_outputs, methods=["POST"]),
        Route(run + "/steps", list_steps, methods=["GET"]),
        Route(run + "/steps/{step_id}", retrieve_step, methods=["GET"]),
    ]

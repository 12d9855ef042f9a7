"""Grafana dashboards: built from source, well-formed, and every query works on real data.

The live test starts the simulator, ``tollhouse serve`` in front of it, and a real
Prometheus (Debian's ``prometheus``) scraping tollhouse every second and evaluating the
rules in ``alerts/``. It drives traffic from several tenants through the real openai
client, then runs every panel query and every rule expression through Prometheus' API.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus import Prometheus, exported_series, prometheus_server, referenced_series
from tests.servers import TollhouseProcess, serve, tollhouse_process
from tests.services import require
from tollhouse.cli.dashboards import dashboards_command
from tollhouse.telemetry.dashboards import build, output_path, sources
from tollhouse_simulator import SimulatorConfig, create_app

ROOT = Path(__file__).parent.parent
DASHBOARDS = ROOT / "dashboards"
RULE_FILES = sorted((ROOT / "alerts").glob("*.rules.yml"))
HEADER = "X-Tollhouse-Tenant"

# What Grafana puts in place of its variables when the queries run.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$tenant": ".*",
}
# Panels whose data needs events a short run does not have: the cleaner's metrics come
# from nightly sweeps.
NO_DATA_IN_A_SHORT_RUN = ("tollhouse_cleanup_", "tollhouse_stale_resources")
# The panels about traffic, tokens and cost: after the traffic they show a positive value.
SHOW_TRAFFIC = {
    "Requests per class against the organisation limit",
    "Organisation headroom per class",
    "Requests by tenant",
    "Throttled requests by tenant",
    "Shadow throttles by tenant",
    "Throttled share of each tenant's requests",
    "Shaping waits",
    "Requests that waited for a token",
    "Polls per finished run",
    "Run status polls by tenant",
    "Spend, last 24 hours",
    "Spend rate, per day",
    "Code Interpreter sessions, last 24 hours",
    "Unpriced tokens, last 24 hours",
    "Cost per day by component",
    "Cost per day by tenant",
    "Top tenants by cost over the time range",
    "Spend in the last 24 hours against daily budgets",
    "Tokens per day by model",
    "Token rate by tenant",
    "Code Interpreter sessions per day by tenant",
    "File Search calls per day by tenant",
    "Unpriced tokens per day by model",
    "Runs finishing by status",
    "Run duration",
    "Stuck runs: expired in requires_action or in_progress",
    "Failed, incomplete and expired share of runs",
    "Upstream latency by class",
    "Upstream latency by operation, p95",
    "Vector-store bytes by tenant",
    "Vector-store storage, all tenants",
    "Requests by API",
    "Model calls by API and tenant",
    "Assistants API requests by tenant over the time range",
    "Tool call and container spend, last 24 hours",
    "Cached share of input tokens, last 24 hours",
    "Responses, last 24 hours",
    "Chat completions, last 24 hours",
    "Tokens per day by tenant and direction",
    "Cached share of input tokens by tenant",
    "Responses and chat completions per day by tenant",
    "Web and File Search calls per day by tenant",
    "Other tool calls per day by tenant and kind",
    "Container sessions per day by memory limit",
    "Tool call and container cost per day by tenant",
    "Responses finishing by status",
    "Failed and incomplete share of responses",
}


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def all_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(name, panel) for name, board in dashboards().items() for panel in panels(board)]


def substituted(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def rule_expressions() -> list[tuple[str, str]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((rule.get("record") or rule["alert"], rule["expr"]))
    return found


# -- the build ------------------------------------------------------------------------------


def test_the_committed_json_is_what_the_sources_build() -> None:
    assert build(DASHBOARDS, check=True) == []


def test_every_source_has_its_json_and_every_json_its_source() -> None:
    built = {output_path(source).name for source in sources(DASHBOARDS)}
    assert built == set(dashboards())
    assert len(built) == 4


def test_the_build_command_rewrites_stale_json_and_check_reports_it(tmp_path: Path) -> None:
    for source in sources(DASHBOARDS):
        shutil.copy(source, tmp_path)
        shutil.copy(output_path(source), tmp_path)
    stale = tmp_path / "cost.json"
    stale.write_text("{}\n")
    runner = CliRunner()

    checked = runner.invoke(dashboards_command, ["build", "--check", str(tmp_path)])
    assert checked.exit_code == 1
    assert "cost.json: out of date" in checked.output
    assert stale.read_text() == "{}\n"

    written = runner.invoke(dashboards_command, ["build", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert stale.read_text() == (DASHBOARDS / "cost.json").read_text()
    assert runner.invoke(dashboards_command, ["build", "--check", str(tmp_path)]).exit_code == 0


# -- their shape ----------------------------------------------------------------------------


def test_the_four_dashboards_have_stable_distinct_uids() -> None:
    uids = {board["uid"] for board in dashboards().values()}
    assert uids == {
        "tollhouse-rate-limits",
        "tollhouse-cost",
        "tollhouse-runs",
        "tollhouse-storage",
    }


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_dashboard_has_datasource_and_tenant_variables(name: str) -> None:
    variables = {var["name"]: var for var in dashboards()[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert tenant["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert tenant["includeAll"]
    assert tenant["multi"]
    assert tenant["allValue"] == ".*"


@pytest.mark.parametrize(
    ("dashboard", "panel"),
    all_panels(),
    ids=[f"{name}:{panel['title']}" for name, panel in all_panels()],
)
def test_every_panel_has_a_unit_and_queries_the_chosen_datasource(
    dashboard: str, panel: dict[str, Any]
) -> None:
    assert panel["fieldConfig"]["defaults"]["unit"] not in ("", None, "none")
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["description"]
    assert panel["targets"]
    for target in panel["targets"]:
        assert target["datasource"] == panel["datasource"]
        assert target["expr"].strip()


def test_panels_query_only_series_tollhouse_exports_or_records() -> None:
    recorded = {name for name, _ in rule_expressions() if ":" in name}
    known = exported_series() | recorded
    for name, panel in all_panels():
        for target in panel["targets"]:
            unknown = referenced_series(target["expr"]) - known
            assert not unknown, f"{name}: {panel['title']}: {sorted(unknown)}"


def test_panel_titles_are_unique() -> None:
    titles = [panel["title"] for _, panel in all_panels()]
    assert len(titles) == len(set(titles))
    assert set(titles) >= SHOW_TRAFFIC


# -- against a real Prometheus ----------------------------------------------------------------


@dataclass
class Scraped:
    prometheus: Prometheus
    tollhouse: TollhouseProcess


def samples(admin_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(admin_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def client(url: str, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1", api_key="sk-test", max_retries=0, default_headers={HEADER: tenant}
    )


def analyst_traffic(url: str) -> int:
    """acme: Code Interpreter and File Search over a vector store, a model without a price,
    a question past its prompt limit."""
    with client(url, "acme") as acme:
        upload = acme.files.create(
            file=("report.txt", io.BytesIO(b"revenue grew in every region\n" * 2000)),
            purpose="assistants",
        )
        store = acme.vector_stores.create(name="reports", file_ids=[upload.id])
        analyst = acme.beta.assistants.create(
            model="gpt-4o",
            tools=[{"type": "code_interpreter"}, {"type": "file_search"}],
            tool_resources={"file_search": {"vector_store_ids": [store.id]}},
        )
        for question in ("Chart revenue by region.", "Summarise the report."):
            thread = acme.beta.threads.create(messages=[{"role": "user", "content": question}])
            run = acme.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=analyst.id, poll_interval_ms=20
            )
            acme.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
        house = acme.beta.assistants.create(model="house-model-7")
        acme.beta.threads.create_and_run_poll(assistant_id=house.id, poll_interval_ms=20)
        too_long = acme.beta.threads.create_and_run_poll(
            assistant_id=analyst.id,
            thread={"messages": [{"role": "user", "content": "revenue " * 400}]},
            max_prompt_tokens=256,
            poll_interval_ms=20,
        )
        assert too_long.status == "incomplete"
    return 4


def support_traffic(url: str) -> int:
    """globex: shaped writes, a function call answered, and one left to expire."""
    function = {
        "type": "function",
        "function": {"name": "order_status", "parameters": {"type": "object", "properties": {}}},
    }
    with client(url, "globex") as globex:
        bot = globex.beta.assistants.create(model="gpt-4o-mini", tools=[function])
        # Writes back to back: globex's POST bucket (a token every 0.1 s, burst 1) is shaped,
        # so these wait for their tokens instead of being refused.
        notes = globex.beta.threads.create()
        for order in ("A-1001", "A-1002", "A-1003"):
            globex.beta.threads.messages.create(notes.id, role="user", content=order)
        question = {"messages": [{"role": "user", "content": "Where is my order?"}]}
        asked = globex.beta.threads.create_and_run_poll(
            assistant_id=bot.id,
            thread=question,
            poll_interval_ms=20,
        )
        assert asked.status == "requires_action"
        assert asked.required_action is not None
        call = asked.required_action.submit_tool_outputs.tool_calls[0]
        globex.beta.threads.runs.submit_tool_outputs_and_poll(
            run_id=asked.id,
            thread_id=asked.thread_id,
            tool_outputs=[{"tool_call_id": call.id, "output": '{"status": "shipped"}'}],
            poll_interval_ms=20,
        )
        abandoned = globex.beta.threads.create_and_run_poll(
            assistant_id=bot.id,
            thread=question,
            poll_interval_ms=20,
        )
        # The simulator expires it at expires_at, two seconds after creation.
        deadline = time.monotonic() + 10
        while abandoned.status != "expired":
            assert time.monotonic() < deadline, f"run still {abandoned.status}"
            time.sleep(0.1)
            abandoned = globex.beta.threads.runs.retrieve(
                abandoned.id, thread_id=abandoned.thread_id
            )
    return 2


def poller_traffic(url: str, tenant: str) -> int:
    """A tenant polling one run 15 times at once against a GET burst of 5."""
    with client(url, tenant) as poller:
        bot = poller.beta.assistants.create(model="gpt-4o-mini")
        run = poller.beta.threads.create_and_run_poll(assistant_id=bot.id, poll_interval_ms=20)
        for _ in range(15):
            with contextlib.suppress(openai.RateLimitError):
                poller.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    return 1


@dataclass
class Successors:
    """What the Responses-era traffic of one round leaves to be metered."""

    responses: int = 0
    chat_completions: int = 0
    containers: int = 0


def responses_traffic(url: str) -> Successors:
    """umbrella: the Responses API only (web and file search, an auto container and one of its
    own, cached and reasoning tokens, a background response, one cut short, a conversation)
    and Chat Completions, JSON and streamed with their usage."""
    sent = Successors()
    with client(url, "umbrella") as umbrella:
        upload = umbrella.files.create(
            file=("manual.txt", io.BytesIO(b"tolls are paid at the gate\n" * 500)),
            purpose="assistants",
        )
        store = umbrella.vector_stores.create(name="manuals", file_ids=[upload.id])
        tools: Any = [
            {"type": "web_search"},
            {"type": "file_search", "vector_store_ids": [store.id]},
            {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}},
        ]
        first = umbrella.responses.create(
            model="gpt-4o", input="Search the manuals, then search the web", tools=tools
        )
        kinds = sorted(item.type for item in first.output if item.type.endswith("_call"))
        assert kinds == [
            "code_interpreter_call",
            "file_search_call",
            "web_search_call",
            "web_search_call",
        ]
        chained = umbrella.responses.create(
            model="gpt-4o", input="And at night?", previous_response_id=first.id
        )
        assert chained.usage is not None
        assert chained.usage.input_tokens_details.cached_tokens > 0
        reasoned = umbrella.responses.create(model="o4-mini", input="Why tolls?")
        assert reasoned.usage is not None
        assert reasoned.usage.output_tokens_details.reasoning_tokens > 0
        cut = umbrella.responses.create(model="o4-mini", input="Why?", max_output_tokens=16)
        assert cut.status == "incomplete"
        queued = umbrella.responses.create(model="gpt-4o", input="Later", background=True)
        while queued.status in ("queued", "in_progress"):
            queued = umbrella.responses.retrieve(queued.id)
        conversation = umbrella.conversations.create()
        umbrella.responses.create(model="gpt-4o", input="Hello", conversation=conversation.id)
        sent.responses += 6
        umbrella.containers.create(name="scratch", memory_limit="1g")
        sent.containers += 2  # with the auto container of the first response
        hello: Any = [{"role": "user", "content": "Hello there"}]
        umbrella.chat.completions.create(model="gpt-4o-mini", messages=hello)
        with umbrella.chat.completions.create(
            model="gpt-4o-mini",
            messages=hello,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            assert [chunk.usage for chunk in stream if chunk.usage is not None]
        sent.chat_completions += 2
    return sent


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in found.get(name, []))


def metered(
    tollhouse: TollhouseProcess, runs: int, successors: Successors, since: float
) -> Callable[[], bool]:
    """The ledger writer counts runs, responses, containers and chat completions off the
    request path, and the storage sampler runs every second: true once both have caught up
    with traffic sent since ``since``."""

    def caught_up() -> bool:
        found = samples(tollhouse.admin_url)
        sampled = [
            value
            for labels, value in found.get("tollhouse_collector_last_success_timestamp_seconds", [])
            if labels["collector"] == "storage_sampler"
        ]
        return (
            total(found, "tollhouse_runs_total") >= runs
            and total(found, "tollhouse_responses_total") >= successors.responses
            and total(found, "tollhouse_chat_completions_total") >= successors.chat_completions
            and total(found, "tollhouse_container_sessions_total") >= successors.containers
            and total(found, "tollhouse_vector_store_bytes") > 0
            and bool(sampled)
            and min(sampled) > since
        )

    return caught_up


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    require("prometheus")
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "identify": {"mode": "header", "header": HEADER},
                "tenants": {
                    "acme": {},
                    "umbrella": {},
                    "globex": {"limits": {"POST": {"requests_per_unit": 600, "burst": 1}}},
                    "initech": {"limits": {"GET": {"requests_per_unit": 60, "burst": 5}}},
                    "hooli": {
                        "shadow_mode": True,
                        "limits": {"GET": {"requests_per_unit": 60, "burst": 5}},
                    },
                },
                "shaping": {"POST": {"max_wait": 2.0}},
            }
        )
    )
    simulator = create_app(
        SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05, run_expiry_seconds=2)
    )
    env = {
        "TOLLHOUSE_UPSTREAM_API_KEY": "sk-test",
        "TOLLHOUSE_RECONCILE_SECONDS": "1",
        "TOLLHOUSE_RECONCILE_AFTER": "0",
        "TOLLHOUSE_SAMPLE_SECONDS": "1",
    }
    with (
        serve(simulator) as upstream,
        tollhouse_process(
            "--upstream", upstream.url + "/v1", "--policy", str(policy), env=env
        ) as tollhouse,
        prometheus_server([tollhouse.admin_url.removeprefix("http://")], RULE_FILES) as prom,
    ):
        # Two rounds: a counter's first sample already holds its first increments, so
        # rate() sees only what happens after Prometheus has scraped a series once.
        runs, successors = 0, Successors()
        for _ in range(2):
            started = time.time()
            runs += analyst_traffic(tollhouse.url)
            runs += support_traffic(tollhouse.url)
            runs += poller_traffic(tollhouse.url, "initech")
            runs += poller_traffic(tollhouse.url, "hooli")
            sent = responses_traffic(tollhouse.url)
            successors.responses += sent.responses
            successors.chat_completions += sent.chat_completions
            successors.containers += sent.containers
            prom.wait_until(
                "tollhouse to meter the traffic", metered(tollhouse, runs, successors, started)
            )
            prom.wait_for_scrapes_after(time.time())
        prom.wait_for_rule_evaluations_after(time.time())
        yield Scraped(prom, tollhouse)


def numbers(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_every_panel_query_parses_and_returns_data(scraped: Scraped) -> None:
    empty = []
    for name, panel in all_panels():
        for target in panel["targets"]:
            result = scraped.prometheus.query(substituted(target["expr"]))
            if not result and not any(part in target["expr"] for part in NO_DATA_IN_A_SHORT_RUN):
                empty.append(f"{name}: {panel['title']} [{target['refId']}]")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_panels_about_traffic_tokens_and_cost_show_it(scraped: Scraped) -> None:
    flat = []
    for name, panel in all_panels():
        if panel["title"] not in SHOW_TRAFFIC:
            continue
        values = [
            value
            for target in panel["targets"]
            for value in numbers(scraped.prometheus.query(substituted(target["expr"])))
        ]
        if not any(math.isfinite(value) and value > 0 for value in values):
            flat.append(f"{name}: {panel['title']}: {values}")
    assert not flat, "panels showing nothing:\n" + "\n".join(flat)


def test_every_rule_expression_parses(scraped: Scraped) -> None:
    for name, expr in rule_expressions():
        scraped.prometheus.query(expr)  # raises QueryFailed if it does not parse
        assert name


def test_prometheus_loaded_every_rule_and_they_evaluate(scraped: Scraped) -> None:
    groups = scraped.prometheus.api("rules")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == {name for name, _ in rule_expressions()}
    broken = {name: rule["lastError"] for name, rule in loaded.items() if rule.get("lastError")}
    assert not broken
    assert all(rule["health"] == "ok" for rule in loaded.values())


def test_recording_rules_record_from_the_real_exposition(scraped: Scraped) -> None:
    missing = [
        name for name, _ in rule_expressions() if ":" in name and not scraped.prometheus.query(name)
    ]
    assert not missing, f"recording rules without a series: {missing}"
    # The collector jobs arrive as exported_job and are renamed for the alerts.
    collectors = scraped.prometheus.query(
        "instance_collector:tollhouse_collector_last_success_timestamp_seconds:max"
    )
    assert {sample["metric"]["collector"] for sample in collectors} == {
        "reconciler",
        "storage_sampler",
    }


def test_the_tenant_variable_lists_the_tenants(scraped: Scraped) -> None:
    tenants = scraped.prometheus.api("label/tenant/values", {"match[]": "tollhouse_requests_total"})
    assert {"acme", "globex", "initech", "hooli", "umbrella"} <= set(tenants)


def panel_series(scraped: Scraped, title: str) -> list[tuple[dict[str, str], float]]:
    """Every series of the panel called ``title``, with its labels and value now."""
    [panel] = [panel for _, panel in all_panels() if panel["title"] == title]
    return [
        (sample["metric"], float(sample["value"][1]))
        for target in panel["targets"]
        for sample in scraped.prometheus.query(substituted(target["expr"]))
    ]


def shown(scraped: Scraped, title: str, *labels: str) -> set[tuple[str, ...]]:
    """The ``labels`` of a panel's series that show a positive value."""
    return {
        tuple(metric.get(label, "") for label in labels)
        for metric, value in panel_series(scraped, title)
        if value > 0
    }


def test_requests_are_shown_by_api_and_model_calls_by_class(scraped: Scraped) -> None:
    assert shown(scraped, "Requests by API", "api") == {
        ("assistants",),
        ("responses",),
        ("chat.completions",),
        ("files and vector stores",),
    }
    assert shown(scraped, "Model calls by API and tenant", "tenant", "class") >= {
        ("acme", "RUN_CREATE"),
        ("umbrella", "RESPONSE_CREATE"),
        ("umbrella", "CHAT_COMPLETION"),
    }
    still = shown(scraped, "Assistants API requests by tenant over the time range", "tenant")
    assert still == {("acme",), ("globex",), ("initech",), ("hooli",)}


def test_the_successor_apis_usage_is_shown_per_tenant(scraped: Scraped) -> None:
    directions = shown(scraped, "Tokens per day by tenant and direction", "tenant", "direction")
    assert {("umbrella", d) for d in ("input", "output", "cached_input", "reasoning")} <= directions
    assert ("acme", "cached_input") not in directions  # runs report no cached tokens here
    assert shown(scraped, "Cached share of input tokens by tenant", "tenant") == {("umbrella",)}
    searches = shown(scraped, "Web and File Search calls per day by tenant", "tenant", "kind")
    assert {("umbrella", "web_search_call"), ("umbrella", "file_search_call")} <= searches
    assert ("acme", "") in searches  # File Search in acme's runs
    others = shown(scraped, "Other tool calls per day by tenant and kind", "tenant", "kind")
    assert others == {("umbrella", "code_interpreter_call")}
    tiers = shown(scraped, "Container sessions per day by memory limit", "tenant", "memory_limit")
    assert tiers == {("umbrella", "1g"), ("umbrella", "4g")}
    fees = shown(scraped, "Tool call and container cost per day by tenant", "tenant", "component")
    assert fees == {("umbrella", "tool_calls"), ("umbrella", "containers")}
    statuses = shown(scraped, "Responses finishing by status", "status")
    assert statuses == {("completed",), ("incomplete",)}
    # one response in six cut short
    [share] = [
        value
        for metric, value in panel_series(scraped, "Failed and incomplete share of responses")
        if metric.get("tenant") == "umbrella"
    ]
    assert 0 < share < 1


def test_the_exposition_passes_promtool_check_metrics(scraped: Scraped) -> None:
    with urllib.request.urlopen(scraped.tollhouse.admin_url + "/metrics", timeout=5) as response:
        exposition = response.read()
    # checked with the Responses era's series in it, not only their zeros
    found = samples(scraped.tollhouse.admin_url)
    for name, labels in (
        ("tollhouse_responses_total", {"tenant": "umbrella", "status": "incomplete"}),
        ("tollhouse_response_tool_calls_total", {"tenant": "umbrella", "kind": "web_search_call"}),
        ("tollhouse_container_sessions_total", {"tenant": "umbrella", "memory_limit": "4g"}),
        ("tollhouse_chat_completions_total", {"tenant": "umbrella"}),
        ("tollhouse_tokens_total", {"tenant": "umbrella", "direction": "cached_input"}),
        ("tollhouse_tokens_total", {"tenant": "umbrella", "direction": "reasoning"}),
        ("tollhouse_cost_usd_total", {"tenant": "umbrella", "component": "tool_calls"}),
        ("tollhouse_cost_usd_total", {"tenant": "umbrella", "component": "containers"}),
    ):
        values = [v for got, v in found[name] if labels.items() <= got.items()]
        assert values, f"{name}{labels} not exported"
        assert sum(values) > 0, f"{name}{labels} is 0"
    checked = subprocess.run(
        [require("promtool"), "check", "metrics"], input=exposition, capture_output=True
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()

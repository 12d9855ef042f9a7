"""Cost: spend per day by component and tenant, top tenants, tokens, tool use, unpriced usage,
and the Responses API's hosted tools, containers and chat completions."""

from tollhouse.telemetry.dashboards import TENANT, Query, dashboard, stat, table, timeseries

COST = f"tollhouse_cost_usd_total{{{TENANT}}}"
DAY = "1d"
TOKENS = f"tollhouse_tokens_total{{{TENANT}"
TOOL_CALLS = f"tollhouse_response_tool_calls_total{{{TENANT}"
SEARCHES = 'kind=~"web_search_call|file_search_call"'
HOSTED = 'component=~"tool_calls|containers"'

spend = [
    stat(
        "Spend, last 24 hours",
        "currencyUSD",
        Query(f"sum(increase({COST}[1d]))"),
        "What the selected tenants cost over the last 24 hours, all components.",
    ),
    stat(
        "Spend rate, per day",
        "currencyUSD",
        Query(f"sum(rate({COST}[1h])) * 86400"),
        "The last hour's spending rate, as US dollars per day.",
    ),
    stat(
        "Code Interpreter sessions, last 24 hours",
        "short",
        Query(
            f"sum(increase(tollhouse_code_interpreter_sessions_total{{{TENANT}}}[1d]))",
        ),
        "Sessions billed at $0.03 each (one per thread per hour of use).",
    ),
    stat(
        "Unpriced tokens, last 24 hours",
        "short",
        Query("sum(increase(tollhouse_unpriced_usage_total[1d]))"),
        "Tokens of models missing from the pricing table: metered but not in the cost. "
        "Add the model to the pricing table.",
        thresholds=[("green", None), ("orange", 1)],
    ),
    timeseries(
        "Cost per day by component",
        "currencyUSD",
        [Query(f"sum by (component) (increase({COST}[1d]))", "{{component}}")],
        "Spend over each day by component: model tokens, Code Interpreter sessions, "
        "File Search calls in runs, vector storage, Responses tool calls (web search, file "
        "search, priced kinds) and containers (their minimum charge, when first seen).",
        bars=True,
        stacked=True,
        interval=DAY,
    ),
    timeseries(
        "Cost per day by tenant",
        "currencyUSD",
        [Query(f"sum by (tenant) (increase({COST}[1d]))", "{{tenant}}")],
        "Spend over each day by tenant, all components.",
        bars=True,
        stacked=True,
        interval=DAY,
    ),
    table(
        "Top tenants by cost over the time range",
        "currencyUSD",
        Query("topk(10, sum by (tenant) (increase(tollhouse_cost_usd_total[$__range])))"),
        "The ten most expensive tenants over the dashboard's time range.",
    ),
    timeseries(
        "Spend in the last 24 hours against daily budgets",
        "currencyUSD",
        [
            Query(f"tenant:tollhouse_cost_usd:increase1d{{{TENANT}}}", "{{tenant}}"),
            Query(f"tenant:tollhouse_daily_budget_usd:soft{{{TENANT}}}", "{{tenant}} soft budget"),
            Query(f"tenant:tollhouse_daily_budget_usd:hard{{{TENANT}}}", "{{tenant}} hard budget"),
        ],
        "Trailing 24-hour spend per tenant and its budgets (dashed), from the recording rules "
        "in alerts/ (set the budgets in alerts/budgets.rules.yml).",
        dashed=".* budget$",
    ),
]

usage = [
    timeseries(
        "Tokens per day by model",
        "short",
        [
            Query(
                f"sum by (model, direction) (increase(tollhouse_tokens_total{{{TENANT}}}[1d]))",
                "{{model}} {{direction}}",
            )
        ],
        "Tokens of finished runs, responses and chat completions per day, by model and direction.",
        bars=True,
        stacked=True,
        interval=DAY,
    ),
    timeseries(
        "Token rate by tenant",
        "suffix: tokens/s",
        [
            Query(
                f'sum by (tenant) (rate({TOKENS}, direction=~"input|output"}}[$__rate_interval]))',
                "{{tenant}}",
            )
        ],
        "Input and output tokens of finished runs, responses and chat completions per "
        "second, by tenant.",
    ),
    timeseries(
        "Code Interpreter sessions per day by tenant",
        "short",
        [
            Query(
                "sum by (tenant) (increase(tollhouse_code_interpreter_sessions_total"
                f"{{{TENANT}}}[1d]))",
                "{{tenant}}",
            )
        ],
        "Code Interpreter sessions started per day (a thread's session covers an hour).",
        bars=True,
        stacked=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "File Search calls per day by tenant",
        "short",
        [
            Query(
                f"sum by (tenant) (increase(tollhouse_file_search_calls_total{{{TENANT}}}[1d]))",
                "{{tenant}}",
            )
        ],
        "File Search tool calls seen in run steps, per day.",
        bars=True,
        stacked=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "Unpriced tokens per day by model",
        "short",
        [Query("sum by (model) (increase(tollhouse_unpriced_usage_total[1d]))", "{{model}}")],
        "Tokens of models the pricing table does not know; their cost is missing above.",
        bars=True,
        interval=DAY,
        width=8,
    ),
]

successors = [
    stat(
        "Tool call and container spend, last 24 hours",
        "currencyUSD",
        Query(f"sum(increase(tollhouse_cost_usd_total{{{TENANT}, {HOSTED}}}[1d]))"),
        "What the Responses API's tool calls (web search, file search, priced kinds) and "
        "containers cost the selected tenants over the last 24 hours. Containers count their "
        "minimum charge when first seen; `tollhouse report` prices their whole life.",
    ),
    stat(
        "Cached share of input tokens, last 24 hours",
        "percentunit",
        Query(
            f'sum(increase({TOKENS}, direction="cached_input"}}[1d]))'
            f' / (sum(increase({TOKENS}, direction="input"}}[1d])) > 0)'
        ),
        "Input tokens read from the prompt cache (priced at the cached rate) as a share of all "
        "input tokens of responses and chat completions.",
    ),
    stat(
        "Responses, last 24 hours",
        "short",
        Query(f"sum(increase(tollhouse_responses_total{{{TENANT}}}[1d]))"),
        "Responses seen reaching a terminal status, each counted once however often polled, "
        "streamed or retrieved.",
    ),
    stat(
        "Chat completions, last 24 hours",
        "short",
        Query(f"sum(increase(tollhouse_chat_completions_total{{{TENANT}}}[1d]))"),
        "Chat completions seen, JSON and streamed.",
    ),
    timeseries(
        "Tokens per day by tenant and direction",
        "short",
        [
            Query(
                f"sum by (tenant, direction) (increase({TOKENS}}}[1d]))",
                "{{tenant}} {{direction}}",
            )
        ],
        "Tokens of runs, responses and chat completions per day. cached_input and cache_write "
        "are part of input, reasoning is part of output, so the directions overlap.",
        bars=True,
        interval=DAY,
        width=24,
    ),
    timeseries(
        "Cached share of input tokens by tenant",
        "percentunit",
        [
            Query(
                f'sum by (tenant) (rate({TOKENS}, direction="cached_input"}}[$__rate_interval]))'
                f' / (sum by (tenant) (rate({TOKENS}, direction="input"}}[$__rate_interval]))'
                " > 0)",
                "{{tenant}}",
            )
        ],
        "Share of each tenant's input tokens read from the prompt cache. A fall means prompts "
        "stopped sharing their prefix, and input costs up to twice as much. "
        "TollhouseTenantCachedShareCollapsed fires when it falls below half its weekly level.",
        thresholds=[("orange", None), ("green", 0.2)],
    ),
    timeseries(
        "Responses and chat completions per day by tenant",
        "short",
        [
            Query(
                f"sum by (tenant) (increase(tollhouse_responses_total{{{TENANT}}}[1d]))",
                "{{tenant}} responses",
            ),
            Query(
                f"sum by (tenant) (increase(tollhouse_chat_completions_total{{{TENANT}}}[1d]))",
                "{{tenant}} chat completions",
            ),
        ],
        "Finished responses and chat completions per day, each counted once.",
        bars=True,
        interval=DAY,
    ),
    timeseries(
        "Web and File Search calls per day by tenant",
        "short",
        [
            Query(
                f"sum by (tenant, kind) (increase({TOOL_CALLS}, {SEARCHES}}}[1d]))",
                "{{tenant}} {{kind}}",
            ),
            Query(
                f"sum by (tenant) (increase(tollhouse_file_search_calls_total{{{TENANT}}}[1d]))",
                "{{tenant}} file_search in runs",
            ),
        ],
        "Web searches and file searches among responses' output items (each counted once by "
        "its id, priced per call), and File Search calls in Assistants run steps, per day.",
        bars=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "Other tool calls per day by tenant and kind",
        "short",
        [
            Query(
                f'sum by (tenant, kind) (increase({TOOL_CALLS}, kind!~"web_search_call|'
                f'file_search_call"}}[1d]) > 0)',
                "{{tenant}} {{kind}}",
            )
        ],
        "Code Interpreter, image generation, MCP, function and computer calls among "
        "responses' output items, per day (kinds with no calls are left out).",
        bars=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "Container sessions per day by memory limit",
        "short",
        [
            Query(
                "sum by (tenant, memory_limit) (increase(tollhouse_container_sessions_total"
                f"{{{TENANT}}}[1d]) > 0)",
                "{{tenant}} {{memory_limit}}",
            )
        ],
        "Containers first seen per day, by tenant and memory limit (1g, 4g, 16g, 64g): "
        "created explicitly or automatically for Code Interpreter, even when no call ran.",
        bars=True,
        stacked=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "Tool call and container cost per day by tenant",
        "currencyUSD",
        [
            Query(
                f"sum by (tenant, component) (increase(tollhouse_cost_usd_total{{{TENANT}, "
                f"{HOSTED}}}[1d]))",
                "{{tenant}} {{component}}",
            )
        ],
        "Spend per day on Responses tool calls and containers, by tenant. "
        "TollhouseTenantToolSpendSpike fires when one runs at three times its weekly level.",
        bars=True,
        stacked=True,
        interval=DAY,
        width=24,
    ),
]

dashboard = dashboard(
    "tollhouse / Cost",
    "tollhouse-cost",
    "What tenants cost: spend per day by component and tenant, top tenants, budgets, tokens "
    "by model, Code Interpreter sessions, File Search calls and unpriced usage; the "
    "Responses API's tokens by direction, tool calls, containers and chat completions.",
    [("Spend", spend), ("Usage", usage), ("Responses and Chat Completions", successors)],
    time_from="now-7d",
)

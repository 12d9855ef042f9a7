"""Cost: spend per day by component and tenant, top tenants, tokens, tool use, unpriced usage."""

from tollhouse.telemetry.dashboards import TENANT, Query, dashboard, stat, table, timeseries

COST = f"tollhouse_cost_usd_total{{{TENANT}}}"
DAY = "1d"

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
        "File Search calls, vector storage.",
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
        "Input and output tokens of finished runs per day, by model.",
        bars=True,
        stacked=True,
        interval=DAY,
    ),
    timeseries(
        "Token rate by tenant",
        "suffix: tokens/s",
        [
            Query(
                f"sum by (tenant) (rate(tollhouse_tokens_total{{{TENANT}}}[$__rate_interval]))",
                "{{tenant}}",
            )
        ],
        "Tokens of finished runs per second, by tenant.",
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

dashboard = dashboard(
    "tollhouse / Cost",
    "tollhouse-cost",
    "What tenants cost: spend per day by component and tenant, top tenants, budgets, tokens "
    "by model, Code Interpreter sessions, File Search calls and unpriced usage.",
    [("Spend", spend), ("Usage", usage)],
    time_from="now-7d",
)

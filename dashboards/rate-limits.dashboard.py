"""Rate limits: the organisation's limits per class, tenants' throttling, shaping and polling."""

from tollhouse.telemetry.dashboards import (
    ADMITTED,
    APIS,
    MODEL_CALLS,
    ORG,
    TENANT,
    Query,
    by_api,
    dashboard,
    quantiles,
    stat,
    table,
    timeseries,
)

ADMITTED_BY_CLASS = (
    f"sum by (class) (rate(tollhouse_requests_total{{{ADMITTED}}}[$__rate_interval]))"
)
ORG_LIMIT = f"max by (class) (tollhouse_ratelimit_limit{{{ORG}}} > 0)"
TENANT_REQUESTS = f"tollhouse_requests_total{{{TENANT}"
TENANTS = f'{TENANT}, tenant!="_org"'  # tenant buckets, without the organisation's
RUNS_FINISHING = f"sum by (tenant) (rate(tollhouse_runs_total{{{TENANT}}}[$__rate_interval]))"

organisation = [
    timeseries(
        "Requests per class against the organisation limit",
        "reqps",
        [Query(ADMITTED_BY_CLASS, "{{class}}"), Query(f"{ORG_LIMIT} / 60", "{{class}} limit")],
        "Requests that went upstream (forwarded, shadow-throttled or failed upstream) from all "
        "tenants, per second, against the organisation's limit for their class (requests per "
        "minute / 60, dashed).",
        width=24,
        dashed=".* limit$",
    ),
    timeseries(
        "Organisation headroom per class",
        "percentunit",
        [Query(f"clamp_min(1 - {ADMITTED_BY_CLASS} * 60 / {ORG_LIMIT}, 0)", "{{class}}")],
        "Share of the organisation's per-minute limit left unused, per class. "
        "TollhouseOrgHeadroomLow warns below 20 % and pages below 5 %.",
        thresholds=[("red", None), ("orange", 0.05), ("green", 0.2)],
    ),
    timeseries(
        "Organisation buckets: requests left",
        "short",
        [Query(f"max by (class) (tollhouse_ratelimit_remaining{{{ORG}}})", "{{class}}")],
        "Tokens left in the organisation's bucket for each class after its last admission.",
    ),
]

tenants = [
    timeseries(
        "Requests by tenant",
        "reqps",
        [
            Query(
                f"sum by (tenant) (rate({TENANT_REQUESTS}}}[$__rate_interval]))",
                "{{tenant}}",
            )
        ],
        "Every request tollhouse saw, whatever its outcome.",
        width=8,
    ),
    timeseries(
        "Throttled requests by tenant",
        "reqps",
        [
            Query(
                f'sum by (tenant, class) (rate({TENANT_REQUESTS}, outcome="throttled"}}'
                "[$__rate_interval]))",
                "{{tenant}} {{class}}",
            )
        ],
        "Requests refused with 429 because the tenant's or the organisation's bucket was empty.",
        width=8,
    ),
    timeseries(
        "Shadow throttles by tenant",
        "reqps",
        [
            Query(
                f'sum by (tenant, class) (rate({TENANT_REQUESTS}, outcome="shadow_throttled"}}'
                "[$__rate_interval]))",
                "{{tenant}} {{class}}",
            )
        ],
        "Requests a limit in shadow_mode would have refused; they were let through.",
        width=8,
    ),
    timeseries(
        "Throttled share of each tenant's requests",
        "percentunit",
        [
            Query(
                f'sum by (tenant) (rate({TENANT_REQUESTS}, outcome="throttled"}}'
                "[$__rate_interval])) / (sum by (tenant) "
                f'(rate({TENANT_REQUESTS}, outcome!="rejected"}}[$__rate_interval])) > 0)',
                "{{tenant}}",
            )
        ],
        "Refused share of each tenant's requests. TollhouseTenantThrottled fires above 5 % "
        "for 15 minutes.",
        thresholds=[("green", None), ("orange", 0.05)],
    ),
    timeseries(
        "Tenant buckets: requests left per unit of limit",
        "percentunit",
        [
            Query(
                f"max by (tenant, class) (tollhouse_ratelimit_remaining{{{TENANTS}}})"
                f" / max by (tenant, class) (tollhouse_ratelimit_limit{{{TENANTS}}} > 0)",
                "{{tenant}} {{class}}",
            )
        ],
        "Tokens left in each tenant bucket after its last admission, as a share of the "
        "bucket's requests per unit (unlimited buckets are left out).",
    ),
]

shaping = [
    timeseries(
        "Shaping waits",
        "s",
        quantiles("tollhouse_ratelimit_wait_seconds", by="class"),
        "How long requests of a shaped class waited for a token before going upstream.",
        width=8,
    ),
    timeseries(
        "Requests that waited for a token",
        "reqps",
        [
            Query(
                "sum by (class) (rate(tollhouse_ratelimit_wait_seconds_count[$__rate_interval]))",
                "{{class}}",
            )
        ],
        "Requests of shaped classes that were held until their token was earned.",
        width=8,
    ),
    timeseries(
        "Polls per finished run",
        "suffix: polls/run",
        [
            Query(
                "sum by (tenant) (rate(tollhouse_run_polls_total"
                f"{{{TENANT}}}[$__rate_interval])) / ({RUNS_FINISHING} > 0)",
                "{{tenant}}",
            )
        ],
        "GET retrievals of runs per run that finished: tenants polling in a tight loop burn "
        "the organisation's GET budget.",
        width=8,
    ),
    timeseries(
        "Run status polls by tenant",
        "reqps",
        [
            Query(
                f"sum by (tenant) (rate(tollhouse_run_polls_total{{{TENANT}}}[$__rate_interval]))",
                "{{tenant}}",
            )
        ],
        "GET retrievals of runs (status polling), per second.",
    ),
    stat(
        "Replicas on local buckets",
        "short",
        Query("sum(tollhouse_buckets_fallback)"),
        "Replicas that cannot reach the shared Redis buckets and admit from local buckets "
        "holding their share of every limit.",
        width=12,
        thresholds=[("green", None), ("red", 1)],
    ),
]

apis = [
    timeseries(
        "Requests by API",
        "reqps",
        [
            Query(
                "sum by (api) (" + by_api(f"rate({TENANT_REQUESTS}}}[$__rate_interval])") + ")",
                "{{api}}",
            )
        ],
        "Every request tollhouse saw, by the API its operation belongs to: the Assistants API "
        "(assistants, threads, runs), the Responses API (responses, conversations, "
        "containers), Chat Completions, files and vector stores (used by both), and "
        "operations tollhouse does not know.",
        stacked=True,
    ),
    timeseries(
        "Model calls by API and tenant",
        "reqps",
        [
            Query(
                f"sum by (tenant, class) (rate({TENANT_REQUESTS}, {MODEL_CALLS}}}"
                "[$__rate_interval]))",
                "{{tenant}} {{class}}",
            )
        ],
        "Requests that start model work, per second: runs (RUN_CREATE, the Assistants API), "
        "responses (RESPONSE_CREATE) and chat completions (CHAT_COMPLETION).",
    ),
    table(
        "Assistants API requests by tenant over the time range",
        "short",
        Query(
            "sort_desc(sum by (tenant) (increase(tollhouse_requests_total"
            f'{{{TENANT}, operation=~"{dict(APIS)["assistants"]}"}}[$__range])) > 0)'
        ),
        "Tenants still calling the Assistants API (assistants, threads, runs), with their "
        "request counts: the tenants to move to the Responses API before their upstream "
        "retires it.",
    ),
]

dashboard = dashboard(
    "tollhouse / Rate limits",
    "tollhouse-rate-limits",
    "Organisation limits per request class, headroom, throttling by tenant, shaping waits, "
    "run polling, and requests by API (Assistants, Responses, Chat Completions).",
    [
        ("Organisation limits", organisation),
        ("Tenants", tenants),
        ("Shaping and polling", shaping),
        ("APIs", apis),
    ],
)

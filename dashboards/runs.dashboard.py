"""Runs and responses: terminal statuses, durations, stuck runs, the upstream's latency and
errors."""

from tollhouse.telemetry.dashboards import (
    ADMITTED,
    TENANT,
    Query,
    dashboard,
    quantiles,
    stat,
    timeseries,
)

RUNS = f"tollhouse_runs_total{{{TENANT}"
RESPONSES = f"tollhouse_responses_total{{{TENANT}"
REQUESTS = f"tollhouse_requests_total{{{TENANT}"


def since_last_success(job: str) -> Query:
    # The metric names its job in `collector`; `exported_job` is where an older `job`
    # label landed, still read so one dashboard serves both.
    metric = "tollhouse_collector_last_success_timestamp_seconds"
    return Query(f'time() - max({metric}{{exported_job="{job}"}} or {metric}{{collector="{job}"}})')


runs = [
    timeseries(
        "Runs finishing by status",
        "suffix: runs/s",
        [
            Query(
                f"sum by (status) (rate({RUNS}}}[$__rate_interval]))",
                "{{status}}",
            )
        ],
        "Runs seen reaching a terminal status (counted once each, however often polled).",
    ),
    timeseries(
        "Run duration",
        "s",
        quantiles("tollhouse_run_duration_seconds"),
        "Time from a run's creation to its terminal status, all tenants.",
    ),
    timeseries(
        "Stuck runs: expired in requires_action or in_progress",
        "short",
        [
            Query(
                f'sum by (tenant) (increase({RUNS}, status="expired"}}[1h]))',
                "{{tenant}}",
            )
        ],
        "Runs that reached expires_at without finishing, over the last hour: left waiting for "
        "tool outputs (requires_action) or never completed (in_progress). Seen when a client "
        "or the reconciler retrieves them. TollhouseRunsStuck fires above 2 in an hour.",
        thresholds=[("green", None), ("orange", 2)],
    ),
    timeseries(
        "Live runs by status",
        "short",
        [
            Query(
                f"sum by (tenant, status) (max by (tenant, status) "
                f"(tollhouse_runs_active{{{TENANT}}}))",
                "{{tenant}} {{status}}",
            )
        ],
        "Runs not yet seen finished, by tenant and last seen status, from the reconciler's "
        "census of the ledger (every reconciler run).",
        stacked=True,
    ),
    timeseries(
        "Oldest live run, by status",
        "s",
        [Query("max by (status) (tollhouse_run_oldest_active_age_seconds)", "{{status}}")],
        "How long the oldest run in each live status has existed. A run in requires_action "
        "or in_progress for more than 15 minutes is stuck: TollhouseRunWaitingTooLong fires.",
        thresholds=[("green", None), ("orange", 900)],
    ),
    timeseries(
        "Failed, incomplete and expired share of runs",
        "percentunit",
        [
            Query(
                f'sum by (tenant) (rate({RUNS}, status=~"failed|incomplete|expired"}}'
                f"[$__rate_interval])) / (sum by (tenant) (rate({RUNS}}}[$__rate_interval])) > 0)",
                "{{tenant}}",
            )
        ],
        "Share of each tenant's finished runs that did not complete. TollhouseRunsFailing "
        "fires when failed and incomplete runs pass 10 % for 15 minutes.",
        thresholds=[("green", None), ("orange", 0.1)],
    ),
]

responses = [
    timeseries(
        "Responses finishing by status",
        "suffix: responses/s",
        [Query(f"sum by (status) (rate({RESPONSES}}}[$__rate_interval]))", "{{status}}")],
        "Responses seen reaching a terminal status, counted once each however they were "
        "observed: answered, streamed, polled in background mode, resumed, or found by the "
        "reconciler.",
    ),
    timeseries(
        "Failed and incomplete share of responses",
        "percentunit",
        [
            Query(
                f'sum by (tenant) (rate({RESPONSES}, status=~"failed|incomplete"}}'
                f"[$__rate_interval])) / (sum by (tenant) (rate({RESPONSES}}}"
                "[$__rate_interval])) > 0)",
                "{{tenant}}",
            )
        ],
        "Share of each tenant's finished responses that failed or stopped incomplete "
        "(max_output_tokens, content filter). TollhouseResponsesFailing fires above 10 % for "
        "15 minutes.",
        thresholds=[("green", None), ("orange", 0.1)],
    ),
]

upstream = [
    timeseries(
        "Upstream latency by class",
        "s",
        quantiles("tollhouse_upstream_request_duration_seconds", by="class"),
        "From sending a request upstream to the last byte of its response.",
    ),
    timeseries(
        "Upstream latency by operation, p95",
        "s",
        [
            Query(
                "histogram_quantile(0.95, sum by (operation, le) (rate("
                "tollhouse_upstream_request_duration_seconds_bucket[$__rate_interval])))",
                "{{operation}}",
            )
        ],
        "95th percentile upstream time per operation (e.g. threads.runs.create).",
    ),
    timeseries(
        "Upstream errors by class",
        "reqps",
        [
            Query(
                f'sum by (class) (rate({REQUESTS}, outcome="upstream_error"}}[$__rate_interval]))',
                "{{class}}",
            )
        ],
        "Requests the upstream could not answer: unreachable (502), too slow (504) or a "
        "response that broke off.",
        width=8,
    ),
    timeseries(
        "Upstream error ratio by class",
        "percentunit",
        [
            Query(
                f'sum by (class) (rate({REQUESTS}, outcome="upstream_error"}}[$__rate_interval]))'
                f" / (sum by (class) (rate({REQUESTS}, {ADMITTED}}}[$__rate_interval])) > 0)",
                "{{class}}",
            )
        ],
        "Upstream errors as a share of the requests sent upstream. TollhouseUpstreamErrors "
        "warns above 5 % and pages above 25 %.",
        thresholds=[("green", None), ("orange", 0.05), ("red", 0.25)],
        width=8,
    ),
    timeseries(
        "Responses cut short by reason",
        "suffix: streams/s",
        [
            Query(
                "sum by (reason) (rate(tollhouse_stream_aborts_total[$__rate_interval]))",
                "{{reason}}",
            )
        ],
        "Responses that ended after they started: the client left, or the upstream broke off.",
        width=8,
    ),
]

itself = [
    timeseries(
        "Time tollhouse adds to a request",
        "s",
        quantiles("tollhouse_proxy_overhead_seconds"),
        "Total time minus upstream time minus shaping wait.",
        width=8,
    ),
    timeseries(
        "Requests in flight",
        "short",
        [Query("sum by (instance) (tollhouse_in_flight_requests)", "{{instance}}")],
        "Requests being proxied right now, per replica.",
        width=8,
    ),
    stat(
        "Ledger write errors, last 24 hours",
        "short",
        Query("sum(increase(tollhouse_ledger_write_errors_total[1d]))"),
        "Ledger writes that failed and went to the spool file (TollhouseLedgerWriteErrors).",
        width=4,
        thresholds=[("green", None), ("red", 1)],
    ),
    stat(
        "Reconciler: time since last success",
        "s",
        since_last_success("reconciler"),
        "The reconciler fetches runs the proxy never saw finish; it runs every minute by "
        "default (TOLLHOUSE_RECONCILE_SECONDS).",
        width=4,
        thresholds=[("green", None), ("orange", 120), ("red", 180)],
    ),
]

dashboard = dashboard(
    "tollhouse / Runs",
    "tollhouse-runs",
    "Runs by status, run durations, stuck and failing runs, responses by status, the "
    "upstream's latency and errors, and tollhouse's own overhead.",
    [("Runs", runs), ("Responses", responses), ("Upstream", upstream), ("tollhouse", itself)],
)

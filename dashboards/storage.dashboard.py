"""Storage and cleanup: vector-store bytes and their projected cost, stale resources, deletions."""

from tollhouse.telemetry.dashboards import TENANT, Query, dashboard, stat, timeseries

# File Search storage: $0.10 per GiB per day, the first GiB free for the organisation
# (reference/pricing.md); the free GiB is shared by tenants in proportion to their bytes.
GIB = 1073741824
PRICE_PER_GIB_DAY = 0.10
TENANT_BYTES = f"max by (tenant) (tollhouse_vector_store_bytes{{{TENANT}}})"
ALL_BYTES = "sum(max by (tenant) (tollhouse_vector_store_bytes))"
BILLED_SHARE = f"scalar(clamp_min({ALL_BYTES} - {GIB}, 0) / clamp_min({ALL_BYTES}, 1))"
STALE = f"max by (tenant, kind) (tollhouse_stale_resources{{{TENANT}}})"
DAY = "1d"

storage = [
    timeseries(
        "Vector-store bytes by tenant",
        "bytes",
        [Query(TENANT_BYTES, "{{tenant}}")],
        "usage_bytes of the vector stores each tenant owns, at the storage sampler's last run.",
        stacked=True,
    ),
    timeseries(
        "Projected storage cost per day by tenant",
        "currencyUSD",
        [Query(f"{TENANT_BYTES} * {BILLED_SHARE} / {GIB} * {PRICE_PER_GIB_DAY}", "{{tenant}}")],
        "What a day of today's storage costs: $0.10 per GiB per day, less each tenant's share "
        "of the organisation's free GiB (in proportion to its bytes).",
        stacked=True,
    ),
    stat(
        "Vector-store storage, all tenants",
        "bytes",
        Query(ALL_BYTES),
        "usage_bytes of every vector store at the last sample.",
    ),
    stat(
        "Projected storage cost per day",
        "currencyUSD",
        Query(f"clamp_min({ALL_BYTES} - {GIB}, 0) / {GIB} * {PRICE_PER_GIB_DAY}"),
        "The organisation's storage bill for a day at today's size (first GiB free).",
    ),
    stat(
        "Storage sampler: time since last success",
        "s",
        Query(
            "time() - max(tollhouse_collector_last_success_timestamp_seconds"
            '{exported_job="storage_sampler"} or tollhouse_collector_last_success_timestamp_'
            'seconds{collector="storage_sampler"})'
        ),
        "The sampler lists vector stores every 10 minutes by default (TOLLHOUSE_SAMPLE_SECONDS).",
        thresholds=[("green", None), ("orange", 1200), ("red", 1800)],
    ),
]

cleanup = [
    timeseries(
        "Stale resources found by kind",
        "short",
        [Query(f"sum by (kind) ({STALE})", "{{kind}}")],
        "Threads, files and vector stores nobody has touched for the configured time, at the "
        "cleaner's last sweep.",
        stacked=True,
        width=8,
    ),
    timeseries(
        "Stale resources by tenant",
        "short",
        [Query(f"sum by (tenant) ({STALE})", "{{tenant}}")],
        "Stale resources per owning tenant at the last sweep.",
        stacked=True,
        width=8,
    ),
    timeseries(
        "Deletions per day by kind",
        "short",
        [
            Query(
                f"sum by (kind) (increase(tollhouse_cleanup_deleted_total{{{TENANT}}}[1d]))",
                "{{kind}}",
            )
        ],
        "Stale resources the cleaner deleted, per day.",
        bars=True,
        stacked=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "Cleanup failures per day by kind",
        "short",
        [
            Query(
                "sum by (kind) (increase(tollhouse_cleanup_failures_total[1d]))",
                "{{kind}}",
            )
        ],
        "Deletions that failed (they are retried at the next sweep).",
        bars=True,
        interval=DAY,
        width=8,
    ),
    timeseries(
        "Storage reclaimed per day",
        "bytes",
        [Query("sum(increase(tollhouse_cleanup_reclaimed_bytes_total[1d]))", "reclaimed")],
        "Vector-store bytes freed by deletions, per day.",
        bars=True,
        interval=DAY,
        width=8,
    ),
    stat(
        "Time since the last successful cleanup",
        "s",
        Query("time() - max(tollhouse_cleanup_last_success_timestamp_seconds > 0)"),
        "The cleanup runs nightly; TollhouseCleanupMissed fires when two nights were missed. "
        "No data: no replica has swept since it started.",
        width=4,
        thresholds=[("green", None), ("orange", 93600), ("red", 176400)],
    ),
    stat(
        "Cleanup duration, mean over the last 24 hours",
        "s",
        Query(
            "sum(increase(tollhouse_cleanup_duration_seconds_sum[1d])) / "
            "sum(increase(tollhouse_cleanup_duration_seconds_count[1d]))"
        ),
        "How long a sweep took; deletions are throttled to spare the DELETE budget.",
        width=4,
    ),
]

dashboard = dashboard(
    "tollhouse / Storage and cleanup",
    "tollhouse-storage",
    "Vector-store bytes by tenant and their projected cost per day, stale resources found, "
    "deletions and the last cleanup.",
    [("Vector-store storage", storage), ("Cleanup", cleanup)],
    time_from="now-7d",
)

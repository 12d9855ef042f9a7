"""Every Prometheus metric tollhouse exports, registered on a registry passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from tollhouse import __version__
from tollhouse.api.classify import ROUTES, UNKNOWN, Operation, RequestClass

LIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")
TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled", "expired", "incomplete")
UPSTREAM_CODES = ("2xx", "3xx", "4xx", "429", "5xx")
COST_COMPONENTS = (
    "tokens",
    "code_interpreter",
    "file_search_calls",
    "vector_storage",
    "tool_calls",
    "containers",
)
# Token directions: input and output; cached_input and cache_write are parts of input,
# reasoning a part of output (Responses and chat completions report them).
TOKEN_DIRECTIONS = ("input", "output", "cached_input", "cache_write", "reasoning")
# Responses tool calls by output item type; any other type counts as `other`.
TOOL_CALL_KINDS = (
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "image_generation_call",
    "mcp_call",
    "function_call",
    "computer_call",
    "other",
)
# Container memory limits (SPEC); any other counts as `other`.
MEMORY_LIMITS = ("1g", "4g", "16g", "64g", "other")
TERMINAL_RESPONSE_STATUSES = ("completed", "failed", "cancelled", "incomplete")
OUTCOMES = ("forwarded", "throttled", "shadow_throttled", "upstream_error", "rejected")
TOKEN_RESERVATION_OUTCOMES = ("forwarded", "shadow_throttled", "throttled", "too_large")
TOKEN_SETTLEMENT_OUTCOMES = ("settled", "refunded", "kept", "not_applied", "failed")
# The object kinds the stale-resource cleaner deletes, as the ledger names them.
CLEANUP_KINDS = (
    "thread",
    "vector_store",
    "file",
    "assistant",
    "conversation",
    "container",
    "response",
    "chat_completion",
)

# Fine-grained buckets for the time tollhouse itself adds (tens of microseconds and up).
OVERHEAD_BUCKETS = (
    1e-4,
    2.5e-4,
    5e-4,
    7.5e-4,
    1e-3,
    1.5e-3,
    2e-3,
    3e-3,
    5e-3,
    0.01,
    0.025,
    0.1,
    1.0,
)
UPSTREAM_BUCKETS = (1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600)


class Metrics:
    """The metric families, created on ``registry`` (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry, tenants: Iterable[str] = ("default",)) -> None:
        self.registry = registry
        self.requests = Counter(
            "tollhouse_requests",
            "Requests seen by the proxy, by tenant, quota class, operation and outcome.",
            ["tenant", "class", "operation", "outcome"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "tollhouse_upstream_request_duration_seconds",
            "Time from sending a request upstream to the last byte of its response.",
            ["class", "operation"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "tollhouse_proxy_overhead_seconds",
            "Time tollhouse adds to a request: total time minus upstream time.",
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.upstream_responses = Counter(
            "tollhouse_upstream_responses",
            "Upstream answers by class and status (2xx, 3xx, 4xx, 429, 5xx).",
            ["class", "code"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "tollhouse_in_flight_requests",
            "Requests being proxied right now.",
            registry=registry,
        )
        self.stream_aborts = Counter(
            "tollhouse_stream_aborts",
            "Responses cut short after they started, by reason.",
            ["reason"],
            registry=registry,
        )
        self.ratelimit_remaining = Gauge(
            "tollhouse_ratelimit_remaining",
            "Requests left in a bucket after its last admission (organisation: tenant=_org).",
            ["tenant", "class"],
            registry=registry,
        )
        self.ratelimit_limit = Gauge(
            "tollhouse_ratelimit_limit",
            "A bucket's limit in requests per unit (organisation: tenant=_org).",
            ["tenant", "class"],
            registry=registry,
        )
        self.ratelimit_wait = Histogram(
            "tollhouse_ratelimit_wait_seconds",
            "Time requests of a shaped class waited for a token.",
            ["class"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.buckets_fallback = Gauge(
            "tollhouse_buckets_fallback",
            "1 while the shared bucket store is unreachable and local buckets are used.",
            registry=registry,
        )
        self.tokens = Counter(
            "tollhouse_tokens",
            "Model tokens of finished runs, responses and chat completions, by tenant, model and "
            "direction (input, output; cached_input and cache_write are part of input, reasoning "
            "part of output).",
            ["tenant", "model", "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "tollhouse_cost_usd",
            "What tenants cost, in US dollars, by component (containers: the minimum charge, "
            "when first seen; the report prices their whole life).",
            ["tenant", "component"],
            registry=registry,
        )
        self.runs = Counter(
            "tollhouse_runs",
            "Runs seen reaching a terminal status, counted once each.",
            ["tenant", "status"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "tollhouse_run_duration_seconds",
            "Run time from creation to its terminal status.",
            ["status"],
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )
        self.runs_active = Gauge(
            "tollhouse_runs_active",
            "Runs not yet seen terminal, by tenant and last seen status (reconciler census).",
            ["tenant", "status"],
            registry=registry,
        )
        self.run_oldest_active_age = Gauge(
            "tollhouse_run_oldest_active_age_seconds",
            "Age of the oldest run not yet seen terminal, by last seen status.",
            ["status"],
            registry=registry,
        )
        self.code_interpreter_sessions = Counter(
            "tollhouse_code_interpreter_sessions",
            "Code Interpreter sessions (one per thread per hour of use).",
            ["tenant"],
            registry=registry,
        )
        self.file_search_calls = Counter(
            "tollhouse_file_search_calls",
            "File Search tool calls seen in run steps.",
            ["tenant"],
            registry=registry,
        )
        self.responses = Counter(
            "tollhouse_responses",
            "Responses seen reaching a terminal status, counted once each.",
            ["tenant", "status"],
            registry=registry,
        )
        self.response_tool_calls = Counter(
            "tollhouse_response_tool_calls",
            "Tool calls among responses' output items, by output item type, counted once each.",
            ["tenant", "kind"],
            registry=registry,
        )
        self.container_sessions = Counter(
            "tollhouse_container_sessions",
            "Responses containers (Code Interpreter) first seen, by memory limit; an auto "
            "container counts even when no call ran.",
            ["tenant", "memory_limit"],
            registry=registry,
        )
        self.chat_completions = Counter(
            "tollhouse_chat_completions",
            "Chat completions seen, counted once each.",
            ["tenant"],
            registry=registry,
        )
        self.vector_store_bytes = Gauge(
            "tollhouse_vector_store_bytes",
            "Vector-store usage_bytes at the last sample, by owning tenant.",
            ["tenant"],
            registry=registry,
        )
        self.run_polls = Counter(
            "tollhouse_run_polls",
            "GET retrievals of runs (status polling).",
            ["tenant"],
            registry=registry,
        )
        self.unpriced_usage = Counter(
            "tollhouse_unpriced_usage",
            "Tokens of models missing from the pricing table (metered, not priced).",
            ["model"],
            registry=registry,
        )
        self.ledger_write_errors = Counter(
            "tollhouse_ledger_write_errors",
            "Ledger writes that failed and went to the spool file.",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "tollhouse_spool_bytes",
            "Bytes of ledger batches waiting in the spool for the database.",
            registry=registry,
        )
        self.spool_batches = Gauge(
            "tollhouse_spool_batches",
            "Ledger batches waiting in the spool for the database.",
            registry=registry,
        )
        self.collector_last_success = Gauge(
            "tollhouse_collector_last_success_timestamp_seconds",
            "When a collector job last finished without error (set to the start time at start).",
            ["collector"],
            registry=registry,
        )
        self.collector_lease_held = Gauge(
            "tollhouse_collector_lease_held",
            "1 on the replica whose lease runs the collector job now (one replica at a time).",
            ["collector"],
            registry=registry,
        )
        self.reconciler_blocked = Gauge(
            "tollhouse_reconciler_blocked",
            "1 while the reconciler cannot run (no TOLLHOUSE_UPSTREAM_API_KEY): usage the proxy "
            "did not see, or lost in a crash, is not recovered.",
            registry=registry,
        )
        self.recovery_pending = Gauge(
            "tollhouse_recovery_pending",
            "1 from a start after an unclean stop until what it may have lost is metered again.",
            registry=registry,
        )
        self.cleanup_deleted = Counter(
            "tollhouse_cleanup_deleted",
            "Stale objects the cleaner deleted (or found already gone upstream).",
            ["tenant", "kind"],
            registry=registry,
        )
        self.cleanup_failures = Counter(
            "tollhouse_cleanup_failures",
            "Objects the cleaner could not check or delete; the next sweep tries again.",
            ["kind"],
            registry=registry,
        )
        self.stale_resources = Gauge(
            "tollhouse_stale_resources",
            "Stale objects the last sweep found, by owning tenant and kind.",
            ["tenant", "kind"],
            registry=registry,
        )
        self.cleanup_reclaimed_bytes = Counter(
            "tollhouse_cleanup_reclaimed_bytes",
            "Vector-store usage_bytes freed by the cleaner's deletes.",
            registry=registry,
        )
        self.cleanup_last_success = Gauge(
            "tollhouse_cleanup_last_success_timestamp_seconds",
            "When a deleting sweep last ran to its end.",
            registry=registry,
        )
        self.cleanup_duration = Histogram(
            "tollhouse_cleanup_duration_seconds",
            "How long deleting sweeps took, start to end.",
            buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800),
            registry=registry,
        )
        self.isolation_denials = Counter(
            "tollhouse_isolation_denials",
            "Requests that named another tenant's object (or one with no owner), answered as "
            "for a missing object.",
            ["tenant", "operation"],
            registry=registry,
        )
        self.list_pages = Counter(
            "tollhouse_list_upstream_pages",
            "Upstream pages read to answer organisation-wide lists with one tenant's objects.",
            ["tenant"],
            registry=registry,
        )
        # -- the upstream's bill against the ledger (jobs/bill.py) --
        self.bill_drift_ratio = Gauge(
            "tollhouse_bill_drift_ratio",
            "|bill - tollhouse| / bill for the last day checked, by measure (tokens, tool "
            "calls, storage, dollars); measures tollhouse does not meter are left out.",
            ["measure"],
            registry=registry,
        )
        self.bill_drift_tolerance = Gauge(
            "tollhouse_bill_drift_tolerance_ratio",
            "The share of the bill a measure may drift by before it counts as disagreeing.",
            registry=registry,
        )
        self.bill_last_success = Gauge(
            "tollhouse_bill_last_success_timestamp_seconds",
            "When a day's bill was last fetched and compared with the ledger.",
            registry=registry,
        )
        # Spend budgets (USD, per tenant and calendar period: daily, monthly).
        self.budget_usd = Gauge(
            "tollhouse_budget_usd",
            "A tenant's hard spend limit for the period, in USD.",
            ["tenant", "period"],
            registry=registry,
        )
        self.budget_spent_usd = Gauge(
            "tollhouse_budget_spent_usd",
            "A tenant's spend in the current period: metered cost plus the worst case of "
            "requests in flight, in USD.",
            ["tenant", "period"],
            registry=registry,
        )
        self.budget_soft_usd = Gauge(
            "tollhouse_budget_soft_usd",
            "A soft threshold of a tenant's spend budget (for alerts), in USD; `threshold` is "
            "its fraction of the hard limit.",
            ["tenant", "period", "threshold"],
            registry=registry,
        )
        self.budget_refusals = Counter(
            "tollhouse_budget_refusals",
            "Requests refused with insufficient_quota because a spend budget was used up.",
            ["tenant"],
            registry=registry,
        )
        self.budget_seeded = Gauge(
            "tollhouse_budget_seeded",
            "1 once the spend of the current periods was read from the ledger at start-up; "
            "0 before (spend counts only what this start has seen).",
            registry=registry,
        )
        self.budget_store_errors = Counter(
            "tollhouse_budget_store_errors",
            "Spend budget steps that could not reach the store (admitted unchecked, or a "
            "settlement lost).",
            registry=registry,
        )
        # -- model tokens per unit: reservations at admission, settlements with usage --
        tenants = tuple(tenants)
        self.token_reservations = Counter(
            "tollhouse_token_reservations",
            "Model calls whose estimated tokens were reserved (forwarded, shadow_throttled) or "
            "refused (throttled; too_large: more than a bucket holds), by tenant.",
            ["tenant", "outcome"],
            registry=registry,
        )
        self.tokens_reserved = Counter(
            "tollhouse_tokens_reserved",
            "Estimated tokens of model calls at admission (reserved or refused), by tenant.",
            ["tenant"],
            registry=registry,
        )
        self.token_settlements = Counter(
            "tollhouse_token_settlements",
            "Token reservations by how they ended: settled with the call's usage, refunded "
            "(an error answer), kept (no usage reported), not_applied (settled already, past "
            "its time, or the shared store away) or failed.",
            ["outcome"],
            registry=registry,
        )
        self.tokens_settled = Counter(
            "tollhouse_tokens_settled_difference",
            "Tokens charged (positive) or refunded (negative) at settlement, by direction.",
            ["direction"],
            registry=registry,
        )
        for tenant in tenants:
            for outcome in TOKEN_RESERVATION_OUTCOMES:
                self.token_reservations.labels(tenant, outcome)
            self.tokens_reserved.labels(tenant)
        for outcome in TOKEN_SETTLEMENT_OUTCOMES:
            self.token_settlements.labels(outcome)
        for direction in ("charged", "refunded"):
            self.tokens_settled.labels(direction)
        self.build_info = Info("tollhouse_build", "tollhouse build information.", registry=registry)
        self.build_info.info({"version": __version__})
        self._tenants = tuple(tenants)
        self._request_children: dict[tuple[str, str, str, str], Any] = {}
        self._budget_children: dict[tuple[str, str], tuple[Any, Any, list[int | None]]] = {}
        self._initialise(self._tenants)

    def count(self, tenant: str, operation: Operation, outcome: str) -> None:
        key = (tenant, operation.request_class, operation.name, outcome)
        child = self._request_children.get(key)
        if child is None:  # labels() costs a lock and a dict lookup: keep the child
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()

    def upstream_status(self, request_class: str, status: int) -> None:
        code = "429" if status == 429 else f"{min(max(status // 100, 2), 5)}xx"
        self.upstream_responses.labels(request_class, code).inc()

    def record_live_runs(
        self, counts: Mapping[tuple[str, str], int], oldest: Mapping[str, float]
    ) -> None:
        """The reconciler's census of live runs; known label sets read 0 when there are none."""
        self.runs_active.clear()
        self.run_oldest_active_age.clear()
        for status in LIVE_RUN_STATUSES:
            self.run_oldest_active_age.labels(status).set(oldest.get(status, 0.0))
            for tenant in self._tenants:
                self.runs_active.labels(tenant, status).set(0)
        for (tenant, status), count in counts.items():
            self.runs_active.labels(tenant, status).set(count)
        for status, age in oldest.items():
            self.run_oldest_active_age.labels(status).set(age)

    def record_budget(
        self, request_class: str, levels: Iterable[tuple[str, int, int]], wait: float
    ) -> None:
        """Each bucket's level after an admission, and the time a request was shaped."""
        for label, remaining_now, per_unit in levels:
            key = (label, request_class)
            gauges = self._budget_children.get(key)
            if gauges is None:
                gauges = self._budget_children[key] = (
                    self.ratelimit_remaining.labels(*key),
                    self.ratelimit_limit.labels(*key),
                    [None],
                )
            remaining, limit, last_limit = gauges
            remaining.set(remaining_now)
            if last_limit[0] != per_unit:  # changes only with the policy
                last_limit[0] = per_unit
                limit.set(per_unit)
        if wait > 0:
            self.ratelimit_wait.labels(request_class).observe(wait)

    def record_token_reservation(self, tenant: str, outcome: str, tokens: int) -> None:
        self.token_reservations.labels(tenant, outcome).inc()
        self.tokens_reserved.labels(tenant).inc(tokens)

    def record_token_settlement(self, outcome: str, difference: int) -> None:
        """A settlement's outcome, and the tokens it charged (+) or refunded (-)."""
        self.token_settlements.labels(outcome).inc()
        if difference:
            direction = "charged" if difference > 0 else "refunded"
            self.tokens_settled.labels(direction).inc(abs(difference))

    def record_stale(self, found: Mapping[tuple[str, str], int]) -> None:
        """What a sweep found, by (tenant label, kind); every known label set is reset."""
        self.stale_resources.clear()
        for tenant in self._tenants:
            for kind in CLEANUP_KINDS:
                self.stale_resources.labels(tenant, kind).set(0)
        for (tenant, kind), count in found.items():
            self.stale_resources.labels(tenant, kind).set(count)

    def _initialise_costs(self, tenants: tuple[str, ...]) -> None:
        for tenant in tenants:
            for component in COST_COMPONENTS:
                self.cost.labels(tenant, component)
            self.code_interpreter_sessions.labels(tenant)
            self.file_search_calls.labels(tenant)
            self.run_polls.labels(tenant)
            self.chat_completions.labels(tenant)
            for status in TERMINAL_RESPONSE_STATUSES:
                self.responses.labels(tenant, status)
            for kind in TOOL_CALL_KINDS:
                self.response_tool_calls.labels(tenant, kind)
            for memory_limit in MEMORY_LIMITS:
                self.container_sessions.labels(tenant, memory_limit)

    def _initialise(self, tenants: Iterable[str]) -> None:
        """Create the known label sets at zero so rates and alerts see them from the start."""
        tenants = tuple(tenants)
        for tenant in tenants:
            for route in ROUTES:
                for outcome in OUTCOMES:
                    self.requests.labels(tenant, route.request_class, route.name, outcome)
            for status in TERMINAL_RUN_STATUSES:
                self.runs.labels(tenant, status)
            self.list_pages.labels(tenant)
            for route in ROUTES:
                self.isolation_denials.labels(tenant, route.name)
            for request_class in RequestClass:
                for outcome in OUTCOMES:
                    self.requests.labels(tenant, request_class, UNKNOWN, outcome)
        for request_class in RequestClass:
            self.ratelimit_wait.labels(request_class)
            for code in UPSTREAM_CODES:
                self.upstream_responses.labels(request_class, code)
        self._initialise_costs(tenants)
        for reason in ("client_disconnect", "upstream_error"):
            self.stream_aborts.labels(reason)
        for kind in CLEANUP_KINDS:
            self.cleanup_failures.labels(kind)
            for tenant in tenants:
                self.cleanup_deleted.labels(tenant, kind)
                self.stale_resources.labels(tenant, kind)

"""The migration report: what each tenant uses of the Assistants API, what it maps to on
Responses, what the same work would cost there, and what need not move at all.

Pure: the ledger's facts (``migration_query``), a pricing table, a policy's cleanup
TTLs and the moments in; a ``Migration`` out. Every assumption the estimate makes is in
``ASSUMPTIONS``, printed with the report.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from tollhouse.config.policy import Cleanup, CleanupKind
from tollhouse.metering.costs import container_cost, token_cost
from tollhouse.metering.pricing import PricingTable
from tollhouse.report.migration_query import MigrationUsage, RunGroup, ThreadUse, Unused
from tollhouse.report.query import unix_day

# A Responses container stays alive this long after its last call (the API's default
# expires_after of 20 minutes), and Code Interpreter runs in the default 1g tier.
CONTAINER_IDLE_SECONDS = 20 * 60
CONTAINER_TIER = "1g"
# Ledger kind -> the policy's name for it, for the kinds an Assistants app leaves behind.
POLICY_KINDS: dict[str, CleanupKind] = {
    "thread": "threads",
    "assistant": "assistants",
    "vector_store": "vector_stores",
    "file": "files",
}
ASSUMPTIONS = (
    "Tokens: each run's prompt and completion tokens become a response's input and output "
    "tokens, priced at the model's rates on the report's day (today's prices); a share of "
    "the input equal to the tenant's cached share on the Responses API in the period (cached "
    "/ input tokens) is priced at the cached rate, none if it has no Responses traffic.",
    "Code Interpreter: each Assistants session (a thread's hour) becomes one container of "
    f"the {CONTAINER_TIER} tier, alive from its first call to its last in that hour plus "
    f"{CONTAINER_IDLE_SECONDS // 60} minutes idle (the default expires_after).",
    "File Search: every call is priced at the Responses per-call price; the Assistants side "
    "at the table's Assistants price. Vector stores stay the same stores: storage costs the "
    "same on both sides and is left out of both.",
    "Assistants side: runs at the model's rates on the day each finished, all prompt tokens "
    "at the full input rate (runs report no cached tokens), Code Interpreter sessions at "
    "the session price. Unpriced models are counted in tokens and left out of both costs.",
    "Unused: objects not deleted, not protected, and not touched for the tenant's cleanup "
    "TTL of their kind before --until would not need migrating (kinds without a TTL are "
    "not judged).",
)


@dataclass(frozen=True, slots=True)
class AssistantUse:
    id: str
    model: str | None
    instructions_chars: int | None  # None: tollhouse never saw the assistant's answer
    tools: tuple[str, ...] | None
    vector_store_ids: tuple[str, ...]
    runs: int
    runs_per_day: float
    last_used: datetime
    equivalent: str


@dataclass(frozen=True, slots=True)
class ThreadPatterns:
    threads: int
    messages: int
    runs: int
    messages_per_thread: float
    runs_per_thread: float
    lifetime_median_seconds: float | None
    idle_median_seconds: float | None
    streamed_runs: int
    polled_runs: int
    polls: int
    requires_action_round_trips: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """One side's cost; ``unpriced_tokens``: tokens of models without a price."""

    tokens: Decimal
    code_interpreter: Decimal
    file_search: Decimal
    unpriced_tokens: int

    @property
    def total(self) -> Decimal:
        return self.tokens + self.code_interpreter + self.file_search


@dataclass(frozen=True, slots=True)
class TenantMigration:
    tenant: str
    assistants: tuple[AssistantUse, ...]
    patterns: ThreadPatterns
    prompt_tokens: int
    completion_tokens: int
    cached_share: Decimal
    responses: int  # responses the tenant already made on the Responses API in the period
    code_interpreter_sessions: int
    containers: int
    file_search_calls: int
    assistants_cost: Estimate
    responses_cost: Estimate
    unused: dict[str, int]  # ledger kind -> objects idle past their TTL


@dataclass(frozen=True, slots=True)
class Migration:
    since: datetime
    until: datetime
    generated_at: datetime
    priced_on: date
    tenants: tuple[TenantMigration, ...]
    assumptions: tuple[str, ...] = field(default=ASSUMPTIONS)


def equivalent(model: str | None, tools: Sequence[str] | None, stores: Sequence[str]) -> str:
    """The Responses-era shape of an assistant: a prompt configuration and its tools."""
    if tools is None:
        return "prompt (details not seen by tollhouse)"
    parts = [f"prompt: {model or '?'}"]
    for tool in tools:
        if tool == "code_interpreter":
            parts.append(f"code_interpreter: container {CONTAINER_TIER}")
        elif tool == "file_search":
            parts.append(f"file_search: {', '.join(stores) or 'no stores'}")
        elif tool.startswith("function:"):
            parts.append(f"function {tool.removeprefix('function:')}")
        else:
            parts.append(tool)
    return "; ".join(parts)


def _assistants(
    runs: Iterable[RunGroup], usage: MigrationUsage, days: float
) -> dict[str, list[AssistantUse]]:
    counts: dict[tuple[str, str], list[RunGroup]] = defaultdict(list)
    for group in runs:
        counts[(group.tenant, group.assistant_id or "?")].append(group)
    found: dict[str, list[AssistantUse]] = defaultdict(list)
    for (tenant, assistant), groups in sorted(counts.items()):
        details = usage.assistants.get(assistant)
        model = details.model if details else next((g.model for g in groups if g.model), None)
        tools = details.tools if details else None
        stores = details.vector_store_ids if details else ()
        runs_total = sum(g.runs for g in groups)
        found[tenant].append(
            AssistantUse(
                id=assistant,
                model=model,
                instructions_chars=details.instructions_chars if details else None,
                tools=tools,
                vector_store_ids=stores,
                runs=runs_total,
                runs_per_day=runs_total / days,
                last_used=datetime.fromtimestamp(max(g.last_at for g in groups), UTC),
                equivalent=equivalent(model, tools, stores),
            )
        )
    return found


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def patterns(threads: Sequence[ThreadUse], runs: Sequence[RunGroup], end: int) -> ThreadPatterns:
    """Threads and how their runs were followed; idle time is measured up to ``end``."""
    count = len(threads)
    messages = sum(t.messages for t in threads)
    run_count = sum(g.runs for g in runs)
    spans = [
        (t.created_at, t.last_used_at)
        for t in threads
        if t.created_at is not None and t.last_used_at is not None
    ]
    return ThreadPatterns(
        threads=count,
        messages=messages,
        runs=run_count,
        messages_per_thread=messages / count if count else 0.0,
        runs_per_thread=sum(t.runs for t in threads) / count if count else 0.0,
        lifetime_median_seconds=_median([last - first for first, last in spans]),
        idle_median_seconds=_median([max(0, end - last) for _, last in spans]),
        streamed_runs=sum(g.streamed for g in runs),
        polled_runs=sum(g.polled for g in runs),
        polls=sum(g.polls for g in runs),
        requires_action_round_trips=sum(g.tool_rounds for g in runs),
    )


def cached_share(tokens: tuple[int, int] | None) -> Decimal:
    """The share of a tenant's Responses input tokens that were cached (0 without any)."""
    if tokens is None or tokens[0] <= 0:
        return Decimal(0)
    return Decimal(min(tokens[1], tokens[0])) / Decimal(tokens[0])


def _day(at: int) -> date:
    return datetime.fromtimestamp(at, UTC).date()


def assistants_cost(
    table: PricingTable,
    runs: Sequence[RunGroup],
    sessions: Sequence[int],
    file_search_calls: int,
    priced_on: date,
) -> Estimate:
    """What the work cost on the Assistants protocol; ``sessions``: their start times."""
    tokens, unpriced = Decimal(0), 0
    for group in runs:
        day = unix_day(group.day)
        cost = token_cost(table, group.model, group.prompt_tokens, group.completion_tokens, day)
        if cost is None:
            unpriced += group.prompt_tokens + group.completion_tokens
        else:
            tokens += cost
    interpreter = sum(
        (table.code_interpreter_session(_day(at)) for at in sessions), start=Decimal(0)
    )
    search = file_search_calls * table.file_search_call(priced_on, "assistants")
    return Estimate(tokens, interpreter, search, unpriced)


def container_seconds(calls: Sequence[int]) -> int:
    """How long the container replacing one session lives: its calls, then the idle expiry."""
    return (max(calls) - min(calls) if calls else 0) + CONTAINER_IDLE_SECONDS


def responses_cost(
    table: PricingTable,
    runs: Sequence[RunGroup],
    share: Decimal,
    sessions: Sequence[Sequence[int]],
    file_search_calls: int,
    priced_on: date,
) -> Estimate:
    """What the same work would cost on Responses at ``priced_on``'s prices;
    ``sessions``: each Code Interpreter session's call times."""
    by_model: dict[str | None, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for group in runs:
        prompt, completion = by_model[group.model]
        by_model[group.model] = (prompt + group.prompt_tokens, completion + group.completion_tokens)
    tokens, unpriced = Decimal(0), 0
    for model, (prompt, completion) in sorted(by_model.items(), key=lambda i: str(i[0])):
        cached = int((prompt * share).to_integral_value(ROUND_HALF_UP))
        cost = token_cost(table, model, prompt, completion, priced_on, cached_tokens=cached)
        if cost is None:
            unpriced += prompt + completion
        else:
            tokens += cost
    containers = Decimal(0)
    for calls in sessions:
        cost = container_cost(table, CONTAINER_TIER, container_seconds(calls), priced_on)
        containers += cost if cost is not None else Decimal(0)
    search = file_search_calls * table.file_search_call(priced_on, "responses")
    return Estimate(tokens, containers, search, unpriced)


def unused_counts(
    unused: Iterable[Unused], cleanup: Cleanup, tenant: str, end: int
) -> dict[str, int]:
    """Per kind, ``tenant``'s objects idle for their TTL at ``end`` (kinds with a TTL only)."""
    counts: dict[str, int] = {}
    for item in unused:
        if item.tenant != tenant or item.kind not in POLICY_KINDS:
            continue
        ttl = cleanup.ttl_for(tenant, POLICY_KINDS[item.kind])
        if ttl is not None and item.last_used_at < end - ttl:
            counts[item.kind] = counts.get(item.kind, 0) + 1
    return counts


def idle_before(cleanup: Cleanup, end: int) -> int:
    """The latest last use an object idle for some tenant's TTL can have (a query bound)."""
    ttls = [cleanup.ttl.get(name) for name in POLICY_KINDS.values()]
    ttls += [t.ttl.get(name) for t in cleanup.tenants.values() for name in POLICY_KINDS.values()]
    shortest = min((ttl for ttl in ttls if ttl is not None), default=None)
    return end - shortest if shortest is not None else 0


def build_migration(
    usage: MigrationUsage,
    table: PricingTable,
    cleanup: Cleanup,
    since: datetime,
    until: datetime,
    now: datetime,
) -> Migration:
    """The report for [since, until), priced at ``now``'s prices."""
    start, end = int(since.timestamp()), int(until.timestamp())
    days = max((end - start) / 86_400, 1 / 86_400)
    priced_on = now.astimezone(UTC).date()
    assistants = _assistants(usage.runs, usage, days)
    tenants = sorted(
        {g.tenant for g in usage.runs}
        | {t.tenant for t in usage.threads}
        | {u.tenant for u in usage.unused}
        | set(usage.responses_tokens)
    )
    found = []
    for tenant in tenants:
        runs = [g for g in usage.runs if g.tenant == tenant]
        sessions = {k: v for k, v in usage.sessions.items() if k[0] == tenant}
        responses, *tokens = usage.responses_tokens.get(tenant, (0, 0, 0))
        share = cached_share((tokens[0], tokens[1]))
        searches = usage.file_search_calls.get(tenant, 0)
        found.append(
            TenantMigration(
                tenant=tenant,
                assistants=tuple(assistants.get(tenant, ())),
                patterns=patterns([t for t in usage.threads if t.tenant == tenant], runs, end),
                prompt_tokens=sum(g.prompt_tokens for g in runs),
                completion_tokens=sum(g.completion_tokens for g in runs),
                cached_share=share,
                responses=responses,
                code_interpreter_sessions=len(sessions),
                containers=len(sessions),
                file_search_calls=searches,
                assistants_cost=assistants_cost(
                    table, runs, [k[2] for k in sessions], searches, priced_on
                ),
                responses_cost=responses_cost(
                    table, runs, share, list(sessions.values()), searches, priced_on
                ),
                unused=unused_counts(usage.unused, cleanup, tenant, end),
            )
        )
    return Migration(since, until, now, priced_on, tuple(found))

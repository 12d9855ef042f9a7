"""The ledger's tables. Times are Unix seconds (integers), as the API gives them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class OwnedObject(SQLModel, table=True):
    """An upstream object created through tollhouse, and the tenant that owns it."""

    __tablename__ = "owned_object"
    __table_args__ = (
        Index("ix_owned_object_tenant_kind", "tenant", "kind"),
        Index("ix_owned_object_parent", "parent_id"),
    )

    id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=32)
    tenant: str = Field(max_length=64)
    parent_id: str | None = Field(default=None, max_length=128)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_used_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    keep: bool = False
    deleted_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Run(SQLModel, table=True):
    """A run, upserted by id; its tokens are counted once, when it is first seen terminal."""

    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_tenant_finished", "tenant", "finished_at"),
        Index("ix_run_pending", "usage_recorded_at", "created_at"),
        Index("ix_run_thread_seen", "thread_id", "last_seen_at"),
        Index("ix_run_assistant_seen", "assistant_id", "last_seen_at"),
    )

    id: str = Field(primary_key=True, max_length=128)
    tenant: str = Field(max_length=64)
    thread_id: str = Field(max_length=128)
    assistant_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=128)
    status: str = Field(max_length=32)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    finished_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    prompt_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    completion_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    total_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    usage_recorded_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    code_interpreter: bool = False
    file_search: bool = False
    steps_seen: bool = False
    last_seen_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # How the client followed it: streamed (a create or submit answered with events),
    # retrievals (status polls), and tool-output submissions (requires_action round trips).
    streamed: bool = False
    polls: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    tool_rounds: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class ToolCall(SQLModel, table=True):
    """A Code Interpreter or File Search call seen in a run step, counted once by id."""

    __tablename__ = "tool_call"
    __table_args__ = (
        Index("ix_tool_call_tenant_type_at", "tenant", "type", "at"),
        Index("ix_tool_call_thread_type_at", "thread_id", "type", "at"),  # sessions per thread
    )

    id: str = Field(primary_key=True, max_length=128)
    type: str = Field(max_length=32)
    tenant: str = Field(max_length=64)
    thread_id: str = Field(max_length=128)
    run_id: str = Field(max_length=128)
    step_id: str = Field(max_length=128)
    at: int = Field(sa_column=Column(BigInteger, nullable=False))


class CodeInterpreterSession(SQLModel, table=True):
    """A billed Code Interpreter session: a thread's first call opens one for an hour."""

    __tablename__ = "code_interpreter_session"
    __table_args__ = (
        UniqueConstraint("thread_id", "started_at", name="uq_ci_session_thread_start"),
        Index("ix_ci_session_tenant_started", "tenant", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64)
    thread_id: str = Field(max_length=128)
    started_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class VectorStoreSample(SQLModel, table=True):
    """``usage_bytes`` of a vector store at a moment, attributed to its owner."""

    __tablename__ = "vector_store_sample"
    __table_args__ = (
        Index("ix_vs_sample_store_at", "vector_store_id", "at"),
        Index("ix_vs_sample_tenant_at", "tenant", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    vector_store_id: str = Field(max_length=128)
    tenant: str = Field(max_length=64)
    at: int = Field(sa_column=Column(BigInteger, nullable=False))
    usage_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))


class RequestCount(SQLModel, table=True):
    """Requests per tenant, class and outcome, aggregated per minute."""

    __tablename__ = "request_count"

    tenant: str = Field(primary_key=True, max_length=64)
    request_class: str = Field(primary_key=True, max_length=16)
    outcome: str = Field(primary_key=True, max_length=32)
    minute: int = Field(sa_column=Column(BigInteger, primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class Tenant(SQLModel, table=True):
    """A tenant the ledger has seen."""

    __tablename__ = "tenant"

    name: str = Field(primary_key=True, max_length=64)
    first_seen_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class CleanupAudit(SQLModel, table=True):
    """One row per object the cleaner decided to delete: what, whose, why, when, and how it went.

    ``status`` is ``pending`` from just before the DELETE is sent until its answer is
    recorded (``deleted``, or ``failed`` to be tried again by the next sweep); a sweep
    that finds ``pending`` rows resumes them. ``cancelled``: touched before it went.
    """

    __tablename__ = "cleanup_audit"
    __table_args__ = (
        Index("ix_cleanup_audit_status", "status"),
        Index("ix_cleanup_audit_tenant_deleted", "tenant", "deleted_at"),
    )

    object_id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=32)
    tenant: str = Field(max_length=64)
    status: str = Field(max_length=16)
    reason: str = Field(max_length=256)
    sweep_id: int
    last_touched_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    ttl_seconds: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    usage_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    decided_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    deleted_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    attempts: int = 0
    error: str | None = Field(default=None, max_length=512)


class CleanupSweep(SQLModel, table=True):
    """One sweep that deleted (``--apply`` or the scheduled job); dry runs write nothing."""

    __tablename__ = "cleanup_sweep"

    id: int | None = Field(default=None, primary_key=True)
    holder: str = Field(max_length=128)
    status: str = Field(max_length=16)  # running, completed, failed, interrupted
    started_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    finished_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    found: int = 0
    deleted: int = 0
    failed: int = 0


class CleanupLease(SQLModel, table=True):
    """Who may sweep: taken by an atomic UPDATE where the lease has expired."""

    __tablename__ = "cleanup_lease"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=128)
    expires_at: float


class AppliedBatch(SQLModel, table=True):
    """A writer batch already in the ledger: replaying it (from the spool) changes nothing.

    Batches are applied whole in one transaction with their row here; a batch whose
    commit went through but whose acknowledgement was lost is spooled and replayed,
    and this row makes the replay a no-op, so additive counts are never doubled.
    """

    __tablename__ = "applied_batch"
    __table_args__ = (Index("ix_applied_batch_at", "at"),)

    id: str = Field(primary_key=True, max_length=32)
    at: int = Field(sa_column=Column(BigInteger, nullable=False))


class Response(SQLModel, table=True):
    """A Responses API response, upserted by id; its tokens are counted once, when it is first
    seen terminal. ``input_tokens`` include the cached and cache-write ones; ``output_tokens``
    the reasoning ones."""

    __tablename__ = "response"
    __table_args__ = (
        Index("ix_response_tenant_finished", "tenant", "finished_at"),
        Index("ix_response_pending", "usage_recorded_at", "last_seen_at"),
    )

    id: str = Field(primary_key=True, max_length=128)
    tenant: str = Field(max_length=64)
    model: str | None = Field(default=None, max_length=128)
    status: str = Field(max_length=32)
    service_tier: str | None = Field(default=None, max_length=32)
    background: bool = False
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    finished_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    input_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    cached_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    cache_write_tokens: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    output_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reasoning_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    total_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    usage_recorded_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_seen_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ResponseToolCall(SQLModel, table=True):
    """A tool call among a response's output items, counted once by its item id.

    ``tool`` is the tool version the request declared (web search is priced by it and by
    the response's model); ``at`` is when it was first recorded."""

    __tablename__ = "response_tool_call"
    __table_args__ = (
        Index("ix_response_tool_call_tenant_type_at", "tenant", "type", "at"),
        Index("ix_response_tool_call_response", "response_id"),
    )

    id: str = Field(primary_key=True, max_length=128)
    type: str = Field(max_length=64)
    tenant: str = Field(max_length=64)
    response_id: str | None = Field(default=None, max_length=128)
    tool: str | None = Field(default=None, max_length=64)
    action: str | None = Field(default=None, max_length=32)
    container_id: str | None = Field(default=None, max_length=128)
    size: str | None = Field(default=None, max_length=32)
    quality: str | None = Field(default=None, max_length=32)
    at: int = Field(sa_column=Column(BigInteger, nullable=False))


class Container(SQLModel, table=True):
    """A Responses container (Code Interpreter), billed by memory limit and active time.

    Its life runs from ``created_at`` until ``expires_after_minutes`` (the API's 20 when
    None) after ``last_active_at``. ``auto``: made by a response's ``container: auto`` tool,
    recorded under ``auto:<response id>`` when the response named no container."""

    __tablename__ = "container"
    __table_args__ = (Index("ix_container_tenant_created", "tenant", "created_at"),)

    id: str = Field(primary_key=True, max_length=128)
    tenant: str = Field(max_length=64)
    memory_limit: str | None = Field(default=None, max_length=16)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_active_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_after_minutes: int | None = None
    auto: bool = False
    response_id: str | None = Field(default=None, max_length=128)


class ChatCompletion(SQLModel, table=True):
    """A chat completion, counted once by id; tokens None when a stream did not include them."""

    __tablename__ = "chat_completion"
    __table_args__ = (Index("ix_chat_completion_tenant_created", "tenant", "created_at"),)

    id: str = Field(primary_key=True, max_length=128)
    tenant: str = Field(max_length=64)
    model: str | None = Field(default=None, max_length=128)
    service_tier: str | None = Field(default=None, max_length=32)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    input_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    cached_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    cache_write_tokens: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    output_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reasoning_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    total_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    usage_recorded_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Assistant(SQLModel, table=True):
    """An assistant as last seen in an answer (create, retrieve, update, list): what the
    migration report maps onto a Responses prompt configuration. ``tools`` and
    ``vector_store_ids`` are comma-separated, in the assistant's order."""

    __tablename__ = "assistant"

    id: str = Field(primary_key=True, max_length=128)
    model: str | None = Field(default=None, max_length=128)
    instructions_chars: int = Field(sa_column=Column(BigInteger, nullable=False))
    tools: str = Field(max_length=2048)
    vector_store_ids: str = Field(max_length=2048)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    seen_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ThreadMessages(SQLModel, table=True):
    """How many messages clients added to a thread through tollhouse (their requests'
    bodies: a thread's creation, a run's additional messages, a message's creation)."""

    __tablename__ = "thread_messages"

    thread_id: str = Field(primary_key=True, max_length=128)
    tenant: str = Field(max_length=64)
    messages: int = Field(sa_column=Column(BigInteger, nullable=False))


class FlowRequest(SQLModel, table=True):
    """One request tagged with a flow: tollhouse's view of its latency, to the millisecond
    (from its arrival to the first and to the last byte of its answer)."""

    __tablename__ = "flow_request"
    __table_args__ = (Index("ix_flow_request_tenant_at", "tenant", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64)
    flow: str = Field(max_length=64)
    api: str = Field(max_length=16)
    operation: str = Field(max_length=64)
    status: int
    at: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_byte_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_byte_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class FlowUnit(SQLModel, table=True):
    """A run or response made or followed by a flow's requests (the first flow wins): its
    tokens, tool calls and cost are the flow's."""

    __tablename__ = "flow_unit"
    __table_args__ = (Index("ix_flow_unit_tenant_flow", "tenant", "flow"),)

    unit_id: str = Field(primary_key=True, max_length=128)
    tenant: str = Field(max_length=64)
    flow: str = Field(max_length=64)
    api: str = Field(max_length=16)

"""OpenTelemetry traces: one span per proxied request, off unless an exporter is set.

Configured from the usual variables: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``console`` or ``none``; ``otlp`` is implied by ``OTEL_EXPORTER_OTLP_ENDPOINT``),
``OTEL_SERVICE_NAME`` and the exporter's own ``OTEL_EXPORTER_OTLP_*`` settings.
Attributes follow the GenAI semantic conventions where they apply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from tollhouse import __version__
from tollhouse.api.classify import Operation
from tollhouse.metering.meter import RunSeen

log = logging.getLogger(__name__)

# tollhouse operation -> gen_ai.operation.name, where the conventions name one.
GENAI_OPERATIONS = {
    "assistants.create": "create_agent",
    "threads.runs.create": "invoke_agent",
    "threads.create_and_run": "invoke_agent",
    "threads.runs.submit_tool_outputs": "invoke_agent",
}


def exporter_from_env(env: Mapping[str, str]) -> SpanExporter | None:
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not name and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        name = "otlp"
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.error("OTEL_TRACES_EXPORTER=otlp needs: pip install 'tollhouse[otlp]'")
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    log.error("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none)", name)
    return None


class Tracing:
    """Spans for the request path; every method is a no-op while tracing is off."""

    def __init__(self, exporter: SpanExporter | None, service_name: str = "tollhouse") -> None:
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if exporter is not None:
            resource = Resource.create(
                {"service.name": service_name, "service.version": __version__}
            )
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self._provider.get_tracer("tollhouse", __version__)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(
        self, operation: Operation, method: str, tenant: str, request_class: str
    ) -> Span | None:
        if self._tracer is None:
            return None
        genai = GENAI_OPERATIONS.get(operation.name, operation.name)
        return self._tracer.start_span(
            genai,
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": genai,
                "gen_ai.provider.name": "openai",
                "http.request.method": method,
                "tollhouse.operation": operation.name,
                "tollhouse.tenant": tenant,
                "tollhouse.request_class": request_class,
            },
        )

    @staticmethod
    def run(span: Span | None, run: RunSeen) -> None:
        if span is None:
            return
        if run.model:
            span.set_attribute("gen_ai.request.model", run.model)
            span.set_attribute("gen_ai.response.model", run.model)
        if run.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", run.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", run.usage.completion_tokens)

    @staticmethod
    def end(span: Span | None, outcome: str, status: int | None) -> None:
        if span is None:
            return
        span.set_attribute("tollhouse.outcome", outcome)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if outcome == "upstream_error" or (status is not None and status >= 500):
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def force_flush(self) -> None:
        if self._provider is not None:
            self._provider.force_flush()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

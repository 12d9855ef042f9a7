"""The flow a request names: taken from its header (which never goes upstream) or from a
create body's metadata; a name tollhouse does not accept is ignored, with a log line."""

from __future__ import annotations

import logging

from tollhouse.metering.flows import FLOW_HEADER, BadFlowName, flow_in_body, flow_name
from tollhouse.upstream.forward import Headers

log = logging.getLogger(__name__)


def take_flow(headers: Headers) -> tuple[str | None, Headers]:
    """The flow the ``X-Tollhouse-Flow`` header names, and the headers without it."""
    values = [v for k, v in headers if k.lower() == FLOW_HEADER]
    if not values:
        return None, headers
    rest = [(k, v) for k, v in headers if k.lower() != FLOW_HEADER]
    try:
        return flow_name(values[-1]), rest
    except BadFlowName as exc:
        log.info("X-Tollhouse-Flow ignored: %s", exc)
        return None, rest


def body_flow(body: object) -> str | None:
    """The flow a JSON create body names in ``metadata.tollhouse_flow``, if a valid one."""
    if not isinstance(body, bytes):
        return None  # streamed (an upload) or empty: no metadata to read
    raw = flow_in_body(body)
    if raw is None:
        return None
    try:
        return flow_name(raw)
    except BadFlowName as exc:
        log.info("metadata.tollhouse_flow ignored: %s", exc)
        return None

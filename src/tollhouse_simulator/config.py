"""Configuration of one simulator instance: timings, keys, limits and test hooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

REQUEST_CLASSES = frozenset({"GET", "POST", "RUN_CREATE", "DELETE"})


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated upstream behaves.

    Run timings: a run stays ``queued`` for ``queued_seconds`` and ``in_progress`` for
    ``in_progress_seconds`` (per leg; a leg is resumed by submit_tool_outputs). A cancelled run
    stays ``cancelling`` for ``cancelling_seconds``. A background response is ``queued`` and
    then ``in_progress`` for the same times as a run's leg; a streamed one streams for
    ``in_progress_seconds``. A file attached to a vector store stays ``in_progress`` for
    ``file_processing_seconds``.
    """

    queued_seconds: float = 0.05
    in_progress_seconds: float = 0.2
    cancelling_seconds: float = 0.05
    file_processing_seconds: float = 0.1
    clock: Callable[[], float] = time.time
    api_keys: frozenset[str] | None = None
    rate_limits: Mapping[str, int] | None = None
    stream_gate: threading.Event | None = None
    storage_dir: Path | None = None
    request_log_size: int = 1000
    run_expiry_seconds: int = 600
    organization: str = "org-simulator"
    admin_api_key: str = "sk-admin-simulator"  # the only key the usage and costs API takes
    bill_markup: float = 1.0  # the costs API's amounts are multiplied by this (tests of drift)

    def __post_init__(self) -> None:
        for name in (
            "queued_seconds",
            "in_progress_seconds",
            "cancelling_seconds",
            "file_processing_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"SimulatorConfig.{name} must be >= 0")
        if self.in_progress_seconds <= 0:
            raise ValueError("SimulatorConfig.in_progress_seconds must be > 0")
        if self.request_log_size < 1:
            raise ValueError("SimulatorConfig.request_log_size must be >= 1")
        if self.bill_markup < 0:
            raise ValueError("SimulatorConfig.bill_markup must be >= 0")
        if self.api_keys is not None and not self.api_keys:
            raise ValueError("SimulatorConfig.api_keys must not be empty when given")
        for request_class, limit in (self.rate_limits or {}).items():
            if request_class not in REQUEST_CLASSES:
                raise ValueError(
                    f"SimulatorConfig.rate_limits: unknown request class {request_class!r}; "
                    f"expected one of {sorted(REQUEST_CLASSES)}"
                )
            if limit < 1:
                raise ValueError(f"SimulatorConfig.rate_limits[{request_class!r}] must be >= 1")

"""The README's first command: ``tollhouse demo`` runs, end to end, and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(180)
def test_the_demo_runs_and_shows_quotas_costs_isolation_and_cleanup(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tollhouse", "demo", "--port", "0", "--admin-port", "0",
         "--duration", "0"],
        cwd=tmp_path,  # the demo's ledger and spool land here
        capture_output=True,
        text=True,
        timeout=170,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "refused with 429" in out  # the noisy tenant is throttled
    assert "asked for acme's assistant: 404" in out  # a neighbour finds nothing
    assert "sees only its own (globex support)" in out
    assert "[umbrella] streamed response resp_" in out  # a tenant on the Responses API
    assert "TOTAL" in out  # the cost report from the ledger
    assert "Cleanup dry run" in out

"""Alert rules, their promtool unit tests, the runbook and the Alertmanager example."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus import exported_series, referenced_series
from tests.services import require

ALERTS = Path(__file__).parent.parent / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.yml"))
RUNBOOK = ALERTS / "runbook.md"
ALERTMANAGER = ALERTS / "alertmanager.yml"
SEVERITIES = {"critical", "warning", "info"}
RECORD_NAME = re.compile(r"^[a-z][a-z_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")


def rules() -> list[dict[str, Any]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def alert_names() -> list[str]:
    return sorted({rule["alert"] for rule in alerting_rules()})


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]]


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_rule_files_pass_promtool_check_rules() -> None:
    checked = run(require("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_promtool_unit_test_passes() -> None:
    promtool = require("promtool")
    # One process per file, all at once: the long-horizon files take seconds each.
    processes = {
        path.name: subprocess.Popen(
            [promtool, "test", "rules", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in TEST_FILES
    }
    failures = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            failures[name] = output
    assert not failures, "\n".join(f"{name}:\n{output}" for name, output in failures.items())


def test_the_alertmanager_example_passes_amtool_check_config() -> None:
    checked = run(require("amtool"), "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"severity": "critical", "alertname": "TollhouseDown"}, "sre-pager"),
        ({"severity": "warning", "alertname": "TollhouseUpstreamErrors"}, "sre-chat"),
        ({"severity": "info", "alertname": "TollhouseTenantShadowThrottled"}, "sre-tickets"),
        (
            {"severity": "critical", "alertname": "TollhouseOrgHeadroomLow", "tenant": "acme"},
            "key-accounts,sre-pager",
        ),
        (
            {"severity": "warning", "alertname": "TollhouseTenantSpendSpike", "tenant": "hooli"},
            "finance,sre-chat",
        ),
        (
            {
                "severity": "critical",
                "alertname": "TollhouseTenantBudgetHardLimitCrossed",
                "tenant": "globex",
            },
            "key-accounts,finance,sre-pager",
        ),
        (
            {
                "severity": "warning",
                "alertname": "TollhouseTenantToolSpendSpike",
                "tenant": "hooli",
                "component": "tool_calls",
            },
            "finance,sre-chat",
        ),
        (
            {
                "severity": "info",
                "alertname": "TollhouseTenantCachedShareCollapsed",
                "tenant": "acme",
            },
            "key-accounts,finance,sre-tickets",
        ),
        ({"severity": "warning", "alertname": "TollhouseResponsesFailing"}, "sre-chat"),
    ],
)
def test_alertmanager_routes_by_severity_and_tenant(labels: dict[str, str], receivers: str) -> None:
    routed = run(
        require("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receivers}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    assert routed.returncode == 0, routed.stdout + routed.stderr


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_follows_the_conventions(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Tollhouse(?:[A-Z][a-z0-9]+)+", rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    url, _, anchor = annotations["runbook_url"].partition("#")
    assert url.endswith("alerts/runbook.md")
    assert anchor == rule["alert"].lower()
    assert anchor in runbook_anchors()


def test_the_runbook_has_a_section_for_every_alert_and_no_other() -> None:
    sections = re.findall(r"^## (\S+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert sorted(sections) == alert_names()


def test_recording_rules_are_named_level_metric_operations() -> None:
    records = [rule["record"] for rule in rules() if "record" in rule]
    assert records
    for name in records:
        assert RECORD_NAME.fullmatch(name), name
        assert name.split(":")[1].startswith("tollhouse_"), name


def test_rules_read_only_series_tollhouse_exports_or_records() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exported_series() | recorded | {"up"}
    for rule in rules():
        unknown = referenced_series(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_has_a_firing_and_a_silent_unit_test(alert: str) -> None:
    firing, silent = [], []
    for test in unit_tests():
        for case in test.get("alert_rule_test", []):
            if case["alertname"] == alert:
                (firing if case.get("exp_alerts") else silent).append(test["name"])
    assert firing, f"no promtool test where {alert} fires"
    assert silent, f"no promtool test where {alert} stays silent"


def test_unit_tests_are_named_as_sentences() -> None:
    for test in unit_tests():
        name = test.get("name", "")
        assert len(name.split()) >= 5, name
        assert not name.endswith("."), name

"""The composition root: one policy holder that a reload swaps whole, read by everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollhouse.compose import CurrentPolicy, StartupRefused, core
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.config.settings import Settings


def policy(*tenants: str, mode: str = "header") -> Policy:
    data = {"identify": {"mode": mode}, "tenants": {name: {} for name in tenants}}
    if mode == "keys":
        data["tenants"] = {name: {"keys": [f"sha256:{'0' * 64}"]} for name in tenants}
    return parse_policy(data, "test")


def test_a_swap_changes_the_policy_its_tenants_and_labels_together() -> None:
    current = CurrentPolicy(policy("acme"))
    seen: list[Policy] = []
    current.on_swap(seen.append)
    assert current.label("globex") == "other"
    new = policy("acme", "globex")
    current.swap(new)
    assert current.policy() is new
    assert current.label("globex") == "globex"
    assert "globex" in current.tenants().labels
    assert seen == [new]


def test_an_unsafe_policy_is_refused_and_the_one_in_force_kept() -> None:
    old = policy("acme")
    current = CurrentPolicy(old)  # no upstream key
    seen: list[Policy] = []
    current.on_swap(seen.append)
    with pytest.raises(StartupRefused, match="TOLLHOUSE_UPSTREAM_API_KEY"):
        current.swap(policy("acme", mode="keys"))
    assert current.policy() is old
    assert seen == []


def test_the_quota_follows_the_holder(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ledger.db")
    shared = core(settings, policy("acme"))
    assert shared.quota.policy is shared.current.policy()
    new = policy("acme", "globex")
    shared.current.swap(new)
    assert shared.quota.policy is new
    shared.engine.dispose()

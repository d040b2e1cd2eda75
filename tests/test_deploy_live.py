"""The deployment, run natively: `stedq serve` started exactly as the image starts it (its ENTRYPOINT, its
ENV plus compose's environment, the bundled model), probed by the image's HEALTHCHECK command and the
Kubernetes readiness service, scraped by a real Prometheus running the compose scrape config and alert
rules, and queried with every expression of the Grafana dashboard.

Only the addresses change: the server binds 127.0.0.1 on free ports instead of 0.0.0.0:50051/8000."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stedq import healthcheck
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.conftest import require_tool
from tests.deploy_support import (
    ALERTS,
    DASHBOARD,
    DOCKERFILES,
    PROMETHEUS_CONFIG,
    compose_environment,
    dashboard_queries,
    deployment_container,
    grafana_to_promql,
    image_config,
    metric_names,
)
from tests.server_support import free_port, read_version, shipped_bundle

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 120


def wait_for(what: str, check, timeout: float, interval: float = 0.5, alive=None):
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            last = check()
        except (OSError, ValueError) as exc:   # not up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def image_env(overrides: dict[str, str]) -> dict[str, str]:
    """The container's environment: the image's ENV, then compose's, then the test's addresses."""
    config = image_config(DOCKERFILES["cpu"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDQ_")}
    env.update(config.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # /opt/stedq/bin here
    env.update(compose_environment())
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def server():
    bundle = shipped_bundle()
    assert bundle is not None, "the image serves the bundled model (stedq/models/quality), which is missing"
    port, metrics_port = free_port(), free_port()
    env = image_env({"STEDQ_HOST": "127.0.0.1", "STEDQ_PORT": str(port), "STEDQ_METRICS_PORT": str(metrics_port),
                     "STEDQ_INTRA_OP_THREADS": "1"})   # a shared 2-core test machine
    entrypoint = image_config(DOCKERFILES["cpu"]).entrypoint
    executable = shutil.which(entrypoint[0], path=env["PATH"])
    assert executable, f"{entrypoint[0]} is not on the image's PATH"
    process = subprocess.Popen([executable, *entrypoint[1:]], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd="/")

    def alive():
        if process.poll() is not None:
            pytest.fail(f"stedq serve exited with {process.returncode}:\n{process.stdout.read()}")

    try:
        wait_for("the server's health to be SERVING",
                 lambda: healthcheck.check(f"127.0.0.1:{port}", timeout=2)[0], START_TIMEOUT_S, alive=alive)
        yield {"process": process, "env": env, "port": port, "metrics_port": metrics_port,
               "version": read_version(bundle)}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def traffic(server):
    """Scores, a batch, a model-info call and one bad request (an INVALID_ARGUMENT for the error panels)."""
    rng = np.random.default_rng(0)
    with grpc.insecure_channel(f"127.0.0.1:{server['port']}") as channel:
        stub = pb_grpc.QualityServiceStub(channel)

        def image(h=224, w=224):
            return pb.Image(data=rng.integers(0, 256, (h, w), dtype=np.uint8).tobytes(),
                            dtype=pb.DTYPE_UINT8, height=h, width=w)

        for _ in range(4):
            reply = stub.Score(pb.ScoreRequest(images=[image()]), timeout=30)
            assert 0.0 <= reply.results[0].score <= 1.0
        reply = stub.Score(pb.ScoreRequest(images=[image() for _ in range(4)]), timeout=30)
        assert len(reply.results) == 4 and reply.model_version == server["version"]
        stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        with pytest.raises(grpc.RpcError) as bad:
            stub.Score(pb.ScoreRequest(images=[pb.Image(data=b"\0" * 10, dtype=pb.DTYPE_UINT8,
                                                        height=224, width=224)]), timeout=30)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return {"images": 8}


def prometheus_query(base: str, query: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", f"{query}: {body}"
    return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(server, traffic, tmp_path_factory):
    binary = require_tool("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    # the compose config, its targets rewritten to this test's addresses, scraping every second
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["stedq"]["static_configs"] = [{"targets": [f"127.0.0.1:{server['metrics_port']}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    (folder / PROMETHEUS_CONFIG.name).write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, folder / ALERTS.name)   # rule_files are relative to the config, as in compose
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / PROMETHEUS_CONFIG.name}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"

    def alive():
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{(folder / 'prometheus.log').read_text()}")

    try:
        wait_for("Prometheus to be ready", lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
                 60, alive=alive)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_image_healthcheck_command_passes(server):
    config = image_config(DOCKERFILES["cpu"])
    out = subprocess.run(config.healthcheck, env=server["env"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SERVING" in out.stdout


def test_kubernetes_probes_pass(server):
    container = deployment_container()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        service = container[probe]["grpc"].get("service", "")
        serving, what = healthcheck.check(f"127.0.0.1:{server['port']}", service=service, timeout=5)
        assert serving, f"{probe} (service {service!r}) would fail: {what}"


def test_prometheus_scrapes_stedq_with_the_compose_config(server, traffic, prometheus):
    wait_for("Prometheus to scrape stedq",
             lambda: [r for r in prometheus_query(prometheus, 'up{job="stedq"}') if r["value"][1] == "1"], 30)
    scored = wait_for("the scored images in Prometheus", lambda: [
        r for r in prometheus_query(prometheus, 'stedq_images_scored_total{job="stedq"}')
        if float(r["value"][1]) >= traffic["images"]], 30)
    assert scored[0]["metric"]["instance"] == f"127.0.0.1:{server['metrics_port']}"
    model = prometheus_query(prometheus, "stedq_model_info")
    assert [m["metric"]["version"] for m in model] == [server["version"]]
    assert model[0]["metric"]["device"] and model[0]["metric"]["provider"] == "CPUExecutionProvider"
    invalid = prometheus_query(prometheus, 'stedq_requests_total{method="Score", code="INVALID_ARGUMENT"}')
    assert invalid and float(invalid[0]["value"][1]) == 1


def test_alert_rules_load_and_evaluate_without_firing(prometheus):
    def rules():
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as reply:
            groups = json.load(reply)["data"]["groups"]
        evaluated = [r for g in groups for r in g["rules"] if r.get("lastEvaluation", "").startswith("20")]
        return groups if len(evaluated) == sum(len(g["rules"]) for g in groups) else None

    groups = wait_for("the alert rules to be evaluated", rules, 30)
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    shipped = {r["alert"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]}
    assert set(loaded) == shipped
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        assert rule["state"] == "inactive", f"{name} fires on a healthy server: {rule['alerts']}"


def test_every_dashboard_query_returns_data(traffic, prometheus):
    queries = dashboard_queries()

    def empty():
        return [(title, expr) for title, expr in queries
                if not prometheus_query(prometheus, grafana_to_promql(expr, "10s", "1m"))]

    missing = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        missing = empty()
        if not missing:
            break
        time.sleep(1)
    assert not missing, f"dashboard panels without data on a server with traffic: {missing}"


def test_dashboard_metrics_exist_in_a_live_scrape(server, traffic):
    with urllib.request.urlopen(f"http://127.0.0.1:{server['metrics_port']}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    scraped = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    used = set().union(*(metric_names(expr) for _title, expr in dashboard_queries()))
    assert used - {"up"} <= scraped, f"dashboard metrics missing from the live scrape: {used - scraped - {'up'}}"
    assert json.loads(DASHBOARD.read_text())["uid"] == "stedq-overview"


def test_sigterm_drains_and_exits_zero(server, traffic, prometheus):
    # last (file order): docker stop / Kubernetes send SIGTERM; the server must drain and exit 0
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    grace = float(server["env"].get("STEDQ_GRACE_PERIOD_S", "10"))
    assert process.wait(timeout=grace + 20) == 0

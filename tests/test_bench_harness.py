"""stedq bench: the quick run writes every output with the right shape (never a speed check), the
paper-design baseline server scores like onnxruntime, and the pieces the report is built from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from stedq.bench import report
from stedq.bench.loadgen import bench_images
from stedq.bench.profile import summarize_stacks
from stedq.bench.servers import paper_server
from stedq.bench.stats import latency_stats, spread, summarize
from stedq.engine import Engine
from tests.conftest import REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "stedq", "bench", "--quick", "--out", str(out), "--peers", "kserve", "paper",
         "--intra-op-threads", "1", "--device", "cpu", "--profile"],
        capture_output=True, text=True, timeout=280, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_quick_run_writes_json_with_every_point(quick_run):
    results = json.loads((quick_run / "bench.json").read_text())
    env = results["environment"]
    assert env["logical_cpus"] >= 1 and env["cpu"]
    assert env["versions"]["onnxruntime"] and env["versions"]["grpcio"] and env["versions"]["tritonclient"]
    assert "CPUExecutionProvider" in env["onnxruntime_providers_available"]
    assert env["settings"]["max_batch_size"] == 4 and env["settings"]["intra_op_threads"] == 1
    assert results["command"].startswith("stedq bench --quick")
    ids = {entry["id"] for entry in results["scenarios"]}
    assert {"in-process/fp32/b1", "in-process/fp32/b4", "stedq/v1/unary/b1", "stedq/v1/unary/b4",
            "stedq/v1-stream/w4", "stedq/v1/concurrency/c4/batching", "stedq/v1/concurrency/c4/no-batching",
            "stedq/v2/unary/b1", "stedq/v2/concurrency/c4", "paper-http/c1", "paper-http/c4",
            "grpc-floor/v1/unary/b1", "grpc-floor-model/v1/unary/b1"} <= ids
    assert not any(entry["system"] == "mlserver" for entry in results["scenarios"])  # --peers left it out
    for entry in results["scenarios"]:
        assert "errors" not in entry and "skipped" not in entry, entry["id"]
        (run,) = entry["runs"]
        assert run["images"] >= entry["batch"] and run["images_per_s"] > 0, entry["id"]
        assert run["calls"] >= 2 and 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"], entry["id"]
        assert run["server_cpu_cores"] >= 0
        if entry["system"] != "in-process":
            assert run["server_rss_mb"] > 20 and run["client_cpu_cores"] >= 0, entry["id"]
        assert entry["summary"]["images_per_s"]["median"] == pytest.approx(run["images_per_s"])
        if entry["id"].startswith("stedq/v1"):   # the server's timing of each answer, split out
            assert 0 < run["server_inference_ms"] <= run["server_total_ms"] < run["p90_ms"], entry["id"]
            assert run["server_outside_inference_ms"] >= 0 and run["transport_ms"] > 0, entry["id"]
        else:   # tritonclient and the HTTP peer do not read it
            assert "server_total_ms" not in run, entry["id"]


@pytest.mark.slow
def test_quick_run_compares_with_the_limit_and_reports_targets(quick_run):
    results = json.loads((quick_run / "bench.json").read_text())
    by_id = {e["id"]: e for e in results["scenarios"]}
    # stedq is held to the in-process limit of the variant it served (the shipped bundle's auto: INT8 on a CPU).
    limit = f"in-process/{results['environment']['settings']['variant']}"
    ratio = results["ratios"][f"stedq/v1/unary/b4 / {limit}/b4"]
    expected = by_id["stedq/v1/unary/b4"]["runs"][0]["images_per_s"] / \
        by_id[f"{limit}/b4"]["runs"][0]["images_per_s"]
    assert ratio["median"] == pytest.approx(expected)
    # the --no-batching server and the peers serve the same variant's file: held to the same limit
    assert f"stedq/v1/concurrency/c4/no-batching / {limit}/b4" in results["ratios"]
    assert f"paper-http/c1 / {limit}/b1" in results["ratios"]
    assert results["peers_onnx"].endswith("model.int8.onnx" if limit.endswith("int8") else "model.onnx")
    targets = {t["target"]: t for t in results["targets"]}
    assert targets["gRPC batch-4 throughput vs in-process"]["met"] in (True, False)
    overhead = targets["single-image p50 overhead (ms)"]["value"]["median"]
    assert overhead == pytest.approx(by_id["stedq/v1/unary/b1"]["runs"][0]["p50_ms"]
                                     - by_id[f"{limit}/b1"]["runs"][0]["p50_ms"])
    floor = by_id["grpc-floor/v1/unary/b1"]["runs"][0]["p50_ms"]   # same client, nothing behind the server
    assert targets["single-image p50 of Python gRPC alone (ms; the floor under the overhead, reference)"][
        "value"]["median"] == pytest.approx(floor)
    assert floor < by_id["stedq/v1/unary/b1"]["runs"][0]["p50_ms"]
    # The same bare service running the model: slower than answering at once by about one inference.
    with_model = by_id["grpc-floor-model/v1/unary/b1"]["runs"][0]["p50_ms"]
    assert with_model > floor
    assert targets["single-image p50 overhead of a bare Python gRPC server running the model (ms; reference)"][
        "value"]["median"] == pytest.approx(with_model - by_id[f"{limit}/b1"]["runs"][0]["p50_ms"])
    assert targets["stedq vs MLServer, 4 single-image clients"]["value"] is None  # not run: not claimed
    assert targets["stedq vs MLServer, 4 single-image clients"]["met"] is None


@pytest.mark.slow
def test_quick_run_writes_plots_and_summary(quick_run):
    for name in ("throughput_vs_batch.png", "latency_vs_concurrency.png", "stedq_vs_peers.png"):
        data = (quick_run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    summary = (quick_run / "summary.md").read_text()
    assert "| scenario | images/s | p50 ms" in summary and "stedq/v1/concurrency/c4/batching" in summary
    assert "## Targets" in summary and "not measured" in summary
    assert "## Where a stedq call's time goes" in summary and "| stedq/v1/unary/b1 |" in summary
    assert (quick_run / "logs" / "stedq.log").is_file()


@pytest.mark.slow
def test_quick_run_profiles_the_server_with_py_spy(quick_run):
    profile = json.loads((quick_run / "bench.json").read_text())["profile"]
    if "error" in profile and "ermission" in profile["error"]:
        pytest.skip(f"py-spy may not attach here: {profile['error']}")
    assert "error" not in profile, profile
    assert profile["samples"] > 10 and sum(profile["buckets"].values()) == pytest.approx(1.0)
    assert Path(profile["stacks"]).read_text().count("\n") > 1
    assert "Where the server's time goes" in (quick_run / "summary.md").read_text()


def test_paper_baseline_scores_like_onnxruntime_and_rejects_bad_json(tmp_path):
    server = paper_server(tmp_path, model=None, threads=1, device="cpu")
    try:
        server.wait_ready(120)
        image = bench_images(1, seed=3)[0]
        request = urllib.request.Request(f"http://{server.target}/predict",
                                         json.dumps({"image": image.tolist()}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            score = json.loads(response.read())["score"]
        engine = Engine(None, device="cpu", intra_op_threads=1)
        expected = engine.run((image / np.float32(65535)).astype(np.float32)[None, None])[0]
        assert score == pytest.approx(float(expected), abs=1e-5)
        bad = urllib.request.Request(f"http://{server.target}/predict",
                                     json.dumps({"image": [[1, 2], [3, 4]]}).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(bad, timeout=30)
        assert error.value.code == 400 and "expected (224, 224)" in error.value.read().decode()
    finally:
        server.stop()


def test_load_generator_reports_a_bad_job_and_keeps_going():
    jobs = [{"protocol": "carrier-pigeon"}, {"protocol": "v1", "target": "127.0.0.1:1", "batch": 1,
                                             "concurrency": 1, "duration_s": 0.1, "warmup_s": 0,
                                             "timeout_s": 0.5, "ready_timeout_s": 1.0}]
    done = subprocess.run([sys.executable, "-m", "stedq.bench.loadgen"], input="\n".join(map(json.dumps, jobs)),
                          capture_output=True, text=True, timeout=120)
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert not first["ok"] and "carrier-pigeon" in first["error"] and "v1-stream" in first["error"]
    assert not second["ok"] and "127.0.0.1:1" in second["error"]


def test_stats_and_paired_ratios():
    stats = latency_stats([0.001 * i for i in range(1, 101)])
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["p99_ms"] == pytest.approx(99.01) and stats["n"] == 100
    assert spread([1.0, 3.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rel_spread": 1.0, "n": 3}
    runs = lambda *rates: [{"round": i + 1, "images_per_s": r, "p50_ms": 10.0 / r} for i, r in enumerate(rates)]  # noqa: E731
    results = {"scenarios": [
        {"id": "in-process/fp32/b1", "system": "in-process", "variant": "fp32", "protocol": "onnxruntime",
         "batch": 1, "concurrency": 1, "runs": runs(100.0, 50.0)},
        {"id": "in-process/fp32/b32", "system": "in-process", "variant": "fp32", "protocol": "onnxruntime",
         "batch": 32, "concurrency": 1, "runs": runs(200.0, 100.0)},
        {"id": "in-process/int8/b32", "system": "in-process", "variant": "int8", "protocol": "onnxruntime",
         "batch": 32, "concurrency": 1, "runs": runs(360.0, 190.0)},
        {"id": "stedq/v1/unary/b32", "system": "stedq", "protocol": "v1", "batch": 32, "concurrency": 1,
         "runs": runs(190.0, 97.0)},
        {"id": "stedq/v1/unary/b1", "system": "stedq", "protocol": "v1", "batch": 1, "concurrency": 1,
         "runs": runs(80.0, 40.0)},
        {"id": "stedq/v1/concurrency/c32/batching", "system": "stedq", "protocol": "v1", "batch": 1,
         "concurrency": 32, "runs": runs(160.0)}]}
    for entry in results["scenarios"]:
        entry["summary"] = summarize(entry["runs"])
    # each round's stedq figure over the same round's limit: the load that halved both cancels out
    ratio = report.ratios(results, 32)["stedq/v1/unary/b32 / in-process/fp32/b32"]
    assert ratio["median"] == pytest.approx((0.95 + 0.97) / 2) and ratio["n"] == 2
    assert report.ratios(results, 32)["stedq/v1/concurrency/c32/batching / in-process/fp32/b32"]["n"] == 1
    targets = {t["target"]: t for t in report.targets(results)}
    assert targets["gRPC batch-32 throughput vs in-process"]["met"] is True
    assert targets["single-image p50 overhead (ms)"]["value"]["median"] == pytest.approx((0.025 + 0.05) / 2)
    assert targets["32 single-image clients, batching, vs in-process batch 32"]["value"]["median"] == 0.8
    assert targets["32 single-image clients, batching, vs in-process batch 32"]["met"] is False
    assert targets["stedq vs MLServer, 32 single-image clients"]["met"] is None
    int8 = targets["INT8 vs FP32 in-process, batch 32"]   # paired by round: 1.8 and 1.9
    assert int8["value"]["median"] == pytest.approx(1.85) and int8["met"] is True

    # a server that served INT8 (--variant auto on a bundle whose INT8 is fast) is held to the INT8 limit
    results["environment"] = {"settings": {"variant": "int8"}}
    results["scenarios"].append({"id": "mlserver/v2/unary/b32", "system": "mlserver", "protocol": "v2", "batch": 32,
                                 "concurrency": 1, "runs": runs(100.0, 50.0)})
    results["scenarios"][-1]["summary"] = summarize(results["scenarios"][-1]["runs"])
    ratios = report.ratios(results, 32)
    assert ratios["stedq/v1/unary/b32 / in-process/int8/b32"]["median"] == pytest.approx((190 / 360 + 97 / 190) / 2)
    assert "mlserver/v2/unary/b32 / in-process/int8/b32" in ratios   # peers serve the same INT8 file
    targets = {t["target"]: t for t in report.targets(results)}
    assert targets["gRPC batch-32 throughput vs in-process"]["met"] is False
    assert "over in-process/int8/b32" in targets["gRPC batch-32 throughput vs in-process"]["how"]
    assert targets["INT8 vs FP32 in-process, batch 32"]["value"]["median"] == pytest.approx(1.85)


def test_profile_summary_of_collapsed_stacks():
    text = ("main (app.py:1);run (stedq/engine.py:180);run (onnxruntime/capi/session.py:220) 60\n"
            "main (app.py:1);_run_once (asyncio/base_events.py:1900);select (selectors.py:468) 30\n"
            "main (app.py:1);decode_image (stedq/pixels.py:100) 10\n")
    summary = summarize_stacks(text)
    assert summary["samples"] == 100
    assert summary["buckets"] == {"inference (onnxruntime)": 0.6, "gRPC / asyncio": 0.3, "image decoding": 0.1}
    assert summary["top_self"][0] == ("run (onnxruntime/capi/session.py:220)", 0.6)


def test_help_explains_the_run():
    done = subprocess.run([sys.executable, "-m", "stedq", "bench", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    for words in ("--quick", "--peers", "--mlserver-env", "MLServer", "in-process", "--max-batch-size",
                  "STEDQ_INTRA_OP_THREADS"):
        assert words in done.stdout, words


def test_mlserver_peer_scores_like_onnxruntime(tmp_path):
    """The MLServer peer serves the same model: its scores equal onnxruntime's (else the comparison
    would be of different work). Needs MLServer's own virtualenv (docs/benchmarks.md)."""
    from stedq.bench.servers import mlserver_command, mlserver_server

    env = REPO_ROOT / ".venv-mlserver"
    if mlserver_command(env) is None:
        pytest.skip(f"no MLServer virtualenv at {env} (see docs/benchmarks.md to create it)")
    engine = Engine(None, device="cpu", intra_op_threads=1)
    server = mlserver_server(tmp_path / "logs", tmp_path, mlserver_env=env, onnx_file=engine.info.path,
                             threads=1, device="cpu", max_batch_size=4, max_queue_delay_ms=2)
    try:
        server.wait_ready(180)
        batch = (bench_images(2, seed=5) / np.float32(65535)).astype(np.float32)[:, None]
        body = {"inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32",
                            "data": batch.ravel().tolist()}]}
        request = urllib.request.Request(f"http://{server.extra_targets['http']}/v2/models/quality/infer",
                                         json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            (output,) = json.loads(response.read())["outputs"]
        assert output["name"] == "score" and output["shape"] == [2, 1]
        np.testing.assert_allclose(output["data"], engine.run(batch), atol=1e-5)
    finally:
        server.stop()


def test_gpu_bench_script_refuses_without_cuda(tmp_path):
    """scripts/gpu-bench (run where a GPU is lent) says why it cannot run on a machine without CUDA."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: run scripts/gpu-bench itself")
    run = subprocess.run([str(REPO_ROOT / "scripts" / "gpu-bench"), str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 3 and "no CUDAExecutionProvider" in run.stderr
    assert not (tmp_path / "out" / "fp32").exists()

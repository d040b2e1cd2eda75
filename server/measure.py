"""Quick server latency/throughput check: gRPC (a real `stedq serve` subprocess) vs in-process onnxruntime.

    .venv/bin/python -m stedq.server.measure [--model BUNDLE] [--out out/server_measure.json]  (+ .png)

Measures, on this machine and with the same onnxruntime thread count on both sides:
  single-image p50/p90 latency (sequential requests), batch-32 throughput (sequential 32-image
  requests), and the throughput of 32 concurrent single-image clients (what dynamic batching is for).
The full benchmark harness (peers, plots, sweeps) is `stedq bench`; this is the server's own sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tqdm import tqdm

from stedq.engine import Engine
from stedq.pixels import to_model_input
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(engine: Engine, address: str, repeats: int, batches: int, rounds: int) -> dict:
    """In-process and gRPC runs alternate in `rounds` short rounds, so that both see the same load
    from whatever else runs on the machine."""
    pixels = (np.random.default_rng(0).random((224, 224)) * 65535).astype("<u2")
    one = to_model_input(pixels)[None, None]
    many = np.repeat(one, 32, axis=0)
    image = pb.Image(data=pixels.tobytes(), dtype=pb.DTYPE_UINT16, height=224, width=224)
    single_request, batch_request = pb.ScoreRequest(images=[image]), pb.ScoreRequest(images=[image] * 32)
    times: dict[str, list[float]] = {key: [] for key in ("local1", "remote1", "local32", "remote32", "concurrent")}
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel, \
            ThreadPoolExecutor(32) as pool:
        stub = pb_grpc.QualityServiceStub(channel)
        engine.run(many)
        list(pool.map(lambda _: stub.Score(single_request, timeout=60), range(32)))  # warm both sides
        per_round, batches_per_round = max(1, repeats // rounds), max(1, batches // rounds)
        for _ in tqdm(range(rounds), desc="measuring (in-process and gRPC alternate)"):
            times["local1"] += _timed(lambda: engine.run(one), per_round)
            times["remote1"] += _timed(lambda: stub.Score(single_request, timeout=60), per_round)
            times["local32"] += _timed(lambda: engine.run(many), batches_per_round)
            times["remote32"] += _timed(lambda: stub.Score(batch_request, timeout=120), batches_per_round)
            times["concurrent"] += _timed(lambda: list(pool.map(
                lambda _: stub.Score(single_request, timeout=60), range(32))), batches_per_round)

    def rate(key: str) -> float:
        return 32 * len(times[key]) / sum(times[key])

    return {"in_process": {"single_image": _stats(times["local1"]), "batch32_images_per_s": rate("local32")},
            "grpc": {"single_image": _stats(times["remote1"]), "batch32_images_per_s": rate("remote32"),
                     "concurrent32_images_per_s": rate("concurrent")}}


def plot(results: dict, path: Path) -> None:
    """Two bar charts: single-image p50 latency and throughput, in-process vs gRPC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    local, remote = results["in_process"], results["grpc"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(["in-process", "gRPC"], [local["single_image"]["p50_ms"], remote["single_image"]["p50_ms"]],
             color=["#777777", "#1f77b4"])
    left.set_ylabel("ms")
    left.set_title("single image, p50 latency")
    right.bar(["in-process\nbatch 32", "gRPC\nbatch 32", "gRPC 32 clients\n1 image each"],
              [local["batch32_images_per_s"], remote["batch32_images_per_s"], remote["concurrent32_images_per_s"]],
              color=["#777777", "#1f77b4", "#ff7f0e"])
    right.set_ylabel("images / s")
    right.set_title("throughput")
    machine = results["machine"]
    fig.suptitle(f"stedq server vs in-process onnxruntime ({machine['cpus']} CPUs, {machine['threads']} threads, "
                 f"load {machine['load_before']:.1f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _wait_serving(address: str, process: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            if process.poll() is not None:
                raise SystemExit(f"stedq serve exited with {process.returncode}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"stedq serve on {address} was not SERVING after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stedq.server.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle folder or .onnx (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="onnxruntime intra-op threads on both sides (default: all cores)")
    parser.add_argument("--repeats", type=int, default=100, help="single-image requests (default 100)")
    parser.add_argument("--batches", type=int, default=10, help="32-image requests (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--out", type=Path, default=Path("out/server_measure.json"), help="JSON results")
    args = parser.parse_args(argv)

    # other work on the machine skews everything: record how busy it was
    results = {"machine": {"cpus": os.cpu_count(), "threads": args.threads, "load_before": os.getloadavg()[0]}}
    engine = Engine(args.model, device="cpu", intra_op_threads=args.threads)
    port = _free_port()
    command = [sys.executable, "-m", "stedq", "serve", "--port", str(port), "--metrics-port", "0",
               "--device", "cpu", "--intra-op-threads", str(args.threads), "--log-level", "WARNING"]
    if args.model is not None:
        command += ["--model", str(args.model)]
    server = subprocess.Popen(command)
    try:
        _wait_serving(f"127.0.0.1:{port}", server)
        results.update(measure(engine, f"127.0.0.1:{port}", args.repeats, args.batches, args.rounds))
    finally:
        server.terminate()
        server.wait(60)
    results["machine"]["load_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    try:
        plot(results, args.out.with_suffix(".png"))
    except ModuleNotFoundError:  # matplotlib is in the client/dev extras, not in serve
        print("matplotlib is not installed: no plot")
    local, remote = results["in_process"], results["grpc"]
    print(f"single image p50: in-process {local['single_image']['p50_ms']:.2f} ms, "
          f"gRPC {remote['single_image']['p50_ms']:.2f} ms")
    print(f"batch 32: in-process {local['batch32_images_per_s']:.0f} images/s, "
          f"gRPC {remote['batch32_images_per_s']:.0f} images/s; "
          f"32 concurrent 1-image clients over gRPC: {remote['concurrent32_images_per_s']:.0f} images/s")
    print(f"results: {args.out} and {args.out.with_suffix('.png')} (1-minute load average {results['machine']['load_before']:.1f} before, "
          f"{results['machine']['load_after']:.1f} after, on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quick server latency/throughput check: gRPC (a real `stedq serve` subprocess) vs in-process onnxruntime.

    .venv/bin/python -m stedq.server.measure [--model BUNDLE] [--out out/server_measure.json]

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

from stedq.server.engine import Engine
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


def _timed(fn, repeats: int, label: str) -> list[float]:
    fn()  # one untimed call
    times = []
    for _ in tqdm(range(repeats), desc=label, leave=False):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure_in_process(model: Path | None, threads: int, repeats: int, batches: int) -> dict:
    engine = Engine(model, device="cpu", intra_op_threads=threads)
    one = np.random.default_rng(0).random((1, 1, 224, 224), dtype=np.float32)
    many = np.random.default_rng(1).random((32, 1, 224, 224), dtype=np.float32)
    single = _timed(lambda: engine.run(one), repeats, "in-process batch 1")
    batch = _timed(lambda: engine.run(many), batches, "in-process batch 32")
    return {"single_image": _stats(single), "batch32_images_per_s": 32 * len(batch) / sum(batch)}


def measure_grpc(address: str, repeats: int, batches: int) -> dict:
    image = pb.Image(data=(np.random.default_rng(0).random((224, 224)) * 65535).astype("<u2").tobytes(),
                     dtype=pb.DTYPE_UINT16, height=224, width=224)
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.QualityServiceStub(channel)
        one, many = pb.ScoreRequest(images=[image]), pb.ScoreRequest(images=[image] * 32)
        single = _timed(lambda: stub.Score(one, timeout=60), repeats, "gRPC batch 1")
        batch = _timed(lambda: stub.Score(many, timeout=120), batches, "gRPC batch 32")
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda _: stub.Score(one, timeout=60), range(32)))  # warm the connections
            start = time.perf_counter()
            list(pool.map(lambda _: stub.Score(one, timeout=60), range(32 * batches)))
            concurrent = time.perf_counter() - start
    return {"single_image": _stats(single), "batch32_images_per_s": 32 * len(batch) / sum(batch),
            "concurrent32_images_per_s": 32 * batches / concurrent}


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
    parser.add_argument("--out", type=Path, default=Path("out/server_measure.json"), help="JSON results")
    args = parser.parse_args(argv)

    # other work on the machine skews everything: record how busy it was
    results = {"machine": {"cpus": os.cpu_count(), "threads": args.threads, "load_before": os.getloadavg()[0]}}
    results["in_process"] = measure_in_process(args.model, args.threads, args.repeats, args.batches)
    port = _free_port()
    command = [sys.executable, "-m", "stedq", "serve", "--port", str(port), "--metrics-port", "0",
               "--device", "cpu", "--intra-op-threads", str(args.threads), "--log-level", "WARNING"]
    if args.model is not None:
        command += ["--model", str(args.model)]
    server = subprocess.Popen(command)
    try:
        _wait_serving(f"127.0.0.1:{port}", server)
        results["grpc"] = measure_grpc(f"127.0.0.1:{port}", args.repeats, args.batches)
    finally:
        server.terminate()
        server.wait(60)
    results["machine"]["load_after"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    local, remote = results["in_process"], results["grpc"]
    print(f"single image p50: in-process {local['single_image']['p50_ms']:.2f} ms, "
          f"gRPC {remote['single_image']['p50_ms']:.2f} ms")
    print(f"batch 32: in-process {local['batch32_images_per_s']:.0f} images/s, "
          f"gRPC {remote['batch32_images_per_s']:.0f} images/s; "
          f"32 concurrent 1-image clients over gRPC: {remote['concurrent32_images_per_s']:.0f} images/s")
    print(f"results: {args.out} (1-minute load average {results['machine']['load_before']:.1f} before, "
          f"{results['machine']['load_after']:.1f} after, on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

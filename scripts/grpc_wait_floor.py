#!/usr/bin/env python3
"""Where a single image's overhead comes from: waiting, not computing (issue #33).

    python scripts/grpc_wait_floor.py [--rounds 30] [--wait-ms 8] [--out runs/grpc-wait-floor.json]

Starts, each in its own process, bare QualityService servers (stedq.bench.grpc_floor) that answer at
once, after an idle wait of about one inference (--wait-ms, no CPU used), or after running the bundled
model, each as grpc.aio and as a thread-pool grpc.server, and the stedq server (FP32, batching). One
client calls them in turn, 15 single-image calls per server and round (the first 2 dropped), the order
reversed every round, and reports per server the p50 latency, the p50 of the server's own time (trailing
metadata 'server-ms' for the bare ones, stedq's timing for stedq) and of the difference, the time
outside the handler. Run it on an idle machine (load average below 1); it compares side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from stedq.bench.grpc_floor import SERVER_TIME_KEY
from stedq.bench.servers import ServerProcess, free_port, grpc_serving
from stedq.clients import QualityClient
from stedq.engine import resolve_model_path
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc


def bare_servers(wait_ms: float, model: Path) -> dict[str, list[str]]:
    servers = {}
    for sync in (False, True):
        for name, extra in (("none", []), ("wait", ["--wait-ms", str(wait_ms)]),
                            ("model", ["--model", str(model), "--variant", "fp32"])):
            servers[("sync-" if sync else "aio-") + name] = extra + (["--sync"] if sync else [])
    return servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--wait-ms", type=float, default=8.0, help="the idle wait, about one inference")
    parser.add_argument("--out", type=Path, default=Path("runs/grpc-wait-floor.json"))
    args = parser.parse_args()
    model = resolve_model_path(None)
    logs = args.out.with_suffix("")   # the servers' logs beside the figures
    servers: dict[str, ServerProcess] = {}
    try:
        for name, extra in bare_servers(args.wait_ms, model).items():
            port = free_port()
            servers[name] = ServerProcess(name, [sys.executable, "-m", "stedq.bench.grpc_floor", "--port", str(port),
                                                 *extra], f"127.0.0.1:{port}", logs / f"{name}.log")
        port = free_port()
        servers["stedq"] = ServerProcess("stedq", [sys.executable, "-m", "stedq", "serve", "--host", "127.0.0.1",
                                                   "--port", str(port), "--metrics-port", "0", "--variant", "fp32",
                                                   "--log-level", "WARNING", "--no-watch-model"],
                                         f"127.0.0.1:{port}", logs / "stedq.log")
        for server in servers.values():
            server.ready = lambda server=server: grpc_serving(server.target)
            server.start()
        for server in servers.values():
            server.wait_ready(120)
        stedq_client = QualityClient(servers["stedq"].target)
        image = np.random.default_rng(0).gamma(2.0, 300.0, (224, 224)).clip(0, 65535).astype(np.uint16)
        request = pb.ScoreRequest(images=[pb.Image(data=image.tobytes(), dtype=pb.DTYPE_UINT16, height=224,
                                                   width=224)])
        stubs = {name: pb_grpc.QualityServiceStub(grpc.insecure_channel(server.target))
                 for name, server in servers.items() if name != "stedq"}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        load_before = os.getloadavg()[0]
        for round_ in range(args.rounds):
            for name in (list(servers) if round_ % 2 == 0 else list(servers)[::-1]):
                for call in range(15):
                    began = time.perf_counter()
                    if name == "stedq":
                        server_ms = stedq_client.score_images([image])[0].timing["total"]
                    else:
                        _, rpc = stubs[name].Score.with_call(request, timeout=30)
                        server_ms = float(dict(rpc.trailing_metadata()).get(SERVER_TIME_KEY, 0.0))
                    if call >= 2:
                        samples[name].append(((time.perf_counter() - began) * 1000, server_ms))
        results = {"rounds": args.rounds, "wait_ms": args.wait_ms, "model": str(model),
                   "load_average_before": load_before, "servers": {}}
        for name, values in samples.items():
            total, server = np.array(values).T
            outside = total - server
            results["servers"][name] = {"latency_p50_ms": float(np.median(total)),
                                        "server_p50_ms": float(np.median(server)),
                                        "outside_p50_ms": float(np.median(outside)),
                                        "outside_p25_ms": float(np.percentile(outside, 25)),
                                        "outside_p75_ms": float(np.percentile(outside, 75))}
            print(f"{name:12s} latency p50 {np.median(total):7.3f} ms   server {np.median(server):7.3f}   "
                  f"outside p50 {np.median(outside):6.3f} ({np.percentile(outside, 25):.3f}–"
                  f"{np.percentile(outside, 75):.3f})")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"load average before {load_before:.2f}; wrote {args.out}")
    finally:
        for server in servers.values():
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

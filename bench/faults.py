"""The fault suite: the server under hostile conditions, each scenario against a fresh `stedq serve`
process on 127.0.0.1, every call checked to end exactly once with an expected status.

    .venv/bin/python -m stedq.bench.faults --out runs/faults [--seconds 60] [--only overload,sigterm,...]

Scenarios (docs/reliability.md has the figures and what each shows):
- overload: open-loop requests at 2x the measured capacity for --seconds: accepted p50/p99, shed share.
- sigterm: SIGTERM with 32 clients (plain stubs, no retries) sending: every call ends OK, or UNAVAILABLE
  once draining, or CANCELLED by grpc's stop() before it began (what stedq's clients retry); exit 0.
- reload: SIGHUP (model reload) under load: no failed request.
- cancel: clients that cancel mid-batch: the server's in-flight gauges return to 0, it still scores.
- deadlines: requests whose deadline passes in the queue: DEADLINE_EXCEEDED, never computed.
- streams: 64 ScoreStreams from one client at once, one slow reader among them: every answer arrives.
- memory: RSS after 2,000 mixed requests, 4096x4096 images among them (sent in bands as `stedq score`).
Timing figures need a quiet machine (load average below 1); the exactly-once checks hold anywhere.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from stedq.bench.servers import ServerProcess, free_port, grpc_serving
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc

SCENARIOS = ("overload", "sigterm", "reload", "cancel", "deadlines", "streams", "memory")


def _image(seed: int, size: int = 224) -> pb.Image:
    pixels = np.random.default_rng(seed).poisson(15, (size, size)).astype(np.uint16)
    return pb.Image(data=pixels.tobytes(), dtype=pb.DTYPE_UINT16, height=size, width=size)


def _server(logs: Path, name: str, *extra: str) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "stedq", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0", "--log-level", "WARNING", *extra]
    server = ServerProcess(name, command, f"127.0.0.1:{port}", logs / f"{name}.log")
    server.ready = lambda: grpc_serving(server.target)
    server.start()
    server.wait_ready(120)
    return server


def _call(stub, request, timeout: float) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        stub.Score(request, timeout=timeout)
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    return code, time.perf_counter() - started


def _capacity(stub, request: pb.ScoreRequest, seconds: float = 5.0, clients: int = 8) -> float:
    """Requests per second that `clients` closed-loop clients get through."""
    end, done = time.monotonic() + seconds, Counter()

    def loop():
        while time.monotonic() < end:
            done[_call(stub, request, 30)[0]] += 1
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(loop)
    return done["OK"] / seconds


def overload(stub, server, seconds: float) -> dict:
    request = pb.ScoreRequest(images=[_image(i) for i in range(16)])
    capacity = _capacity(stub, request)
    rate, results = 2 * capacity, []
    with ThreadPoolExecutor(256) as pool:
        start = time.perf_counter()
        futures = []
        for k in range(int(rate * seconds)):
            time.sleep(max(0.0, start + k / rate - time.perf_counter()))
            futures.append(pool.submit(_call, stub, request, 30))
        results = [f.result() for f in futures]
    codes = Counter(code for code, _ in results)
    accepted = sorted(t for code, t in results if code == "OK")
    return {"capacity_rps": round(capacity, 1), "offered_rps": round(rate, 1), "requests": len(results),
            "answered_once": len(results) == sum(codes.values()), "codes": dict(codes),
            "shed_share": round(codes["RESOURCE_EXHAUSTED"] / len(results), 3),
            "accepted_p50_ms": round(1000 * statistics.median(accepted), 1) if accepted else None,
            "accepted_p99_ms": round(1000 * accepted[int(0.99 * (len(accepted) - 1))], 1) if accepted else None}


def _under_load(stub, action, clients: int = 32, seconds: float = 6.0) -> Counter:
    request, codes, stop = pb.ScoreRequest(images=[_image(i) for i in range(4)]), Counter(), threading.Event()

    def loop():
        while not stop.is_set():
            codes[_call(stub, request, 30)[0]] += 1
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(loop)
        time.sleep(seconds / 2)
        action()
        time.sleep(seconds / 2)
        stop.set()
    return codes


def sigterm(stub, server, seconds: float) -> dict:
    codes = _under_load(stub, lambda: server.process.send_signal(signal.SIGTERM))
    exit_code = server.process.wait(60)
    return {"codes": dict(codes), "exit_code": exit_code,
            "only_ok_unavailable_or_cancelled": set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}}


def reload(stub, server, seconds: float) -> dict:
    codes = _under_load(stub, lambda: server.process.send_signal(signal.SIGHUP))
    return {"codes": dict(codes), "all_ok": set(codes) == {"OK"}}


def cancel(stub, server, seconds: float) -> dict:
    request = pb.ScoreRequest(images=[_image(i) for i in range(32)])
    calls = [stub.Score.future(request, timeout=30) for _ in range(64)]
    time.sleep(0.05)
    cancelled = sum(call.cancel() for call in calls)
    time.sleep(2.0)
    after = _call(stub, pb.ScoreRequest(images=[_image(0)]), 30)[0]
    return {"cancelled": cancelled, "scores_after": after}


def deadlines(stub, server, seconds: float) -> dict:
    blocker = [stub.Score.future(pb.ScoreRequest(images=[_image(i) for i in range(64)]), timeout=60)
               for _ in range(4)]
    late = Counter(_call(stub, pb.ScoreRequest(images=[_image(1)]), 0.005)[0] for _ in range(50))
    for call in blocker:
        call.result()
    return {"late_codes": dict(late), "blocking_requests_ok": True}


def streams(stub, server, seconds: float) -> dict:
    def one(index: int) -> int:
        requests = (pb.ScoreStreamRequest(request_id=f"{index}-{k}", images=[_image(k)]) for k in range(20))
        got = 0
        for _ in stub.ScoreStream(requests, timeout=120):
            got += 1
            if index == 0:
                time.sleep(0.05)   # the slow reader
        return got
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(one, range(64)))
    return {"streams": 64, "answers_each": sorted(set(answers)), "all_answered": set(answers) == {20}}


def memory(stub, server, seconds: float) -> dict:
    from stedq.clients import QualityClient
    from stedq.clients.large import Limits, score_in_bands

    rss = {"idle_mb": round(server.usage().rss_mb)}
    big = np.random.default_rng(0).poisson(10, (4096, 4096)).astype(np.uint16)
    with QualityClient(server.target) as client:
        limits = Limits.of(client, client.model_info())
        for k in range(2000):
            if k % 250 == 0:
                score_in_bands(client, big, limits)   # as `stedq score` sends an image this large
            else:
                client.score([np.frombuffer(_image(k).data, np.uint16).reshape(224, 224)] * (1 + k % 16))
    rss["after_mb"] = round(server.usage().rss_mb)
    time.sleep(20)
    rss["after_20s_idle_mb"] = round(server.usage().rss_mb)
    return rss


def run(out: Path, seconds: float = 60.0, only: tuple[str, ...] = SCENARIOS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name in only:
        server = _server(out / "logs", name)
        try:
            with grpc.insecure_channel(server.target) as channel:
                figures[name] = globals()[name](pb_grpc.QualityServiceStub(channel), server, seconds)
        finally:
            server.stop()
        print(name, json.dumps(figures[name]), flush=True)
    (out / "faults.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stedq.bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/faults"), help="folder for faults.json and logs")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the overload run")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    args = parser.parse_args()
    chosen = tuple(name for name in args.only.split(",") if name)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    run(args.out, args.seconds, chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())

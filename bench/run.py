"""Runs a bench: starts the servers and the load generator, runs every scenario each round, collects.

The in-process limit runs here, in this process, with the same engine class and thread count as the
server; everything over the network is driven by `stedq.bench.loadgen` in a process of its own, while
this process only waits (so it takes no CPU from the server being measured).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from stedq.bench.closed_loop import run_sync
from stedq.bench.loadgen import bench_images
from stedq.bench.plan import BenchOptions, Scenario, build_plan
from stedq.bench.servers import (
    ServerFailed,
    ServerProcess,
    floor_server,
    mlserver_server,
    paper_server,
    stedq_server,
)
from stedq.bench.stats import summarize
from stedq.engine import Engine, resolve_model_path
from stedq.pixels import to_model_input
from stedq.settings import Settings

log = logging.getLogger(__name__)


class LoadGenerator:
    """The `stedq.bench.loadgen` process: one JSON job in, one JSON result out."""

    def __init__(self, log_path: Path):
        self._stderr = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen([sys.executable, "-m", "stedq.bench.loadgen"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)

    def run(self, job: dict) -> dict:
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited (status {self.process.poll()}); see its log")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._stderr.close()


def make_int8(settings: Settings, work: Path) -> tuple[Engine | None, str]:
    """The INT8 engine for the limit: the bundle's own variant, else one quantized here for timing only."""
    kwargs = dict(device=settings.device, intra_op_threads=settings.intra_op_threads,
                  inter_op_threads=settings.inter_op_threads)
    try:
        return Engine(settings.model, variant="int8", **kwargs), "the bundle's int8 variant"
    except Exception as exc:  # noqa: BLE001 - no int8 variant in the bundle: try to make one
        reason = str(exc)
    try:
        import onnx

        from stedq.export.variants import quantize_int8
    except ImportError as exc:
        return None, f"skipped: the bundle has no int8 variant ({reason}) and {exc.name} is not installed to make one"
    fp32 = Engine(settings.model, variant="fp32", device="cpu")
    calibration = to_model_input(bench_images(32, seed=1))
    path = work / "model.int8.onnx"
    onnx.save(quantize_int8(onnx.load(str(fp32.info.path)), calibration), str(path))
    return (Engine(path, variant="int8", **kwargs),
            "made by the bench (stedq.export.variants.quantize_int8, default placement, random calibration "
            "images): for timing only, its accuracy is not checked")


class Bench:
    def __init__(self, options: BenchOptions, settings: Settings):
        self.options, self.settings = options, settings
        self.logs = options.out / "logs"
        self.servers: dict[str, ServerProcess] = {}
        self.skipped: dict[str, str] = {}     # system -> why it was not measured
        self.engines: dict[str, Engine] = {}
        self.notes: dict[str, str] = {}

    # --- set-up
    def start_servers(self, systems: set[str]) -> None:
        s, o = self.settings, self.options
        threads, device = s.intra_op_threads, s.device
        factories = {
            "stedq": lambda: stedq_server(self.logs, model=s.model, batching=True, threads=threads, device=device,
                                          max_batch_size=s.max_batch_size, max_queue_delay_ms=s.max_queue_delay_ms,
                                          variant=s.variant),
            "stedq-no-batching": lambda: stedq_server(
                self.logs, model=s.model, batching=False, threads=threads, device=device,
                max_batch_size=s.max_batch_size, max_queue_delay_ms=s.max_queue_delay_ms, variant=s.variant),
            "grpc-floor": lambda: floor_server(self.logs),
            "grpc-floor-model": lambda: floor_server(self.logs, model=resolve_model_path(s.model),
                                                     variant=s.variant, threads=threads, device=device),
            # the peers serve the same ONNX file as stedq (its served variant), so they are compared like for like
            "paper-http": lambda: paper_server(self.logs, model=self._served_onnx(), threads=threads, device=device),
            "mlserver": lambda: mlserver_server(
                self.logs, o.out / "work", mlserver_env=o.mlserver_env, onnx_file=self._served_onnx(),
                threads=threads, device=device, max_batch_size=s.max_batch_size,
                max_queue_delay_ms=s.max_queue_delay_ms),
        }
        for system in sorted(systems & set(factories)):   # all start at once, then each is waited for
            try:
                self.servers[system] = factories[system]()
            except ServerFailed as exc:
                self.skipped[system] = str(exc)
        for system, server in list(self.servers.items()):
            try:
                server.wait_ready(180)
            except ServerFailed as exc:
                server.stop()
                del self.servers[system]
                self.skipped[system] = str(exc)
        for system, why in self.skipped.items():
            log.warning("%s is not measured: %s", system, why)

    def _served_onnx(self) -> Path:
        """The ONNX file stedq serves in this run: the served variant's (the bundle's own INT8 when it serves
        INT8), else FP32."""
        served = self.engines.get(self.settings.variant) or self.engines["fp32"]
        return Path(served.info.path)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    # --- one measurement
    def measure(self, scenario: Scenario, loadgen: LoadGenerator) -> dict:
        o = self.options
        if scenario.system == "in-process":
            engine = self.engines[scenario.variant]
            batch = to_model_input(bench_images(scenario.batch))[:, None]
            wall, cpu = time.perf_counter(), time.process_time()
            result = run_sync(lambda: engine.run(batch), scenario.batch, duration_s=o.duration_s,
                              warmup_s=o.warmup_s, min_calls=o.min_calls)
            result["server_cpu_cores"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
            result.pop("client_cpu_cores", None)
            return result
        server = self.servers[scenario.system]
        job = {"protocol": scenario.protocol, "target": server.target, "batch": scenario.batch,
               "concurrency": scenario.concurrency, "duration_s": o.duration_s, "warmup_s": o.warmup_s,
               "min_calls": o.min_calls, "model_name": "quality"}
        before = server.usage()
        result = loadgen.run(job)
        after = server.usage()
        result["server_cpu_cores"] = (after.cpu_s - before.cpu_s) / (after.wall - before.wall)
        result["server_rss_mb"] = after.rss_mb
        return result

    # --- the whole run
    def run(self) -> dict:
        o, s = self.options, self.settings
        (o.out / "work").mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.engines["fp32"] = Engine(s.model, variant="fp32", device=s.device,
                                      intra_op_threads=s.intra_op_threads, inter_op_threads=s.inter_op_threads)
        if o.int8 or s.variant == "int8":   # the served variant's limit is always measured (even --quick)
            engine, self.notes["int8"] = make_int8(s, o.out / "work")
            if engine is not None:
                self.engines["int8"] = engine
        else:
            self.notes["int8"] = "skipped (--quick or --no-int8)"
        plan = build_plan(o, "int8" in self.engines)
        self.start_servers({scenario.system for scenario in plan})
        runnable = [sc for sc in plan if sc.system == "in-process" or sc.system in self.servers]
        runs: dict[str, list[dict]] = {sc.id: [] for sc in plan}
        errors: dict[str, list[str]] = {}
        loadgen = LoadGenerator(self.logs / "loadgen.log")
        load_before = _load()
        started = time.time()
        try:
            for engine in self.engines.values():
                engine.warm_up((1, max(o.limit_batches)))
            fit_check = measure_fit_check(self.engines["fp32"])
            with tqdm(total=o.rounds * len(runnable), desc="stedq bench", unit="point") as bar:
                for round_index in range(o.rounds):
                    for scenario in runnable:
                        bar.set_postfix_str(f"round {round_index + 1}/{o.rounds} {scenario.id}")
                        try:
                            result = self.measure(scenario, loadgen)
                        except Exception as exc:  # noqa: BLE001 - one failing point must not lose the rest
                            errors.setdefault(scenario.id, []).append(f"round {round_index + 1}: {exc}")
                            log.error("%s failed: %s", scenario.id, exc)
                        else:
                            runs[scenario.id].append({"round": round_index + 1, **result})
                        bar.update()
            profile = None
            if o.profile and "stedq" in self.servers:
                from stedq.bench.profile import profile_server

                try:
                    profile = profile_server(self.servers["stedq"], loadgen, o)
                except Exception as exc:  # noqa: BLE001 - e.g. no ptrace permission: keep the measurements
                    profile = {"error": str(exc)}
                    log.error("profiling failed: %s", exc)
        finally:
            loadgen.close()
            rss = {name: server.usage().rss_mb for name, server in self.servers.items()}
            self.stop()
        scenarios = []
        for scenario in plan:
            entry = {**scenario.to_json(), "runs": runs[scenario.id], "summary": summarize(runs[scenario.id])}
            if scenario.system in self.skipped:
                entry["skipped"] = self.skipped[scenario.system]
            if scenario.id in errors:
                entry["errors"] = errors[scenario.id]
            scenarios.append(entry)
        return {"scenarios": scenarios, "skipped": self.skipped, "notes": self.notes, "profile": profile,
                "server_rss_mb_at_end": rss, "load_before": load_before, "load_after": _load(),
                "seconds": time.time() - started, "fit_check": fit_check,
                "engine": {"path": str(self.engines["fp32"].info.path), "providers": self.engines["fp32"].info.providers,
                           "model": f"{self.engines['fp32'].info.name} {self.engines['fp32'].info.version}"},
                "peers_onnx": str(self._served_onnx())}


def measure_fit_check(engine: Engine, images: int = 32, repeats: int = 5) -> dict:
    """The fit verdict's cost per image (stedq.fit, run by the server on every image) beside the
    model's in-process cost per image at batch 32, best of `repeats`."""
    from stedq.fit import check_fit

    batch = to_model_input(bench_images(images, seed=2))
    stats = engine.info.fit
    fit_s, run_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in batch:
            check_fit(image, stats)
        fit_s.append((time.perf_counter() - start) / images)
        start = time.perf_counter()
        engine.run(batch[:, None])
        run_s.append((time.perf_counter() - start) / images)
    fit_ms, run_ms = min(fit_s) * 1e3, min(run_s) * 1e3
    return {"ms_per_image": round(fit_ms, 4), "inference_ms_per_image": round(run_ms, 3),
            "share_of_inference": round(fit_ms / run_ms, 4), "with_statistics": stats is not None}


def _load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]

"""From measurements to what a reader needs: the environment, ratios to the limit, the targets, and a
markdown summary. Ratios are paired by round (each round's stedq figure over the same round's limit),
so that load which drifts during the run cancels out as far as it can."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path

from stedq.bench.stats import spread

# instruction sets onnxruntime's CPU kernels use (INT8 and BF16 speed depends on them)
SIMD_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16"}
PACKAGES = ("stedq", "onnxruntime", "grpcio", "protobuf", "numpy", "tritonclient", "psutil", "matplotlib")


def environment(settings, mlserver_version: str | None) -> dict:
    import onnxruntime as ort
    import psutil

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["mlserver"] = mlserver_version
    cpu, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = [f for f in line.split(":", 1)[1].split() if f in SIMD_FLAGS]
    except OSError:
        pass
    cpu = cpu or platform.processor()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cpu_simd": flags, "logical_cpus": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "niceness": os.nice(0), "versions": versions,
        "onnxruntime_providers_available": ort.get_available_providers(),
        "settings": {"model": str(settings.model) if settings.model else "(bundled default)",
                     "variant": settings.variant, "device": settings.device,
                     "intra_op_threads": settings.intra_op_threads, "inter_op_threads": settings.inter_op_threads,
                     "max_batch_size": settings.max_batch_size, "max_queue_delay_ms": settings.max_queue_delay_ms},
    }


def _by_id(results: dict) -> dict[str, dict]:
    return {entry["id"]: entry for entry in results["scenarios"]}


def _paired(a: dict | None, b: dict | None, how) -> dict | None:
    """spread of how(run_a, run_b) over the rounds both have; None if either is missing."""
    if not a or not b:
        return None
    b_rounds = {run["round"]: run for run in b["runs"]}
    values = [how(run, b_rounds[run["round"]]) for run in a["runs"] if run["round"] in b_rounds]
    return spread(values) if values else None


def _ratio(a: dict | None, b: dict | None) -> dict | None:
    return _paired(a, b, lambda x, y: x["images_per_s"] / y["images_per_s"])


def served_variant(results: dict) -> str:
    """The variant stedq's servers served in this run (`--variant`, with auto resolved before the run):
    their in-process limit is the same variant's. The peers serve the same ONNX file (bench/run.py)."""
    variant = results.get("environment", {}).get("settings", {}).get("variant", "fp32")
    return variant if variant in ("fp32", "int8") else "fp32"


def limit_id(entry: dict, scenarios: dict[str, dict], max_batch_size: int, served: str = "fp32") -> str | None:
    """The in-process point a scenario is compared with: the same batch for one caller, else the batch
    the server forms (max_batch_size), else the largest measured; of the variant every server served."""
    wanted = entry["batch"] if entry["concurrency"] == 1 else max_batch_size   # a stream's window counts as callers
    variant = served
    limits = sorted((e["batch"], e["id"]) for e in scenarios.values()
                    if e["system"] == "in-process" and e["variant"] == variant and e["runs"])
    for batch, ident in limits:
        if batch == wanted:
            return ident
    return limits[-1][1] if limits else None


def ratios(results: dict, max_batch_size: int, clients: int = 32) -> dict[str, dict]:
    scenarios = _by_id(results)
    out: dict[str, dict] = {}
    for entry in scenarios.values():
        if entry["system"] in ("in-process", "grpc-floor", "grpc-floor-model") or not entry["runs"]:
            continue
        ref = limit_id(entry, scenarios, max_batch_size, served_variant(results))
        value = _ratio(entry, scenarios.get(ref))
        if value is not None:
            out[f"{entry['id']} / {ref}"] = value
    b, c = max_batch_size, clients
    pairs = [(f"stedq/v1/concurrency/c{c}/batching", f"mlserver/v2/concurrency/c{c}"),
             (f"stedq/v2/concurrency/c{c}", f"mlserver/v2/concurrency/c{c}"),
             (f"stedq/v1/unary/b{b}", f"mlserver/v2/unary/b{b}"),
             (f"stedq/v2/unary/b{b}", f"mlserver/v2/unary/b{b}"),
             ("stedq/v1/unary/b1", "mlserver/v2/unary/b1"),
             ("stedq/v2/unary/b1", "mlserver/v2/unary/b1"),
             ("stedq/v1/concurrency/c1/batching", "paper-http/c1"),
             (f"stedq/v1/concurrency/c{c}/batching", f"paper-http/c{c}"),
             (f"stedq/v1/concurrency/c{c}/batching", f"stedq/v1/concurrency/c{c}/no-batching")]
    for a, b in pairs:
        value = _ratio(scenarios.get(a), scenarios.get(b))
        if value is not None:
            out[f"{a} / {b}"] = value
    return out


def targets(results: dict, batch: int = 32, clients: int = 32) -> list[dict]:
    """The targets (issue #33), each with the measured value (median over rounds, min..max) and whether met.
    `batch` is the server's max batch size (32 by default), `clients` the peer comparison's callers."""
    s = _by_id(results)
    found = []

    def add(name, goal, value, met, how):
        found.append({"target": name, "goal": goal, "value": value,
                      "met": None if value is None else met(value["median"]), "how": how})

    served = served_variant(results)
    limit, limit1 = f"in-process/{served}/b{batch}", f"in-process/{served}/b1"
    add(f"gRPC batch-{batch} throughput vs in-process", ">= 0.95",
        _ratio(s.get(f"stedq/v1/unary/b{batch}"), s.get(limit)), lambda v: v >= 0.95,
        f"stedq/v1/unary/b{batch} images/s over {limit}, paired by round")
    add("single-image p50 overhead (ms)", "<= 0.5",
        _paired(s.get("stedq/v1/unary/b1"), s.get(limit1), lambda x, y: x["p50_ms"] - y["p50_ms"]),
        lambda v: v <= 0.5, f"p50 of stedq/v1/unary/b1 (one caller, client library) minus p50 of {limit1}")
    add("single-image p50 of Python gRPC alone (ms; the floor under the overhead, reference)", "–",
        _paired(s.get("grpc-floor/v1/unary/b1"), s.get("grpc-floor/v1/unary/b1"), lambda x, _: x["p50_ms"]), lambda v: None,
        "p50 of grpc-floor/v1/unary/b1: the same client against a bare grpc.aio QualityService that answers "
        "at once (no decoding, batching, model or interceptors; stedq.bench.grpc_floor)")
    add("single-image p50 overhead of a bare Python gRPC server running the model (ms; reference)", "–",
        _paired(s.get("grpc-floor-model/v1/unary/b1"), s.get(limit1), lambda x, y: x["p50_ms"] - y["p50_ms"]),
        lambda v: None, f"p50 of grpc-floor-model/v1/unary/b1 minus p50 of {limit1}: the same bare service "
                        "reading the pixels and running the model in one worker thread (what any Python gRPC "
                        "server that scores pays on this machine)")
    add("single-image p50 overhead (ms), --no-batching server (reference)", "<= 0.5",
        _paired(s.get("stedq/v1/concurrency/c1/no-batching"), s.get(limit1),
                lambda x, y: x["p50_ms"] - y["p50_ms"]),
        lambda v: v <= 0.5, "as above, against the server started with --no-batching (no queue delay to wait "
                            f"out); stedq/v1/concurrency/c1/no-batching minus {limit1}")
    add(f"{clients} single-image clients, batching, vs in-process batch {batch}", ">= 0.9",
        _ratio(s.get(f"stedq/v1/concurrency/c{clients}/batching"), s.get(limit)), lambda v: v >= 0.9,
        f"stedq/v1/concurrency/c{clients}/batching images/s over {limit}")
    add(f"INT8 vs FP32 in-process, batch {batch}", ">= 1.8",
        _ratio(s.get(f"in-process/int8/b{batch}"), s.get(f"in-process/fp32/b{batch}")), lambda v: v >= 1.8,
        f"in-process/int8/b{batch} images/s over in-process/fp32/b{batch} (the variant the bench found: the "
        f"bundle's own)")
    add(f"stedq vs MLServer, {clients} single-image clients", ">= 2",
        _ratio(s.get(f"stedq/v1/concurrency/c{clients}/batching"), s.get(f"mlserver/v2/concurrency/c{clients}")),
        lambda v: v >= 2, f"stedq/v1/concurrency/c{clients}/batching over mlserver/v2/concurrency/c{clients} "
                          f"(both batching)")
    add("stedq vs MLServer, single-image requests", ">= 2",
        _ratio(s.get("stedq/v1/unary/b1"), s.get("mlserver/v2/unary/b1")), lambda v: v >= 2,
        "stedq/v1/unary/b1 over mlserver/v2/unary/b1 (one caller)")
    add(f"stedq vs MLServer, batch-{batch} requests", ">= 2",
        _ratio(s.get(f"stedq/v1/unary/b{batch}"), s.get(f"mlserver/v2/unary/b{batch}")),
        lambda v: v >= 2, f"stedq/v1/unary/b{batch} over mlserver/v2/unary/b{batch}")
    fit = results.get("fit_check")
    if fit:
        value = {"median": fit["share_of_inference"], "min": fit["share_of_inference"],
                 "max": fit["share_of_inference"], "n": 1}
        add("fit verdict cost vs inference, per image", "<= 0.05", value, lambda v: v <= 0.05,
            f"stedq.fit.check_fit {fit['ms_per_image']} ms against in-process fp32 batch-32 "
            f"{fit['inference_ms_per_image']} ms per image")
    return found


# --- markdown
def _f(value, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def _cell(summary: dict, name: str, digits: int = 1) -> str:
    s = summary.get(name)
    if not s or not s["n"]:
        return "–"
    if s["n"] == 1:
        return _f(s["median"], digits)
    return f"{_f(s['median'], digits)} ({_f(s['min'], digits)}–{_f(s['max'], digits)})"


def _server_stages_markdown(results: dict) -> list[str]:
    """Where a stedq v1 call's time goes, from the timing the server sends with every answer."""
    rows = [entry for entry in results["scenarios"]
            if not entry.get("skipped") and entry["summary"].get("server_total_ms", {}).get("n")]
    if not rows:
        return []
    lines = ["", "## Where a stedq call's time goes (the server's timing of each answer)", "",
             "Medians per call over the measured calls (stedq-timing-ms, stedq/timing.py), then over rounds. "
             "*In the server outside inference*: admission, decoding, batcher hand-offs, the answer; "
             "*outside the server*: the client's round trip minus the server's total (client library, "
             "protobuf, HTTP/2, gRPC's threads and event loops on both ends).", "",
             "| scenario | client p50 | server total | decode | queue | inference | in the server outside "
             "inference | outside the server |", "|---|---|---|---|---|---|---|---|"]
    for entry in rows:
        s = entry["summary"]
        lines.append(f"| {entry['id']} | {_cell(s, 'p50_ms', 2)} | " + " | ".join(
            _cell(s, name, 2) for name in ("server_total_ms", "server_decode_ms", "server_queue_ms",
                                           "server_inference_ms", "server_outside_inference_ms",
                                           "transport_ms")) + " |")
    return lines


def markdown(results: dict, command: str) -> str:
    env = results["environment"]
    lines = [
        "# stedq bench", "",
        f"`{command}` — {env['date_utc']}, {env['cpu']}, {env['logical_cpus']} logical CPUs, "
        f"onnxruntime {env['versions']['onnxruntime']} ({', '.join(results['engine']['providers'])}), "
        f"grpcio {env['versions']['grpcio']}, Python {env['python']}; model {results['engine']['model']}; "
        f"intra-op threads {env['settings']['intra_op_threads'] or 'all'}, max batch "
        f"{env['settings']['max_batch_size']}, queue delay {env['settings']['max_queue_delay_ms']} ms.",
        "",
        f"{results['options']['rounds']} round(s) of {results['options']['duration_s']} s per point "
        f"(+{results['options']['warmup_s']} s warm-up); figures are the median over rounds with (min–max). "
        f"Load average before {results['load_before'][0]}, after {results['load_after'][0]} "
        f"(1 min){': the machine was shared, compare ratios' if results['load_before'][0] > 0.5 else ''}.",
        "", "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        v = t["value"]
        shown = "not measured" if v is None else (
            f"{_f(v['median'], 2)} ({_f(v['min'], 2)}–{_f(v['max'], 2)})" if v["n"] > 1 else _f(v["median"], 2))
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | "
                     f"{'–' if t['met'] is None else ('yes' if t['met'] else '**no**')} |")
    lines += ["", "## Every point", "",
              "| scenario | images/s | p50 ms | p90 ms | p99 ms | server CPU (cores) | server RSS MB | client CPU |",
              "|---|---|---|---|---|---|---|---|"]
    for entry in results["scenarios"]:
        if entry.get("skipped"):
            lines.append(f"| {entry['id']} | skipped | | | | | | |")
            continue
        s = entry["summary"]
        lines.append(f"| {entry['id']} | {_cell(s, 'images_per_s')} | {_cell(s, 'p50_ms', 2)} | "
                     f"{_cell(s, 'p90_ms', 2)} | {_cell(s, 'p99_ms', 2)} | {_cell(s, 'server_cpu_cores', 2)} | "
                     f"{_cell(s, 'server_rss_mb', 0)} | {_cell(s, 'client_cpu_cores', 2)} |")
    lines += _server_stages_markdown(results)
    lines += ["", "## Ratios (paired by round)", "", "| ratio | median | min–max |", "|---|---|---|"]
    for name, v in results["ratios"].items():
        lines.append(f"| {name} | {_f(v['median'], 2)} | {_f(v['min'], 2)}–{_f(v['max'], 2)} |")
    if results["skipped"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- {system}: {why.splitlines()[0]}" for system, why in results["skipped"].items()]
    if results["notes"]:
        lines += ["", "## Notes", ""] + [f"- {key}: {value}" for key, value in results["notes"].items()]
    if results.get("profile") and "error" in results["profile"]:
        lines += ["", f"Profiling failed: {results['profile']['error']}"]
    elif results.get("profile"):
        p = results["profile"]
        lines += ["", f"## Where the server's time goes (py-spy, {p['scenario']})", "",
                  f"{p['samples']} samples over {p['seconds']} s (collapsed stacks for flamegraph.pl or "
                  f"speedscope: `{p['stacks']}`). Share of samples by part of the server: "
                  + ", ".join(f"{name} {share:.1%}" for name, share in p["buckets"].items()) + ".", "",
                  "| share | function (self time) |", "|---|---|"]
        lines += [f"| {share:.1%} | `{name}` |" for name, share in p["top_self"]]
    lines += ["", "Plots: throughput_vs_batch.png, latency_vs_concurrency.png, stedq_vs_peers.png", ""]
    return "\n".join(lines)

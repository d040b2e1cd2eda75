"""The bench's PNG plots (matplotlib, Agg): throughput vs batch, latency vs concurrency, stedq vs peers.
Error bars span the min and max over rounds; points are the medians."""

from __future__ import annotations

from pathlib import Path

from stedq.bench.report import served_variant

COLORS = {"in-process": "#555555", "in-process int8": "#999999", "stedq": "#1f77b4",
          "stedq-no-batching": "#ff7f0e", "stedq v2": "#17becf", "mlserver": "#2ca02c", "paper-http": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _points(entries: list[dict], x: str, field: str):
    rows = sorted((e[x], e["summary"][field]) for e in entries if e["runs"] and field in e["summary"])
    xs = [r[0] for r in rows]
    med = [r[1]["median"] for r in rows]
    err = [[r[1]["median"] - r[1]["min"] for r in rows], [r[1]["max"] - r[1]["median"] for r in rows]]
    return xs, med, err


def _log2_axis(ax, values) -> None:
    """A base-2 log axis labelled with the measured values themselves (1, 8, 32), not powers of 2."""
    ticks = sorted(set(values))
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()


def _title(results: dict) -> str:
    env = results["environment"]
    return (f"{env['cpu'][:40]}, {env['logical_cpus']} CPUs, load {results['load_before'][0]:.1f}"
            f"{' (quick run)' if results['options']['quick'] else ''}")


def throughput_vs_batch(results: dict, path: Path) -> None:
    plt = _pyplot()
    s = results["scenarios"]
    series = [("in-process", [e for e in s if e["system"] == "in-process" and e["variant"] == "fp32"]),
              ("in-process int8", [e for e in s if e["system"] == "in-process" and e["variant"] == "int8"]),
              ("stedq", [e for e in s if e["group"] == "unary"]),
              ("stedq v2", [e for e in s if e["group"] == "kserve" and e["concurrency"] == 1]),
              ("mlserver", [e for e in s if e["system"] == "mlserver" and e["concurrency"] == 1])]
    labels = {"stedq": "stedq gRPC (v1 Score)", "stedq v2": "stedq KServe v2", "mlserver": "MLServer (v2)",
              "in-process": "in-process onnxruntime FP32", "in-process int8": "in-process onnxruntime INT8"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    seen: list[int] = []
    for name, entries in series:
        xs, med, err = _points(entries, "batch", "images_per_s")
        if xs:
            ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, color=COLORS[name], label=labels[name])
            seen += xs
    _log2_axis(ax, seen)
    ax.set_xlabel("images per request (batch)")
    ax.set_ylabel("images / s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput vs batch size, one caller\n" + _title(results), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency_vs_concurrency(results: dict, path: Path) -> None:
    plt = _pyplot()
    s = [e for e in results["scenarios"] if e["group"] == "concurrency"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, label in (("stedq", "batching on"), ("stedq-no-batching", "batching off")):
        entries = [e for e in s if e["system"] == system]
        for field, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
            xs, med, _ = _points(entries, "concurrency", field)
            if xs:
                left.plot(xs, med, style, marker="o", color=COLORS[system], label=f"{label} {field[:3]}")
        xs, med, err = _points(entries, "concurrency", "images_per_s")
        if xs:
            right.errorbar(xs, med, yerr=err, marker="o", capsize=3, color=COLORS[system], label=label)
    batch = results["environment"]["settings"]["max_batch_size"]
    served = served_variant(results)
    limit = next((e for e in results["scenarios"] if e["id"] == f"in-process/{served}/b{batch}" and e["runs"]), None)
    if limit:
        right.axhline(limit["summary"]["images_per_s"]["median"], color=COLORS["in-process"], ls="--",
                      label=f"in-process {served} batch {batch}")
    for ax in (left, right):
        _log2_axis(ax, [e["concurrency"] for e in s if e["runs"]])
        ax.set_xlabel("concurrent single-image clients")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))   # 1000, not 10^3
    left.yaxis.set_minor_formatter(NullFormatter())
    left.set_ylabel("latency (ms)")
    left.set_title("stedq gRPC latency percentiles", fontsize=9)
    right.set_ylabel("images / s")
    right.set_ylim(bottom=0)
    right.set_title("throughput", fontsize=9)
    fig.suptitle("Concurrency sweep — " + _title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def stedq_vs_peers(results: dict, path: Path) -> None:
    """Grouped bars: for each workload, the limit, stedq (v1 and v2) and the peers."""
    plt = _pyplot()
    by_id = {e["id"]: e for e in results["scenarios"] if e["runs"]}
    c = results["options"]["peer_concurrency"]
    b = results["environment"]["settings"]["max_batch_size"]
    v = served_variant(results)
    workloads = [
        ("1 image, 1 caller", [("in-process", f"in-process/{v}/b1"), ("stedq", "stedq/v1/unary/b1"),
                               ("stedq v2", "stedq/v2/unary/b1"), ("mlserver", "mlserver/v2/unary/b1"),
                               ("paper-http", "paper-http/c1")]),
        (f"{c} single-image callers\n(in-process: batch {b})", [
            ("in-process", f"in-process/{v}/b{b}"), ("stedq", f"stedq/v1/concurrency/c{c}/batching"),
            ("stedq v2", f"stedq/v2/concurrency/c{c}"), ("mlserver", f"mlserver/v2/concurrency/c{c}"),
            ("paper-http", f"paper-http/c{c}")]),
        (f"batch-{b} requests", [("in-process", f"in-process/{v}/b{b}"), ("stedq", f"stedq/v1/unary/b{b}"),
                                 ("stedq v2", f"stedq/v2/unary/b{b}"), ("mlserver", f"mlserver/v2/unary/b{b}")]),
    ]
    labels = {"in-process": "in-process (limit)", "stedq": "stedq v1", "stedq v2": "stedq KServe v2",
              "mlserver": "MLServer", "paper-http": "paper design (HTTP+JSON)"}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width, seen = 0.16, set()
    for group, (_name, bars) in enumerate(workloads):
        for slot, (name, ident) in enumerate(bars):
            entry = by_id.get(ident)
            if entry is None:
                continue
            s = entry["summary"]["images_per_s"]
            ax.bar(group + (slot - 2) * width, s["median"], width, color=COLORS[name],
                   yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=2,
                   label=None if name in seen else labels[name])
            seen.add(name)
    ax.set_xticks(range(len(workloads)), [w[0] for w in workloads])
    ax.set_ylabel("images / s")
    ax.set_title("stedq vs the in-process limit vs peers\n" + _title(results), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(results: dict, out: Path) -> list[Path]:
    paths = [out / "throughput_vs_batch.png", out / "latency_vs_concurrency.png", out / "stedq_vs_peers.png"]
    throughput_vs_batch(results, paths[0])
    latency_vs_concurrency(results, paths[1])
    stedq_vs_peers(results, paths[2])
    return paths

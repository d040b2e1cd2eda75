"""Numbers from timings: latency percentiles of one run, and median and spread over repeated runs."""

from __future__ import annotations

import statistics

import numpy as np


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean in milliseconds and the sample count (p99 of a few samples is their max)."""
    if not seconds:
        return {"p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan"),
                "mean_ms": float("nan"), "n": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean()),
            "n": int(len(ms))}


def throughput(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")


def spread(values: list[float]) -> dict[str, float]:
    """Median of the repetitions, their min and max, and the relative spread (max - min) / median."""
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "rel_spread": float("nan"),
                "n": 0}
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values),
            "rel_spread": (max(values) - min(values)) / median if median else float("nan"), "n": len(values)}


# The fields of one run that are summarized over repetitions.
# Where a stedq call's time went, from the timing the server sends with each answer (stedq/timing.py):
# per-run medians over the measured calls, in ms (closed_loop.Recorder.server_stages)
SERVER_FIELDS = ("server_decode_ms", "server_queue_ms", "server_inference_ms", "server_total_ms",
                 "server_outside_inference_ms", "transport_ms")
SUMMARIZED = ("images_per_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu_cores", "server_rss_mb",
              "client_cpu_cores", *SERVER_FIELDS)


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """{field: spread over the runs} for every field in SUMMARIZED that the runs have."""
    return {name: spread([run[name] for run in runs if name in run]) for name in SUMMARIZED
            if any(name in run for run in runs)}

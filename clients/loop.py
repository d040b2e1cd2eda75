"""The paper's use of the score: tune a (simulated) STED microscope online.

Each iteration the optimizer proposes dwell time, excitation and depletion power; the microscope
acquires a fresh field of view with them (as one moves the stage while tuning on a real sample, so
earlier acquisitions' bleaching does not pile up); the stedq server scores the image; the optimizer
learns from the score and the bleaching the acquisition caused, maximizing quality within a bleaching
budget. `stedq loop` runs it against a server; `score_source="label"` uses the simulator's own expert
label instead (to check the optimizer itself, or before a trained model exists).
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stedq.clients.optimizer import Axis, ThompsonOptimizer

LOG_AXES = {"dwell_time_us", "p_ex_uw"}
PARAMETER_LABELS = {"dwell_time_us": "dwell time (µs)", "p_ex_uw": "excitation (µW)",
                    "p_sted_mw": "depletion (mW)"}


@dataclass
class Step:
    iteration: int
    parameters: dict[str, float]
    score: float            # what the optimizer saw (server score, or the label); NaN: missing
    bleaching: float        # fraction of the field's fluorophores this acquisition destroyed
    label: float            # the simulator's expert label (reference; noise-free)
    seconds: float


def axes_from_ranges(ranges: dict[str, tuple[float, float]]) -> list[Axis]:
    axes = []
    for name, (low, high) in ranges.items():
        log = name in LOG_AXES and low > 0
        axes.append(Axis(name, float(low), float(high), log=log))
    return axes


def simulated_fields(structure: str, seed: int) -> Callable[[int, dict], tuple[np.ndarray, dict]]:
    """acquire(iteration, parameters) on a new simulated field of view per iteration."""
    from stedq.training.data.microscope import SimulatedMicroscope

    def acquire(iteration: int, parameters: dict) -> tuple[np.ndarray, dict]:
        scope = SimulatedMicroscope(structure=structure, seed=seed * 100_003 + iteration)
        return scope.acquire(**parameters)

    return acquire


class StreamScorer:
    """score(image, info) over one ScoreStream call kept open for the whole loop, as acquisition software
    keeps one stream per session: each image is sent as soon as it is acquired and its answer awaited.
    Use as a context manager (closing ends the stream)."""

    _END = object()

    def __init__(self, client):
        self._outbox: queue.Queue = queue.Queue()
        # errors come back as results: a rejected frame must not end the stream for the next ones
        self._answers = client.stream(self._requests(), raise_on_error=False)

    def _requests(self):
        while (image := self._outbox.get()) is not self._END:
            yield image

    def __call__(self, image: np.ndarray, info: dict | None = None) -> float:
        """The image's score; QualityError if the server rejected it (the stream stays usable)."""
        self._outbox.put(image)
        result = next(self._answers)
        if result.error is not None:
            raise result.error
        return float(result.scores[0])

    def close(self) -> None:
        self._outbox.put(self._END)
        self._answers.close()

    def __enter__(self) -> StreamScorer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MissingScoreScorer:
    """score(image, info) by one Score call per image; when the server is down, slow or refuses the
    image, the score is missing (None, with a warning on stderr), so the acquisitions go on."""

    def __init__(self, client):
        self.client = client

    def __call__(self, image: np.ndarray, info: dict | None = None) -> float | None:
        from stedq.clients.errors import QualityError

        try:
            (result,) = self.client.score_images([image], pixel_size_nm=(info or {}).get("pixel_size_nm"))
        except QualityError as exc:
            print(f"score missing: {exc}", file=sys.stderr, flush=True)
            return None
        return result.score

    def close(self) -> None:
        pass


def run_loop(optimizer: ThompsonOptimizer, acquire: Callable[[int, dict], tuple[np.ndarray, dict]],
             score: Callable[[np.ndarray, dict], float | None], iterations: int,
             progress: Callable[[Step], None] | None = None) -> list[Step]:
    steps = []
    for iteration in range(iterations):
        started = time.perf_counter()
        parameters = optimizer.suggest()
        image, info = acquire(iteration, parameters)
        value = score(image, info)
        if value is None:  # missing (server down or slow): recorded as such, never guessed or learned from
            value = float("nan")
        else:
            value = float(value)
            optimizer.observe(parameters, value, info["bleaching"])
        step = Step(iteration, parameters, value, float(info["bleaching"]), float(info["label_clean"]),
                    time.perf_counter() - started)
        steps.append(step)
        if progress:
            progress(step)
    return steps


def format_step(step: Step, best: float) -> str:
    p = step.parameters
    return (f"{step.iteration + 1:3d}  dwell {p['dwell_time_us']:6.1f} µs  exc {p['p_ex_uw']:5.1f} µW  "
            f"sted {p['p_sted_mw']:6.1f} mW  ->  score {step.score:.3f} (best {best:.3f})  "
            f"bleach {step.bleaching:.3f}  label {step.label:.3f}  {step.seconds:.1f} s")


def save_plot(path: Path, steps: list[Step], max_bleaching: float, score_name: str,
              initial_random: int = 0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    iterations = np.arange(1, len(steps) + 1)
    scores = np.array([s.score for s in steps])
    bleaching = np.array([s.bleaching for s in steps])
    within = bleaching <= max_bleaching
    best = np.maximum.accumulate(np.where(within, scores, -np.inf))
    names = list(steps[0].parameters)
    figure, axes = plt.subplots(2 + len(names), 1, figsize=(8, 2.1 * (2 + len(names))), sharex=True,
                                constrained_layout=True)
    if initial_random:
        axes[0].axvspan(0.5, min(initial_random, len(steps)) + 0.5, color="grey", alpha=0.12,
                        label="random start")
    axes[0].plot(iterations, scores, "o", color="tab:blue", label=f"{score_name} of each acquisition")
    axes[0].plot(iterations, np.where(np.isfinite(best), best, np.nan), "-", color="tab:blue",
                 label="best within the bleaching budget")
    axes[0].plot(iterations, [s.label for s in steps], "x", color="grey", label="simulator's expert label")
    axes[0].set_ylabel("quality")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].bar(iterations, bleaching, color=np.where(within, "tab:green", "tab:red"))
    axes[1].axhline(max_bleaching, color="black", linestyle="--", linewidth=1, label="budget")
    axes[1].set_ylabel("bleaching")
    axes[1].legend(loc="upper right", fontsize=8)
    for axis, name in zip(axes[2:], names, strict=True):
        axis.plot(iterations, [s.parameters[name] for s in steps], "o-", color="tab:purple")
        axis.set_ylabel(PARAMETER_LABELS.get(name, name))
        if name in LOG_AXES:
            axis.set_yscale("log")
            axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[-1].set_xlabel("iteration")
    figure.suptitle("acquisition control loop: constrained Thompson sampling")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_json(path: Path, steps: list[Step], recommendation: dict[str, float], settings: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "recommendation": recommendation,
                                "steps": [asdict(s) for s in steps]}, indent=2) + "\n")
    return path

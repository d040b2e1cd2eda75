"""Abberior Imspector (specpy): score each new measurement's STED channel, and drive `stedq loop` with
real measurements instead of the simulator.

    import specpy
    from stedq.clients.imspector import ImspectorScoring

    imspector = specpy.get_application()            # Imspector with "Run Server" on
    with ImspectorScoring(imspector, "scope-pc:50051", channel="STED") as scoring:
        result = scoring.score(imspector.active_measurement())     # waits at most `timeout` s
        print(result.score, result.fit, result.model_version)      # score None: missing, see result.error

Built against specpy's documented interface (Imspector's Python API): `get_application()`,
`active_measurement()`, `Measurement.stack_names()/stack(name)/parameters(path)/set_parameters(path,
value)`, `Stack.data()` (a numpy array, up to 4-D, x fastest), `Stack.sizes()` (pixels per dimension)
and `Stack.lengths()` (metres per dimension), `Application.run(measurement)`. No Imspector runs where
stedq is tested: the tests drive these classes through a stand-in with the same methods.
Needs the optional extra: pip install 'stedq[imspector]'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stedq.clients.background import BackgroundScorer, FrameScore
from stedq.clients.client import QualityClient


class ImspectorError(ValueError):
    """The measurement does not hold what the adapter was told to score (the message says what)."""


def find_stack(measurement, channel: str):
    """The measurement's stack whose name is `channel`, or contains it (case-insensitive)."""
    names = list(measurement.stack_names())
    exact = [n for n in names if n == channel]
    partial = [n for n in names if channel.lower() in n.lower()]
    found = exact or partial
    if not found:
        raise ImspectorError(f"measurement {measurement.name()!r} has no stack named like {channel!r} "
                             f"(stacks: {', '.join(names) or 'none'})")
    return measurement.stack(found[0])


def stack_image(stack) -> tuple[np.ndarray, float | None]:
    """(2-D image, pixel size in nm or None) of a stack: singleton dimensions dropped; of a time or z
    series, the last frame (the one just acquired)."""
    data = np.asarray(stack.data())
    image = data.reshape((-1,) + data.shape[-2:])[-1] if data.ndim >= 2 else data
    if image.ndim != 2:
        raise ImspectorError(f"stack {stack.name()!r} holds data of shape {data.shape}, not an image")
    sizes, lengths = list(stack.sizes()), list(stack.lengths())
    pixel_nm = lengths[0] / sizes[0] * 1e9 if sizes and lengths and sizes[0] > 0 and lengths[0] > 0 else None
    return image, pixel_nm


class ImspectorScoring:
    """Scores measurements' STED channel through a stedq server; the server being down or slow gives a
    FrameScore with score None and the reason, never a made-up score."""

    def __init__(self, imspector, client: QualityClient | str = "localhost:50051", *, channel: str = "STED",
                 timeout: float = 5.0, on_result: Callable[[FrameScore], None] | None = None):
        self.imspector, self.channel, self.timeout = imspector, channel, timeout
        self.scorer = BackgroundScorer(client, timeout=timeout, on_result=on_result)

    def submit(self, measurement=None) -> None:
        """Queue the measurement's STED image (default: the active measurement) and return at once;
        its FrameScore reaches `on_result` and `results`."""
        measurement = measurement if measurement is not None else self.imspector.active_measurement()
        image, pixel_nm = stack_image(find_stack(measurement, self.channel))
        self.scorer.submit(measurement.name(), image, pixel_nm)

    def score(self, measurement=None) -> FrameScore:
        """Score one measurement and wait for the answer (at most about `timeout` seconds)."""
        measurement = measurement if measurement is not None else self.imspector.active_measurement()
        before = len(self.scorer.results)
        self.submit(measurement)
        name = measurement.name()
        if not self.scorer.wait(self.timeout * 2 + 1):
            return FrameScore(name, None, error=f"no answer within {self.timeout * 2 + 1:g} s")
        # other measurements submitted meanwhile may have answered first: this one's is the last of its name
        return next(r for r in reversed(self.scorer.results[before:]) if r.key == name)

    @property
    def results(self) -> list[FrameScore]:
        return self.scorer.results

    def close(self) -> None:
        self.scorer.close()

    def __enter__(self) -> ImspectorScoring:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass(frozen=True)
class ParameterPath:
    """Where one control-loop parameter lives in Imspector, and its unit: value in Imspector =
    loop value × scale (e.g. dwell time µs -> s: scale 1e-6)."""
    path: str
    scale: float = 1.0


class ImspectorMicroscope:
    """`acquire(iteration, parameters)` for stedq.clients.loop.run_loop on a real microscope: writes the
    parameters into the measurement, runs it (Imspector blocks until it is recorded) and returns the
    STED image with `info["bleaching"]` = 1 − post/pre mean signal of confocal channels recorded before
    and after the STED frame (`pre_channel`, `post_channel`; without them bleaching is not measured:
    0 with `info["bleaching_measured"]` False, and the loop's bleaching budget is not enforced),
    `info["label_clean"]` = NaN (no simulator here) and `info["pixel_size_nm"]`. Move the stage between iterations in your measurement's set-up, as on the
    simulator each iteration images a fresh field."""

    def __init__(self, imspector, parameters: dict[str, ParameterPath], *, channel: str = "STED",
                 pre_channel: str | None = None, post_channel: str | None = None, measurement=None):
        self.imspector, self.parameters, self.channel = imspector, parameters, channel
        self.pre_channel, self.post_channel, self.measurement = pre_channel, post_channel, measurement

    def __call__(self, iteration: int, values: dict[str, float]) -> tuple[np.ndarray, dict[str, Any]]:
        measurement = self.measurement if self.measurement is not None else self.imspector.active_measurement()
        for name, value in values.items():
            if name not in self.parameters:
                raise ImspectorError(f"no Imspector parameter path for {name!r} (known: {', '.join(self.parameters)})")
            where = self.parameters[name]
            measurement.set_parameters(where.path, float(value) * where.scale)
        self.imspector.run(measurement)
        image, pixel_nm = stack_image(find_stack(measurement, self.channel))
        bleaching, measured = 0.0, False
        if self.pre_channel and self.post_channel:
            pre = float(np.mean(stack_image(find_stack(measurement, self.pre_channel))[0]))
            post = float(np.mean(stack_image(find_stack(measurement, self.post_channel))[0]))
            if pre > 0:
                bleaching, measured = float(np.clip(1.0 - post / pre, 0.0, 1.0)), True
        return image, {"bleaching": bleaching, "bleaching_measured": measured, "label_clean": math.nan,
                       "pixel_size_nm": pixel_nm}


# --- `stedq loop --imspector CONFIG.json`

LOOP_CONFIG_EXAMPLE = """{
  "host": "",
  "channel": "STED", "pre_channel": "Confocal_Pre", "post_channel": "Confocal_Post",
  "parameters": {
    "dwell_time_us": {"path": "ExpControl/scan/dwelltime", "scale": 1e-6, "range": [5, 100]},
    "p_ex_uw": {"path": "ExpControl/lasers/power_calibrated/0/value/calibrated", "scale": 1, "range": [1, 20]},
    "p_sted_mw": {"path": "ExpControl/lasers/power_calibrated/3/value/calibrated", "scale": 1, "range": [0, 150]}
  }
}"""


@dataclass(frozen=True)
class LoopConfig:
    host: str
    channel: str
    pre_channel: str | None
    post_channel: str | None
    parameters: dict[str, ParameterPath]
    ranges: dict[str, tuple[float, float]]


def load_loop_config(text: str, default_ranges: dict[str, tuple[float, float]]) -> LoopConfig:
    """Parse the JSON that maps the loop's parameters to Imspector paths (LOOP_CONFIG_EXAMPLE); every
    mistake is an ImspectorError naming the key. Ranges default to `default_ranges`."""
    import json

    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImspectorError(f"not JSON: {exc}") from None
    unknown = set(config) - {"host", "channel", "pre_channel", "post_channel", "parameters"}
    if unknown:
        raise ImspectorError(f"unknown keys {sorted(unknown)}")
    missing = set(default_ranges) - set(config.get("parameters", {}))
    if missing:
        raise ImspectorError(f"parameters: no Imspector path for {sorted(missing)}")
    paths, ranges = {}, {}
    for name, entry in config["parameters"].items():
        if name not in default_ranges:
            raise ImspectorError(f"parameters: {name!r} is not a loop parameter ({', '.join(default_ranges)})")
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ImspectorError(f"parameters.{name}: needs {{\"path\": \"device/.../parameter\", ...}}")
        low, high = entry.get("range", default_ranges[name])
        if not low < high:
            raise ImspectorError(f"parameters.{name}.range: {low} is not below {high}")
        paths[name] = ParameterPath(entry["path"], float(entry.get("scale", 1.0)))
        ranges[name] = (float(low), float(high))
    if bool(config.get("pre_channel")) != bool(config.get("post_channel")):
        raise ImspectorError("pre_channel and post_channel go together (bleaching = 1 - post/pre)")
    return LoopConfig(config.get("host", ""), config.get("channel", "STED"), config.get("pre_channel"),
                      config.get("post_channel"), paths, ranges)


def connect(host: str = ""):
    """specpy's Imspector application: the local one, or the one on `host` (Imspector's Run Server on)."""
    import specpy

    return specpy.get_application(host) if host else specpy.get_application()

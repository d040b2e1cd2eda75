"""A stand-in for Abberior Imspector's specpy objects (Application, Measurement, Stack) with the methods
stedq.clients.imspector calls, as specpy documents them. No Imspector runs here; this is what the
adapter's tests drive instead. `run()` images a fresh simulated field (stedq's pysted microscope) with
the parameters last written into the measurement, and records confocal frames before and after."""

from __future__ import annotations

import numpy as np


class Stack:
    def __init__(self, name: str, image: np.ndarray, pixel_m: float = 20e-9):
        self._name, self._pixel_m = name, pixel_m
        self._data = np.asarray(image)[None, None]   # Imspector stacks are 4-D: (t, z, y, x) in numpy order

    def name(self) -> str:
        return self._name

    def data(self) -> np.ndarray:
        return self._data

    def sizes(self) -> list[int]:              # pixels per dimension, x first
        return list(self._data.shape[::-1])

    def lengths(self) -> list[float]:          # metres per dimension, x first
        return [n * self._pixel_m for n in self.sizes()]


class Measurement:
    def __init__(self, name: str, stacks: list[Stack] | None = None):
        self._name, self.stacks = name, {s.name(): s for s in stacks or []}
        self.values: dict[str, float] = {}
        self.writes: list[tuple[str, float]] = []

    def name(self) -> str:
        return self._name

    def stack_names(self) -> list[str]:
        return list(self.stacks)

    def stack(self, name: str) -> Stack:
        return self.stacks[name]

    def parameters(self, path: str):
        return self.values[path]

    def set_parameters(self, path: str, value) -> None:
        self.values[path] = value
        self.writes.append((path, value))


class Application:
    """`run(measurement)` acquires with the measurement's current parameter values (`paths` maps the
    loop's names to (path, scale), as the user's loop config does)."""

    def __init__(self, measurement: Measurement, paths: dict[str, tuple[str, float]] | None = None, seed: int = 0):
        self.measurement, self.paths, self.seed, self.runs = measurement, paths or {}, seed, 0

    def active_measurement(self) -> Measurement:
        return self.measurement

    def run(self, measurement: Measurement) -> int:
        from stedq.training.data.microscope import SimulatedMicroscope

        values = {name: measurement.parameters(path) / scale for name, (path, scale) in self.paths.items()}
        scope = SimulatedMicroscope(structure="actin", seed=self.seed * 1000 + self.runs)
        pre, _ = scope.acquire(dwell_time_us=10.0, p_ex_uw=values["p_ex_uw"], p_sted_mw=0.0, bleach=False)
        sted, info = scope.acquire(**values)
        post, _ = scope.acquire(dwell_time_us=10.0, p_ex_uw=values["p_ex_uw"], p_sted_mw=0.0, bleach=False)
        measurement.stacks = {s.name(): s for s in (Stack("Confocal_Pre", pre), Stack("STED 775 {11}", sted),
                                                    Stack("Confocal_Post", post))}
        self.runs += 1
        self.last_info = info
        return 0

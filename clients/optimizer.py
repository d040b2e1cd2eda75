"""Constrained Thompson sampling over acquisition parameters (numpy only).

Two Gaussian processes over a grid of the parameter space: one for the quality score, one for the
bleaching an acquisition causes. Each step draws one plausible function from each posterior and picks
the grid point with the best drawn score among those whose drawn bleaching stays within the budget:
exploration comes from the posterior's uncertainty, as in the kernel Thompson sampling that Durand et
al. (2018) used to tune STED acquisitions online.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Axis:
    name: str
    low: float
    high: float
    log: bool = False   # dwell time and excitation act multiplicatively: search them on a log scale

    def value(self, u: float) -> float:
        if self.log:
            return float(np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    def unit(self, value: float) -> float:
        if self.log:
            return float((np.log(value) - np.log(self.low)) / (np.log(self.high) - np.log(self.low)))
        return float((value - self.low) / (self.high - self.low))


@dataclass(frozen=True)
class GaussianProcess:
    """A squared-exponential GP on [0, 1]^d with fixed hyper-parameters (enough for a few dozen points)."""

    length_scale: float = 0.3
    signal_sd: float = 0.25
    noise_sd: float = 0.05

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return self.signal_sd ** 2 * np.exp(-0.5 * squared / self.length_scale ** 2)

    def posterior(self, x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance at `grid` given observations y at x (prior mean: the observations' mean)."""
        prior = float(y.mean()) if len(y) else 0.0
        if len(y) == 0:
            return np.full(len(grid), prior), self.kernel(grid, grid)
        k_xx = self.kernel(x, x) + self.noise_sd ** 2 * np.eye(len(x))
        k_gx = self.kernel(grid, x)
        chol = np.linalg.cholesky(k_xx)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y - prior))
        v = np.linalg.solve(chol, k_gx.T)
        return prior + k_gx @ alpha, self.kernel(grid, grid) - v.T @ v

    def sample(self, x, y, grid, rng: np.random.Generator) -> np.ndarray:
        mean, cov = self.posterior(x, y, grid)
        return rng.multivariate_normal(mean, cov, method="eigh")


class ThompsonOptimizer:
    """suggest() -> parameters to acquire with; observe(parameters, score, bleaching) -> learn from it."""

    def __init__(self, axes: list[Axis], *, max_bleaching: float = 0.15, points_per_axis: int = 7,
                 initial_random: int = 4, seed: int = 0,
                 score_gp: GaussianProcess | None = None, bleach_gp: GaussianProcess | None = None):
        self.axes = axes
        self.max_bleaching = max_bleaching
        self.initial_random = initial_random
        self.rng = np.random.default_rng(seed)
        ticks = np.linspace(0.0, 1.0, points_per_axis)
        self.grid = np.array(list(itertools.product(ticks, repeat=len(axes))))
        self.score_gp = score_gp or GaussianProcess(signal_sd=0.25, noise_sd=0.05)
        self.bleach_gp = bleach_gp or GaussianProcess(signal_sd=0.15, noise_sd=0.02)
        self.x: list[np.ndarray] = []
        self.scores: list[float] = []
        self.bleaching: list[float] = []

    def parameters(self, unit_point: np.ndarray) -> dict[str, float]:
        return {axis.name: axis.value(u) for axis, u in zip(self.axes, unit_point, strict=True)}

    def suggest(self) -> dict[str, float]:
        if len(self.x) < self.initial_random:
            return self.parameters(self.grid[self.rng.integers(len(self.grid))])
        x, grid = np.array(self.x), self.grid
        score = self.score_gp.sample(x, np.array(self.scores), grid, self.rng)
        bleach = self.bleach_gp.sample(x, np.array(self.bleaching), grid, self.rng)
        feasible = bleach <= self.max_bleaching
        index = int(np.argmax(np.where(feasible, score, -np.inf))) if feasible.any() else int(np.argmin(bleach))
        return self.parameters(grid[index])

    def observe(self, parameters: dict[str, float], score: float, bleaching: float) -> None:
        self.x.append(np.array([axis.unit(parameters[axis.name]) for axis in self.axes]))
        self.scores.append(float(score))
        self.bleaching.append(float(bleaching))

    def recommendation(self) -> dict[str, float]:
        """The grid point with the best expected score among those expected to respect the budget."""
        if not self.x:
            raise ValueError("no observations yet")
        x = np.array(self.x)
        score, _ = self.score_gp.posterior(x, np.array(self.scores), self.grid)
        bleach, _ = self.bleach_gp.posterior(x, np.array(self.bleaching), self.grid)
        feasible = bleach <= self.max_bleaching
        index = int(np.argmax(np.where(feasible, score, -np.inf))) if feasible.any() else int(np.argmin(bleach))
        return self.parameters(self.grid[index])

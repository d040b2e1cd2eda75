"""Constrained Thompson sampling over acquisition parameters (numpy only).

Two Gaussian processes over a grid of the parameter space: one for the quality score, one for the
bleaching an acquisition causes. Each step draws one plausible function from each posterior and picks
the grid point with the best drawn score among those whose drawn bleaching stays within the budget:
exploration comes from the posterior's uncertainty, as in the kernel Thompson sampling that Durand et
al. (2018) used to tune STED acquisitions online.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4)
def _factor(kernel_bytes: bytes, size: int) -> np.ndarray:
    kernel = np.frombuffer(kernel_bytes).reshape(size, size)
    # Cholesky with a little jitter: unique (so draws do not depend on the BLAS build or its thread
    # count, as eigenvectors of repeated eigenvalues would) and defined for the ill-conditioned RBF kernel.
    jitter = 1e-6 * float(np.mean(np.diag(kernel)))
    try:
        return np.linalg.cholesky(kernel + jitter * np.eye(size))
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(kernel)
        return vectors * np.sqrt(np.clip(values, 0.0, None))


@dataclass(frozen=True)
class GaussianProcess:
    """A squared-exponential GP on a fixed grid in [0, 1]^d, fixed hyper-parameters, observations at grid
    points (enough for a loop of a few dozen acquisitions)."""

    length_scale: float = 0.45
    signal_sd: float = 0.15
    noise_sd: float = 0.05

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return self.signal_sd ** 2 * np.exp(-0.5 * squared / self.length_scale ** 2)

    def prior_factor(self, grid_kernel: np.ndarray) -> np.ndarray:
        """F with F @ F.T = the prior covariance on the grid (cached: it depends only on the grid)."""
        return _factor(grid_kernel.tobytes(), len(grid_kernel)).copy()

    def _solve(self, grid_kernel: np.ndarray, index: np.ndarray, residual: np.ndarray) -> np.ndarray:
        k_xx = grid_kernel[np.ix_(index, index)] + self.noise_sd ** 2 * np.eye(len(index))
        return np.linalg.solve(k_xx, residual)

    def mean_and_sd(self, grid_kernel: np.ndarray, index: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at every grid point (prior mean: the observations' mean)."""
        prior = float(y.mean())
        k_gx = grid_kernel[:, index]
        k_xx = grid_kernel[np.ix_(index, index)] + self.noise_sd ** 2 * np.eye(len(index))
        chol = np.linalg.cholesky(k_xx)
        v = np.linalg.solve(chol, k_gx.T)
        mean = prior + k_gx @ np.linalg.solve(chol.T, np.linalg.solve(chol, y - prior))
        variance = np.diag(grid_kernel) - (v ** 2).sum(0)
        return mean, np.sqrt(np.clip(variance, 0.0, None))

    def sample(self, grid_kernel: np.ndarray, factor: np.ndarray, index: np.ndarray, y: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """One function drawn from the posterior at every grid point, by Matheron's rule: a draw from the
        prior, corrected by how it misses the (noisy) observations. Only an n×n system is solved per draw."""
        prior = float(y.mean())
        draw = factor @ rng.standard_normal(factor.shape[1])
        noise = rng.normal(0.0, self.noise_sd, len(index))
        correction = self._solve(grid_kernel, index, y - prior - draw[index] - noise)
        return prior + draw + grid_kernel[:, index] @ correction


class ThompsonOptimizer:
    """suggest() -> parameters to acquire with; observe(parameters, score, bleaching) -> learn from it.

    The score is explored by Thompson sampling; the bleaching budget is treated cautiously: a point
    counts as within budget when its posterior mean plus `caution` standard deviations is, so the loop
    does not try out parameters likely to burn the sample just because a random draw said they might not.
    Observations are placed at the nearest grid point (suggestions always are grid points). The first
    suggestions are `initial_points` if given, then random grid points until `initial_random` are known.
    """

    def __init__(self, axes: list[Axis], *, max_bleaching: float = 0.15, points_per_axis: int = 7,
                 initial_random: int = 4, initial_points: list[dict[str, float]] | None = None,
                 caution: float = 1.0, seed: int = 0,
                 score_gp: GaussianProcess | None = None, bleach_gp: GaussianProcess | None = None):
        self.axes = axes
        self.max_bleaching = max_bleaching
        self.initial_random = initial_random
        # Where to start instead of random points, e.g. the microscope's current settings.
        self.initial_points = list(initial_points or [])
        self.caution = caution
        self.rng = np.random.default_rng(seed)
        ticks = np.linspace(0.0, 1.0, points_per_axis)
        self.grid = np.array(list(itertools.product(ticks, repeat=len(axes))))
        # Defaults chosen on a 7×7×7 table of the simulator's expert label (docs/clients.md): a long
        # length scale and a modest prior spread make a 12-30 step loop exploit rather than roam.
        self.score_gp = score_gp or GaussianProcess(length_scale=0.45, signal_sd=0.15, noise_sd=0.05)
        self.bleach_gp = bleach_gp or GaussianProcess(length_scale=0.45, signal_sd=0.15, noise_sd=0.02)
        # The grid never changes: its prior covariances (and a factor for prior draws) are computed once.
        self._score_kernel = self.score_gp.kernel(self.grid, self.grid)
        self._bleach_kernel = self.bleach_gp.kernel(self.grid, self.grid)
        self._score_factor = self.score_gp.prior_factor(self._score_kernel)
        self.index: list[int] = []
        self.scores: list[float] = []
        self.bleaching: list[float] = []

    def parameters(self, unit_point: np.ndarray) -> dict[str, float]:
        return {axis.name: axis.value(u) for axis, u in zip(self.axes, unit_point, strict=True)}

    def _bleaching_bound(self) -> np.ndarray:
        mean, sd = self.bleach_gp.mean_and_sd(self._bleach_kernel, np.array(self.index), np.array(self.bleaching))
        return mean + self.caution * sd

    def _pick(self, score: np.ndarray) -> dict[str, float]:
        bleaching = self._bleaching_bound()
        feasible = bleaching <= self.max_bleaching
        index = int(np.argmax(np.where(feasible, score, -np.inf))) if feasible.any() else int(np.argmin(bleaching))
        return self.parameters(self.grid[index])

    def suggest(self) -> dict[str, float]:
        if len(self.index) < len(self.initial_points):
            return dict(self.initial_points[len(self.index)])
        if len(self.index) < self.initial_random:
            return self.parameters(self.grid[self.rng.integers(len(self.grid))])
        score = self.score_gp.sample(self._score_kernel, self._score_factor, np.array(self.index),
                                     np.array(self.scores), self.rng)
        return self._pick(score)

    def observe(self, parameters: dict[str, float], score: float, bleaching: float) -> None:
        point = np.array([axis.unit(parameters[axis.name]) for axis in self.axes])
        self.index.append(int(np.argmin(((self.grid - point) ** 2).sum(1))))
        self.scores.append(float(score))
        self.bleaching.append(float(bleaching))

    def recommendation(self) -> dict[str, float]:
        """The grid point with the best expected score among those within the budget (cautiously, as above)."""
        if not self.index:
            raise ValueError("no observations yet")
        score, _ = self.score_gp.mean_and_sd(self._score_kernel, np.array(self.index), np.array(self.scores))
        return self._pick(score)

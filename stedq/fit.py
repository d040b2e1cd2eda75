"""Does the model fit this image? A verdict on every result: `ok`, or the reasons the image lies outside
what the model was trained on.

A few cheap statistics of the image as photon counts (the pixel contract's model input × 65535) are
compared with the ranges the training images span (`FitStatistics`, computed by `stedq export` from the
training split and carried in the bundle's manifest):

| reason | when |
|---|---|
| `counts_high` / `counts_low` | peak counts (99.9th percentile) far outside the training range |
| `saturated` | at least 0.2 % of the pixels sit at the image's maximum (a clipped detector or file) |
| `stretched` | an integer image that reaches its dtype's maximum (255, 65535) with few pixels there: rescaled to the dtype's range, not counts |
| `normalised` | float values on the model scale that are not counts / 65535 (a normalised image) |
| `offset` | a background (5th percentile) far above anything trained on: a calibration offset left in |
| `pixel_size` | the file states a pixel size outside the trained range |
| `no_structure` | flat, or neighbouring pixels as unrelated as noise (lag-1 correlation below the training range) |

Numpy only: the server runs it on every image of a request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stedq.pixels import MODEL_COUNTS_PER_UNIT, Intensity

FIT_OK = "ok"
REASONS = ("counts_high", "counts_low", "saturated", "stretched", "normalised", "offset", "pixel_size",
           "no_structure")
DTYPE_MAX = {"uint8": 255, "uint16": 65535}
SATURATED_SHARE = 0.002   # share of pixels at the maximum that means clipping, not one bright pixel
FAR = 4.0                 # "far" outside a range: by this factor


@dataclass(frozen=True)
class FitStatistics:
    """What the training images span (0.5th to 99.5th percentiles over the training split)."""

    peak_low: float
    peak_high: float
    background_high: float
    neighbour_correlation_low: float
    pixel_nm_low: float = 15.0
    pixel_nm_high: float = 25.0
    images: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> FitStatistics:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    def to_dict(self) -> dict:
        return asdict(self)


ROW_STEP = 4   # the statistics read every 4th row (and the row below it): a quarter of the pixels


def neighbour_correlation(counts: np.ndarray, step: int = 1) -> float:
    """Correlation of pixels with their right and lower neighbours (on every `step`-th row and the row below
    it, whose mean and variance it uses): ~0 for noise or shuffled pixels, high where the point-spread
    function spreads structure over several pixels. Scale-free: counts or model input alike."""
    values = np.asarray(counts, np.float32)
    if values.shape[0] < 2 or values.shape[1] < 2:
        return 0.0
    rows = values[:-1:step]
    below = values[1::step][:len(rows)]
    n = rows.size + below.size
    mean = (float(rows.sum(dtype=np.float64)) + float(below.sum(dtype=np.float64))) / n
    centred, centred_below = rows - np.float32(mean), below - np.float32(mean)   # new, contiguous arrays
    flat, flat_below = centred.ravel(), centred_below.ravel()
    variance = (float(np.dot(flat, flat)) + float(np.dot(flat_below, flat_below))) / n   # BLAS, no temporaries
    if variance <= 0.0:
        return 0.0
    across = float(np.einsum("ij,ij->", centred[:, 1:], centred[:, :-1])) / (centred.shape[0] * (centred.shape[1] - 1))
    down = float(np.dot(flat, flat_below)) / flat.size
    return (across + down) / (2.0 * variance)


def image_features(model_input: np.ndarray) -> dict[str, float]:
    """Cheap statistics of one image as photon counts (about 0.1 ms for 224×224 on one core). Order
    statistics are taken on the model input and scaled after: the same float32 products as scaling first."""
    values = np.asarray(model_input, np.float32)
    scale = np.float32(MODEL_COUNTS_PER_UNIT)
    sample = values[::ROW_STEP].ravel()
    high, low = int(0.999 * (sample.size - 1)), int(0.05 * (sample.size - 1))
    ordered = np.partition(sample, (low, high))
    top = values.max()
    return {"peak_counts": float(ordered[high] * scale), "background_counts": float(ordered[low] * scale),
            "max_counts": float(top * scale), "at_max_share": float(np.count_nonzero(values == top)) / values.size,
            "neighbour_correlation": neighbour_correlation(values, ROW_STEP)}


PIXEL_NM_TOLERANCE = (0.75, 1.25)   # a pixel size this far beyond the trained ones is still in range
NOMINAL_PIXEL_NM = 20.0             # the trained pixel size where the training data does not record one


def statistics(model_inputs, pixel_sizes_nm=None) -> FitStatistics:
    """The ranges of a set of training images (model input), for the bundle's manifest. `pixel_sizes_nm`:
    the pixel sizes trained on (data 2.0 and later draw 15-35 nm per image); the range spans them, with
    PIXEL_NM_TOLERANCE beyond the smallest and the largest."""
    sizes = np.asarray([NOMINAL_PIXEL_NM] if pixel_sizes_nm is None or not len(pixel_sizes_nm) else pixel_sizes_nm,
                       np.float64)
    features = [image_features(image) for image in model_inputs]
    peaks = [f["peak_counts"] for f in features]
    return FitStatistics(
        peak_low=float(np.percentile(peaks, 0.5)), peak_high=float(np.percentile(peaks, 99.5)),
        background_high=float(np.percentile([f["background_counts"] for f in features], 99.5)),
        neighbour_correlation_low=float(np.percentile([f["neighbour_correlation"] for f in features], 0.5)),
        pixel_nm_low=PIXEL_NM_TOLERANCE[0] * float(sizes.min()), pixel_nm_high=PIXEL_NM_TOLERANCE[1] * float(sizes.max()),
        images=len(features))


@dataclass(frozen=True)
class FitQuery:
    """What the verdict needs to know of an image besides its model input: as it was sent."""
    dtype: str = "uint16"
    intensity: Intensity | str | None = None
    pixel_size_nm: float | None = None


def fit_verdicts(model_inputs, queries: list[FitQuery], stats: FitStatistics | None) -> list[list[str]]:
    return [check_fit(image, stats, dtype=q.dtype, intensity=q.intensity, pixel_size_nm=q.pixel_size_nm)
            for image, q in zip(model_inputs, queries, strict=True)]


def check_fit(model_input: np.ndarray, stats: FitStatistics | None, *, dtype: str = "uint16",
              intensity: Intensity | str | None = None, pixel_size_nm: float | None = None) -> list[str]:
    """The reasons the image lies outside the training distribution, or [FIT_OK]. `dtype` and
    `intensity` are the image's as sent (before the pixel contract made it model input)."""
    if stats is None:
        return [FIT_OK]
    f = image_features(model_input)
    reasons = []
    if f["peak_counts"] > FAR * stats.peak_high:
        reasons.append("counts_high")
    elif f["peak_counts"] < stats.peak_low / FAR:
        reasons.append("counts_low")
    limit = DTYPE_MAX.get(dtype)
    if f["at_max_share"] >= SATURATED_SHARE and f["max_counts"] > stats.peak_low:
        reasons.append("saturated")
    elif limit is not None and f["max_counts"] == limit:
        reasons.append("stretched")
    if dtype == "float32" and str(getattr(intensity, "value", intensity) or "model_scale") == "model_scale":
        counts = np.asarray(model_input, np.float64) * MODEL_COUNTS_PER_UNIT
        if np.abs(counts - np.round(counts)).mean() > 0.05:
            reasons.append("normalised")
    if f["background_counts"] > max(FAR * 25.0 * (stats.background_high + 1.0), 100.0):
        reasons.append("offset")
    if pixel_size_nm and not stats.pixel_nm_low <= pixel_size_nm <= stats.pixel_nm_high:
        reasons.append("pixel_size")
    if f["neighbour_correlation"] < 0.5 * stats.neighbour_correlation_low:
        reasons.append("no_structure")
    return reasons or [FIT_OK]

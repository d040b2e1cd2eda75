"""onnxruntime helpers for the exporter: a CPU session from bytes, batched scoring, a throughput probe."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from stedq.export.errors import ExportError


def cpu_session(model: bytes | str, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3   # quantized graphs log harmless warnings about unused initializers
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's exception types are not importable portably
        raise ExportError(f"onnxruntime cannot load the exported model: {exc}") from None


def score(session: ort.InferenceSession, images: np.ndarray, batch_size: int = 32,
          desc: str | None = None) -> np.ndarray:
    """images float32 (N, H, W) or (N, 1, H, W) in [0, 1] -> float32 (N,) scores."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    name = session.get_inputs()[0].name
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None, leave=False):
        (scores,) = session.run(None, {name: np.ascontiguousarray(images[start:start + batch_size])})
        out.append(np.asarray(scores, dtype=np.float32).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def images_per_second(sessions: dict[str, ort.InferenceSession], batch_size: int = 32, rounds: int = 5,
                      seconds: float = 1.0, seed: int = 0) -> dict[str, float]:
    """In-process throughput of each session at one batch size, best of `rounds`.

    The sessions take turns round by round, so a machine shared with other work slows them alike;
    the best round is the least disturbed one.
    """
    shape = [batch_size, 1, 224, 224]
    batch = np.random.default_rng(seed).random(shape, dtype=np.float32)
    best = dict.fromkeys(sessions, 0.0)
    for session in sessions.values():   # warm-up: first runs allocate and pick kernels
        session.run(None, {session.get_inputs()[0].name: batch})
    for _ in range(rounds):
        for name, session in sessions.items():
            feed = {session.get_inputs()[0].name: batch}
            runs, start = 0, time.perf_counter()
            while runs < 1 or time.perf_counter() - start < seconds:
                session.run(None, feed)
                runs += 1
            best[name] = max(best[name], runs * batch_size / (time.perf_counter() - start))
    return best

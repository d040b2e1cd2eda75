#!/usr/bin/env python3
"""How fast can INT8 make QualityNet on this CPU? Speed only, no accuracy (issue #33, step 3).

    python scripts/int8_ceiling.py [--rounds 7] [--seconds 2] [--out runs/int8-ceiling.json]

Builds QualityNet with seeded random weights twice, as shipped (ELU) and with ReLU in its place, exports
each as `stedq export` does (normalization inside, batch norm folded), quantizes every convolution and
fully connected layer (static QDQ, per-channel S8 weights, U8 activations, as stedq.export.variants does)
and times FP32 against INT8 in-process, interleaved round by round, at batch 1 and 32. It also counts
what onnxruntime's optimized graph still runs in float: ELU has no INT8 kernel, so each block goes back
to float around it; ReLU folds into the quantized convolution. Random weights give meaningless scores
but the same arithmetic, so the timings are those of a trained model. Run it on an idle machine
(load average below 1): it measures ratios side by side, never against a stored figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from stedq.export.onnx_graph import export_onnx
from stedq.export.variants import RELU_INT8_OPS, quantize_int8
from stedq.training.model import NormalizedQualityNet, QualityNet


def build(activation: str, seed: int = 0) -> onnx.ModelProto:
    torch.manual_seed(seed)
    net = QualityNet(activation=activation).eval()
    return export_onnx(NormalizedQualityNet(net, mean=0.0003, std=0.0005).eval())


def session(model: onnx.ModelProto, threads: int, optimized_path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def images_per_second(sess: ort.InferenceSession, batch: np.ndarray, seconds: float) -> float:
    name = sess.get_inputs()[0].name
    sess.run(None, {name: batch})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(None, {name: batch})
        runs += 1
    return runs * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per point and round")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("runs/int8-ceiling.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    # Photon-count-like images scaled as the pixel contract does (counts / 65535): the calibration range.
    calibration = (rng.poisson(rng.uniform(1, 40, (64, 1, 1)), (64, 224, 224)) / 65535).astype(np.float32)
    batches = {size: calibration[:size, None].copy() for size in (1, 32)}
    sessions, graph_ops = {}, {}
    with tempfile.TemporaryDirectory(prefix="stedq-int8-ceiling-") as tmp:
        for activation in ("elu", "relu"):
            fp32 = build(activation)
            for precision, model in (("fp32", fp32), ("int8", quantize_int8(fp32, calibration, "all", also_quantize=RELU_INT8_OPS))):
                key = f"{activation}-{precision}"
                optimized = Path(tmp, f"{key}.onnx")
                sessions[key] = session(model, args.threads, optimized)
                graph_ops[key] = dict(Counter(node.op_type for node in onnx.load(optimized).graph.node))
                print(key, graph_ops[key], flush=True)

    rates: dict[str, dict[int, list[float]]] = {key: {1: [], 32: []} for key in sessions}
    for round_index in range(args.rounds):
        for size, batch in batches.items():
            for key, sess in sessions.items():
                rates[key][size].append(images_per_second(sess, batch, args.seconds))
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{key} b32 {rates[key][32][-1]:.0f}/s" for key in sessions), flush=True)

    result = {"threads": args.threads, "rounds": args.rounds, "seconds_per_point": args.seconds,
              "load_average_before": load_before, "graph_ops": graph_ops, "images_per_s": {}, "int8_speedup": {}}
    for key in sessions:
        result["images_per_s"][key] = {size: float(np.median(v)) for size, v in rates[key].items()}
    for activation in ("elu", "relu"):
        for size in (1, 32):
            paired = np.array(rates[f"{activation}-int8"][size]) / np.array(rates[f"{activation}-fp32"][size])
            result["int8_speedup"][f"{activation} batch {size}"] = {
                "median": float(np.median(paired)), "min": float(paired.min()), "max": float(paired.max())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["images_per_s"], indent=1), json.dumps(result["int8_speedup"], indent=1), sep="\n")


if __name__ == "__main__":
    main()

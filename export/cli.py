"""`stedq export`: a training checkpoint to an ONNX model bundle the server loads."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  stedq export runs/default --out stedq/models/quality --model-version 1.0.0
      FP32 + INT8 + FP16, images from the dataset the checkpoint was trained on
  stedq export runs/q1/best.pt --out models/q1 --data data/synth --variants int8
  stedq export --untrained --out /tmp/placeholder      random-weights bundle for development
  stedq export --triton triton-models                  the bundled model as a Triton model repository

The bundle's FP32 model must match PyTorch within --parity-tolerance at batch 1, 7, 32 and 64, or
nothing is written. INT8 and FP16 are written only when they pass the accuracy gate against FP32 on
the test split (mean |Δscore| <= --max-mean-abs-diff and Spearman >= --min-spearman).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to an ONNX model bundle (FP32, INT8, FP16)",
        description="Export a trained QualityNet checkpoint to an ONNX model bundle: normalization "
                    "inside the graph, parity-checked against PyTorch, with gated INT8/FP16 variants, "
                    "a manifest and a bioimage.io rdf.yaml.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="training run folder (uses best.pt) or checkpoint .pt file")
    parser.add_argument("--out", help="bundle folder to write (created or updated in place)")
    parser.add_argument("--triton", metavar="DIR",
                        help="instead: write a Triton model repository (config.pbtxt + 1/model.onnx) for the "
                             "bundle folder given as CHECKPOINT (default: the bundled model)")
    parser.add_argument("--name", default="quality", help="model name in the manifest (default: quality)")
    parser.add_argument("--model-version", default=None,
                        help="model version in the manifest (default: 1.0.0; 0.0.0-untrained with --untrained)")
    parser.add_argument("--variants", default="int8,fp16",
                        help="comma-separated variants besides FP32: int8, fp16, or 'none' (default: int8,fp16)")
    parser.add_argument("--data", help="labelled dataset folder: train split calibrates INT8, test split gates "
                                       "the variants (default: the checkpoint's data path, if it exists)")
    parser.add_argument("--calibration-data", help="folder of images for INT8 calibration (overrides --data)")
    parser.add_argument("--test-data", help="folder of images for the accuracy gate (overrides --data)")
    parser.add_argument("--calibration-images", type=int, default=256,
                        help="at most this many calibration images (default: 256)")
    parser.add_argument("--test-images", type=int, default=None, help="at most this many test images (default: all)")
    parser.add_argument("--int8-placements", default=None,
                        help="INT8 layer placements to try in order until one passes the gate: convK-6 "
                             "quantizes convolutions K..6 (K = 2..6; earlier ones and the FC head stay "
                             "FP32), all quantizes every Conv and Gemm (default: all, then conv2-6 to conv5-6: fastest first)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 20)")
    parser.add_argument("--parity-tolerance", type=float, default=1e-5,
                        help="max |ONNX - PyTorch| allowed (default: 1e-5)")
    parser.add_argument("--max-mean-abs-diff", type=float, default=0.01,
                        help="accuracy gate: max mean |Δscore| of a variant vs FP32 (default: 0.01)")
    parser.add_argument("--min-spearman", type=float, default=0.99,
                        help="accuracy gate: min Spearman correlation with FP32 (default: 0.99)")
    parser.add_argument("--measure-speed", action="store_true",
                        help="measure images/s of each variant (onnxruntime CPU, batch 32) into the manifest")
    parser.add_argument("--no-rdf", dest="rdf", action="store_false", help="do not write rdf.yaml and its files")
    parser.add_argument("--untrained", action="store_true",
                        help="export random weights (placeholder for development; no checkpoint needed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --untrained weights (default: 0)")
    parser.set_defaults(func=run)


def _triton(args: argparse.Namespace) -> int:
    from pathlib import Path

    import stedq
    from stedq.bundle import BundleError
    from stedq.export.triton import write_triton_repository

    bundle = Path(args.checkpoint) if args.checkpoint else stedq.DEFAULT_MODEL_DIR
    try:
        model_dir = write_triton_repository(bundle, Path(args.triton))
    except (BundleError, OSError, ValueError) as exc:
        print(f"stedq export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {model_dir} (config.pbtxt, 1/model.onnx): serve with "
          f"`tritonserver --model-repository {Path(args.triton)}`")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stedq.export.checkpoint import read_checkpoint, untrained_checkpoint
    from stedq.export.errors import ExportError
    from stedq.export.images import load_images, pixel_sizes_nm
    from stedq.export.onnx_graph import DEFAULT_OPSET
    from stedq.export.variants import DEFAULT_INT8_PLACEMENTS, INT8_PLACEMENTS
    from stedq.export.writer import ExportOptions, export_bundle

    if args.triton:
        return _triton(args)
    try:
        if not args.out:
            raise ExportError("give --out BUNDLE_DIR (or --triton DIR to write a Triton model repository)")
        if args.untrained == bool(args.checkpoint):
            raise ExportError("give a CHECKPOINT (run folder or .pt file), or --untrained for a placeholder")
        variants = tuple(v.strip().lower() for v in args.variants.split(",") if v.strip())
        variants = () if variants == ("none",) else variants
        bad = [v for v in variants if v not in ("int8", "fp16")]
        if bad:
            raise ExportError(f"--variants: unknown {', '.join(bad)} (choose from int8, fp16, none)")
        placements = DEFAULT_INT8_PLACEMENTS if args.int8_placements is None else \
            tuple(p.strip() for p in args.int8_placements.split(",") if p.strip())
        bad = [p for p in placements if p != "all" and p not in INT8_PLACEMENTS]
        if bad or not placements:
            raise ExportError(f"--int8-placements: unknown {', '.join(bad) or 'empty list'} "
                              f"(choose from {', '.join(INT8_PLACEMENTS)}, all)")
        checkpoint = untrained_checkpoint(args.seed) if args.untrained else read_checkpoint(args.checkpoint)

        calibration = test = fit_images = fit_pixel_sizes = None
        data = args.data or (checkpoint.get("data") or {}).get("path") or None
        # From the training dataset, take the checkpoint's own split (names recorded by `stedq train`).
        split = (checkpoint.get("data") or {}).get("split") or {}
        if data and Path(data).is_dir():   # the fit verdict's statistics: the whole training split
            fit_images = load_images(data, "train", names=split.get("train"))
            fit_pixel_sizes = pixel_sizes_nm(data, split.get("train"))
        if variants:
            if data and not Path(data).is_dir():
                if args.data:
                    raise ExportError(f"--data {data}: no such folder")
                print(f"note: the checkpoint's dataset {data} is not here; give --data to build variants",
                      file=sys.stderr)
                data = None
            if args.test_data or data:
                test = load_images(args.test_data or data, "test", limit=args.test_images,
                                   names=None if args.test_data else split.get("test"))
            if (args.calibration_data or data) and "int8" in variants:
                calibration = load_images(args.calibration_data or data, "train", limit=args.calibration_images,
                                          names=None if args.calibration_data else split.get("train"))

        options = ExportOptions(
            name=args.name,
            version=args.model_version or ("0.0.0-untrained" if args.untrained else "1.0.0"),
            variants=variants, int8_placements=placements, opset=args.opset or DEFAULT_OPSET, parity_tolerance=args.parity_tolerance,
            max_mean_abs_diff=args.max_mean_abs_diff, min_spearman=args.min_spearman,
            calibration_images=calibration, test_images=test, measure_speed=args.measure_speed,
            fit_images=fit_images, fit_pixel_sizes_nm=fit_pixel_sizes,
            write_rdf=args.rdf)
        report = export_bundle(checkpoint, args.out, options)
    except ExportError as exc:
        print(f"stedq export: error: {exc}", file=sys.stderr)
        return 1

    print(f"wrote {report.out}  ({report.manifest.name} {report.manifest.version})")
    print(f"  parity vs PyTorch: max |Δ| {max(report.parity.values()):.2g} "
          f"(batch {', '.join(report.parity)})")
    for variant, filename in report.manifest.variants.items():
        size = (report.out / filename).stat().st_size / 1e6
        line = f"  {variant:5s} {filename:16s} {size:6.1f} MB"
        if variant in report.gates:
            gate = report.gates[variant]
            line += (f"  gate on {gate.n_images} test images: mean |Δ| {gate.mean_abs_diff:.4f}, "
                     f"Spearman {gate.spearman:.4f}" + (f" ({gate.placement})" if gate.placement else ""))
        if variant in report.speed:
            line += f"  {report.speed[variant]:.0f} images/s (CPU, batch 32)"
        print(line)
    for variant, reason in report.skipped.items():
        print(f"  {variant:5s} not written: {reason}")
    return 0

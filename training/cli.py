"""`stedq data` (registered from stedq.training.data.cli), `stedq train`, `stedq evaluate`, `stedq ensemble`.

Heavy imports (torch, scipy, matplotlib) happen inside the handlers so `stedq --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from stedq.training.config import ACTIVATIONS, INPUT_TRANSFORMS, PAIR_LOSSES, SCORE_LOSSES
from stedq.training.data import cli as data_cli

# Flag help for TrainConfig fields (train.py holds the defaults; this holds the words).
TRAIN_HELP = {
    "seed": "seed of the weights, epoch order, augmentation and dropout",
    "split_seed": "seed of the 80/10/10 train/validation/test split",
    "val_fraction": "share of images held out for validation (early stopping)",
    "test_fraction": "share of images held out for testing",
    "epochs": "most epochs (early stopping usually stops first)",
    "patience": "stop after this many epochs without a better validation loss",
    "batch_size": "images per SGD step",
    "lr": "SGD learning rate (the first epoch's, with --lr-schedule cosine)",
    "lr_schedule": "constant (the paper) or cosine: the learning rate falls along a half cosine to 0 at "
                   "--epochs (not in the paper: settles the weights; set --epochs to the planned length)",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay (L2)",
    "augment": "add a flipped/rotated copy of every training image each epoch (doubles the set)",
    "balanced": "sample training images evenly over the five target bins (the data is unbalanced)",
    "crop_share": "share of training items replaced by a random 64-223 px crop, padded by mirroring as the "
                  "server pads small images (not in the paper: teaches the model small images; 0 = off)",
    "thin_share": "share of training items replaced by the same image with 10-80 %% of its photons (binomial "
                  "thinning), labelled by the virtual expert's rule (not in the paper: fewer photons must "
                  "score lower; needs the synthetic labels.csv; 0 = off)",
    "floor_share": "share of training items given a background floor: Poisson photons of a smooth haze at "
                   "2-35 %% of the image's signal (out-of-focus light, STED re-excitation), labelled by the "
                   "virtual expert's rule (not in the paper: a floor costs only the SNR it takes; needs the "
                   "synthetic labels.csv; 0 = off)",
    "blur_share": "share of training items replaced by the same photons through a wider PSF (Gaussian blur "
                  "of 0.7-6 px, detected anew), labelled by the virtual expert's rule with the resolution "
                  "widened in quadrature (not in the paper: a smooth image of the same photons is a worse "
                  "image, not a cleaner one; needs the synthetic labels.csv; 0 = off)",
    "defocus_share": "share of training items replaced by the same photons blurred to an out-of-focus "
                     "resolution (370-940 nm FWHM), labelled by the virtual expert's rule with the structure "
                     "shown measured anew (not in the paper: the generator's few out-of-focus images are "
                     "underfit; needs the synthetic labels.csv; 0 = off)",
    "clip_share": "share of training items clipped at 10-30 %% of their peak, as a saturated detector "
                  "records them, labelled by the virtual expert's rule (not in the paper: the generator's few "
                  "saturated images are underfit; needs the synthetic labels.csv; 0 = off)",
    "loss": "the scores' loss: mse (the paper's squared error) or bce (not in the paper: binary "
            "cross-entropy against the label as a soft target, minimal at the label as the squared error "
            "is; through the sigmoid its push on a wrong score is proportional to the error, where the "
            "squared error's fades by p(1-p) near 0 and 1: an image of no quality scored 0.07 is pushed "
            "7x harder). Reported RMSE and early stopping stay on the squared error",
    "pair_share": "append to each batch this share of its size as pairs: an item and a copy of it with "
                  "fewer photons (60 %%) or blurred (40 %%), both uncropped; the loss adds --pair-weight x "
                  "the squared error of their score difference against the rule's label difference, which "
                  "is free of labeller noise (not in the paper: ranks each image above its own degraded "
                  "copies; needs the synthetic labels.csv; 0 = off)",
    "pair_weight": "weight of the pairs' difference loss (see --pair-share)",
    "pair_loss": "the pairs' loss: mse (squared error of the score difference against the label "
                 "difference) or hinge (only a copy that does not lose at least its label's drop is "
                 "penalized, linearly: every pair counts alike, not just the large blur drops) or "
                 "mse+hinge (both: the hinge orders each pair, the squared error keeps the drop's size)",
    "activation": "the network's activation: elu (the paper's) or relu (not in the paper: it folds into "
                  "onnxruntime's INT8 convolutions, so an INT8 export runs INT8 from input to head; see "
                  "scripts/int8_ceiling.py)",
    "saturation_factor": "multiply the network's score by the virtual expert's saturation factor measured "
                         "on the image (of the pixels at least half the maximum, the share at the maximum: "
                         "1 for an unclipped image, down to 0.15), in training and in the exported graph "
                         "(not in the paper: the network does not learn clipping, clipped copies scored "
                         "0.50 against the rule's 0.09)",
    "structure_factor": "multiply the network's score by a structure factor measured on the image: 0 where "
                        "its pixels are as unrelated to their neighbours as noise (mean lag-1 correlation "
                        "<= 0.02: a shuffled or empty field), 1 from 0.10, linear between; in training and "
                        "in the exported graph (not in the paper: the network scored such images a few "
                        "hundredths above 0 even on its training images)",
    "input_transform": "what the network sees of the image before the training set's mean/std: linear "
                       "(the paper's: counts / 65535) or log (log(1 + counts), not in the paper: dim and "
                       "bright images a thousandfold apart in counts then lie within a few times of each "
                       "other, which an INT8 export's one scale per tensor can cover)",
    "precise_bn": "after each epoch, recompute the batch-norm statistics over this many training items "
                  "(as the epoch feeds them) instead of the running average of the last ~10 batches; "
                  "steadier validation (not in the paper; 0 = off)",
    "device": "auto = CUDA when available, else CPU",
    "precision": "auto = bfloat16 autocast where the hardware has it natively, else fp32",
    "channels_last": "channels-last memory layout (faster convolutions on CPU)",
    "threads": "torch intra-op threads (0 = torch's default)",
    "max_minutes": "stop before an epoch that would end past this many minutes (0 = no limit)",
}
CHOICES = {"device": ["auto", "cpu", "cuda"], "precision": ["auto", "bf16", "fp32"],
           "lr_schedule": ["constant", "cosine"], "pair_loss": list(PAIR_LOSSES), "loss": list(SCORE_LOSSES),
           "activation": list(ACTIVATIONS), "input_transform": list(INPUT_TRANSFORMS)}

TRAIN_EPILOG = """\
writes OUT/best.pt (best validation weights, written when training ends), OUT/last.pt (every epoch),
OUT/log.csv, OUT/log.json, OUT/curves.png and OUT/split.json.

the default model:
  stedq train data/synth/actin --out runs/default --seed 0
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    data_cli.register(subparsers)
    from stedq.training.config import TrainConfig  # torch-free

    train = subparsers.add_parser(
        "train", help="train QualityNet as in the paper",
        description="Train QualityNet with the paper's protocol (defaults): 80/10/10 split, flips and "
                    "rotations, SGD momentum 0.9, lr 0.01, batch 100, MSE, early stopping (patience 10).",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", type=Path, help="labelled dataset folder (images named <name>-<score>.tiff)")
    train.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<data folder>-seed<seed>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not MISSING else None
        help_text = f"{TRAIN_HELP[field.name]} (default: {default})"
        if field.type in ("bool", bool):
            train.add_argument(flag, dest=field.name, default=default, action=argparse.BooleanOptionalAction,
                               help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(field.type), str)
            train.add_argument(flag, dest=field.name, type=kind, default=default,
                               choices=CHOICES.get(field.name), help=help_text)
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser(
        "evaluate", help="paper metrics on the test split and user-study records",
        description="The paper's evaluation: regression metrics on the held-out test split, the user study "
                    "(confusion/domination vs the random baseline) with simulated testers and/or human "
                    "records, generalization to unseen structures, and the monotonicity check.",
        epilog="writes RUN/evaluation/{report.md,metrics.json,scatter.png,study_tpe.png,study_records.csv,"
               "monotonicity.png}; with --real, OUT/{report.md,figures.json,scores.png}\n\nexamples:\n"
               "  stedq evaluate runs/default --unseen data/synth/tubulin\n"
               "  stedq evaluate --real validation/real-dev                  # the bundled model, in-process\n"
               "  stedq evaluate --real validation/real-dev --server localhost:50051  # a running server\n"
               "  stedq evaluate --real validation/real-dev --model runs/new/bundle --out real-new\n"
               "  stedq evaluate --crops data/crops-eval/actin --out docs/small-images",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("run", type=Path, nargs="?",
                          help="training run folder (its best.pt) or a checkpoint file (not with --real)")
    evaluate.add_argument("--data", type=Path, default=None,
                          help="dataset the run was trained on (default: the path recorded in the checkpoint)")
    evaluate.add_argument("--unseen", type=Path, action="append", default=[], metavar="FOLDER",
                          help="labelled dataset never trained on, e.g. data/synth/tubulin (repeatable)")
    evaluate.add_argument("--records", type=Path, action="append", default=[], metavar="CSV",
                          help="human tester records (tester,image_id,system,target,prediction,choice)")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="output folder (default: RUN/evaluation; with --real, real-NAME-VERSION)")
    evaluate.add_argument("--testers", type=int, default=5, help="simulated testers (default: 5)")
    evaluate.add_argument("--tester-noise", type=float, nargs=2, default=(0.03, 0.12), metavar=("LOW", "HIGH"),
                          help="simulated testers' perception noise, spread from LOW to HIGH (default: 0.03 0.12)")
    evaluate.add_argument("--tester-tolerance", type=float, default=0.05,
                          help="score difference a simulated tester calls equal (default: 0.05)")
    evaluate.add_argument("--monotonic-samples", type=int, default=3,
                          help="simulated samples for the monotonicity check, 0 skips it (default: 3)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the testers and the random baseline")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")
    evaluate.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="fp32", help="(default: fp32)")
    evaluate.add_argument("--no-update-checkpoint", dest="update_checkpoint", action="store_false",
                          help="do not write the test metrics into the checkpoint")
    real = evaluate.add_argument_group(
        "real images (--real)", "score real STED images and their physical degradations; report the checks an "
        "expert would make (no training run needed). Scored in-process unless --server is given.")
    real.add_argument("--real", type=Path, metavar="DIR",
                      help="folder laid out like validation/real-dev: originals/*.tif, degraded/NAME__KIND.tif")
    real.add_argument("--model", type=Path, default=None, metavar="BUNDLE",
                      help="model bundle or .onnx scored in-process (default: the bundled model)")
    real.add_argument("--variant", choices=["fp32", "int8", "fp16"], default="fp32",
                      help="bundle variant scored in-process (default: fp32); int8 or fp16 are also compared "
                           "with the bundle's FP32 on every file: the export's accuracy gate on real images")
    real.add_argument("--crops", type=Path, metavar="DATA",
                      help="labelled synthetic folder: Spearman of centre crops (64-223 px) against the full "
                           "image, in-process (the small-image figure); writes OUT/crops.{json,png}")
    from stedq.clients.cli import add_client_arguments  # grpc only, no server

    add_client_arguments(real)  # --server HOST:PORT scores through that server instead of in-process
    evaluate.set_defaults(func=_evaluate)

    ensemble = subparsers.add_parser(
        "ensemble", help="combine runs trained alike (other seeds) into one model: the mean of their scores",
        description="Combine two or more training runs into one checkpoint whose score is the mean of the "
                    "runs' scores (each at its best epoch). The runs must share the data, the split, the "
                    "normalization and the network's options (in practice: one `stedq train` command with "
                    "different --seed). Inference costs the members' work summed.",
        epilog="examples:\n  stedq ensemble runs/v26 runs/v27 --out runs/ens-v26-v27\n"
               "  stedq evaluate runs/ens-v26-v27 --unseen data/synth5/tubulin\n"
               "  stedq export runs/ens-v26-v27 --out runs/ens-v26-v27/bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ensemble.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                          help="training run folders (their best.pt) or checkpoint files")
    ensemble.add_argument("--out", type=Path, required=True, help="folder for the ensemble's best.pt")
    ensemble.set_defaults(func=_ensemble)


def load_dataset(path: Path):
    """Our Dataset from a labelled folder, or SystemExit with the loader's message (it names the file)."""
    import numpy as np

    from stedq.training.data import DatasetError, load_labelled_folder
    from stedq.training.data.label import LABEL_INPUTS
    from stedq.training.data.loader import label_columns
    from stedq.training.train import Dataset

    try:
        ds = load_labelled_folder(path)
    except DatasetError as exc:
        raise SystemExit(f"stedq: {exc}") from None
    structures = sorted(set(getattr(ds, "structures", []) or []))
    description = getattr(ds, "description", "") or (
        f"{len(ds.labels)} labelled images from {path}" + (f" ({', '.join(structures)})" if structures else ""))
    clean = getattr(ds, "labels_clean", None)
    if clean is None:
        clean = label_columns(path, list(ds.names), ("label_clean",))
        clean = None if clean is None else clean[:, 0]
    pixel_nm = label_columns(path, list(ds.names), ("pixel_nm",))
    return Dataset(images=ds.images, labels=ds.labels, names=list(ds.names), path=str(path),
                   hash=str(ds.content_hash), description=description,
                   labels_clean=None if clean is None else np.asarray(clean, dtype=np.float64),
                   structures=list(getattr(ds, "structures", []) or []),
                   label_components=label_columns(path, list(ds.names), LABEL_INPUTS),
                   pixel_nm=None if pixel_nm is None else pixel_nm[:, 0])


def _unseen_name(folder: Path, folders: list[Path]) -> str:
    """The folder's name in the report, with its parent's when two --unseen folders share a name
    (data/a/tubulin and data/b/tubulin would otherwise overwrite each other)."""
    if sum(f.name == folder.name for f in folders) > 1:
        return f"{folder.parent.name}/{folder.name}"
    return folder.name


def _train(args: argparse.Namespace) -> int:
    from stedq.training.config import TrainConfig
    from stedq.training.train import TrainingError, train

    config = TrainConfig.from_dict(vars(args))
    out = args.out or Path("runs") / f"{args.data.name}-seed{config.seed}"
    ds = load_dataset(args.data)
    try:
        summary = train(ds, out, config, resume=args.resume)
    except TrainingError as exc:
        raise SystemExit(f"stedq train: {exc}") from None
    test = summary["metrics"].get("test", {})
    print(json.dumps({"run": str(out), "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                      "stopped": summary["stopped"], "best_val_rmse": round(summary["best_val_rmse"], 4),
                      "mean_epoch_seconds": round(summary["mean_epoch_seconds"], 1),
                      "test": test}, indent=2), file=sys.stdout)
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from stedq.training.checkpoint import CheckpointError
    from stedq.training.ensemble import write_ensemble

    try:
        path, ensemble = write_ensemble(args.runs, args.out)
    except CheckpointError as exc:
        raise SystemExit(f"stedq ensemble: {exc}") from None
    seeds = ensemble["config"]["seed"]
    print(f"wrote {path}: the mean of {ensemble['ensemble']['members']} runs (seeds "
          f"{', '.join(map(str, seeds)) if isinstance(seeds, list) else f'all {seeds}'}; epochs "
          f"{', '.join(map(str, ensemble['epoch']))})\n"
          f"next: stedq evaluate {args.out}   and   stedq export {args.out} --out BUNDLE")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.crops is not None:
        from stedq.training.real_cli import evaluate_crops

        return evaluate_crops(args)
    if args.real is not None:
        from stedq.training.real_cli import evaluate_real

        return evaluate_real(args)
    if args.run is None:
        raise SystemExit("stedq evaluate: give a training run folder (RUN), --real DIR for real images or "
                         "--crops DATA for small images")
    from stedq.training.checkpoint import CheckpointError, load_checkpoint
    from stedq.training.evaluate import EvalOptions, EvaluationError, evaluate
    from stedq.training.userstudy import RecordsError

    try:
        checkpoint = load_checkpoint(args.run)
        data_path = args.data or Path(checkpoint["data"].get("path") or "")
        if not str(data_path) or str(data_path) == ".":
            raise SystemExit(f"stedq evaluate: {checkpoint['path']} records no data path; pass --data")
        ds = load_dataset(data_path)
        unseen = {_unseen_name(folder, args.unseen): load_dataset(folder) for folder in args.unseen}
        options = EvalOptions(testers=args.testers, tester_noise=tuple(args.tester_noise),
                              tester_tolerance=args.tester_tolerance, seed=args.seed,
                              monotonic_samples=args.monotonic_samples, device=args.device,
                              precision=args.precision, records=args.records,
                              update_checkpoint=args.update_checkpoint)
        results = evaluate(args.run, ds, unseen, options, out=args.out)
    except (CheckpointError, EvaluationError, RecordsError) as exc:
        raise SystemExit(f"stedq evaluate: {exc}") from None
    brief = {"test": results["test"]["metrics"],
             "unseen": {k: v["metrics"] for k, v in results.get("unseen", {}).items()},
             "network_beats_random_confusion_in_all_bins":
                 results["simulated_study"]["network_beats_random_confusion_in_all_bins"],
             "monotonic": {k: v["mean_decreasing"] for k, v in results.get("monotonicity", {}).items()},
             "report": str(Path(args.out or Path(results["checkpoint"]).parent / "evaluation") / "report.md")}
    print(json.dumps(brief, indent=2))
    return 0

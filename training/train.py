"""Training QualityNet with the paper's protocol (Robitaille et al. 2018, "Training"):

80/10/10 split, flips and 90° rotations doubling the training set, SGD (momentum 0.9, lr 0.01),
batch 100, MSE loss, early stopping with patience 10 on the validation loss, best weights kept.

Run folder (OUT): best.pt (written when training ends), last.pt (every epoch; --resume continues it),
log.csv, log.json, curves.png, split.json. Determinism: the split comes from --split-seed, the weights
and every epoch's order/augmentation/dropout from --seed and the epoch number, so a resumed run
repeats what an uninterrupted one would have done.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stedq import __version__
from stedq.training.augment import (
    PAIR_THIN_SHARE,
    dihedral,
    padded_crops,
    pair_loss,
    photon_variants,
    score_loss,
)
from stedq.training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from stedq.training.config import INPUT_TRANSFORMS, PAIR_LOSSES, SCORE_LOSSES, TrainConfig
from stedq.training.inference import autocast, pick_device, predict_scores, resolve_precision, to_batch
from stedq.training.metrics import per_bin_metrics, regression_metrics
from stedq.training.model import INPUT_SIZE, QualityNet, rule_factor, transform_input
from stedq.training.userstudy import BINS, bin_index

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """What training needs from a dataset: (N, H, W) float32 images in [0, 1], labels in [0, 1]."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    path: str = ""
    hash: str = ""
    description: str = ""
    labels_clean: np.ndarray | None = None   # noise-free quality, where synthetic data records it
    structures: list[str] = field(default_factory=list)
    # (N, 4) label inputs in stedq.training.data.label.LABEL_INPUTS order, where synthetic data records
    # them: what --thin-share and --floor-share need to label a changed copy by the same rule
    label_components: np.ndarray | None = None
    pixel_nm: np.ndarray | None = None       # (N,) pixel size, where recorded: what --blur-share needs


class TrainingError(ValueError):
    """Data or run folder that training cannot use; the message says which and why."""


# --- data --------------------------------------------------------------------------------------------

def check_dataset(ds: Dataset) -> None:
    where = ds.path or "dataset"
    n = len(ds.images)
    if n == 0:
        raise TrainingError(f"{where}: no images")
    if ds.images.ndim != 3 or ds.images.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise TrainingError(f"{where}: images are {tuple(ds.images.shape[1:])}; QualityNet takes "
                            f"{INPUT_SIZE}x{INPUT_SIZE} (crop or tile them first)")
    if len(ds.labels) != n or len(ds.names) != n:
        raise TrainingError(f"{where}: {n} images but {len(ds.labels)} labels and {len(ds.names)} names")
    bad = np.flatnonzero(~((ds.labels >= 0) & (ds.labels <= 1)))
    if bad.size:
        raise TrainingError(f"{where}: {ds.names[bad[0]]}: label {float(ds.labels[bad[0]]):g} outside [0, 1]"
                            + (f" (and {bad.size - 1} more)" if bad.size > 1 else ""))
    if n < 10:
        raise TrainingError(f"{where}: {n} images are too few to split 80/10/10 (need at least 10)")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise TrainingError(f"bad split fractions: val {val_fraction}, test {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = max(1, round(n * val_fraction)), round(n * test_fraction)
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:])}


def epoch_plan(train_labels: np.ndarray, config: TrainConfig, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions into the training split, dihedral transform 0..7 per item) for one epoch."""
    rng = np.random.default_rng([config.seed, epoch])
    n = len(train_labels)

    def draw() -> np.ndarray:
        if not config.balanced:
            return np.arange(n)
        bins = np.array([bin_index(t) for t in train_labels])
        weight = 1.0 / np.bincount(bins, minlength=len(BINS))[bins]
        return rng.choice(n, size=n, replace=True, p=weight / weight.sum())

    items, transforms = [draw()], [np.zeros(n, dtype=int)]
    if config.augment:  # the paper doubles the training set with flips and 90° rotations
        items.append(draw())
        transforms.append(rng.integers(1, 8, size=n))
    items_all, transforms_all = np.concatenate(items), np.concatenate(transforms)
    order = rng.permutation(len(items_all))
    return items_all[order], transforms_all[order]


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of one epoch (1-based); a function of the epoch alone, so --resume repeats it."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(config.epochs, 1)))
    if config.lr_schedule != "constant":
        raise TrainingError(f"unknown --lr-schedule {config.lr_schedule!r} (constant or cosine)")
    return config.lr


# --- run folder --------------------------------------------------------------------------------------

LOG_COLUMNS = ("epoch", "train_loss", "train_rmse", "val_loss", "val_rmse", "lr", "seconds",
               "images_per_s", "best")


def write_logs(out: Path, history: list[dict], summary: dict) -> None:
    with (out / "log.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in LOG_COLUMNS})
    (out / "log.json").write_text(json.dumps({**summary, "history": history}, indent=2) + "\n")


def plot_curves(history: list[dict], best_epoch: int | None, png: Path, title: str = "") -> Path:
    """Train/validation RMSE per epoch with the early-stopping point (the paper's Figure 5)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(epochs, [h["train_rmse"] for h in history], label="training RMSE", marker=".")
    ax.plot(epochs, [h["val_rmse"] for h in history], label="validation RMSE", marker=".")
    if best_epoch is not None:
        best = next(h for h in history if h["epoch"] == best_epoch)
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"kept: epoch {best_epoch}\nval RMSE {best['val_rmse']:.3f}", (best_epoch, best["val_rmse"]),
                    textcoords="offset points", xytext=(8, 12), fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.set_title(title or "QualityNet learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
            "python": repr(random.getstate())}


# --- training ----------------------------------------------------------------------------------------

@torch.no_grad()
def precise_batch_norm(model: nn.Module, batches, device: torch.device, precision: str) -> None:
    """Replace every batch-norm layer's running mean/variance by their average over `batches` (an iterable
    of training inputs, made one at a time), dropout off ("precise BN", Wu & Johnson 2021). The default
    running statistics average the last ~10 batches (momentum 0.1) and swung the validation RMSE by several
    hundredths from epoch to epoch here, at a learning rate near 0."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None            # cumulative average over the batches below
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    for x in batches:
        with autocast(device, precision):
            model(x)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train()


def _validate(model, images, labels, mean, std, device, precision, config) -> float:
    pred = predict_scores(model, images, mean, std, device, precision, config.batch_size, config.channels_last,
                          transform=config.input_transform)
    return float(np.mean((pred - labels) ** 2))


def train(ds: Dataset, out: str | Path, config: TrainConfig, resume: bool = False) -> dict:
    """Train, write the run folder, return the summary (also in log.json)."""
    out = Path(out)
    check_dataset(ds)
    epoch_lr(config, 1)  # an unknown schedule fails before any work
    if config.pair_loss not in PAIR_LOSSES:
        raise TrainingError(f"unknown --pair-loss {config.pair_loss!r} ({', '.join(PAIR_LOSSES)})")
    if config.loss not in SCORE_LOSSES:
        raise TrainingError(f"unknown --loss {config.loss!r} ({', '.join(SCORE_LOSSES)})")
    if config.input_transform not in INPUT_TRANSFORMS:
        raise TrainingError(f"unknown --input-transform {config.input_transform!r} ({', '.join(INPUT_TRANSFORMS)})")
    variants = bool(config.thin_share or config.floor_share or config.blur_share or config.pair_share
                    or config.defocus_share or config.clip_share)
    if variants and (ds.labels_clean is None or ds.label_components is None
                     or ((config.blur_share or config.defocus_share) and ds.pixel_nm is None)):
        raise TrainingError(f"{ds.path or 'dataset'}: --thin-share, --floor-share, --blur-share, --defocus-share, "
                            "--clip-share and --pair-share need the "
                            "synthetic generator's labels.csv (columns label_clean, resolution_nm, structure_loss, "
                            "structure_similarity, saturation, pixel_nm) to label the changed copies; pass 0 "
                            "for other data")
    if (out / LAST).exists() and not resume:
        raise TrainingError(f"{out}: already holds a run ({LAST}); pass --resume to continue it, "
                            f"or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    if config.threads:
        torch.set_num_threads(config.threads)

    split = split_indices(len(ds.images), config.val_fraction, config.test_fraction, config.split_seed)
    train_x, train_y = ds.images[split["train"]], ds.labels[split["train"]].astype(np.float32)
    val_x, val_y = ds.images[split["val"]], ds.labels[split["val"]].astype(np.float32)
    seen = transform_input(torch.from_numpy(train_x), config.input_transform).numpy()  # what the network sees
    mean, std = float(seen.mean()), float(seen.std()) or 1.0
    del seen
    label_inputs = (ds.labels_clean[split["train"]], ds.label_components[split["train"]],
                    None if ds.pixel_nm is None else ds.pixel_nm[split["train"]]) if variants else None

    def batch(idx: np.ndarray, transforms: np.ndarray, key: list) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        """One training batch as the model sees it: photon variants, padded crops, flips/rotations; then,
        with --pair-share, k originals and k changed copies of them (fewer photons or blur, labelled by the
        rule) appended uncropped. Returns (x, targets, k, factor): factor (B, 1) multiplies the network's
        scores (the rule factors the model carries, measured on each image: model.rule_factor; else 1)."""
        rng = np.random.default_rng([config.seed, *key])
        images, targets = train_x[idx], train_y[idx]
        if label_inputs is not None:  # before cropping: the label is the whole changed image's
            clean, components, pixel_nm = label_inputs
            images, targets = photon_variants(images, targets, clean[idx], components[idx], config.thin_share,
                                              config.floor_share, rng, config.blur_share,
                                              None if pixel_nm is None else pixel_nm[idx],
                                              config.defocus_share, config.clip_share)
        images = padded_crops(images, config.crop_share, rng)
        pairs = round(config.pair_share * len(idx)) if label_inputs is not None else 0
        if pairs:
            chosen = idx[:pairs]
            originals, labels = train_x[chosen], train_y[chosen]
            changed, changed_labels = photon_variants(
                originals, labels, clean[chosen], components[chosen], PAIR_THIN_SHARE, config.floor_share, rng,
                1.0 - PAIR_THIN_SHARE if pixel_nm is not None else 0.0,
                None if pixel_nm is None else pixel_nm[chosen])
            images = np.concatenate([images, originals, changed])
            targets = np.concatenate([targets, labels, changed_labels])
            transforms = np.concatenate([transforms, transforms[:pairs], transforms[:pairs]])
        x = dihedral(to_batch(images, mean, std, torch.device("cpu"), False, config.input_transform),
                     transforms).to(device)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        factor = rule_factor(model, torch.from_numpy(np.asarray(images, np.float32)))   # the model made below
        factor = torch.ones(len(images), 1) if factor is None else factor
        return x, torch.from_numpy(np.asarray(targets, np.float32)).to(device), pairs, factor.to(device)

    data_info = {"path": ds.path, "hash": ds.hash, "description": ds.description,
                 "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
                 "split": {part: [ds.names[i] for i in idx] for part, idx in split.items()}}
    (out / "split.json").write_text(json.dumps({"split_seed": config.split_seed, "data_path": ds.path,
                                                "data_hash": ds.hash, **data_info["split"]}, indent=1) + "\n")

    torch.manual_seed(config.seed)
    model = QualityNet(activation=config.activation, saturation=config.saturation_factor,
                       structure=config.structure_factor).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    history: list[dict] = []
    best = {"epoch": None, "val_loss": math.inf, "model": None}
    start_epoch, bad_epochs, elapsed_before = 1, 0, 0.0

    if resume and (out / LAST).exists():
        state = load_checkpoint(out / LAST)
        if state["data"].get("hash") != ds.hash or state["data"].get("split") != data_info["split"]:
            raise TrainingError(f"{out / LAST}: was trained on other data or another split "
                                f"(hash {state['data'].get('hash')!r}, now {ds.hash!r}); cannot resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best = state["history"], state["best"]
        start_epoch, bad_epochs = state["epoch"] + 1, state["early_stopping"]["bad_epochs"]
        elapsed_before = state["early_stopping"]["seconds"]
        log.info("resuming %s after epoch %d (best epoch %s)", out, state["epoch"], best["epoch"])

    def checkpoint(weights: dict, epoch: int, metrics: dict) -> dict:
        return {"model": weights, "normalization": {"mean": mean, "std": std, "transform": config.input_transform},
                "config": {**asdict(config), "precision_used": precision, "device_used": str(device)},
                "data": data_info, "metrics": metrics, "epoch": epoch, "stedq_version": __version__}

    stop_reason = "max epochs"
    if best["epoch"] is not None and bad_epochs >= config.patience:
        stop_reason, start_epoch = "early stopping", config.epochs + 1  # resumed after it had finished
    t_start = time.monotonic()  # --max-minutes counts from this invocation; totals include earlier ones
    from tqdm import tqdm

    for epoch in range(start_epoch, config.epochs + 1):
        last_seconds = history[-1]["seconds"] if history else 0.0
        if config.max_minutes and time.monotonic() - t_start + last_seconds > config.max_minutes * 60:
            stop_reason = f"time limit ({config.max_minutes:g} min)"
            break
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: the same on resume
        items, transforms = epoch_plan(train_y, config, epoch)
        lr = epoch_lr(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        t0, seen, loss_sum = time.monotonic(), 0, 0.0
        starts = [s for s in range(0, len(items), config.batch_size) if len(items) - s >= 2]  # BN needs 2
        bar = tqdm(starts, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        for s in bar:
            x, y, pairs, factor = batch(items[s:s + config.batch_size], transforms[s:s + config.batch_size],
                                        [epoch, s])
            with autocast(device, precision):
                pred = model(x)
            pred = (pred.float() * factor).squeeze(1)
            loss = score_loss(pred, y, config.loss)
            if pairs:
                loss = loss + config.pair_weight * pair_loss(pred, y, pairs, config.pair_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
            loss_sum += nn.functional.mse_loss(pred.detach(), y).item() * len(y)  # the history's train RMSE
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)  # no redraw per step
        bar.close()
        train_loss = loss_sum / max(seen, 1)
        if config.precise_bn:  # the running statistics, from many training batches instead of the last ~10
            bn_items = np.random.default_rng([config.seed, epoch, 1]).permutation(len(items))[:config.precise_bn]
            precise_batch_norm(model, (batch(items[bn_items[i:i + config.batch_size]],
                                             transforms[bn_items[i:i + config.batch_size]], [epoch, i, 1])[0]
                                       for i in range(0, len(bn_items), config.batch_size)), device, precision)
        val_loss = _validate(model, val_x, val_y, mean, std, device, precision, config)
        seconds = time.monotonic() - t0
        improved = val_loss < best["val_loss"]
        if improved:
            best = {"epoch": epoch, "val_loss": val_loss,
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            bad_epochs = 0
        else:
            bad_epochs += 1
        history.append({"epoch": epoch, "train_loss": train_loss, "train_rmse": math.sqrt(train_loss),
                        "val_loss": val_loss, "val_rmse": math.sqrt(val_loss), "lr": lr,
                        "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 1),
                        "best": improved})
        tqdm.write(f"epoch {epoch}: train RMSE {math.sqrt(train_loss):.4f}, val RMSE {math.sqrt(val_loss):.4f}"
                   f"{' (best)' if improved else ''}, {seconds:.0f} s, {seen / seconds:.1f} img/s", file=sys.stderr)
        last = checkpoint(model.state_dict(), epoch, {})
        last.update(optimizer=optimizer.state_dict(), scheduler=None, rng=_rng_state(), history=history,
                    best=best, early_stopping={"bad_epochs": bad_epochs,
                                                  "seconds": elapsed_before + time.monotonic() - t_start})
        save_checkpoint(last, out / LAST)
        summary = {"config": asdict(config), "best_epoch": best["epoch"], "epochs_run": epoch,
                   "stopped": "running"}
        write_logs(out, history, summary)
        plot_curves(history, best["epoch"], out / "curves.png")
        if bad_epochs >= config.patience:
            stop_reason = "early stopping"
            break

    if best["model"] is None:
        raise TrainingError(f"{out}: no epoch finished (time limit too short?)")
    # best.pt appears only now, complete, with test metrics: whoever waits for it gets a finished model
    model.load_state_dict(best["model"])
    test_idx = split["test"]
    metrics = {}
    if len(test_idx):
        pred = predict_scores(model, ds.images[test_idx], mean, std, device, precision, config.batch_size,
                              config.channels_last, transform=config.input_transform)
        metrics = {"test": regression_metrics(pred, ds.labels[test_idx]),
                   "test_per_bin": per_bin_metrics(pred, ds.labels[test_idx])}
    save_checkpoint(checkpoint(best["model"], best["epoch"], metrics), out / BEST)
    seconds_per_epoch = [h["seconds"] for h in history]
    summary = {"config": asdict(config), "precision_used": precision, "device_used": str(device),
               "best_epoch": best["epoch"], "best_val_rmse": math.sqrt(best["val_loss"]),
               "epochs_run": len(history), "stopped": stop_reason,
               "mean_epoch_seconds": float(np.mean(seconds_per_epoch)),
               "total_minutes": round((elapsed_before + time.monotonic() - t_start) / 60, 2), "metrics": metrics,
               "data": {k: v for k, v in data_info.items() if k != "split"}}
    write_logs(out, history, summary)
    plot_curves(history, best["epoch"], out / "curves.png")
    return summary

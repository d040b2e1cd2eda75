"""`stedq evaluate`: the paper's evaluation of a trained QualityNet.

  1. regression on the held-out test split: RMSE, MAE, Pearson, Spearman, per target bin; scatter PNG
  2. the user study, reproduced with simulated testers who know the true (noise-free) quality, for the
     network and for the random baseline that samples training labels: confusion / domination tables
     and T/P/E bars; human tester records (--records CSV) get the same tables
  3. generalization to datasets never seen in training (--unseen, e.g. the tubulin-like set)
  4. monotonicity: the score must fall when only depletion, dwell (SNR) or bleaching worsens

Writes RUN/evaluation/{report.md, metrics.json, scatter.png, study_tpe.png, study_records.csv,
monotonicity.png} and the test metrics into the checkpoint's "metrics".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stedq.training import userstudy
from stedq.training.checkpoint import build_model, checkpoint_transform, load_checkpoint, save_checkpoint
from stedq.training.data.ceiling import ceiling_markdown, label_ceiling
from stedq.training.data.loader import label_text_columns
from stedq.training.inference import pick_device, predict_scores, resolve_precision
from stedq.training.metrics import (
    groups_markdown,
    metrics_markdown,
    per_bin_metrics,
    per_group_metrics,
    regression_metrics,
)

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    testers: int = 5                 # simulated testers (noise spread over tester_noise)
    tester_noise: tuple[float, float] = (0.03, 0.12)
    tester_tolerance: float = 0.05
    seed: int = 0
    monotonic_samples: int = 3       # simulated samples per axis (0 skips the check)
    device: str = "auto"
    precision: str = "fp32"          # evaluation in full precision by default
    records: list[Path] = field(default_factory=list)   # human tester records (CSV)
    update_checkpoint: bool = True


class EvaluationError(ValueError):
    pass


class Scorer:
    """The checkpoint's network as a function: (N, H, W) images in [0, 1] -> scores."""

    def __init__(self, checkpoint: dict, device: str, precision: str):
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = build_model(checkpoint).to(self.device)
        self.mean = float(checkpoint["normalization"]["mean"])
        self.std = float(checkpoint["normalization"]["std"])
        self.transform = checkpoint_transform(checkpoint)

    def __call__(self, images: np.ndarray, progress: str | None = None) -> np.ndarray:
        return predict_scores(self.model, images, self.mean, self.std, self.device, self.precision,
                              batch_size=50, channels_last=self.device.type == "cpu", progress=progress,
                              transform=self.transform)


def select(ds, names: list[str], where: str) -> np.ndarray:
    """Indices of `names` in the dataset, or a clear error if the data changed since training."""
    index = {name: i for i, name in enumerate(ds.names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise EvaluationError(f"{where}: {len(missing)} image(s) of the training split are not in the dataset, "
                              f"e.g. {missing[0]!r}: evaluate with the data the run was trained on (--data)")
    return np.array([index[n] for n in names], dtype=int)


def true_quality(ds, indices: np.ndarray) -> tuple[np.ndarray, str]:
    """The noise-free quality where the dataset records it (synthetic data), else the label itself."""
    clean = getattr(ds, "labels_clean", None)
    if clean is not None and len(clean) == len(ds.labels) and np.all(np.isfinite(np.asarray(clean)[indices])):
        return np.asarray(clean, dtype=np.float64)[indices], "noise-free virtual-expert quality"
    return np.asarray(ds.labels, dtype=np.float64)[indices], "the labels (no noise-free quality recorded)"


def per_class(scorer: Scorer, ds, test_idx: np.ndarray, test_pred: np.ndarray, train_idx: np.ndarray) -> dict | None:
    """Bias and error per acquisition class of the generator (labels.csv column `class`; synthetic data
    only), on the test and the training split, against the noise-free quality: a class biased on the
    training images too is one the network underfits (docs/training.md). None for other data."""
    names = [ds.names[i] for i in (*test_idx, *train_idx)]
    rows = label_text_columns(Path(ds.path), names, ("class",)) if ds.path else None
    if rows is None:
        return None
    classes = [row[0] for row in rows]
    train_pred = scorer(ds.images[train_idx], progress="scoring training split")
    return {"test": per_group_metrics(test_pred, true_quality(ds, test_idx)[0], classes[:len(test_idx)]),
            "train": per_group_metrics(train_pred, true_quality(ds, train_idx)[0], classes[len(test_idx):])}


def plot_scatter(panels: dict[str, tuple[np.ndarray, np.ndarray, dict]], png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (title, (target, pred, m)) in zip(axes[0], panels.items(), strict=True):
        ax.scatter(target, pred, s=9, alpha=0.6, color="#4c72b0", edgecolors="none")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for edge in (0.2, 0.4, 0.6, 0.8):
            ax.axvline(edge, color="#dddddd", linewidth=0.8, zorder=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("target quality (label)")
        ax.set_ylabel("network score")
        rho = "–" if m["spearman"] is None else f"{m['spearman']:.3f}"
        ax.set_title(f"{title}\nn={m['n']}  RMSE {m['rmse']:.3f}  Spearman {rho}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _regression(scorer: Scorer, images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    pred = scorer(images, progress=f"scoring {name}")
    return {"pred": pred, "metrics": regression_metrics(pred, labels), "per_bin": per_bin_metrics(pred, labels)}


def evaluate(run: str | Path, ds, unseen: dict[str, object], options: EvalOptions, out: Path | None = None) -> dict:
    """ds: the training dataset (its test split is evaluated); unseen: {name: dataset} never trained on."""
    checkpoint = load_checkpoint(run)
    ckpt_path = Path(checkpoint["path"])
    out = Path(out) if out else ckpt_path.parent / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    split = checkpoint["data"].get("split")
    if not split:
        raise EvaluationError(f"{ckpt_path}: the checkpoint records no data split")
    if checkpoint["data"].get("hash") and getattr(ds, "hash", "") != checkpoint["data"]["hash"]:
        log.warning("%s: the dataset's content hash differs from the one trained on", ckpt_path)
    scorer = Scorer(checkpoint, options.device, options.precision)
    test_idx = select(ds, split["test"], str(ckpt_path))
    train_idx = select(ds, split["train"], str(ckpt_path))
    labels = np.asarray(ds.labels, dtype=np.float64)

    results: dict = {"checkpoint": str(ckpt_path), "epoch": checkpoint["epoch"], "data": ds.path,
                     "precision": scorer.precision, "device": str(scorer.device)}
    test = _regression(scorer, ds.images[test_idx], labels[test_idx], "test split")
    results["test"] = {"metrics": test["metrics"], "per_bin": test["per_bin"]}
    panels = {f"test split ({Path(ds.path).name or 'data'})": (labels[test_idx], test["pred"], test["metrics"])}
    for name, other in unseen.items():
        r = _regression(scorer, other.images, np.asarray(other.labels, np.float64), name)
        results.setdefault("unseen", {})[name] = {"path": other.path, "metrics": r["metrics"],
                                                  "per_bin": r["per_bin"]}
        panels[f"unseen: {name}"] = (np.asarray(other.labels), r["pred"], r["metrics"])
    plot_scatter(panels, out / "scatter.png")
    results["per_class"] = per_class(scorer, ds, test_idx, test["pred"], train_idx)
    # what an image-only model could reach on these labels (synthetic data only; docs/training.md)
    results["test"]["ceiling"] = label_ceiling(ds.path, [ds.names[i] for i in test_idx])
    for name, other in unseen.items():
        results["unseen"][name]["ceiling"] = label_ceiling(other.path, list(other.names), ds.path)

    # the user study, simulated: testers judge target vs network and target vs random baseline
    rng = np.random.default_rng(options.seed)
    truth, truth_source = true_quality(ds, test_idx)
    random_pred = userstudy.random_baseline_predictions(labels[train_idx], len(test_idx), rng)
    testers = userstudy.default_testers(options.testers, options.seed, options.tester_noise, options.tester_tolerance)
    records = userstudy.simulate_study([ds.names[i] for i in test_idx], truth, labels[test_idx],
                                       {"network": test["pred"], "random": random_pred}, testers)
    userstudy.write_records_csv(records, out / "study_records.csv")
    tables = userstudy.study_tables(records)
    userstudy.plot_tpe_bars(tables, out / "study_tpe.png")
    beats = [bool(n.confusion_mean > r.confusion_mean) for n, r in zip(tables["network"], tables["random"],
                                                                       strict=True) if n.has_data]
    results["simulated_study"] = {
        "true_quality": truth_source, "testers": {k: {"noise": t.noise, "tolerance": t.tolerance}
                                                  for k, t in testers.items()},
        "tables": userstudy.tables_to_dict(tables),
        "network_beats_random_confusion_in_all_bins": all(beats), "bins_with_data": len(beats)}
    study_md = userstudy.tables_markdown(tables)

    human_md = ""
    if options.records:
        human = [r for path in options.records for r in userstudy.read_records_csv(path)]
        human_tables = userstudy.study_tables(human)
        userstudy.plot_tpe_bars(human_tables, out / "human_study_tpe.png")
        results["human_study"] = {"files": [str(p) for p in options.records],
                                  "tables": userstudy.tables_to_dict(human_tables)}
        human_md = userstudy.tables_markdown(human_tables)

    results["thinning"] = thinning_check(scorer, ds.images[test_idx], labels[test_idx], options.seed)
    components = getattr(ds, "label_components", None)
    results["floor"] = floor_check(scorer, ds.images[test_idx], labels[test_idx], options.seed,
                                   None if components is None else components[test_idx])
    results["blur"] = blur_check(scorer, ds.images[test_idx], labels[test_idx], options.seed,
                                 None if components is None else components[test_idx],
                                 None if getattr(ds, "pixel_nm", None) is None else ds.pixel_nm[test_idx])
    mono_md = ""
    if options.monotonic_samples:
        from stedq.training.monotonicity import check_monotonicity, monotonicity_markdown, plot_monotonicity

        def score_counts(images: np.ndarray) -> np.ndarray:
            return scorer(counts_to_unit(images))
        structures = [s for s in (ds.structures or []) if s]
        structure = max(set(structures), key=structures.count) if structures else "actin"
        mono = check_monotonicity(score_counts, options.monotonic_samples, structure=structure)
        plot_monotonicity(mono, out / "monotonicity.png")
        results["monotonicity"] = mono
        mono_md = monotonicity_markdown(mono)

    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(results, test_md=metrics_markdown(test["metrics"], test["per_bin"]),
                                                   study_md=study_md, human_md=human_md, mono_md=mono_md,
                                                   thin_md=thinning_markdown(results["thinning"])
                                                   + floor_markdown(results["floor"])
                                                   + blur_markdown(results["blur"])))
    if options.update_checkpoint:
        checkpoint.pop("path", None)
        checkpoint["metrics"] = {**checkpoint.get("metrics", {}), "test": test["metrics"],
                                 "test_per_bin": test["per_bin"],
                                 "unseen": {k: v["metrics"] for k, v in results.get("unseen", {}).items()}}
        save_checkpoint(checkpoint, ckpt_path)
    return results


THIN_STEPS = (1.0, 0.5, 0.25)   # the real-image gate's first thinning steps (stedq evaluate --real)


def _shown_counts(images: np.ndarray, labels: np.ndarray, min_label: float,
                  components: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test images that show something (label >= min_label; unsaturated where the label's inputs are
    known: a changed copy would move the plateau the label penalises) and their photon counts."""
    from stedq.pixels import MODEL_COUNTS_PER_UNIT

    chosen = np.flatnonzero(labels >= min_label)
    if components is not None:
        chosen = chosen[components[chosen, 3] == 0]
    return chosen, np.rint(images[chosen].astype(np.float64) * MODEL_COUNTS_PER_UNIT).astype(np.int64)


def _ladder_scores(scorer, ladders: list[np.ndarray]) -> np.ndarray:
    """(images, steps) scores of count stacks, one stack per step of a degradation."""
    from stedq.pixels import MODEL_COUNTS_PER_UNIT

    return np.stack([scorer((ladder / MODEL_COUNTS_PER_UNIT).astype(np.float32)) for ladder in ladders], axis=1)


def _falls(scores: np.ndarray) -> dict:
    falls = scores[:, 1:] < scores[:, :-1]
    return {"images": len(scores), "steps": int(falls.size), "falls": int(falls.sum()),
            "share": float(falls.mean()) if falls.size else None,
            "mean_score": [round(float(v), 4) for v in scores.mean(axis=0)]}


def _arrow(values) -> str:
    return " → ".join(f"{v:.3f}" for v in values)


def _label_clause(result: dict) -> str:
    return f"; the virtual expert's label {_arrow(result['mean_label'])}" if result["mean_label"] else ""


def thinning_check(scorer, images: np.ndarray, labels: np.ndarray, seed: int, min_label: float = 0.1) -> dict:
    """The real-image gate's photon check on the synthetic test split: each image that shows something
    (label >= min_label) binomially thinned to 50 % and 25 % of its photons; how often the score falls."""
    _, counts = _shown_counts(images, labels, min_label)
    rng = np.random.default_rng([seed, 50])
    ladders = [counts]
    for step in range(1, len(THIN_STEPS)):   # thinning a thinned image keeps it a binomial sample
        ladders.append(rng.binomial(ladders[-1], THIN_STEPS[step] / THIN_STEPS[step - 1]))
    return _falls(_ladder_scores(scorer, ladders))


def thinning_markdown(result: dict) -> str:
    if not result["steps"]:
        return ""
    return (f"## Fewer photons (test split, binomial thinning to 50 / 25 %)\n\nThe score falls in "
            f"**{result['falls']} of {result['steps']} steps** ({result['share']:.0%}) over {result['images']} "
            f"images with label ≥ 0.1; mean score {_arrow(result['mean_score'])}.\n")


FLOOR_COUNTS = (2.0, 5.0)   # flat background floors, photons per pixel (real STED: a few counts)


def floor_check(scorer, images: np.ndarray, labels: np.ndarray, seed: int, components: np.ndarray | None = None,
                min_label: float = 0.1) -> dict:
    """Images that show something, over a flat Poisson background floor of 2 and 5 photons per pixel: the
    mean score beside the mean label the virtual expert gives the same counts (where labels.csv records
    the label's inputs). A floor costs only the SNR it takes; a model that drops far more than the label
    has learnt a floor as a sign of a bad image."""
    from stedq.training.data.label import quality_after

    chosen, counts = _shown_counts(images, labels, min_label, components)
    rng = np.random.default_rng([seed, 51])
    levels = [counts] + [counts + rng.poisson(level, counts.shape) for level in FLOOR_COUNTS]
    scores = _ladder_scores(scorer, levels)
    result = {"images": len(chosen), "floor_counts": [0.0, *FLOOR_COUNTS],
              "mean_score": [round(float(v), 4) for v in scores.mean(axis=0)], "mean_label": None}
    if components is not None and len(chosen):
        result["mean_label"] = [  # noise-free, from the counts (at floor 0: the clean label)
            round(float(np.mean([quality_after(o, c, 1.0, *components[i])
                                 for o, c, i in zip(counts, level, chosen, strict=True)])), 4)
            for level in levels]
    return result


def floor_markdown(result: dict) -> str:
    if not result["images"]:
        return ""
    floors = " / ".join(f"{v:g}" for v in result["floor_counts"])
    return (f"## Background floor (test split, flat Poisson floor of {floors} photons per pixel)\n\n"
            f"Mean score {_arrow(result['mean_score'])} over {result['images']} "
            f"images with label ≥ 0.1{_label_clause(result)}.\n")


BLUR_STEPS_PX = (1.5, 3.0, 5.0)   # the real-image gate's blur steps (stedq evaluate --real)


def blur_check(scorer, images: np.ndarray, labels: np.ndarray, seed: int, components: np.ndarray | None = None,
               pixel_nm: np.ndarray | None = None, min_label: float = 0.1) -> dict:
    """The real-image gate's blur check on the synthetic test split: each image that shows something blurred
    by 1.5, 3 and 5 px and detected anew with the same photons; how often the score falls at each step,
    how often the 5 px copy (confocal-like) keeps at most half the score, and, where labels.csv records
    the label's inputs, the mean label the virtual expert gives the same counts."""
    from stedq.training.data.label import blurred_copy, blurred_resolution_nm, expert_quality, image_snr

    chosen, counts = _shown_counts(images, labels, min_label, components)
    rng = np.random.default_rng([seed, 52])
    ladders = [counts] + [np.stack([blurred_copy(c, sigma, rng) for c in counts]) for sigma in BLUR_STEPS_PX]
    scores = _ladder_scores(scorer, ladders)
    result = {**_falls(scores), "sigma_px": [0.0, *BLUR_STEPS_PX],
              "confocal_half": int((scores[:, -1] <= 0.5 * scores[:, 0]).sum()), "mean_label": None}
    if components is not None and pixel_nm is not None and len(chosen):
        labels_after = [[expert_quality(blurred_resolution_nm(components[i, 0], sigma, pixel_nm[i]),
                                        image_snr(ladder[k])[0], components[i, 1], components[i, 2],
                                        components[i, 3]) for k, i in enumerate(chosen)]
                        for sigma, ladder in zip(result["sigma_px"], ladders, strict=True)]
        result["mean_label"] = [round(float(np.mean(v)), 4) for v in labels_after]
    return result


def blur_markdown(result: dict) -> str:
    if not result["steps"]:
        return ""
    return (f"## Blur (test split, Gaussian σ 1.5 / 3 / 5 px, detected anew with the same photons)\n\n"
            f"The score falls in **{result['falls']} of {result['steps']} steps** ({result['share']:.0%}); "
            f"the 5 px copy keeps at most half the score for {result['confocal_half']} of {result['images']} "
            f"images with label ≥ 0.1. Mean score {_arrow(result['mean_score'])}{_label_clause(result)}.\n")


def counts_to_unit(images: np.ndarray) -> np.ndarray:
    """Raw photon-count acquisitions -> model input by the pixel contract (as the loader and server do)."""
    from stedq.pixels import to_model_input, to_wire_array

    return np.stack([to_model_input(to_wire_array(image)) for image in images]).astype(np.float32)


def report_markdown(results: dict, test_md: str, study_md: str, human_md: str, mono_md: str,
                    thin_md: str = "") -> str:
    epoch = results["epoch"]   # an ensemble's: one per member
    epoch = f"epochs {', '.join(map(str, epoch))}" if isinstance(epoch, list) else f"epoch {epoch}"
    parts = [f"# Evaluation of `{results['checkpoint']}` ({epoch})", "",
             f"Data: `{results['data']}`; device {results['device']}, {results['precision']}.", "",
             "## Test split (held out)", "", test_md,
             ceiling_markdown(results["test"].get("ceiling"), results["test"]["metrics"]["spearman"])]
    if results.get("per_class"):
        parts += ["### Per acquisition class (against the noise-free quality)", "",
                  groups_markdown(results["per_class"])]
    for name, r in results.get("unseen", {}).items():
        m = metrics_markdown(r["metrics"], r["per_bin"])
        parts += [f"## Unseen: {name} (`{r['path']}`)", "", m,
                  ceiling_markdown(r.get("ceiling"), r["metrics"]["spearman"])]
    s = results["simulated_study"]
    testers = ", ".join(f"{name} (noise {t['noise']:.3f})" for name, t in s["testers"].items())
    tolerance = next(iter(s["testers"].values()))["tolerance"]
    parts += ["## User study with simulated testers", "",
              f"Testers: {testers}, tolerance {tolerance}; true quality: {s['true_quality']}. "
              f"Network beats the random baseline on confusion in every bin with data: "
              f"**{'yes' if s['network_beats_random_confusion_in_all_bins'] else 'no'}**.", "", study_md]
    if human_md:
        parts += ["## User study: human tester records", "", human_md]
    if thin_md:
        parts += [thin_md]
    if mono_md:
        parts += ["## Monotonicity (simulated microscope)", "", mono_md]
    parts += ["Figures: `scatter.png`, `study_tpe.png`" + (", `monotonicity.png`" if mono_md else "") + ".", ""]
    return "\n".join(parts)

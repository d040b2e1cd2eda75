"""`stedq evaluate --real DIR`: pick the scoring backend (in-process bundle or a server), run, report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stedq.training.real_eval import RealSetError, ScoreFn, count_files
from stedq.training.real_eval import evaluate_real as run_real


class ServerUnusable(RuntimeError):
    """The server cannot score anything (unreachable, refused the client): stop instead of 55 errors."""


def local_backend(args: argparse.Namespace) -> tuple[ScoreFn, dict, str]:
    try:
        from stedq.engine import EngineError
        from stedq.local import LocalScorer
    except ModuleNotFoundError as exc:
        raise SystemExit(f"stedq evaluate --real: in-process scoring needs {exc.name}: "
                         f"pip install 'stedq[serve]' (or pass --server HOST:PORT)") from None
    try:
        scorer = LocalScorer(args.model, variant=args.variant)
    except EngineError as exc:
        raise SystemExit(f"stedq evaluate --real: {exc}") from None
    info = scorer.info
    model = {"name": info.name, "version": info.version, "variant": info.variant, "path": str(info.path)}
    try:
        shown = info.path.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = info.path
    return (lambda image, intensity: scorer.score(image, intensity).score), model, f"onnxruntime in-process ({shown})"


class AgainstFP32:
    """Scores with a reduced-precision variant and, beside it, the same bundle's FP32: the variant's
    accuracy gate (stedq.export.gate) on these real images."""

    def __init__(self, args: argparse.Namespace, score: ScoreFn):
        from stedq.local import LocalScorer

        self.variant, self.reference = score, LocalScorer(args.model, variant="fp32")
        self.pairs: list[tuple[float, float]] = []

    def __call__(self, image, intensity) -> float:
        value = self.variant(image, intensity)
        self.pairs.append((self.reference.score(image, intensity).score, value))
        return value

    def gate(self, variant: str) -> dict:
        from stedq.export.gate import accuracy_gate

        reference, scores = zip(*self.pairs, strict=True) if self.pairs else ((), ())
        return accuracy_gate(variant, list(reference), list(scores)).as_dict()


def server_backend(args: argparse.Namespace):
    from stedq.clients.client import QualityClient
    from stedq.clients.errors import QualityError
    from stedq.clients.score_command import FATAL_CODES, server_hint, size_problem, smallest_size
    from stedq.settings import settings_from_args

    settings = settings_from_args(args)
    client = QualityClient.from_settings(settings)
    try:
        info = client.model_info()
    except QualityError as exc:
        client.close()
        raise SystemExit(f"stedq evaluate --real: {server_hint(exc, settings.server)}") from None
    minimum = smallest_size(info)

    def score(image, intensity) -> float:
        problem = size_problem(minimum, *image.shape)  # as `stedq score` refuses it
        if problem:
            raise ValueError(problem)
        try:
            return client.score_images([image], intensity=[intensity])[0].score
        except QualityError as exc:
            if exc.code in FATAL_CODES:
                raise ServerUnusable(server_hint(exc, settings.server)) from None
            raise ValueError(f"{exc.code.name}: {exc.details}") from None

    model = {"name": info.name, "version": info.version, "variant": info.variant}
    return score, model, f"the server at {settings.server}", client


def evaluate_real(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.run is not None:
        raise SystemExit("stedq evaluate: --real scores a folder of real images; drop the RUN argument "
                         "(use --model BUNDLE to choose the model)")
    if args.server is not None and args.model is not None:
        raise SystemExit("stedq evaluate --real: give --model (in-process) or --server (remote), not both")
    try:
        total = count_files(args.real)
    except RealSetError as exc:
        raise SystemExit(f"stedq evaluate --real: {exc}") from None
    client = against = None
    if args.server is not None:
        score, model, source, client = server_backend(args)
    else:
        score, model, source = local_backend(args)
        if args.variant != "fp32":
            score = against = AgainstFP32(args, score)
    try:
        with tqdm(total=total, desc="scoring", unit="file", disable=None, file=sys.stderr) as bar:
            figures = run_real(args.real, score, model, source, progress=bar.update)
    except ServerUnusable as exc:
        raise SystemExit(f"stedq evaluate --real: {exc}") from None
    finally:
        if client is not None:
            client.close()
    if against is not None:
        figures["variant_vs_fp32"] = against.gate(args.variant)
    from stedq.training.real_report import write_report

    out = args.out or Path(f"real-{model['name']}-{model['version']}")
    report = write_report(figures, out)
    summary = figures["summary"]
    print(json.dumps({"model": model, "checks_passed": f"{summary['passed']}/{summary['run']}",
                      "checks": {c["id"]: c["passed"] for c in figures["checks"] if c["run"]},
                      "refused": summary["refused"], "report": str(report),
                      **{k: figures[k] for k in ("variant_vs_fp32",) if k in figures}}, indent=2))
    return 0


def evaluate_crops(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from stedq.pixels import MODEL_COUNTS_PER_UNIT
    from stedq.training.crops import SIZES, crop_curve, rule_curve, write_curve
    from stedq.training.data import DatasetError, load_labelled_folder
    from stedq.training.data.label import LABEL_INPUTS
    from stedq.training.data.loader import label_columns

    try:
        dataset = load_labelled_folder(args.crops)
    except DatasetError as exc:
        raise SystemExit(f"stedq evaluate --crops: {exc}") from None
    score, model, _ = local_backend(args)
    with tqdm(total=len(SIZES) + 1, desc="crop sizes", disable=None, file=sys.stderr) as bar:
        curve = crop_curve(dataset.images, lambda image: score(image, "model_scale"), progress=bar.update)
    columns = label_columns(args.crops, dataset.names, ("label_clean",) + LABEL_INPUTS)
    rule = None
    if columns is not None:  # the virtual expert's own limit on what a crop shows
        counts = np.rint(dataset.images.astype(np.float64) * MODEL_COUNTS_PER_UNIT)
        rule = rule_curve(counts, columns[:, 1:], columns[:, 0])
    out = args.out or Path(f"crops-{model['name']}-{model['version']}")
    figures = write_curve(curve, out, {"model": model, "data": str(args.crops), "images": len(dataset.images)},
                          rule)
    print(json.dumps({k: figures[k] for k in ("spearman_by_crop_size", "targets", "label_rule_on_crop")
                      if k in figures}, indent=2))
    return 0

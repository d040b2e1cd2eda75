"""`stedq study create`: labelled images + predictions -> a study folder.

    <study>/study.sqlite     images, testers, trials, answers (see store.py)
    <study>/images/NNNN.png  each image rendered once (contrast stretch, colour map)

Image files are named by number so that a tester never sees a file name (which may carry the label).
The network's predictions come from a CSV (image -> prediction) or from a running stedq server; the
random baseline draws from training labels (`baseline_labels`; the study's own labels by default).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stedq.study import store
from stedq.study.render import DEFAULT_CMAP, DEFAULT_STRETCH, write_png
from stedq.study.trials import NETWORK, RANDOM, make_trials

log = logging.getLogger(__name__)

SYSTEMS = (NETWORK, RANDOM)
NAME_COLUMNS = ("image_id", "image", "name", "file", "path")
SCORE_COLUMNS = ("prediction", "score")
SCORE_IN_NAME = re.compile(r"^(?P<name>.+)-(?P<score>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)$")   # <name>-<score>


@dataclass
class LabelledImages:
    images: list[np.ndarray]
    labels: np.ndarray
    names: list[str]
    paths: list[Path]


def load_images(folder: Path) -> LabelledImages:
    """The labelled folder through the data area's loader; its errors become StudyError."""
    from stedq.training.data import load_labelled_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise store.StudyError(f"{folder}: no such folder of labelled images")
    try:
        ds = load_labelled_folder(folder, size=None)   # any size: testers judge the image as acquired
    except (ValueError, OSError) as exc:
        raise store.StudyError(f"{folder}: cannot use these images: {exc}") from None
    if len(ds.names) == 0:
        raise store.StudyError(f"{folder}: no labelled images found")
    labels = np.asarray(ds.labels, dtype=np.float64).ravel()
    if labels.size != len(ds.names) or not np.all(np.isfinite(labels)):
        raise store.StudyError(f"{folder}: every image needs a label (a number in [0, 1])")
    return LabelledImages(images=list(ds.images), labels=labels, names=[str(n) for n in ds.names],
                          paths=[Path(p) for p in ds.paths])


def _keys(value: str) -> list[str]:
    """An image may be named in a CSV by its name, file name or path; all lead to it."""
    value = value.strip()
    path = Path(value)
    return list(dict.fromkeys([value, path.name, path.stem]))


def _image_keys(name: str, path: Path) -> list[str]:
    """What a CSV row may call an image: its name, file name, stem, or the stem without "-<score>"."""
    keys = [name, path.name, path.stem]
    match = SCORE_IN_NAME.match(path.stem)
    return keys + [match["name"]] if match else keys


def read_predictions_csv(path: Path, names: Sequence[str], paths: Sequence[Path],
                         score_columns: Sequence[str] = SCORE_COLUMNS) -> np.ndarray:
    """One prediction per image, in the images' order, from a CSV with an image column
    (image_id | image | name | file | path) and a score column (prediction | score)."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise store.StudyError(f"{path}: cannot read predictions: {exc.strerror or exc}") from None
    scores: dict[str, float] = {}
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        name_col = next((c for c in NAME_COLUMNS if c in header), None)
        score_col = next((c for c in score_columns if c in header), None)
        if name_col is None or score_col is None:
            raise store.StudyError(
                f"{path}: needs an image column ({' | '.join(NAME_COLUMNS)}) and a score column "
                f"({' | '.join(score_columns)}); found columns: {', '.join(header) or 'none'}")
        for row in reader:
            if row.get("error"):                 # a `stedq score --csv` row the server could not score
                raise store.StudyError(f"{path}, line {reader.line_num}: no score for {row[name_col]!r}: "
                                       f"{row['error']}")
            try:
                score = float(row[score_col])
            except (TypeError, ValueError):
                score = float("nan")
            if not 0.0 <= score <= 1.0:
                raise store.StudyError(f"{path}, line {reader.line_num}: {score_col} must be a number in "
                                       f"[0, 1], got {row[score_col]!r}")
            for key in _keys(row[name_col] or ""):
                scores.setdefault(key, score)
    result, missing = [], []
    for name, image_path in zip(names, paths, strict=True):
        key = next((k for k in _image_keys(name, image_path) if k in scores), None)
        if key is None:
            missing.append(name)
        result.append(scores.get(key, np.nan) if key else np.nan)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise store.StudyError(f"{path}: no prediction for {len(missing)} of {len(names)} images ({shown}); "
                               "rows are matched on the image's name, file name, path, or name without '-<score>'")
    return np.asarray(result, dtype=np.float64)


def clean_labels(folder: Path, data: LabelledImages) -> list[float | None]:
    """The noise-free quality of each image where the folder knows it (`stedq data synth` writes it as
    label_clean in labels.csv); the simulated testers perceive it instead of the noisy label."""
    labels_csv = Path(folder) / "labels.csv"
    if not labels_csv.is_file():
        return [None] * len(data.names)
    try:
        with labels_csv.open(newline="") as handle:
            if "label_clean" not in (csv.DictReader(handle).fieldnames or []):
                return [None] * len(data.names)
        return [float(v) for v in read_predictions_csv(labels_csv, data.names, data.paths, ("label_clean",))]
    except (OSError, store.StudyError) as exc:
        log.info("no clean labels for the simulated testers (%s): they perceive the labels", exc)
        return [None] * len(data.names)


def predictions_from_server(images: list[np.ndarray], settings) -> tuple[np.ndarray, str]:
    """Score the images on a running stedq server (the client library); returns (scores, model version)."""
    from stedq.clients import QualityClient
    from stedq.clients.errors import QualityError

    try:
        with QualityClient.from_settings(settings) as client:
            scores = client.score([np.asarray(image, dtype=np.float32) for image in images])
            return scores.astype(np.float64), client.model_version
    except QualityError as exc:
        raise store.StudyError(f"stedq server {settings.server}: {exc}") from None


def baseline_labels_from(path: Path | None, default: np.ndarray) -> np.ndarray:
    """Labels the random baseline draws from: a labelled folder, a CSV with a label column, or `default`."""
    if path is None:
        return default
    path = Path(path)
    if path.is_dir():
        return load_images(path).labels
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            column = next((c for c in ("label", "target", "score") if c in (reader.fieldnames or [])), None)
            if column is None:
                raise store.StudyError(f"{path}: needs a label, target or score column")
            labels = np.array([float(row[column]) for row in reader], dtype=np.float64)
    except OSError as exc:
        raise store.StudyError(f"{path}: cannot read baseline labels: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise store.StudyError(f"{path}: baseline labels must be numbers ({exc})") from None
    if labels.size == 0:
        raise store.StudyError(f"{path}: no baseline labels")
    return labels


def tester_seed(study_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([study_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def check_tester_names(names: Sequence[str]) -> None:
    for name in names:
        if not name or not name.strip() or "/" in name:
            raise store.StudyError(f"tester name {name!r}: give a non-empty name without '/'")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise store.StudyError(f"tester name(s) given twice: {', '.join(repeated)}")


def add_testers(study_dir: Path, names: Sequence[str], simulated: bool = False) -> dict[str, str]:
    """New testers (each with their own random trial order): {name: token}."""
    check_tester_names(names)
    conn = store.connect(study_dir)
    try:
        meta = store.get_meta(conn)
        n_images = len(store.images(conn))
        start = len(store.testers(conn))
        tokens = {}
        for offset, name in enumerate(names):
            seed = tester_seed(meta["seed"], start + offset)
            trials = make_trials(n_images, meta["predictions"], meta["systems"], meta["baseline_labels"], seed)
            tokens[name] = store.add_tester(conn, name.strip(), seed, trials, simulated=simulated)
        return tokens
    finally:
        conn.close()


def create_study(study_dir: Path, images_folder: Path, predictions: str, *, settings=None,
                 systems: Sequence[str] = SYSTEMS, testers: Sequence[str] = (),
                 baseline_labels: Path | None = None, seed: int = 0, cmap: str = DEFAULT_CMAP,
                 stretch: tuple[float, float] = DEFAULT_STRETCH) -> dict[str, str]:
    """Make the study folder; `predictions` is a CSV path or "server" (then `settings` says which).
    Returns {tester name: token}."""
    from tqdm import tqdm

    study_dir = Path(study_dir)
    if store.db_path(study_dir).exists():
        raise store.StudyError(f"{study_dir}: already holds a study; add testers with "
                               f"`stedq study add-tester` or choose a new folder")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise store.StudyError(f"systems must be among {', '.join(SYSTEMS)}, got {', '.join(systems) or 'none'}")
    check_tester_names(testers)
    data = load_images(images_folder)
    scores: dict[str, list[float]] = {}
    model_version = ""
    if NETWORK in systems:
        if predictions == "server":
            if settings is None:
                raise store.StudyError("predictions from the server need the server's address (--server)")
            network, model_version = predictions_from_server(data.images, settings)
            source = f"server {settings.server}"
        else:
            network = read_predictions_csv(Path(predictions), data.names, data.paths)
            source = str(Path(predictions).resolve())
        scores[NETWORK] = [float(np.clip(s, 0.0, 1.0)) for s in network]
    else:
        source = "none"
    labels = baseline_labels_from(baseline_labels, data.labels)

    study_dir.mkdir(parents=True, exist_ok=True)
    truths = clean_labels(images_folder, data)
    rows = []
    for index, (image, name, path, label, truth) in enumerate(tqdm(
            list(zip(data.images, data.names, data.paths, data.labels, truths, strict=True)),
            desc="rendering images", unit="image")):
        png = Path("images") / f"{index:04d}.png"
        write_png(np.asarray(image), study_dir / png, cmap=cmap, percentiles=stretch)
        rows.append((name, str(path.resolve()), str(png), float(np.clip(label, 0.0, 1.0)), truth))
    conn = store.connect(study_dir, create=True)
    try:
        store.add_images(conn, rows)
        store.set_meta(conn, {
            "created": store.now(), "images_folder": str(Path(images_folder).resolve()),
            "predictions_source": source, "model_version": model_version, "systems": list(systems),
            "predictions": scores, "baseline_labels": [float(v) for v in labels],
            "baseline_source": str(baseline_labels) if baseline_labels else "the study's own labels",
            "seed": int(seed), "cmap": cmap, "stretch": list(stretch)})
    finally:
        conn.close()
    log.info("study %s: %d images, systems %s, predictions from %s", study_dir, len(rows),
             ", ".join(systems), source)
    return add_testers(study_dir, list(testers))

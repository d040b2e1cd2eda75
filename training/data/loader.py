"""Labelled image folders: the paper's `<name>-<score>.tiff` convention, or images plus a labels.csv.

    ds = load_labelled_folder("data/synth/actin")
    ds.images   # float32 (N, 224, 224) model input: photon counts / 65535 (stedq.pixels)
    ds.labels   # float32 (N,)

`check_labelled_folder` collects every problem (unreadable file, missing or out-of-range label, wrong
size, multi-page stack, ...) instead of stopping at the first; `load_labelled_folder` raises one
`DatasetError` listing them all.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stedq.files import Frame, ReadError, read_frames
from stedq.pixels import InvalidInput, to_model_input

IMAGE_SIZE = 224
IMAGE_SUFFIXES = (".tif", ".tiff")
LABELS_CSV = "labels.csv"
MANIFEST = "manifest.json"
FILE_COLUMNS = ("file", "filename", "image", "path")
LABEL_COLUMNS = ("score", "label", "quality")
SCORE_IN_NAME = re.compile(r"^(?P<name>.+)-(?P<score>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)$")


class DatasetError(ValueError):
    """A dataset problem; the message names the file(s) and what is wrong. `problems` lists them all."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        head = "1 problem" if len(self.problems) == 1 else f"{len(self.problems)} problems"
        super().__init__(f"{head} in the dataset:\n  " + "\n  ".join(shown) + more)


@dataclass
class LabelledDataset:
    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    paths: list[Path]
    structures: list[str] | None
    content_hash: str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CheckReport:
    folder: Path
    entries: list[tuple[Path, float, str | None]] = field(default_factory=list)  # (path, label, structure)
    problems: list[str] = field(default_factory=list)
    dtypes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.entries)


def read_image(path: Path, size: int | None = IMAGE_SIZE) -> np.ndarray:
    """One 2D image from a TIFF as float32 model input: read (and calibrated) by stedq.files, converted by
    the pixel contract (stedq.pixels: counts / 65535), as `stedq score` and the server do. A dim
    acquisition stays dim. Raises DatasetError naming the file."""
    return _model_input(path, _read_frame(path, size))


def _read_frame(path: Path, size: int | None) -> Frame:
    try:
        frames = read_frames(path)
    except ReadError as exc:
        raise DatasetError(f"{path}: cannot read TIFF ({exc.problem})") from None
    if len(frames) != 1:
        raise DatasetError(f"{path}: multi-page TIFF with {len(frames)} pages; save one image per file "
                           "(e.g. split the stack)")
    shape = frames[0].image.shape
    if size is not None and shape != (size, size):
        raise DatasetError(f"{path}: image is {shape[0]}x{shape[1]}, expected {size}x{size} "
                           "(crop or resample it first)")
    return frames[0]


def _model_input(path: Path, frame: Frame) -> np.ndarray:
    try:
        return to_model_input(frame.image, frame.intensity)
    except InvalidInput as exc:
        raise DatasetError(f"{path}: {str(exc).removeprefix('image: ')}") from None


def _parse_label(text: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: label {text!r} is not a number") from None
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DatasetError(f"{where}: label {value:g} is outside [0, 1]")
    return value


def _entries_from_csv(folder: Path, report: CheckReport) -> None:
    csv_path = folder / LABELS_CSV
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        file_col = next((c for c in FILE_COLUMNS if c in columns), None)
        label_col = next((c for c in LABEL_COLUMNS if c in columns), None)
        if file_col is None or label_col is None:
            report.problems.append(
                f"{csv_path}: needs a file column ({'/'.join(FILE_COLUMNS)}) and a label column "
                f"({'/'.join(LABEL_COLUMNS)}); found columns {columns}")
            return
        listed = set()
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            where = f"{csv_path}:{line}"
            if not row.get(file_col):
                report.problems.append(f"{where}: empty {file_col!r}")
                continue
            path = folder / row[file_col]
            listed.add(path.name)
            if not path.is_file():
                report.problems.append(f"{where}: file {row[file_col]!r} does not exist")
                continue
            if not row.get(label_col):
                report.problems.append(f"{path}: missing label in {LABELS_CSV} (line {line})")
                continue
            try:
                label = _parse_label(row[label_col], f"{path} ({LABELS_CSV} line {line})")
            except DatasetError as exc:
                report.problems.extend(exc.problems)
                continue
            report.entries.append((path, label, row.get("structure") or None))
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.name not in listed:
            report.problems.append(f"{path}: image has no row in {csv_path.name} (missing label)")


def _entries_from_names(folder: Path, report: CheckReport) -> None:
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):  # e.g. macOS ._ files
            continue
        match = SCORE_IN_NAME.match(path.stem)
        if match is None:
            report.problems.append(f"{path}: missing label: name it <name>-<score>{path.suffix} "
                                   f"(score in [0, 1]) or add a {LABELS_CSV}")
            continue
        try:
            report.entries.append((path, _parse_label(match["score"], str(path)), None))
        except DatasetError as exc:
            report.problems.extend(exc.problems)


def check_labelled_folder(folder: str | Path, read_images: bool = True,
                          size: int | None = IMAGE_SIZE) -> CheckReport:
    """Every problem of a labelled folder (reads each image unless `read_images` is False)."""
    folder = Path(folder)
    report = CheckReport(folder)
    if not folder.exists():
        report.problems.append(f"{folder}: folder does not exist")
        return report
    if not folder.is_dir():
        report.problems.append(f"{folder}: not a folder")
        return report
    if (folder / LABELS_CSV).is_file():
        _entries_from_csv(folder, report)
    else:
        _entries_from_names(folder, report)
    if not report.entries and not report.problems:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = f"; it has sub-folders {', '.join(subfolders)}: pass one of them" if subfolders else ""
        report.problems.append(f"{folder}: empty: no .tif/.tiff images{hint}")
    if read_images:
        good = []
        for entry in report.entries:
            try:
                frame = _read_frame(entry[0], size)
                _model_input(entry[0], frame)
                dtype = str(frame.image.dtype)
                report.dtypes[dtype] = report.dtypes.get(dtype, 0) + 1
                good.append(entry)
            except DatasetError as exc:
                report.problems.extend(exc.problems)
        report.entries = good
    return report


def label_names(folder: str | Path) -> list[str]:
    """Every image's name in a folder's labels.csv, in its order (the file's stem, else `name`); [] without one."""
    table = Path(folder) / LABELS_CSV
    if not table.is_file():
        return []
    with table.open(newline="") as handle:
        return [Path(row.get("file") or "").stem or row.get("name", "") for row in csv.DictReader(handle)]


def label_columns(folder: Path, names: list[str], wanted: tuple[str, ...]):
    """(N, len(wanted)) floats from a labels.csv's columns (the synthetic generator records each label's
    inputs there), rows found by file stem or name; None when the table, a column or a row is missing."""
    rows = label_text_columns(folder, names, wanted)
    try:
        return None if rows is None else np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError:
        return None


def label_text_columns(folder: Path, names: list[str], wanted: tuple[str, ...]) -> list[list[str]] | None:
    """`label_columns` as the strings stored (e.g. the generator's acquisition class)."""
    table = Path(folder) / LABELS_CSV
    if not table.is_file():
        return None
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not columns >= set(wanted) or not columns & {"file", "name"}:
            return None
        rows = {}
        for row in reader:  # the loader names an image by its file's stem
            for key in (Path(row.get("file") or "").stem, row.get("name")):
                if key:
                    rows.setdefault(key, [row[column] for column in wanted])
    try:
        return [rows[name] for name in names]
    except KeyError:
        return None


def content_hash(paths: list[Path], labels: list[float]) -> str:
    """sha256 over each file's name, bytes and label: the same data gives the same hash on any machine."""
    digest = hashlib.sha256()
    for path, label in sorted(zip(paths, labels, strict=True), key=lambda item: item[0].name):
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(f"{label:.6f}\n".encode())
    return digest.hexdigest()


def load_labelled_folder(folder: str | Path, size: int | None = IMAGE_SIZE) -> LabelledDataset:
    """Load a labelled folder; raises DatasetError listing every problem if there is any."""
    report = check_labelled_folder(folder, read_images=False, size=size)
    images, problems = [], list(report.problems)
    for path, _, _ in report.entries:
        try:
            images.append(read_image(path, size))
        except DatasetError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DatasetError(problems)
    paths = [entry[0] for entry in report.entries]
    labels = [entry[1] for entry in report.entries]
    structures = [entry[2] or "" for entry in report.entries]
    return LabelledDataset(
        images=np.stack(images).astype(np.float32),
        labels=np.asarray(labels, dtype=np.float32),
        names=[p.stem for p in paths],
        paths=paths,
        structures=structures if any(structures) else None,
        content_hash=content_hash(paths, labels))


def write_manifest(folder: Path, extra: dict) -> dict:
    """manifest.json of a labelled folder: its content hash, size and label summary (no timestamps, so
    the same data gives the same bytes)."""
    dataset = load_labelled_folder(folder)
    labels = dataset.labels
    manifest = {
        **extra,
        "images": len(dataset),
        "content_hash": dataset.content_hash,
        "labels": {"mean": round(float(labels.mean()), 4), "std": round(float(labels.std()), 4),
                   "min": round(float(labels.min()), 4), "max": round(float(labels.max()), 4),
                   "histogram_10_bins": np.histogram(labels, bins=10, range=(0, 1))[0].tolist()},
        "format": "uint16 TIFF photon counts, 224x224, 20 nm pixels; <name>-<score>.tiff + labels.csv",
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest

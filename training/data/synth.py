"""`stedq data synth`: simulate a labelled STED dataset like a lab's export.

Layout of OUT (each structure folder is a labelled folder `load_labelled_folder` reads):

    OUT/actin/<name>-<score>.tiff     uint16 photon counts, 224x224
    OUT/actin/labels.csv              every acquisition parameter, label component, structure and seed
    OUT/actin/manifest.json           settings, counts, content hash
    OUT/tubulin/...                   the unseen-protein set
    OUT/DONE                          written when every structure is complete

Image i of a structure is fully determined by (seed, structure, i): workers can run in any order,
an interrupted run resumes by skipping images whose TIFF exists, and the same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Actin: more than the paper's 1140 (the near-0 classes and the dendritic meshes need room; training on
# it takes about 55 min on the 2-core CPU); tubulin: the paper's unseen-protein set.
DEFAULT_COUNTS = {"actin": 2000, "tubulin": 94}
# Data 2.1 (model 2.0.0's data): the mix's axon networks and tubulin bundles as dense, diffusely labelled
# fields, as real axonal F-actin and tubulin look (docs/data.md). () draws data 2.0's sparse kinds.
DEFAULT_DENSE = ("axons", "bundles")
BALANCED_BINS = 10
CSV_FIELDS = [
    "file", "name", "score", "structure", "class", "source", "seed", "index", "acquisition", "dwell_time_us",
    "p_ex_uw", "p_sted_mw", "resolution_nm", "snr", "signal_counts", "background_counts", "bleaching",
    "bleached_fraction", "structure_loss", "structure_similarity", "saturation", "molecules", "background_cps", "pixel_nm",
    "detection_efficiency", "defocus_nm", "q_resolution",
    "q_snr", "q_bleaching", "q_structure", "q_saturation", "label_clean", "label",
]
# Image classes and their shares: most are acquisitions as a user tuning the microscope makes them
# ("sted", which includes some confocal-like ones); the rest are what an expert gives (near) nothing:
# the same photons with no structure (pixels shuffled), empty fields, confocal images, and regions
# bleached by many earlier scans. Labels always come from the rule (label.py), never set by hand.
CLASSES = {"sted": 0.73, "shuffled": 0.07, "empty": 0.04, "confocal": 0.04, "bleached": 0.05, "out_of_focus": 0.04,
           "saturated": 0.03}
# The sample and detector vary as between real acquisitions (docs/data.md): pixel size 15-35 nm (20 nm most
# often), label brightness x detection efficiency over a 6x range (log-uniform), defocus 150-400 nm sd for
# the out-of-focus class; a saturated image is an acquisition clipped at 10-30 % of its peak (a detector or
# an 8-bit export that ran out of range).
PIXEL_SIZE_WEIGHTS = {15.0: 0.15, 20.0: 0.35, 25.0: 0.2, 30.0: 0.15, 35.0: 0.15}
PHOTON_SCALE_RANGE = (0.4, 2.5)
DEFOCUS_NM_RANGE = (150.0, 400.0)
SATURATION_CEILING = (0.1, 0.3)


def image_seed(seed: int, structure: str, index: int) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(structure.encode()) + index * 7_919) % 2**31


def sample_parameters(rng: np.random.Generator) -> dict[str, float]:
    """Acquisition parameters as a user tuning a STED microscope tries them: mostly around good
    settings (STED at tens of mW, moderate dwell and excitation), some confocal-like, some extreme."""
    regime = rng.random()
    if regime < 0.08:   # confocal or barely depleted
        p_sted = float(rng.choice([0.0, rng.uniform(0.5, 8.0)]))
    elif regime < 0.85:  # typical STED settings
        p_sted = float(rng.uniform(15.0, 90.0))
    else:                # pushed hard
        p_sted = float(rng.uniform(90.0, 150.0))
    dwell = float(np.exp(rng.uniform(np.log(5.0), np.log(80.0))))
    p_ex = float(np.exp(rng.uniform(np.log(3.0), np.log(35.0))))
    # Most images are the first scan of a region; some are re-scans of an already bleached region.
    repeats = int(rng.choice([1, 1, 1, 1, 1, 1, 2, 3, 4]))
    return {"dwell_time_us": dwell, "p_ex_uw": p_ex, "p_sted_mw": p_sted, "repeats": repeats}


def image_class(rng: np.random.Generator) -> str:
    return str(rng.choice(list(CLASSES), p=list(CLASSES.values())))


def sample_acquisition(rng: np.random.Generator, kind: str, pixel_nm: float | None = None) -> dict[str, float]:
    """The sample/detector side of one image: pixel size, photon scale, defocus (out-of-focus class).
    A fixed `pixel_nm` replaces the drawn size and leaves every other draw as it was."""
    drawn = float(rng.choice(list(PIXEL_SIZE_WEIGHTS), p=list(PIXEL_SIZE_WEIGHTS.values())))
    pixel_nm = drawn if pixel_nm is None else float(pixel_nm)
    photon_scale = float(np.exp(rng.uniform(*np.log(PHOTON_SCALE_RANGE))))
    defocus_nm = float(rng.uniform(*DEFOCUS_NM_RANGE)) if kind == "out_of_focus" else 0.0
    return {"pixel_nm": pixel_nm, "photon_scale": photon_scale, "defocus_nm": defocus_nm}


def simulate_one(structure: str, seed: int, index: int, balanced: bool = False,
                 pixel_nm: float | None = None, dense: tuple[str, ...] = ()) -> tuple[np.ndarray, dict]:
    """Image `index` of the dataset: (uint16 image, csv row without the file name). `dense` ("axons",
    "bundles") draws those kinds as dense fields; every other image is the same bytes with or without it."""
    from stedq.training.data.microscope import SimulatedMicroscope

    s = image_seed(seed, structure, index)
    rng = np.random.default_rng(s)
    kind = image_class(rng)
    sample = {**sample_acquisition(rng, kind, pixel_nm), "dense": tuple(dense)}
    params = sample_parameters(rng)
    if kind == "confocal":
        params.update(p_sted_mw=0.0, dwell_time_us=float(rng.uniform(10.0, 80.0)), repeats=1)
    elif kind == "bleached":
        params.update(p_sted_mw=float(rng.uniform(40.0, 150.0)), repeats=int(rng.integers(5, 11)))
    scope = SimulatedMicroscope(structure=structure, seed=s, empty=kind == "empty", **sample)
    for _ in range(params["repeats"] - 1):   # earlier scans bleach the sample (same settings)
        scope.acquire(params["dwell_time_us"], params["p_ex_uw"], params["p_sted_mw"])
    image, info = scope.acquire(params["dwell_time_us"], params["p_ex_uw"], params["p_sted_mw"])
    if kind == "shuffled":   # the same photons, no structure: the expert's rule labels it
        image = rng.permutation(image.ravel()).reshape(image.shape)
        info = scope.label(image, info)
    elif kind == "saturated":   # flat, clipped tops: the rule's saturation term labels it
        peak = float(image.max())
        image = np.minimum(image, max(2, int(rng.uniform(*SATURATION_CEILING) * peak))).astype(np.uint16)
        info = scope.label(image, info)
    elif balanced:
        image, info = _steer_to_bin(structure, s, index, image, info, sample)
    return image, {**info, "index": index, "class": kind}


def _steer_to_bin(structure: str, seed: int, index: int, image: np.ndarray, info: dict, sample: dict):
    """Balanced mode: image i targets quality bin i % BALANCED_BINS; up to a few fresh parameter draws
    (on fresh copies of the same sample) are tried and the one closest to the bin's centre is kept."""
    from stedq.training.data.microscope import SimulatedMicroscope

    target = (index % BALANCED_BINS + 0.5) / BALANCED_BINS
    best = (abs(info["label"] - target), image, info)
    rng = np.random.default_rng([seed, 1])
    for attempt in range(6):
        if best[0] <= 0.5 / BALANCED_BINS:
            break
        # Low targets need poor settings: widen the draw toward short dwell / weak depletion / re-scans.
        params = sample_parameters(rng)
        if target < 0.3:
            params["dwell_time_us"] = float(rng.uniform(2.0, 8.0))
            params["p_sted_mw"] = float(rng.choice([0.0, rng.uniform(0.0, 150.0)]))
        scope = SimulatedMicroscope(structure=structure, seed=seed + 1 + attempt, **sample)
        for _ in range(params["repeats"] - 1):
            scope.acquire(params["dwell_time_us"], params["p_ex_uw"], params["p_sted_mw"])
        img, inf = scope.acquire(params["dwell_time_us"], params["p_ex_uw"], params["p_sted_mw"])
        if abs(inf["label"] - target) < best[0]:
            best = (abs(inf["label"] - target), img, inf)
    return best[1], best[2]


def file_stem(structure: str, index: int) -> str:
    return f"{structure}{index:05d}"


def _existing(folder: Path, structure: str, index: int) -> Path | None:
    matches = sorted(folder.glob(f"{file_stem(structure, index)}-*.tiff"))
    return matches[0] if matches else None


def _work(job: tuple[str, int, int, bool, str, float | None, tuple[str, ...]]) -> dict:
    """Worker: simulate one image and write its TIFF (atomically: a killed run leaves no half file)."""
    import tifffile

    structure, seed, index, balanced, folder, pixel_nm, dense = job
    image, row = simulate_one(structure, seed, index, balanced, pixel_nm, dense)
    row["label"] = round(row["label"], 4)   # the file name's precision is the label
    name = file_stem(structure, index)
    path = Path(folder) / f"{name}-{row['label']:.4f}.tiff"
    tmp = path.with_suffix(".tiff.part")
    tifffile.imwrite(tmp, image, photometric="minisblack", metadata=None,
                     description=json.dumps({k: row[k] for k in ("dwell_time_us", "p_ex_uw", "p_sted_mw")}))
    os.replace(tmp, path)
    row_path = Path(folder) / ".rows" / f"{name}.json"
    row_path.write_text(json.dumps({**row, "file": path.name, "name": name, "score": round(row["label"], 4)}))
    return row


def _init_worker() -> None:
    # Each worker gets one core's worth; pysted is single-threaded, scipy/numpy should be too.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def generate(out: Path, counts: dict[str, int], seed: int = 0, workers: int = 2, balanced: bool = False,
             progress: bool = True, pixel_nm: float | None = None,
             dense: tuple[str, ...] = DEFAULT_DENSE) -> dict[str, Path]:
    """Generate (or resume) every structure folder under `out`; returns structure -> folder. `pixel_nm`
    fixes the pixel size (default: drawn from PIXEL_SIZE_WEIGHTS), the other draws staying the same;
    `dense` ("axons", "bundles") draws those kinds of the mix as dense fields (structures.DENSE_FIELDS;
    default: both, data 2.1; () gives data 2.0)."""
    from tqdm import tqdm

    from stedq.training.data.loader import write_manifest

    out = Path(out)
    # Recorded only when set, so that a folder made before an option existed still resumes.
    dense_settings = {f"dense_{name}": True for name in sorted(dense)}
    extra = {**({} if pixel_nm is None else {"pixel_nm": pixel_nm}), **dense_settings}
    _check_resumable(out, counts, seed, balanced, extra)
    jobs: list[tuple[str, int, int, bool, str, float | None, tuple[str, ...]]] = []
    folders = {}
    for structure, n in counts.items():
        folder = out / structure
        (folder / ".rows").mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.part"):
            stale.unlink()
        folders[structure] = folder
        done = sum(1 for i in range(n) if _existing(folder, structure, i) and
                   (folder / ".rows" / f"{file_stem(structure, i)}.json").exists())
        if done:
            log.info("%s: %d of %d images already there, resuming", structure, done, n)
        jobs += [(structure, seed, i, balanced, str(folder), pixel_nm, tuple(dense)) for i in range(n)
                 if not (_existing(folder, structure, i) and (folder / ".rows" / f"{file_stem(structure, i)}.json").exists())]
    (out / "DONE").unlink(missing_ok=True)
    start = time.monotonic()
    bar = tqdm(total=len(jobs), desc="simulating STED images", unit="img", disable=not progress)
    if workers <= 1:
        for job in jobs:
            _work(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            for _ in pool.map(_work, jobs, chunksize=1):
                bar.update()
    bar.close()
    elapsed = time.monotonic() - start
    for structure, folder in folders.items():
        _write_labels(folder, structure, counts[structure])
        write_manifest(folder, {"generator": "stedq data synth", "structure": structure, "seed": seed,
                                "count": counts[structure], "balanced": balanced, **extra})
    (out / "DONE").write_text(json.dumps({"counts": counts, "seed": seed, "balanced": balanced, "pixel_nm": pixel_nm,
                                          **dense_settings,
                                          "simulated_images": len(jobs), "seconds": round(elapsed, 1),
                                          "workers": workers}, indent=2) + "\n")
    log.info("%d images simulated in %.0f s into %s", len(jobs), elapsed, out)
    return folders


def _check_resumable(out: Path, counts: dict[str, int], seed: int, balanced: bool, extra: dict) -> None:
    """Resuming into a folder made with other settings would mix two datasets: refuse, saying why.
    `extra`: the settings that are recorded only when set (pixel_nm, dense_*)."""
    settings_path = out / ".synth.json"
    settings = {"seed": seed, "balanced": balanced, **extra}
    if settings_path.is_file():
        before = json.loads(settings_path.read_text())
        if before != settings:
            raise SystemExit(f"{out} was generated with {before}, not {settings}: use another --out "
                             "or delete the folder")
    for structure, n in counts.items():
        extra = [p.name for p in (out / structure).glob(f"{structure}*-*.tiff")
                 if int(p.name[len(structure):].split("-")[0] or 0) >= n]
        if extra:
            raise SystemExit(f"{out / structure} holds {len(extra)} images beyond the {n} asked for "
                             f"(e.g. {extra[0]}): use another --out or delete the folder")
    out.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings) + "\n")


def _write_labels(folder: Path, structure: str, n: int) -> None:
    rows = [json.loads((folder / ".rows" / f"{file_stem(structure, i)}.json").read_text()) for i in range(n)]
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

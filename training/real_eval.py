"""`stedq evaluate --real DIR`: how a model behaves on real STED images and their physical degradations.

DIR is laid out like validation/real-dev: `originals/NAME.tif` (files as the microscope wrote them) and
`degraded/NAME__KIND.tif` (plain photon counts; any subset of the kinds below). Every file is scored the
way `stedq score` scores it: in-process with onnxruntime on a bundle (default: the bundled model), or
through a running server. The checks say what an expert would say of each degradation; a file that
cannot be scored fails its checks with the reason, it never stops the run.

The real images are for validation only: never training labels, never a way to choose among runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stedq.files import ReadError, read_frames
from stedq.pixels import Intensity

THINNING = ["base", "thin050", "thin025", "thin010"]      # 100 / 50 / 25 / 10 % of the photons
BLUR = ["base", "blur15", "blur30", "blur50"]             # Gaussian blur sigma 0 / 1.5 / 3 / 5 px
CROPS = ["crop160", "crop100", "crop064"]
KINDS = ["original", *THINNING, *BLUR[1:], "shuffle", *CROPS]
LADDER_LABELS = {"thin050": "50 %", "thin025": "25 %", "thin010": "10 %",
                 "blur15": "1.5 px", "blur30": "3 px", "blur50": "5 px"}

ORIGINAL_TOLERANCE = 0.01   # an original scores as its base when read with the right calibration
SHUFFLE_MAX = 0.1           # shuffled pixels (no structure) score below this ...
SHUFFLE_MAX_OF_BASE = 0.5   # ... and below this share of the base
CONFOCAL_MAX_OF_BASE = 0.5  # blur 5 px (confocal-like) scores at most this share of the base


class RealSetError(ValueError):
    """DIR is not laid out like real-dev; the message says what was expected."""


@dataclass
class Scored:
    file: str
    score: float | None = None
    error: str = ""


@dataclass
class Check:
    id: str
    title: str
    target: str
    value: str = ""
    passed: bool = False
    run: bool = True                      # False when DIR holds none of the kinds it needs
    details: list[str] = field(default_factory=list)


# A scoring backend: one H×W array and its intensity (as stedq.files read it) -> score; a refusal raises
# ValueError, TypeError or RuntimeError whose message is the reason.
ScoreFn = Callable[[np.ndarray, Intensity], float]


def discover(root: Path) -> dict[str, dict[str, Path]]:
    """{image name: {kind: file}} from originals/NAME.tif and degraded/NAME__KIND.tif."""
    root = Path(root)
    originals, degraded = root / "originals", root / "degraded"
    if not originals.is_dir() and not degraded.is_dir():
        raise RealSetError(f"{root}: expected originals/NAME.tif and/or degraded/NAME__KIND.tif "
                           f"(laid out like validation/real-dev)")
    found: dict[str, dict[str, Path]] = {}
    if originals.is_dir():
        for path in sorted(originals.iterdir()):
            if path.suffix.lower() in (".tif", ".tiff"):
                found.setdefault(path.stem, {})["original"] = path
    if degraded.is_dir():
        for path in sorted(degraded.iterdir()):
            name, sep, kind = path.stem.rpartition("__")
            if path.suffix.lower() in (".tif", ".tiff") and sep and kind in KINDS:
                found.setdefault(name, {})[kind] = path
    if not found:
        raise RealSetError(f"{root}: no originals/*.tif and no degraded/NAME__KIND.tif with KIND in "
                           f"{', '.join(KINDS[1:])}")
    return found


def score_file(path: Path, score: ScoreFn) -> Scored:
    """One file as `stedq score` reads it (stedq.files); refusals become the row's error."""
    try:
        frames = read_frames(path)
    except ReadError as exc:
        return Scored(str(path), error=exc.problem)
    if len(frames) != 1:
        return Scored(str(path), error=f"holds {len(frames)} images; --real expects one image per file")
    try:
        return Scored(str(path), score=float(score(frames[0].image, frames[0].intensity)))
    except (ValueError, TypeError, RuntimeError) as exc:
        return Scored(str(path), error=str(exc))


def score_set(found: dict[str, dict[str, Path]], score: ScoreFn,
              progress: Callable[[int], None] = lambda n: None) -> dict[str, dict[str, Scored]]:
    results: dict[str, dict[str, Scored]] = {}
    for name, kinds in found.items():
        results[name] = {}
        for kind in KINDS:
            if kind in kinds:
                results[name][kind] = score_file(kinds[kind], score)
                progress(1)
    return results


def _value(row: Scored | None) -> tuple[float | None, str]:
    if row is None:
        return None, "missing"
    if row.score is None:
        return None, f"refused: {row.error}"
    return row.score, ""


def _ladder(scores: dict[str, dict[str, Scored]], ladder: list[str], check: Check) -> Check:
    """Every step down the ladder must lower the score; value = steps that fall / steps."""
    falls = steps = 0
    for name, rows in scores.items():
        present = [kind for kind in ladder if kind in rows]
        for before, after in zip(present, present[1:], strict=False):
            steps += 1
            (a, why_a), (b, why_b) = _value(rows[before]), _value(rows[after])
            if a is None or b is None:
                check.details.append(f"{name} {before} → {after}: {why_a or why_b}")
                continue
            if b < a:
                falls += 1
            else:
                check.details.append(f"{name} {before} → {after}: {a:.3f} → {b:.3f} (does not fall)")
    check.run = steps > 0
    check.value = f"{falls}/{steps} steps fall"
    check.passed = check.run and falls == steps
    return check


def _per_image(scores: dict[str, dict[str, Scored]], kind: str, check: Check,
               test: Callable[[float, float], tuple[bool, str]]) -> Check:
    """`test(base, score)` for every image that has `kind`; value = images that pass / images."""
    passed = total = 0
    for name, rows in scores.items():
        if kind not in rows:
            continue
        total += 1
        (base, why_base), (value, why) = _value(rows.get("base")), _value(rows[kind])
        if base is None or value is None:
            check.details.append(f"{name}: {why or 'base ' + why_base}")
            continue
        ok, text = test(base, value)
        passed += ok
        if not ok:
            check.details.append(f"{name}: {text}")
    check.run = total > 0
    check.value = f"{passed}/{total} images"
    check.passed = check.run and passed == total
    return check


def run_checks(scores: dict[str, dict[str, Scored]]) -> list[Check]:
    originals = _per_image(
        scores, "original",
        Check("originals", "originals score as their base (calibration read right)",
              f"original within ±{ORIGINAL_TOLERANCE} of the base for every image"),
        lambda base, s: (abs(s - base) <= ORIGINAL_TOLERANCE, f"original {s:.3f} vs base {base:.3f}"))
    thinning = _ladder(scores, THINNING, Check(
        "thinning", "fewer photons lower the score (thinning to 50/25/10 %)", "every step falls"))
    blur = _ladder(scores, BLUR, Check(
        "blur", "blur lowers the score (σ 1.5/3/5 px, same photon budget)", "every step falls"))
    shuffle = _per_image(
        scores, "shuffle",
        Check("shuffle", "shuffled pixels (no structure) score near 0",
              f"shuffle < {SHUFFLE_MAX} and < {SHUFFLE_MAX_OF_BASE} × base for every image"),
        lambda base, s: (s < SHUFFLE_MAX and s < SHUFFLE_MAX_OF_BASE * base,
                         f"shuffle {s:.3f} vs base {base:.3f}"))
    confocal = _per_image(
        scores, "blur50",
        Check("confocal", "a confocal-like image (blur 5 px) scores well below the STED image",
              f"blur 5 px ≤ {CONFOCAL_MAX_OF_BASE} × base for every image"),
        lambda base, s: (s <= CONFOCAL_MAX_OF_BASE * base, f"blur 5 px {s:.3f} vs base {base:.3f}"))
    return [originals, thinning, blur, shuffle, _crops(scores), confocal]


def _crops(scores: dict[str, dict[str, Scored]]) -> Check:
    check = Check("crops", "crops of 64–160 px are scored (not refused)", "every crop scored; distance to the "
                  "base reported")
    scored = total = 0
    gaps: list[float] = []
    for name, rows in scores.items():
        base, _ = _value(rows.get("base"))
        for kind in CROPS:
            if kind not in rows:
                continue
            total += 1
            value, why = _value(rows[kind])
            if value is None:
                check.details.append(f"{name} {kind}: {why}")
                continue
            scored += 1
            if base is not None:
                gaps.append(value - base)
    check.run = total > 0
    gap = f"; crop − base mean {np.mean(gaps):+.3f}, largest gap {np.max(np.abs(gaps)):.3f}" if gaps else ""
    check.value = f"{scored}/{total} crops scored{gap}"
    check.passed = check.run and scored == total
    return check


def evaluate_real(root: Path, score: ScoreFn, model: dict, source: str,
                  progress: Callable[[int], None] = lambda n: None) -> dict:
    """Score every file under `root` and run the checks; the report's figures as plain data."""
    found = discover(root)
    scores = score_set(found, score, progress)
    checks = run_checks(scores)
    ran = [c for c in checks if c.run]
    return {
        "model": model, "scored_by": source, "dir": str(root),
        "images": {name: {kind: asdict(row) for kind, row in rows.items()} for name, rows in scores.items()},
        "checks": [asdict(c) for c in checks],
        "summary": {"passed": sum(c.passed for c in ran), "run": len(ran),
                    "files": sum(len(rows) for rows in scores.values()),
                    "refused": sum(row.score is None for rows in scores.values() for row in rows.values())},
    }


def count_files(root: Path) -> int:
    return sum(len(kinds) for kinds in discover(root).values())

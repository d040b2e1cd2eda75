"""The paper's user-study metrics: tester records -> confusion and domination per quality bin.

In the study (Robitaille et al. 2018, section "User study"), a tester sees an image and two scores, the
target (an expert's label) and a system's prediction, without knowing which is which, and picks the one
that better describes the image: "target", "prediction", "equal", or "discard". Per bin of target
quality, with T, P, E the counts of each choice and Ñ = T + P + E (discards left out):

    confusion  C = 1 - |(2P + E) - Ñ| / Ñ    1 when the tester cannot tell the two apart (P = T),
                                              0 when one side always wins
    domination D = P / (T + P)               above 0.5 when the prediction is preferred

Both are computed per tester and reported as mean ± std over testers, for the network and for the
random baseline (a "system" that predicts labels drawn from the training set).

`SimulatedTester` stands in for a human on synthetic data, where the true quality is known.
Only numpy and the standard library at import time (the study web app imports this module);
matplotlib is imported by `plot_tpe_bars` alone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CHOICES = ("target", "prediction", "equal", "discard")
BINS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
SYSTEMS = ("network", "random")
CSV_COLUMNS = ("tester", "image_id", "system", "target", "prediction", "choice")


class RecordsError(ValueError):
    """Tester records that cannot be used; the message names the file, the row and the field."""


@dataclass
class TesterRecord:
    __test__ = False   # not a pytest test class, despite the name

    tester: str
    image_id: str
    system: str        # "network" | "random" (other names are kept and tabled too)
    target: float      # the expert's (or the simulated expert's) label, in [0, 1]
    prediction: float  # the system's score, in [0, 1]
    choice: str        # one of CHOICES

    def __post_init__(self) -> None:
        if self.choice not in CHOICES:
            raise RecordsError(f"choice {self.choice!r} is not one of {', '.join(CHOICES)}")
        for field in ("target", "prediction"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise RecordsError(f"{field} {value!r} is not a number in [0, 1]")


# --- CSV ---------------------------------------------------------------------------------------------

def write_records_csv(records: Iterable[TesterRecord], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow({**asdict(record), "target": f"{record.target:.6g}",
                             "prediction": f"{record.prediction:.6g}"})
    return path


def read_records_csv(path: str | Path) -> list[TesterRecord]:
    """Read records; any problem raises RecordsError naming the file, the line and the field."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise RecordsError(f"{path}: cannot read tester records: {exc.strerror or exc}") from None
    records: list[TesterRecord] = []
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RecordsError(f"{path}: missing column(s) {', '.join(missing)} "
                               f"(expected header: {','.join(CSV_COLUMNS)})")
        for row in reader:
            line = reader.line_num
            try:
                target, prediction = float(row["target"]), float(row["prediction"])
            except (TypeError, ValueError):
                raise RecordsError(f"{path}, line {line}: target/prediction must be numbers, got "
                                   f"{row['target']!r} and {row['prediction']!r}") from None
            try:
                records.append(TesterRecord(tester=row["tester"].strip(), image_id=row["image_id"].strip(),
                                            system=row["system"].strip(), target=target,
                                            prediction=prediction, choice=row["choice"].strip()))
            except RecordsError as exc:
                raise RecordsError(f"{path}, line {line}: {exc}") from None
    return records


# --- tables ------------------------------------------------------------------------------------------

@dataclass
class BinSummary:
    """One system's answers in one target bin. Counts are summed over testers; C and D are mean ± std
    over the testers that answered in this bin (None when no tester did)."""

    low: float
    high: float
    T: int
    P: int
    E: int
    discarded: int
    n: int                                # Ñ = T + P + E
    n_testers: int                        # testers with at least one non-discarded answer here
    confusion_mean: float | None
    confusion_std: float | None
    domination_mean: float | None
    domination_std: float | None

    @property
    def has_data(self) -> bool:
        return self.n > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "has_data": self.has_data}


def bin_index(target: float) -> int:
    """Index into BINS; each bin is [low, high) except the last, which includes 1.0."""
    for index, (low, high) in enumerate(BINS):
        if low <= target < high:
            return index
    return len(BINS) - 1


def confusion(T: int, P: int, E: int) -> float:
    n = T + P + E
    return 1.0 - abs((2 * P + E) - n) / n


def domination(T: int, P: int) -> float:
    return P / (T + P)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))  # population std: defined for one tester too


def study_tables(records: Iterable[TesterRecord]) -> dict[str, list[BinSummary]]:
    """{system: [BinSummary per bin of BINS]}, "network" then "random" then any other system."""
    # counts[system][tester][bin] = {choice: count}
    counts: dict[str, dict[str, list[dict[str, int]]]] = {}
    for record in records:
        per_tester = counts.setdefault(record.system, {})
        bins = per_tester.setdefault(record.tester, [dict.fromkeys(CHOICES, 0) for _ in BINS])
        bins[bin_index(record.target)][record.choice] += 1

    order = [s for s in SYSTEMS if s in counts] + sorted(s for s in counts if s not in SYSTEMS)
    tables: dict[str, list[BinSummary]] = {}
    for system in order:
        rows = []
        for index, (low, high) in enumerate(BINS):
            totals = dict.fromkeys(CHOICES, 0)
            confusions, dominations = [], []
            for tester_bins in counts[system].values():
                c = tester_bins[index]
                for choice in CHOICES:
                    totals[choice] += c[choice]
                T, P, E = c["target"], c["prediction"], c["equal"]
                if T + P + E:
                    confusions.append(confusion(T, P, E))
                if T + P:
                    dominations.append(domination(T, P))
            c_mean, c_std = _mean_std(confusions)
            d_mean, d_std = _mean_std(dominations)
            rows.append(BinSummary(
                low=low, high=high, T=totals["target"], P=totals["prediction"], E=totals["equal"],
                discarded=totals["discard"], n=totals["target"] + totals["prediction"] + totals["equal"],
                n_testers=len(confusions), confusion_mean=c_mean, confusion_std=c_std,
                domination_mean=d_mean, domination_std=d_std))
        tables[system] = rows
    return tables


def tables_to_dict(tables: dict[str, list[BinSummary]]) -> dict[str, list[dict]]:
    return {system: [row.to_dict() for row in rows] for system, rows in tables.items()}


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.2f} ± {std:.2f}"


def tables_markdown(tables: dict[str, list[BinSummary]]) -> str:
    """One markdown table per system, bins as columns (the layout of the paper's Tables 1 and 2)."""
    parts = []
    for system, rows in tables.items():
        header = "| " + system + " | " + " | ".join(f"{r.low:.1f}–{r.high:.1f}" for r in rows) + " |"
        parts += [f"**{system}** (choices summed over testers; C and D mean ± std over testers)", "",
                  header, "|---" * (len(rows) + 1) + "|"]
        lines = [("T (target chosen)", lambda r: str(r.T)), ("P (prediction chosen)", lambda r: str(r.P)),
                 ("E (equal)", lambda r: str(r.E)), ("discarded", lambda r: str(r.discarded)),
                 ("Ñ = T + P + E", lambda r: str(r.n)), ("testers", lambda r: str(r.n_testers)),
                 ("confusion C", lambda r: _pm(r.confusion_mean, r.confusion_std)),
                 ("domination D", lambda r: _pm(r.domination_mean, r.domination_std))]
        for label, cell in lines:
            parts.append(f"| {label} | " + " | ".join(cell(r) if r.has_data or label == "discarded"
                                                     else "no data" for r in rows) + " |")
        parts.append("")
    return "\n".join(parts)


def plot_tpe_bars(tables: dict[str, list[BinSummary]], png_path: str | Path) -> Path:
    """Share of T / P / E answers per target bin, one panel per system (like the paper's Figures 8–9)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    systems = list(tables)
    fig, axes = plt.subplots(1, max(1, len(systems)), figsize=(5.5 * max(1, len(systems)), 4), squeeze=False)
    x = np.arange(len(BINS))
    width = 0.27
    colours = {"T": "#4c72b0", "P": "#dd8452", "E": "#8c8c8c"}
    labels = {"T": "target chosen", "P": "prediction chosen", "E": "equal"}
    for ax, system in zip(axes[0], systems, strict=True):
        rows = tables[system]
        for offset, key in zip((-width, 0.0, width), ("T", "P", "E"), strict=True):
            share = [getattr(r, key) / r.n if r.n else 0.0 for r in rows]
            ax.bar(x + offset, share, width, label=labels[key], color=colours[key])
        for i, r in enumerate(rows):
            text = f"Ñ={r.n}" if r.has_data else "no data"
            ax.text(i, 1.02, text, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, [f"{r.low:.1f}–{r.high:.1f}" for r in rows])
        ax.set_ylim(0, 1.12)
        ax.set_xlabel("target quality bin")
        ax.set_ylabel("share of answers")
        ax.set_title(f"{system}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


# --- simulation --------------------------------------------------------------------------------------

class SimulatedTester:
    """A tester who knows the true quality up to their own noise.

    They perceive q = true_quality + N(0, noise), call the two scores equal when their distances to q
    differ by at most `tolerance`, else pick the closer one; `discard_rate` of images are discarded.
    """

    def __init__(self, noise: float, tolerance: float, seed: int, discard_rate: float = 0.0):
        if noise < 0 or tolerance < 0 or not 0.0 <= discard_rate <= 1.0:
            raise ValueError("noise and tolerance must be >= 0 and discard_rate in [0, 1]")
        self.noise, self.tolerance, self.discard_rate = float(noise), float(tolerance), float(discard_rate)
        self.rng = np.random.default_rng(seed)

    def choose(self, true_quality: float, target: float, prediction: float) -> str:
        perceived = true_quality + self.rng.normal(0.0, self.noise) if self.noise else true_quality
        if self.discard_rate and self.rng.random() < self.discard_rate:
            return "discard"
        gap = abs(target - perceived) - abs(prediction - perceived)
        if abs(gap) <= self.tolerance:
            return "equal"
        return "prediction" if gap > 0 else "target"


def random_baseline_predictions(train_labels: Sequence[float] | np.ndarray, n: int,
                                rng: np.random.Generator) -> np.ndarray:
    """The paper's random baseline: n scores drawn (with replacement) from the training labels."""
    labels = np.asarray(train_labels, dtype=np.float64).ravel()
    if labels.size == 0:
        raise ValueError("the random baseline needs at least one training label")
    return rng.choice(labels, size=n, replace=True)


def simulate_study(image_ids: Sequence[str], true_quality: Sequence[float], targets: Sequence[float],
                   predictions: dict[str, Sequence[float]], testers: dict[str, SimulatedTester],
                   ) -> list[TesterRecord]:
    """Every tester judges every image once per system ({system: predictions}); returns the records."""
    records = []
    for name, tester in testers.items():
        for system, scores in predictions.items():
            for image_id, truth, target, prediction in zip(image_ids, true_quality, targets, scores,
                                                           strict=True):
                target, prediction = float(np.clip(target, 0, 1)), float(np.clip(prediction, 0, 1))
                records.append(TesterRecord(tester=name, image_id=str(image_id), system=system,
                                            target=target, prediction=prediction,
                                            choice=tester.choose(float(truth), target, prediction)))
    return records


def default_testers(n: int = 5, seed: int = 0, noise: tuple[float, float] = (0.03, 0.12),
                    tolerance: float = 0.05) -> dict[str, SimulatedTester]:
    """n simulated testers with noise spread evenly over `noise` (different experts, different care)."""
    levels = np.linspace(noise[0], noise[1], n) if n > 1 else [noise[0]]
    return {f"sim{i + 1}": SimulatedTester(noise=float(level), tolerance=tolerance, seed=seed * 1000 + i)
            for i, level in enumerate(levels)}

"""The `stedq evaluate --real` report: report.md, figures.json and scores.png in one folder."""

from __future__ import annotations

import json
from pathlib import Path

from stedq.bundle import write_atomic
from stedq.training.real_eval import BLUR, CONFOCAL_MAX_OF_BASE, CROPS, LADDER_LABELS, SHUFFLE_MAX, THINNING

TABLE_COLUMNS = [("original", "original"), ("base", "base"), ("thin 50/25/10 %", THINNING[1:]),
                 ("blur 1.5/3/5 px", BLUR[1:]), ("shuffle", "shuffle"), ("crops 160/100/64", CROPS)]


def _cell(rows: dict, kinds: str | list[str]) -> str:
    values = []
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        row = rows.get(kind)
        values.append("–" if row is None else "refused" if row["score"] is None else f"{row['score']:.3f}")
    return " ".join(values)


def markdown(figures: dict) -> str:
    model, summary = figures["model"], figures["summary"]
    lines = [
        f"# Real STED images: {model['name']} {model['version']}",
        "",
        f"Scored by {figures['scored_by']} from `{figures['dir']}` ({summary['files']} files, "
        f"{summary['refused']} refused). **{summary['passed']} of {summary['run']} checks pass.**",
        "",
        "Reproduce: `stedq evaluate --real validation/real-dev` (add `--model BUNDLE` or `--server HOST:PORT`). "
        "These images are a release gate: never training labels, never a way to choose among runs.",
        "",
        "| check | target | measured | |",
        "|---|---|---|---|",
    ]
    for check in figures["checks"]:
        verdict = "not run" if not check["run"] else "**pass**" if check["passed"] else "**fail**"
        lines.append(f"| {check['title']} | {check['target']} | {check['value'] or '–'} | {verdict} |")
    gate = figures.get("variant_vs_fp32")
    if gate:   # a reduced-precision variant, compared with the same bundle's FP32 on every file
        lines += ["", f"**{gate['variant'].upper()} against FP32** on the {gate['n_images']} scored files: mean "
                  f"|Δscore| {gate['mean_abs_diff']:.4f} (max {gate['max_abs_diff']:.4f}), Spearman "
                  f"{gate['spearman']:.4f}; the export gate (mean |Δ| ≤ 0.01, Spearman ≥ 0.99) "
                  + ("**passes**." if gate["passed"] else f"**fails**: {gate['reason']}.")]
    lines += ["", "## Scores", "",
              "| image | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
              "|---|" + "---|" * len(TABLE_COLUMNS)]
    for name, rows in figures["images"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(rows, kinds) for _, kinds in TABLE_COLUMNS) + " |")
    lines += ["", "![scores along each degradation](scores.png)", ""]
    failures = [(c["title"], d) for c in figures["checks"] for d in c["details"]]
    if failures:
        lines += ["## What failed", ""] + [f"- {title}: {detail}" for title, detail in failures] + [""]
    return "\n".join(lines)


def plot(figures: dict, path: Path) -> None:
    """One row per image: the thinning and blur ladders, then base / shuffle / crops side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figures["images"])
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.6 * len(names)), squeeze=False)
    for (ladder_ax, bar_ax), name in zip(axes, names, strict=True):
        rows = figures["images"][name]

        def score(kind: str, rows: dict = rows) -> float | None:
            return rows[kind]["score"] if kind in rows else None

        for ladder, label, colour in ((THINNING, "fewer photons", "tab:blue"), (BLUR, "blur", "tab:orange")):
            steps = [(i, score(k)) for i, k in enumerate(ladder) if score(k) is not None]
            if steps:
                ladder_ax.plot(*zip(*steps, strict=True), "o-", color=colour, label=label)
        base = score("base")
        if base is not None:
            ladder_ax.axhline(CONFOCAL_MAX_OF_BASE * base, color="tab:orange", ls=":", lw=1,
                              label=f"{CONFOCAL_MAX_OF_BASE} × base (blur 5 px target)")
        ladder_ax.set_xticks(range(4), ["base", "50 % / 1.5 px", "25 % / 3 px", "10 % / 5 px"], fontsize=8)
        ladder_ax.set(ylim=(0, 1), ylabel="score", title=f"{name}: degradation ladders")
        ladder_ax.legend(fontsize=7, loc="upper right")

        kinds = [k for k in ["original", "base", "shuffle", *CROPS] if k in rows]
        values = [score(k) if score(k) is not None else 0.0 for k in kinds]
        colours = ["tab:red" if score(k) is None else "tab:gray" if k in ("original", "base")
                   else "tab:purple" if k == "shuffle" else "tab:green" for k in kinds]
        bar_ax.bar(range(len(kinds)), values, color=colours)
        for i, kind in enumerate(kinds):
            if score(kind) is None:
                bar_ax.text(i, 0.02, "refused", rotation=90, ha="center", va="bottom", fontsize=8)
        bar_ax.axhline(SHUFFLE_MAX, color="tab:purple", ls=":", lw=1, label=f"shuffle target < {SHUFFLE_MAX}")
        bar_ax.set_xticks(range(len(kinds)), [LADDER_LABELS.get(k, k) for k in kinds], fontsize=8)
        bar_ax.set(ylim=(0, 1), title=f"{name}: shuffle, crops vs base")
        bar_ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(figures: dict, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "figures.json", (json.dumps(figures, indent=2) + "\n").encode())
    plot(figures, out / "scores.png")
    write_atomic(out / "report.md", markdown(figures).encode())
    return out / "report.md"

"""`stedq study export` and `stedq study report`: the answers that count -> tester records CSV (what
`stedq evaluate` reads) -> the paper's Tables 1-2 and T/P/E bar charts (markdown, JSON, PNG).

The formulas are the training area's (stedq.training.userstudy); this file only feeds them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from stedq.study import store
from stedq.training.userstudy import (
    TesterRecord,
    plot_tpe_bars,
    read_records_csv,
    study_tables,
    tables_markdown,
    tables_to_dict,
    write_records_csv,
)

RECORDS_NAME = "records.csv"


def study_records(study_dir: Path, include_simulated: bool = True) -> list[TesterRecord]:
    conn = store.connect(study_dir)
    try:
        rows = store.standing_answers(conn)
    finally:
        conn.close()
    return [TesterRecord(tester=r["tester"], image_id=r["image_id"], system=r["system"], target=r["target"],
                         prediction=r["prediction"], choice=r["choice"])
            for r in rows if include_simulated or not r["simulated"]]


def export_records(study_dir: Path, out: Path | None = None, include_simulated: bool = True) -> tuple[Path, int]:
    """Write the records CSV (default <study>/records.csv); returns (path, number of records)."""
    records = study_records(study_dir, include_simulated)
    path = write_records_csv(records, out or Path(study_dir) / RECORDS_NAME)
    return path, len(records)


LOG_COLUMNS = ("tester", "position", "image_id", "system", "target", "prediction", "a_is", "answer", "choice",
               "answered_at", "undone_at", "client")


def export_log(study_dir: Path, out: Path) -> tuple[Path, int]:
    """Every answer ever given (undone and superseded ones too): the audit trail of the study."""
    conn = store.connect(study_dir)
    try:
        rows = store.full_log(conn)
    finally:
        conn.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOG_COLUMNS)
        writer.writerows([row[column] for column in LOG_COLUMNS] for row in rows)
    return out, len(rows)


def progress_lines(study_dir: Path) -> list[str]:
    conn = store.connect(study_dir)
    try:
        rows = store.testers(conn)
    finally:
        conn.close()
    return [f"{r['name']}{' (simulated)' if r['simulated'] else ''}: {r['answered']} of {r['total']} trials answered"
            for r in rows]


def write_report(records_or_study: Path, out_dir: Path, include_simulated: bool = True) -> Path:
    """Tables 1-2 (markdown + JSON) and the T/P/E chart from a study folder or a records CSV;
    returns the markdown file."""
    source = Path(records_or_study)
    if source.is_dir():
        records = study_records(source, include_simulated)
        testers_text = "\n".join(f"- {line}" for line in progress_lines(source))
    else:
        records = read_records_csv(source)
        testers_text = "\n".join(f"- {name}" for name in sorted({r.tester for r in records}))
    if not records:
        raise store.StudyError(f"{source}: no answers yet, nothing to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = study_tables(records)
    png = plot_tpe_bars(tables, out_dir / "tpe.png")
    (out_dir / "tables.json").write_text(json.dumps(tables_to_dict(tables), indent=2) + "\n")
    markdown = "\n".join([
        "# User study: target vs prediction", "",
        f"Source: `{source}` — {len(records)} answers from {len({r.tester for r in records})} testers, "
        f"systems: {', '.join(tables)}.", "",
        "Per bin of target quality: T, P, E count the answers preferring the target, the prediction, or "
        "neither; confusion C = 1 − |(2P + E) − Ñ| / Ñ (1: indistinguishable), domination D = P / (T + P) "
        "(above 0.5: the prediction is preferred). Discarded images are left out of Ñ.", "",
        tables_markdown(tables), f"![T/P/E per bin]({png.name})", "", "## Testers", "", testers_text, ""])
    path = out_dir / "report.md"
    path.write_text(markdown)
    return path

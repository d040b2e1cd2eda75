"""Simulated testers: they answer through the same store calls as the web app, so a simulated run
exercises the whole pipeline (create -> answer -> export -> report) without people.

Each one is the training area's `SimulatedTester`: it perceives the image's quality with its own noise
and picks the closer score. The quality it perceives is the image's noise-free quality where the
folder knows it (synthetic data: label_clean), else the expert label itself - then the simulation asks
"would another, noisier expert prefer the network's score to this label?".
"""

from __future__ import annotations

from pathlib import Path

from stedq.study import store
from stedq.study.create import add_testers
from stedq.study.trials import answer_for
from stedq.training.userstudy import default_testers


def run_simulated_testers(study_dir: Path, n: int, seed: int = 0, noise: tuple[float, float] = (0.03, 0.12),
                          tolerance: float = 0.05) -> list[str]:
    """Add n simulated testers and answer all their trials; returns their names."""
    from tqdm import tqdm

    if n < 1:
        raise store.StudyError(f"--simulated-testers must be at least 1, got {n}")
    conn = store.connect(study_dir)
    try:
        taken = {row["name"] for row in store.testers(conn)}
    finally:
        conn.close()
    people = default_testers(n, seed=seed, noise=noise, tolerance=tolerance)
    clash = sorted(set(people) & taken)
    if clash:
        raise store.StudyError(f"{study_dir}: simulated testers {', '.join(clash)} already exist")
    add_testers(study_dir, list(people), simulated=True)
    conn = store.connect(study_dir)
    try:
        for name, tester in people.items():
            row = conn.execute("SELECT id FROM testers WHERE name = ?", (name,)).fetchone()
            total = store.progress(conn, row["id"]).total
            for _ in tqdm(range(total), desc=f"simulated tester {name}", unit="trial", leave=False):
                trial = store.current_trial(conn, row["id"])
                if trial is None:
                    break
                truth = trial["target"] if trial["truth"] is None else trial["truth"]
                choice = tester.choose(truth, trial["target"], trial["prediction"])
                store.record_answer(conn, row["id"], trial["position"], answer_for(choice, trial["a_is"]),
                                    client="simulated")
    finally:
        conn.close()
    return list(people)

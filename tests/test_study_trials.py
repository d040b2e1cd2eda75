"""Trial randomization, answer bookkeeping in SQLite, the contrast stretch (no web server here)."""

from __future__ import annotations

import sqlite3
from collections import Counter

import numpy as np
import pytest

from stedq.study import store
from stedq.study.render import stretch, write_png
from stedq.study.trials import answer_for, choice_of, make_trials

LABELS = [0.1, 0.3, 0.5, 0.7, 0.9]
NETWORK = [0.15, 0.25, 0.55, 0.65, 0.95]


def trials_for(seed: int, systems=("network", "random")):
    return make_trials(len(LABELS), {"network": NETWORK}, systems, baseline_labels=LABELS, seed=seed)


def test_every_image_and_system_once_in_a_random_order():
    trials = trials_for(seed=1)
    assert sorted((t.image, t.system) for t in trials) == sorted(
        (i, s) for i in range(len(LABELS)) for s in ("network", "random"))
    assert [t.position for t in trials] == list(range(10))
    assert all(t.prediction == NETWORK[t.image] for t in trials if t.system == "network")
    assert all(t.prediction in LABELS for t in trials if t.system == "random")   # drawn from training labels


def test_order_and_sides_differ_between_testers_and_repeat_for_a_seed():
    orders = {tuple((t.image, t.system, t.a_is) for t in trials_for(seed)) for seed in range(20)}
    assert len(orders) == 20
    assert trials_for(seed=7) == trials_for(seed=7)


def test_target_is_shown_as_a_about_half_of_the_time():
    sides = Counter(t.a_is for seed in range(40) for t in trials_for(seed))
    assert set(sides) == {"target", "prediction"}
    assert 0.4 < sides["target"] / sum(sides.values()) < 0.6


def test_missing_or_short_predictions_are_refused():
    with pytest.raises(ValueError, match="no predictions for system 'network'"):
        make_trials(5, {}, ["network"], LABELS, seed=0)
    with pytest.raises(ValueError, match="3 predictions for 5 images"):
        make_trials(5, {"network": [0.1, 0.2, 0.3]}, ["network"], LABELS, seed=0)


@pytest.mark.parametrize("a_is", ["target", "prediction"])
def test_clicks_map_to_choices_through_the_sides(a_is):
    other = "prediction" if a_is == "target" else "target"
    assert choice_of("A", a_is) == a_is and choice_of("B", a_is) == other
    assert choice_of("equal", a_is) == "equal" and choice_of("discard", a_is) == "discard"
    for choice in ("target", "prediction", "equal", "discard"):
        assert choice_of(answer_for(choice, a_is), a_is) == choice
    with pytest.raises(ValueError, match="answer 'C'"):
        choice_of("C", a_is)


@pytest.fixture
def db(tmp_path):
    conn = store.connect(tmp_path, create=True)
    store.add_images(conn, [(f"img{i}", f"/data/img{i}.tiff", f"images/{i:04d}.png", label)
                            for i, label in enumerate(LABELS)])
    ids = {}
    for name, seed in (("alice", 1), ("bob", 2)):
        store.add_tester(conn, name, seed, trials_for(seed))
        ids[name] = conn.execute("SELECT id FROM testers WHERE name = ?", (name,)).fetchone()["id"]
    yield conn, ids, tmp_path
    conn.close()


def test_answers_resume_at_the_first_unanswered_trial(db):
    conn, ids, folder = db
    assert store.current_trial(conn, ids["alice"])["position"] == 0
    store.record_answer(conn, ids["alice"], 0, "A")
    store.record_answer(conn, ids["alice"], 1, "equal")
    assert store.current_trial(conn, ids["alice"])["position"] == 2
    assert store.progress(conn, ids["alice"]) == store.Progress(answered=2, total=10)
    assert store.progress(conn, ids["bob"]).answered == 0          # testers are independent
    other = store.connect(folder)
    assert store.current_trial(other, ids["alice"])["position"] == 2   # committed: a new connection sees it
    other.close()


def test_a_trial_answered_twice_keeps_both_and_the_later_counts(db):
    conn, ids, _ = db
    store.record_answer(conn, ids["alice"], 3, "A")
    store.record_answer(conn, ids["alice"], 3, "discard")
    [row] = [r for r in store.standing_answers(conn) if r["position"] == 3]
    assert row["answer"] == "discard" and row["choice"] == "discard"
    assert [r["answer"] for r in store.answer_log(conn, ids["alice"])] == ["A", "discard"]


def test_undo_takes_back_the_last_trial_and_keeps_the_log(db):
    conn, ids, _ = db
    assert store.undo_last(conn, ids["alice"]) is None             # nothing to undo yet
    store.record_answer(conn, ids["alice"], 0, "A")
    store.record_answer(conn, ids["alice"], 1, "B")
    store.record_answer(conn, ids["bob"], 0, "equal")
    assert store.undo_last(conn, ids["alice"]) == 1
    assert store.current_trial(conn, ids["alice"])["position"] == 1
    assert store.undo_last(conn, ids["alice"]) == 0
    assert store.progress(conn, ids["alice"]).answered == 0
    assert store.progress(conn, ids["bob"]).answered == 1          # bob's answer untouched
    log = store.answer_log(conn, ids["alice"])
    assert len(log) == 2 and all(r["undone_at"] for r in log)


def test_answers_for_trials_that_do_not_exist_are_refused(db):
    conn, ids, _ = db
    with pytest.raises(store.TrialNotFound, match="no trial 10 .*0 to 9"):
        store.record_answer(conn, ids["alice"], 10, "A")
    with pytest.raises(ValueError, match="answer 'maybe'"):
        store.record_answer(conn, ids["alice"], 0, "maybe")
    assert store.answer_log(conn, ids["alice"]) == []


def test_answer_is_stored_with_its_meaning(db):
    conn, ids, _ = db
    trial = store.trial_at(conn, ids["bob"], 4)
    choice = store.record_answer(conn, ids["bob"], 4, "A")
    assert choice == trial["a_is"]
    [row] = store.standing_answers(conn)
    assert (row["tester"], row["image_id"], row["system"]) == ("bob", trial["image_name"], trial["system"])
    assert row["target"] == LABELS[trial["image_id"]] and row["choice"] == choice


def test_database_is_in_wal_mode_and_rejects_bad_rows(db):
    conn, _, _ = db
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO answers (trial_id, answer, choice, answered_at) VALUES (1, 'A', 'maybe', 'x')")


def test_not_a_study_folder(tmp_path):
    with pytest.raises(store.StudyError, match="not a study folder"):
        store.connect(tmp_path)


def test_stretch_clips_hot_pixels_and_handles_flat_images(tmp_path):
    image = np.zeros((50, 50))
    image[10:40, 20:22] = 100.0
    image[0, 0] = 1e6                          # one hot pixel must not wash out the structure
    shown = stretch(image, 0.5, 99.5)
    assert shown.min() == 0.0 and shown.max() == 1.0
    assert shown[20, 20] == 1.0
    assert np.all(stretch(np.ones((8, 8))) == 0.5)
    with pytest.raises(ValueError, match="percentiles"):
        stretch(image, 50, 10)
    png = write_png(image, tmp_path / "x.png", cmap="magma")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown colour map"):
        write_png(image, tmp_path / "y.png", cmap="nope")


def test_study_modules_do_not_import_torch_or_grpc():
    import subprocess
    import sys

    code = ("import sys; import stedq.study.app, stedq.study.create, stedq.study.simulate, stedq.study.report; "
            "print('torch' in sys.modules, 'grpc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]

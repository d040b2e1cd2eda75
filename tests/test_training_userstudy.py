"""User-study metrics: confusion/domination from tester records, CSV round trip, tables, plots, simulation."""

from __future__ import annotations

import numpy as np
import pytest

from stedq.training.userstudy import (
    BINS,
    CHOICES,
    RecordsError,
    SimulatedTester,
    TesterRecord,
    bin_index,
    default_testers,
    plot_tpe_bars,
    random_baseline_predictions,
    read_records_csv,
    simulate_study,
    study_tables,
    tables_markdown,
    write_records_csv,
)


def _records(tester, system, target, choices):
    return [TesterRecord(tester, f"{system}-{target}-{i}", system, target, 0.5, c) for i, c in enumerate(choices)]


def test_constants_match_the_paper():
    assert CHOICES == ("target", "prediction", "equal", "discard")
    assert BINS == ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))
    assert [bin_index(t) for t in (0.0, 0.19, 0.2, 0.5, 0.8, 1.0)] == [0, 0, 1, 2, 4, 4]


def test_confusion_and_domination_by_hand():
    # tester a, bin 0.4-0.6: T=2 P=2 E=1 -> Ñ=5, C = 1 - |5-5|/5 = 1, D = 0.5
    # tester b, bin 0.4-0.6: T=3 P=0 E=1 (+1 discard) -> Ñ=4, C = 1 - |1-4|/4 = 0.25, D = 0
    records = (_records("a", "network", 0.5, ["target", "target", "prediction", "prediction", "equal"])
               + _records("b", "network", 0.5, ["target"] * 3 + ["equal", "discard"]))
    row = study_tables(records)["network"][2]
    assert (row.T, row.P, row.E, row.discarded, row.n, row.n_testers) == (5, 2, 2, 1, 9, 2)
    assert row.confusion_mean == pytest.approx((1.0 + 0.25) / 2)
    assert row.confusion_std == pytest.approx(0.375)
    assert row.domination_mean == pytest.approx(0.25)
    assert row.domination_std == pytest.approx(0.25)
    # bins without answers are marked, not zero
    empty = study_tables(records)["network"][0]
    assert not empty.has_data and empty.confusion_mean is None


def test_always_prediction_gives_zero_confusion_and_full_domination():
    row = study_tables(_records("a", "random", 0.9, ["prediction"] * 4))["random"][4]
    assert row.confusion_mean == 0.0 and row.domination_mean == 1.0


def test_csv_round_trip_and_clear_errors(tmp_path):
    records = (_records("a", "network", 0.1, ["target", "equal"]) + _records("b", "random", 0.7, ["discard"]))
    path = write_records_csv(records, tmp_path / "records.csv")
    assert path.read_text().splitlines()[0] == "tester,image_id,system,target,prediction,choice"
    assert read_records_csv(path) == records

    bad = tmp_path / "bad.csv"
    bad.write_text("tester,image_id,system,target,prediction,choice\na,img1,network,0.3,0.4,maybe\n")
    with pytest.raises(RecordsError, match=r"bad.csv, line 2: choice 'maybe'"):
        read_records_csv(bad)
    bad.write_text("tester,image_id,system,target,prediction,choice\na,img1,network,1.3,0.4,equal\n")
    with pytest.raises(RecordsError, match=r"line 2: target 1.3"):
        read_records_csv(bad)
    bad.write_text("tester,image,system,target,prediction,choice\n")
    with pytest.raises(RecordsError, match="missing column.*image_id"):
        read_records_csv(bad)
    with pytest.raises(RecordsError, match="cannot read"):
        read_records_csv(tmp_path / "absent.csv")


def test_markdown_and_plot(tmp_path):
    records = (_records("a", "network", 0.3, ["prediction", "equal"]) + _records("a", "random", 0.3, ["target"]))
    tables = study_tables(records)
    text = tables_markdown(tables)
    assert "**network**" in text and "**random**" in text
    assert "| confusion C | no data | 0.50 ± 0.00 | no data |" in text
    assert "| domination D | no data | 0.00 ± 0.00 |" in text
    png = plot_tpe_bars(tables, tmp_path / "tpe.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulated_tester_prefers_the_closer_score():
    tester = SimulatedTester(noise=0.0, tolerance=0.05, seed=0)
    assert tester.choose(0.5, target=0.9, prediction=0.52) == "prediction"
    assert tester.choose(0.5, target=0.5, prediction=0.2) == "target"
    assert tester.choose(0.5, target=0.45, prediction=0.56) == "equal"
    noisy = SimulatedTester(noise=0.3, tolerance=0.0, seed=1)
    picks = {noisy.choose(0.5, 0.4, 0.6) for _ in range(200)}
    assert picks == {"target", "prediction"}


def test_simulated_study_separates_good_predictions_from_the_random_baseline():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, 300)
    targets = np.clip(truth + rng.normal(0, 0.08, truth.size), 0, 1)     # an expert's label is noisy too
    network = np.clip(truth + rng.normal(0, 0.08, truth.size), 0, 1)     # as good as another expert
    random = random_baseline_predictions(targets, truth.size, rng)
    assert set(np.round(random, 12)) <= set(np.round(targets, 12))
    records = simulate_study([f"i{k}" for k in range(truth.size)], truth, targets,
                             {"network": network, "random": random}, default_testers(5, seed=0))
    tables = study_tables(records)
    for net_row, random_row in zip(tables["network"], tables["random"], strict=True):
        assert net_row.n_testers == 5
        assert net_row.confusion_mean > random_row.confusion_mean
        assert 0.3 < net_row.domination_mean < 0.7
    with pytest.raises(ValueError, match="at least one"):
        random_baseline_predictions([], 3, rng)

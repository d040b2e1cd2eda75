"""`stedq evaluate --real` on the repository's real images, run as users run it, checked against
`stedq score --json` on the same files through a real server."""

import json
import shutil
import subprocess
import sys

import pytest

import stedq
from tests.conftest import REPO_ROOT

REAL_DEV = REPO_ROOT / "validation" / "real-dev"


def stedq_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stedq", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "report"
    done = stedq_cli("evaluate", "--real", str(REAL_DEV), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return json.loads((out / "figures.json").read_text()), out


def expected_checks(scores: dict[str, dict[str, float | None]]) -> dict[str, bool]:
    """The report's targets, written out again from the issue: what an expert would say."""
    def ladder(kinds):
        return all(rows[a] is not None and rows[b] is not None and rows[b] < rows[a]
                   for rows in scores.values() for a, b in zip(kinds, kinds[1:], strict=False))

    def each(kind, test):
        return all(rows[kind] is not None and rows["base"] is not None and test(rows["base"], rows[kind])
                   for rows in scores.values())

    return {
        "originals": each("original", lambda base, s: abs(s - base) <= 0.01),
        "thinning": ladder(["base", "thin050", "thin025", "thin010"]),
        "blur": ladder(["base", "blur15", "blur30", "blur50"]),
        "shuffle": each("shuffle", lambda base, s: s < 0.1 and s < 0.5 * base),
        "crops": all(rows[k] is not None for rows in scores.values() for k in ("crop160", "crop100", "crop064")),
        "confocal": each("blur50", lambda base, s: s <= 0.5 * base),
    }


def test_report_matches_stedq_score_through_a_server(server, in_process, tmp_path):
    figures, out = in_process
    done = stedq_cli("score", str(REAL_DEV), "--server", server.address, "--json", str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr        # every file scored, crops included
    scored = {row["file"].rsplit("/", 1)[-1]: row for row in json.loads((tmp_path / "s.json").read_text())["results"]}
    assert len(scored) == 60 and figures["summary"]["files"] == 60

    scores: dict[str, dict[str, float | None]] = {}
    for name, rows in figures["images"].items():
        assert len(rows) == 12
        for kind, row in rows.items():
            reference = scored[row["file"].rsplit("/", 1)[-1]]
            if reference["error"]:
                assert row["score"] is None and row["error"], (name, kind)
            else:
                assert row["score"] == pytest.approx(reference["score"], abs=1e-5), (name, kind)
            scores.setdefault(name, {})[kind] = None if reference["error"] else reference["score"]
    assert {c["id"]: c["passed"] for c in figures["checks"]} == expected_checks(scores)
    assert figures["model"]["version"] == json.loads((stedq.DEFAULT_MODEL_DIR / "manifest.json").read_text())["version"]
    report = (out / "report.md").read_text()
    assert f"{figures['summary']['passed']} of 6 checks pass" in report
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_through_the_server_gives_the_same_figures(server, in_process, tmp_path):
    figures, _ = in_process
    done = stedq_cli("evaluate", "--real", str(REAL_DEV), "--server", server.address, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    remote = json.loads((tmp_path / "figures.json").read_text())
    assert [c["passed"] for c in remote["checks"]] == [c["passed"] for c in figures["checks"]]
    for name, rows in figures["images"].items():
        for kind, row in rows.items():
            other = remote["images"][name][kind]
            assert (other["score"] is None) == (row["score"] is None)
            if row["score"] is not None:
                assert other["score"] == pytest.approx(row["score"], abs=1e-5)


def test_a_subset_and_bad_files_are_reported_not_fatal(tmp_path):
    root = tmp_path / "dir"
    (root / "degraded").mkdir(parents=True)
    for kind in ("base", "thin050", "shuffle"):
        shutil.copy(REAL_DEV / "degraded" / f"axon_actin_1__{kind}.tif", root / "degraded")
    (root / "degraded" / "axon_actin_1__blur15.tif").write_text("not a TIFF")
    done = stedq_cli("evaluate", "--real", str(root), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    checks = {c["id"]: c for c in figures["checks"]}
    assert not checks["originals"]["run"] and not checks["crops"]["run"]
    assert checks["blur"]["run"] and not checks["blur"]["passed"]
    assert "axon_actin_1 base → blur15: refused" in checks["blur"]["details"][0]
    assert figures["images"]["axon_actin_1"]["blur15"]["score"] is None
    assert figures["summary"]["refused"] == 1


def test_a_variant_is_compared_with_fp32_on_every_scored_file(tmp_path):
    root = tmp_path / "dir"
    (root / "degraded").mkdir(parents=True)
    for kind in ("base", "thin050", "thin025", "blur50", "shuffle"):
        shutil.copy(REAL_DEV / "degraded" / f"dendrite_01_Block_1__{kind}.tif", root / "degraded")
    (root / "degraded" / "dendrite_01_Block_1__blur15.tif").write_text("not a TIFF")
    done = stedq_cli("evaluate", "--real", str(root), "--variant", "int8", "--out", str(tmp_path / "int8"))
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "int8" / "figures.json").read_text())
    gate = figures["variant_vs_fp32"]
    assert gate["variant"] == "int8" and gate["n_images"] == 5       # the refused file is not compared
    done = stedq_cli("evaluate", "--real", str(root), "--out", str(tmp_path / "fp32"))
    fp32 = json.loads((tmp_path / "fp32" / "figures.json").read_text())
    assert "variant_vs_fp32" not in fp32
    int8_scores = {k: r["score"] for k, r in figures["images"]["dendrite_01_Block_1"].items() if r["score"] is not None}
    fp32_scores = {k: r["score"] for k, r in fp32["images"]["dendrite_01_Block_1"].items() if r["score"] is not None}
    diffs = [abs(int8_scores[k] - fp32_scores[k]) for k in fp32_scores]
    assert gate["mean_abs_diff"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-6) and gate["mean_abs_diff"] > 0
    assert "INT8 against FP32** on the 5 scored files" in (tmp_path / "int8" / "report.md").read_text()


def test_wrong_layout_and_conflicting_arguments_are_explained(tmp_path):
    done = stedq_cli("evaluate", "--real", str(tmp_path))
    assert done.returncode != 0 and "originals/NAME.tif" in done.stderr
    done = stedq_cli("evaluate", "--real", str(REAL_DEV), "--model", "x", "--server", "localhost:1")
    assert done.returncode != 0 and "not both" in done.stderr
    done = stedq_cli("evaluate")
    assert done.returncode != 0 and "--real DIR" in done.stderr


def test_crop_curve_on_the_samples(tmp_path):
    """`stedq evaluate --crops` on the bundled samples (labelled, 224 px): the curve ends at 1 for 223 px
    crops and every size is reported with the targets."""
    actin = tmp_path / "actin"
    actin.mkdir()
    for sample in (REPO_ROOT / "samples").glob("actin*.tiff"):
        shutil.copy(sample, actin)
    done = stedq_cli("evaluate", "--crops", str(actin), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "out" / "crops.json").read_text())
    curve = figures["spearman_by_crop_size"]
    assert list(curve)[0] == "64" and curve["223"] > 0.9 and figures["images"] == 8
    assert set(figures["targets"]) == {"64", "100"}
    assert (tmp_path / "out" / "crops.png").is_file()


def test_crop_curve_shows_the_label_rule_judging_the_crop(tmp_path):
    """On a generated folder (labels.csv records each label's inputs) the curve comes with the virtual
    expert's own figure: its rule on the crop against its full-image label, 1 when the crop is the image
    and lower when the crop's photons differ from the full image's."""
    data = tmp_path / "synth"
    done = stedq_cli("data", "synth", "--out", str(data), "--actin", "10", "--tubulin", "0", "--seed", "3",
                     "--workers", "2", "--no-progress")
    assert done.returncode == 0, done.stderr
    done = stedq_cli("evaluate", "--crops", str(data / "actin"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "out" / "crops.json").read_text())
    rule = figures["label_rule_on_crop"]
    assert list(rule) == list(figures["spearman_by_crop_size"]) and rule["223"] > 0.95
    assert all(-1 <= value <= 1 for value in rule.values()) and rule["64"] < 1
    assert json.loads(done.stdout)["label_rule_on_crop"] == rule

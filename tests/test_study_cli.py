"""`stedq study ...` from the command line: the simulated end-to-end run and every input error."""

from __future__ import annotations

import csv
import json

import pytest

from stedq.cli import main
from stedq.study import store
from tests.study_helpers import labelled_folder

N_IMAGES = 5


@pytest.fixture
def data(tmp_path):
    return labelled_folder(tmp_path, n=N_IMAGES, size=32)


def run(capsys, *argv):
    code = main(["study", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_simulated_testers_run_create_answer_export_report(tmp_path, data, capsys):
    folder, predictions = data
    study = tmp_path / "s"
    code, out, _ = run(capsys, "create", study, "--images", folder, "--predictions", predictions,
                       "--testers", "alice,bob", "--simulated-testers", 3, "--seed", 4)
    assert code == 0
    assert out.count("/t/") == 2                                 # links of the two people, not of the simulated
    with (study / "records.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2 * N_IMAGES                         # 3 testers x 2 systems x 5 images
    assert {r["tester"] for r in rows} == {"sim1", "sim2", "sim3"}
    assert {r["system"] for r in rows} == {"network", "random"}
    # image ids are the file stems (<name>-<score>): the records keep the label they were judged with
    assert all(abs(float(r["target"]) - float(r["image_id"].rsplit("-", 1)[1])) < 1e-6 for r in rows)
    assert {r["image_id"] for r in rows} == {p.stem for p in folder.glob("*.tiff")}
    report = (study / "report" / "report.md").read_text()
    assert "| network | 0.0–0.2 |" in report and "| random | 0.0–0.2 |" in report and "confusion C" in report
    assert (study / "report" / "tpe.png").read_bytes()[:4] == b"\x89PNG"
    tables = json.loads((study / "report" / "tables.json").read_text())
    assert sum(row["n"] + row["discarded"] for row in tables["network"]) == 3 * N_IMAGES
    assert "sim1 (simulated): 10 of 10 trials answered" in report and "alice: 0 of 10" in report

    # export and report again, from the study and from the CSV, with and without the simulated testers
    code, out, _ = run(capsys, "export", study, "--out", tmp_path / "r.csv")
    assert code == 0 and "30 tester records" in out
    code, out, _ = run(capsys, "report", tmp_path / "r.csv", "--out", tmp_path / "rep")
    assert code == 0 and (tmp_path / "rep" / "report.md").is_file() and "confusion C" in out
    code, out, _ = run(capsys, "export", study, "--no-simulated", "--out", tmp_path / "people.csv")
    assert code == 0 and "0 tester records" in out
    code, _, err = run(capsys, "report", study, "--no-simulated")
    assert code == 2 and "no answers yet" in err


def test_add_tester_and_status_print_links(tmp_path, data, capsys):
    folder, predictions = data
    study = tmp_path / "s"
    assert run(capsys, "create", study, "--images", folder, "--predictions", predictions)[0] == 0
    code, out, _ = run(capsys, "add-tester", study, "carol", "--base-url", "http://scope-pc:9000/")
    assert code == 0 and "http://scope-pc:9000/t/" in out
    code, out, _ = run(capsys, "status", study)
    assert code == 0 and "carol" in out and "0/10" in out and "http://127.0.0.1:8080/t/" in out
    code, _, err = run(capsys, "add-tester", study, "carol")
    assert code == 2 and "already exists" in err


def test_random_baseline_draws_from_the_given_training_labels(tmp_path, data):
    from stedq.study.create import create_study

    folder, predictions = data
    labels = tmp_path / "train_labels.csv"
    labels.write_text("label\n0.01\n0.02\n")
    create_study(tmp_path / "s", folder, str(predictions), testers=["t"], baseline_labels=labels)
    conn = store.connect(tmp_path / "s")
    random_predictions = {r["prediction"] for r in conn.execute("SELECT prediction FROM trials WHERE system = 'random'")}
    conn.close()
    assert random_predictions <= {0.01, 0.02}


def test_network_only_study(tmp_path, data, capsys):
    folder, predictions = data
    code, _, _ = run(capsys, "create", tmp_path / "s", "--images", folder, "--predictions", predictions,
                     "--systems", "network", "--testers", "2")
    assert code == 0
    conn = store.connect(tmp_path / "s")
    assert [r["total"] for r in store.testers(conn)] == [N_IMAGES, N_IMAGES]
    conn.close()


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case,message", [
    ("no-folder", "no such folder of labelled images"),
    ("empty-folder", "cannot use these images"),
    ("no-labels", "missing label"),
    ("missing-image-file", "file 'gone-0.5.tiff' does not exist"),
    ("missing-prediction", "no prediction for 1 of 5 images (img04-0.9)"),
    ("bad-columns", "needs an image column"),
    ("bad-score", "line 3: score must be a number in [0, 1], got '1.7'"),
    ("no-csv", "cannot read predictions"),
    ("bad-system", "systems must be among network, random"),
    ("bad-stretch", "--stretch must be two numbers"),
    ("exists", "already holds a study"),
    ("same-tester", "tester name(s) given twice: ann"),
])
def test_create_errors_say_what_is_wrong(tmp_path, data, capsys, case, message):
    folder, predictions = data
    study = tmp_path / "s"
    args = ["create", study, "--images", folder, "--predictions", predictions]
    if case == "no-folder":
        args[3] = tmp_path / "nowhere"
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        args[3] = tmp_path / "empty"
    elif case == "no-labels":
        for path in folder.glob("*.tiff"):
            path.rename(path.with_name(path.stem.rsplit("-", 1)[0] + ".tiff"))
    elif case == "missing-image-file":
        listed = [f"{p.name},{p.stem.rsplit('-', 1)[1]}" for p in sorted(folder.glob("*.tiff"))]
        write(folder / "labels.csv", "\n".join(["file,label", *listed, "gone-0.5.tiff,0.5"]) + "\n")
    elif case == "missing-prediction":
        lines = predictions.read_text().splitlines()
        args[5] = write(tmp_path / "p.csv", "\n".join(lines[:-1]) + "\n")
    elif case == "bad-columns":
        args[5] = write(tmp_path / "p.csv", "file,quality\nimg00,0.5\n")
    elif case == "bad-score":
        args[5] = write(tmp_path / "p.csv", "name,score\nimg00,0.5\nimg01,1.7\n")
    elif case == "no-csv":
        args[5] = tmp_path / "nope.csv"
    elif case == "bad-system":
        args += ["--systems", "network,oracle"]
    elif case == "bad-stretch":
        args += ["--stretch", "1"]
    elif case == "same-tester":
        args += ["--testers", "ann,bo,ann"]
    elif case == "exists":
        assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err
    if case != "exists":
        assert not (study / store.DB_NAME).exists()


def test_commands_on_a_folder_that_is_not_a_study(tmp_path, capsys):
    for action in ("status", "export", "report"):
        code, _, err = run(capsys, action, tmp_path)
        assert code == 2 and "not a study folder" in err, action


def test_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    out = capsys.readouterr().out
    for action in ("create", "add-tester", "serve", "status", "export", "report", "--simulated-testers"):
        assert action in out


def test_predictions_from_a_running_stedq_server(tmp_path, capsys):
    """--predictions server: the network's scores come from a real gRPC server through the client library."""
    import numpy as np

    from stedq.study.create import load_images
    from tests.server_support import ThreadedServer, model_bundle, reference_scores, server_settings

    folder, _ = labelled_folder(tmp_path, n=3, size=224)
    bundle = model_bundle()
    with ThreadedServer(server_settings(bundle)) as server:
        code, _, err = run(capsys, "create", tmp_path / "s", "--images", folder, "--predictions", "server",
                           "--server", server.address, "--testers", "1")
        assert code == 0, err
        # the other documented path: `stedq score --csv` output as the predictions CSV
        assert main(["score", str(folder), "--server", server.address, "--csv", str(tmp_path / "scored.csv")]) == 0
        code, _, err = run(capsys, "create", tmp_path / "s2", "--images", folder, "--predictions",
                           tmp_path / "scored.csv")
        assert code == 0, err
    metas = []
    for name in ("s", "s2"):
        conn = store.connect(tmp_path / name)
        metas.append(store.get_meta(conn))
        conn.close()
    expected = reference_scores(bundle, np.stack(load_images(folder).images).astype(np.float32))
    for meta in metas:
        assert np.allclose(meta["predictions"]["network"], expected, atol=1e-5)
    assert metas[0]["predictions_source"] == f"server {server.address}" and metas[0]["model_version"]


def test_predictions_from_a_server_that_is_not_there(tmp_path, data, capsys):
    from tests.server_support import free_port

    folder, _ = data
    code, _, err = run(capsys, "create", tmp_path / "s", "--images", folder, "--predictions", "server",
                       "--server", f"127.0.0.1:{free_port()}", "--timeout-s", "2")
    assert code == 2 and "stedq server 127.0.0.1:" in err and "UNAVAILABLE" in err


def test_serve_command_binds_localhost_prints_links_and_serves(tmp_path, data):
    """`stedq study serve` as a user runs it: its own process, port 0, the printed link works."""
    import re
    import subprocess
    import sys
    import time

    from tests.study_helpers import http

    folder, predictions = data
    assert main(["study", "create", str(tmp_path / "s"), "--images", str(folder), "--predictions",
                 str(predictions), "--testers", "dana"]) == 0
    process = subprocess.Popen([sys.executable, "-m", "stedq.cli", "study", "serve", str(tmp_path / "s"),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, link = [], None
        deadline = time.monotonic() + 30
        while link is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"(http://127\.0\.0\.1:(\d+)/t/\S+)", line)
            link = found.group(1) if found else None
        assert link, "".join(lines)
        assert "serving on 127.0.0.1:" in "".join(lines)
        status, body = None, b""
        for _ in range(100):                      # the socket is bound before the links are printed
            try:
                status, _, body = http("GET", link)
                break
            except OSError:
                time.sleep(0.05)
        assert status == 200 and b"trial 1 of 10" in body
    finally:
        process.terminate()
        process.wait(10)


def test_simulated_testers_perceive_the_clean_quality_when_the_folder_has_it(tmp_path, data, capsys):
    """With label_clean in labels.csv (as `stedq data synth` writes), the simulated testers judge against
    it: a network that predicts exactly the clean quality then wins against labels that are far off."""
    folder, _ = data
    rows, predictions = ["file,name,label,label_clean"], ["image,prediction"]
    for path in sorted(folder.glob("*.tiff")):
        name, label = path.stem.rsplit("-", 1)
        clean = round(float(label) + (0.3 if float(label) < 0.5 else -0.3), 3)
        rows.append(f"{path.name},{name},{label},{clean}")
        predictions.append(f"{name},{clean}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "p.csv").write_text("\n".join(predictions) + "\n")
    code, _, err = run(capsys, "create", tmp_path / "s", "--images", folder, "--predictions", tmp_path / "p.csv",
                       "--simulated-testers", 3, "--systems", "network")
    assert code == 0, err
    with (tmp_path / "s" / "records.csv").open() as handle:
        choices = [r["choice"] for r in csv.DictReader(handle)]
    assert len(choices) == 3 * N_IMAGES and choices.count("prediction") >= 0.8 * len(choices)


def test_report_counts_what_the_testers_answered(tmp_path, data, capsys):
    """Known answers -> known tables: one tester always says "equal" (C = 1, no D), another always
    clicks the side holding the prediction (C = 0, D = 1)."""
    from stedq.study.create import create_study

    folder, predictions = data
    tokens = create_study(tmp_path / "s", folder, str(predictions), testers=["eq", "pred"])
    conn = store.connect(tmp_path / "s")
    for name, token in tokens.items():
        tester_id = store.tester_by_token(conn, token)["id"]
        while (trial := store.current_trial(conn, tester_id)) is not None:
            answer = "equal" if name == "eq" else ("A" if trial["a_is"] == "prediction" else "B")
            store.record_answer(conn, tester_id, trial["position"], answer)
    conn.close()
    code, _, _ = run(capsys, "report", tmp_path / "s")
    assert code == 0
    tables = json.loads((tmp_path / "s" / "report" / "tables.json").read_text())
    for system in ("network", "random"):
        rows = [r for r in tables[system] if r["has_data"]]
        assert sum(r["E"] for r in rows) == N_IMAGES and sum(r["P"] for r in rows) == N_IMAGES
        assert sum(r["T"] for r in rows) == 0
        for r in rows:   # per bin, over the two testers: C is 1 and 0 -> 0.5 ± 0.5; D only from "pred"
            assert (r["confusion_mean"], r["confusion_std"]) == (0.5, 0.5)
            assert (r["domination_mean"], r["domination_std"]) == (1.0, 0.0)


def test_export_log_keeps_every_answer(tmp_path, data, capsys):
    from stedq.study.create import create_study

    folder, predictions = data
    token = create_study(tmp_path / "s", folder, str(predictions), testers=["ann"])["ann"]
    conn = store.connect(tmp_path / "s")
    tester_id = store.tester_by_token(conn, token)["id"]
    store.record_answer(conn, tester_id, 0, "A")
    store.record_answer(conn, tester_id, 0, "B")          # changed their mind: the later counts
    store.record_answer(conn, tester_id, 1, "discard")
    store.undo_last(conn, tester_id)
    conn.close()
    code, out, _ = run(capsys, "export", tmp_path / "s", "--log", tmp_path / "log.csv")
    assert code == 0 and "1 tester records" in out and "3 answers (the full log)" in out
    with (tmp_path / "log.csv").open() as handle:
        log = list(csv.DictReader(handle))
    assert [(r["position"], r["answer"], bool(r["undone_at"])) for r in log] == [
        ("0", "A", False), ("0", "B", False), ("1", "discard", True)]
    with (tmp_path / "s" / "records.csv").open() as handle:
        [record] = list(csv.DictReader(handle))
    assert record["choice"] == log[1]["choice"] and record["image_id"] == log[1]["image_id"]

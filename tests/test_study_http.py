"""The study web app over real HTTP: uvicorn on 127.0.0.1, every route and every error."""

from __future__ import annotations

import re
import threading

import pytest

from stedq.study import store
from stedq.study.create import add_testers, create_study
from tests.study_helpers import http, labelled_folder, running_app

N_IMAGES = 4
N_TRIALS = 2 * N_IMAGES   # network and random


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    folder, predictions = labelled_folder(root, n=N_IMAGES, size=32)
    create_study(root / "s", folder, str(predictions), testers=["alice"])
    return root / "s"


@pytest.fixture(scope="module")
def url(study):
    with running_app(study) as base:
        yield base


@pytest.fixture
def tester(study, request):
    """A fresh tester for each test: (token, tester id)."""
    name = request.node.name[:40]
    token = add_testers(study, [name])[name]
    conn = store.connect(study)
    try:
        return token, store.tester_by_token(conn, token)["id"]
    finally:
        conn.close()


def page(url, token):
    status, headers, body = http("GET", f"{url}/t/{token}")
    return status, headers, body.decode()


def answers(study, tester_id):
    conn = store.connect(study)
    try:
        return [dict(r) for r in store.answer_log(conn, tester_id)]
    finally:
        conn.close()


def test_index_and_health(url):
    status, _, body = http("GET", f"{url}/")
    assert status == 200 and b"personal" in body and b"/t/" in body
    assert http("GET", f"{url}/healthz")[:3:2] == (200, b"ok")


def test_judging_page_shows_the_trial_without_revealing_which_score_is_which(study, url, tester):
    token, tester_id = tester
    status, headers, body = page(url, token)
    assert status == 200
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    assert f"trial 1 of {N_TRIALS}" in body
    conn = store.connect(study)
    trial = store.current_trial(conn, tester_id)
    conn.close()
    a, b = (trial["target"], trial["prediction"])[:: 1 if trial["a_is"] == "target" else -1]
    assert re.search(rf'id="score-a">{a:.2f}<', body) and re.search(rf'id="score-b">{b:.2f}<', body)
    assert trial["image_name"] not in body and "target" not in body and "network" not in body
    assert f'/t/{token}/image/{trial["position"]}' in body


def test_answer_redirects_and_the_page_moves_on(study, url, tester):
    token, tester_id = tester
    status, headers, _ = http("POST", f"{url}/t/{token}/answer", {"position": "0", "answer": "A"})
    assert status == 303 and headers["location"] == f"/t/{token}"
    assert f"trial 2 of {N_TRIALS}" in page(url, token)[2]
    [row] = answers(study, tester_id)
    assert row["position"] == 0 and row["answer"] == "A" and row["choice"] in ("target", "prediction")


def test_answering_a_trial_twice_logs_both_and_the_later_counts(study, url, tester):
    token, tester_id = tester
    http("POST", f"{url}/t/{token}/answer", {"position": "0", "answer": "A"})
    assert http("POST", f"{url}/t/{token}/answer", {"position": "0", "answer": "equal"})[0] == 303
    assert [r["answer"] for r in answers(study, tester_id)] == ["A", "equal"]
    conn = store.connect(study)
    standing = [r for r in store.standing_answers(conn) if r["tester"] == store.testers(conn)[-1]["name"]]
    conn.close()
    assert [r["answer"] for r in standing] == ["equal"]


def test_undo_returns_to_the_last_trial(study, url, tester):
    token, tester_id = tester
    for position in (0, 1):
        http("POST", f"{url}/t/{token}/answer", {"position": str(position), "answer": "B"})
    assert http("POST", f"{url}/t/{token}/undo")[0] == 303
    assert f"trial 2 of {N_TRIALS}" in page(url, token)[2]
    log = answers(study, tester_id)
    assert len(log) == 2 and log[0]["undone_at"] is None and log[1]["undone_at"] is not None
    assert 'id="undo"' in page(url, token)[2]


def test_finishing_shows_the_done_page_and_undo_still_works(url, tester):
    token, _ = tester
    for position in range(N_TRIALS):
        http("POST", f"{url}/t/{token}/answer", {"position": str(position), "answer": "discard"})
    body = page(url, token)[2]
    assert f"All {N_TRIALS} trials answered" in body
    http("POST", f"{url}/t/{token}/undo")
    assert f"trial {N_TRIALS} of {N_TRIALS}" in page(url, token)[2]


@pytest.mark.parametrize("method,path", [("GET", ""), ("GET", "/image/0"), ("POST", "/undo"),
                                         ("POST", "/answer")])
def test_unknown_token_is_forbidden(url, method, path):
    form = {"position": "0", "answer": "A"} if path == "/answer" else None
    status, _, body = http(method, f"{url}/t/not-a-real-token{path}", form)
    assert status == 403 and b"not valid" in body


def test_bad_answers_are_refused_with_a_reason_and_nothing_is_stored(study, url, tester):
    token, tester_id = tester
    cases = [({"position": "99", "answer": "A"}, 404, f"no trial 99 (this tester has trials 0 to {N_TRIALS - 1})"),
             ({"position": "-1", "answer": "A"}, 400, "position must be a trial number"),
             ({"position": "²", "answer": "A"}, 400, "position must be a trial number"),
             ({"position": "9" * 30, "answer": "A"}, 400, "position must be a trial number"),
             ({"position": "1", "answer": "C"}, 400, "answer must be one of A, B, equal, discard"),
             ({"answer": "A"}, 400, "position must be a trial number"),
             ({}, 400, "answer must be one of")]
    for form, code, message in cases:
        status, _, body = http("POST", f"{url}/t/{token}/answer", form)
        assert status == code, form
        assert message in body.decode().replace("&#39;", "'"), form
    assert answers(study, tester_id) == []
    assert page(url, token)[0] == 200


def test_images_are_served_per_trial(url, tester):
    token, _ = tester
    status, headers, body = http("GET", f"{url}/t/{token}/image/3")
    assert status == 200 and headers["content-type"] == "image/png" and body[:4] == b"\x89PNG"
    for position in (N_TRIALS, 10**30):
        status, _, body = http("GET", f"{url}/t/{token}/image/{position}")
        assert status == 404 and b"no trial" in body


def test_a_missing_image_file_is_a_clear_404_and_the_app_keeps_working(study, url, tester):
    token, _ = tester
    conn = store.connect(study)
    trial = store.current_trial(conn, store.tester_by_token(conn, token)["id"])
    conn.close()
    png = study / trial["png"]
    saved = png.read_bytes()
    png.unlink()
    try:
        status, _, body = http("GET", f"{url}/t/{token}/image/{trial['position']}")
        assert status == 404 and trial["png"].encode() in body and b"missing" in body
        assert page(url, token)[0] == 200
        assert http("POST", f"{url}/t/{token}/answer", {"position": str(trial["position"]), "answer": "discard"})[0] == 303
    finally:
        png.write_bytes(saved)


def test_testers_cannot_see_or_change_each_others_answers(study, url, tester):
    token, tester_id = tester
    conn = store.connect(study)
    alice = conn.execute("SELECT * FROM testers WHERE name = 'alice'").fetchone()
    conn.close()
    before = answers(study, alice["id"])
    http("POST", f"{url}/t/{token}/answer", {"position": "0", "answer": "A"})
    assert answers(study, alice["id"]) == before
    assert "alice" not in page(url, token)[2]
    assert len(answers(study, tester_id)) == 1


def test_concurrent_testers_lose_no_answer(study, url):
    tokens = add_testers(study, [f"crowd{i}" for i in range(4)])
    errors = []

    def answer_all(token):
        for position in range(N_TRIALS):
            status = http("POST", f"{url}/t/{token}/answer", {"position": str(position), "answer": "equal"})[0]
            if status != 303:
                errors.append(status)

    threads = [threading.Thread(target=answer_all, args=(t,)) for t in tokens.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    conn = store.connect(study)
    counts = {r["name"]: r["answered"] for r in store.testers(conn)}
    conn.close()
    assert all(counts[name] == N_TRIALS for name in tokens)


def test_a_server_side_failure_is_a_500_page_and_the_app_keeps_running(tmp_path):
    folder, predictions = labelled_folder(tmp_path, n=2, size=16)
    token = create_study(tmp_path / "s", folder, str(predictions), testers=["zoe"])["zoe"]
    with running_app(tmp_path / "s") as base:
        assert http("GET", f"{base}/t/{token}")[0] == 200
        moved = tmp_path / "elsewhere.sqlite"
        (tmp_path / "s" / store.DB_NAME).rename(moved)          # the database vanishes under the app
        status, _, body = http("GET", f"{base}/t/{token}")
        assert status == 500 and b"reload the page" in body
        moved.rename(tmp_path / "s" / store.DB_NAME)
        assert http("GET", f"{base}/t/{token}")[0] == 200

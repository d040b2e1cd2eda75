"""stedq.clients.micromanager: real pymmcore-plus acquisitions (UniMMCore with a pure-Python camera that
plays the real-dev STED images, no Micro-Manager binaries) scored by a real stedq server."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest

from stedq.clients.client import QualityClient
from tests.server_support import HeldEngine, ThreadedServer, model_bundle, server_settings

_root_level = logging.getLogger().level
pytest.importorskip("pymmcore_plus", reason="the micromanager extra is not installed")
logging.getLogger().setLevel(_root_level)   # importing pymmcore_plus sets the root logger to DEBUG
useq = pytest.importorskip("useq")
from stedq.bench.acquisition import playback_core, playback_frames  # noqa: E402
from stedq.clients.micromanager import MDAScoring  # noqa: E402


@pytest.fixture(scope="module")
def frames():
    return playback_frames()   # 160 px regions of the real-dev STED images


@pytest.fixture
def core(frames):
    return playback_core(frames, exposure_ms=0.0, pixel_size_um=0.02)


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


def collect_metadata(core) -> list[dict]:
    seen: list[dict] = []
    core.mda.events.frameReady.connect(lambda image, event, meta: seen.append(meta))
    return seen


def test_every_frame_of_a_real_acquisition_gets_its_score(core, frames, server):
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 24})
    metas = collect_metadata(core)
    with MDAScoring(core, server.address) as scoring:
        core.mda.run(scoring.events(sequence))
        assert scoring.wait(30)
    assert len(metas) == 24
    assert all(meta["stedq"]["status"] == "scored" for meta in metas), [m["stedq"] for m in metas]
    with QualityClient(server.address) as client:   # the scores are the server's for those very frames
        want = client.score([frames[i % len(frames)] for i in range(24)])
        version = client.model_info().version
    got = [meta["stedq"] for meta in metas]   # in acquisition order: the camera played frame i at event i
    assert [meta["mda_event"].index["t"] for meta in metas] == list(range(24))
    np.testing.assert_allclose([g["score"] for g in got], want, atol=1e-5)
    assert {g["model_version"] for g in got} == {version} and all(g["fit"] for g in got)
    assert {meta["pixel_size_um"] for meta in metas} == {0.02}
    rows = scoring.table()
    assert len(rows) == 24 and {r["index_t"] for r in rows} == set(range(24))


def test_server_down_the_acquisition_goes_on_and_scores_are_missing(core):
    with socket.socket() as probe:   # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    metas = collect_metadata(core)
    with MDAScoring(core, address, timeout=1.0) as scoring:
        core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 20}))
        assert scoring.wait(30)
    assert len(metas) == 20
    assert all(m["stedq"]["status"] == "missing" and "UNAVAILABLE" in m["stedq"]["error"] for m in metas)
    assert all("score" not in m["stedq"] for m in metas)   # never invented


def test_a_slow_server_holds_up_nothing_and_late_scores_are_missing(core, server):
    """The engine is held (as a stuck GPU would be): each request passes its 0.5 s deadline, the frames
    are marked missing, and the acquisition finishes without waiting for them."""
    metas = collect_metadata(core)
    with HeldEngine(server.server.scorer) as held, MDAScoring(core, server.address, timeout=0.5) as scoring:
        core.mda.run(useq.MDASequence(time_plan={"interval": 0, "loops": 20}))
        out_when_done = scoring.scorer.pending   # the acquisition ended with its scores still out
        assert scoring.wait(60)
        held.release.set()
    assert len(metas) == 20 and out_when_done > 0
    assert all(m["stedq"]["status"] == "missing" and "DEADLINE_EXCEEDED" in m["stedq"]["error"] for m in metas)


def test_a_low_score_stops_the_acquisition(core, server):
    with MDAScoring(core, server.address, threshold=1.01, on_low="stop") as scoring:   # every score is below
        core.mda.run(scoring.events(useq.MDASequence(time_plan={"interval": 0.05, "loops": 200})))
        scoring.wait(30)
    assert scoring.stopped_by_score is not None and scoring.stopped_by_score.score < 1.01
    assert len(scoring.frames) < 200


def test_low_scores_are_acquired_again(core, server, frames):
    with QualityClient(server.address) as client:
        scores = client.score(frames)
    threshold = float(np.median(scores))   # about half the frames fall below it
    with MDAScoring(core, server.address, threshold=threshold, on_low="requeue", max_requeue=1) as scoring:
        core.mda.run(scoring.events(useq.MDASequence(time_plan={"interval": 0, "loops": 12})))
        assert scoring.wait(30)
    first = [f for f in scoring.frames if f.attempt == 0]
    low = [f.index for f in first if f.result.score < threshold]
    again = [f.index for f in scoring.frames if f.attempt == 1]
    assert len(first) == 12 and len(scoring.frames) == 12 + len(again)
    assert sorted(again, key=str) == sorted(low, key=str) and low   # each low frame once more, no more


def test_bad_arguments_are_refused(core):
    with pytest.raises(ValueError, match="needs a threshold"):
        MDAScoring(core, "127.0.0.1:1", on_low="stop")
    with pytest.raises(ValueError, match="on_low must be one of"):
        MDAScoring(core, "127.0.0.1:1", threshold=0.5, on_low="pause")


def test_the_acquisition_bench_runs_and_reports_each_condition(tmp_path):
    """python -m stedq.bench.acquisition (the documented command behind docs/clients.md's figures),
    tiny: every condition ran, the scored one scored every frame, the down one marked every frame missing."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "stedq.bench.acquisition", "--out", str(tmp_path), "--frames", "6",
                          "--rounds", "1", "--exposure-ms", "0"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "acquisition.json").read_text())["summary"]
    assert set(summary) == {"no scoring", "scored", "server down"}
    assert (summary["scored"]["scored"], summary["scored"]["missing"]) == (6, 0)
    assert (summary["server down"]["scored"], summary["server down"]["missing"]) == (0, 6)
    assert all(v["ms_per_frame"] > 0 for v in summary.values())

"""stedq.clients.imspector through a stand-in for specpy's objects (tests/imspector_standin.py: no
Imspector runs here) against a real stedq server: scoring a measurement's STED channel, a server
outage, the control loop on "measurements", and the loop's config file."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from stedq.clients.client import QualityClient
from stedq.clients.imspector import (
    LOOP_CONFIG_EXAMPLE,
    ImspectorError,
    ImspectorMicroscope,
    ImspectorScoring,
    ParameterPath,
    load_loop_config,
)
from stedq.clients.loop import MissingScoreScorer, axes_from_ranges, run_loop
from stedq.clients.optimizer import ThompsonOptimizer
from tests.conftest import REPO_ROOT
from tests.imspector_standin import Application, Measurement, Stack
from tests.server_support import ThreadedServer, model_bundle, read_version, server_settings

REAL = REPO_ROOT / "validation" / "real-dev" / "degraded"
PATHS = {"dwell_time_us": ("ExpControl/scan/dwelltime", 1e-6), "p_ex_uw": ("Lasers/488/power", 1.0),
         "p_sted_mw": ("Lasers/775/power", 1e-3)}
RANGES = {"dwell_time_us": (5.0, 60.0), "p_ex_uw": (2.0, 10.0), "p_sted_mw": (0.0, 60.0)}


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


@pytest.fixture
def dead_address():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def real_measurement(name: str = "axon_actin_1__base") -> tuple[Measurement, np.ndarray]:
    sted = tifffile.imread(REAL / f"{name}.tif")
    confocal = tifffile.imread(REAL / f"{name.split('__')[0]}__blur50.tif")
    return Measurement(name, [Stack("Confocal", confocal, 25e-9), Stack("STED 775 {11}", sted, 25e-9)]), sted


def test_a_measurement_is_scored_on_its_sted_channel(server):
    measurement, sted = real_measurement()
    imspector = Application(measurement)
    with ImspectorScoring(imspector, server.address, channel="STED") as scoring:
        result = scoring.score()                        # the active measurement
    with QualityClient(server.address) as client:
        (want,) = client.score_images([sted], pixel_size_nm=25.0)
    assert result.scored and result.error == ""
    assert result.score == pytest.approx(want.score, abs=1e-6) and result.fit == want.fit
    assert result.model_version == read_version(model_bundle()) and result.key == measurement.name()


def test_many_measurements_are_submitted_without_waiting(server):
    seen = []
    names = ["axon_actin_1__base", "axon_actin_1__blur30", "axon_actin_1__shuffle", "axon_actin_2__base"]
    with ImspectorScoring(Application(Measurement("none")), server.address, on_result=seen.append) as scoring:
        for name in names:
            scoring.submit(real_measurement(name)[0])
        assert scoring.scorer.wait(30)
    assert sorted(r.key for r in seen) == sorted(names) and all(r.scored for r in seen)
    with QualityClient(server.address) as client:   # each result is its own measurement's
        want = {name: float(client.score([real_measurement(name)[1]])[0]) for name in names}
    assert {r.key: r.score for r in seen} == pytest.approx(want, abs=1e-6) and len(set(want.values())) == 4


def test_server_down_the_score_is_missing_never_invented(dead_address):
    measurement, _ = real_measurement()
    with ImspectorScoring(Application(measurement), dead_address, timeout=1.0) as scoring:
        result = scoring.score(measurement)
    assert result.score is None and "UNAVAILABLE" in result.error
    assert result.as_metadata() == {"status": "missing", "error": result.error}


def test_a_missing_channel_is_named():
    measurement, _ = real_measurement()
    with pytest.raises(ImspectorError, match=r"no stack named like 'Depletion' \(stacks: Confocal, STED 775"):
        ImspectorScoring(Application(measurement), "127.0.0.1:1", channel="Depletion").submit()


def test_the_control_loop_runs_on_measurements_and_survives_an_outage(server, dead_address):
    """Four iterations on the stand-in (a simulated field per run): parameters written in Imspector's
    units, bleaching from the confocal frames; then the server goes away and the loop goes on with
    missing scores the optimizer never learns from."""
    measurement = Measurement("loop")
    imspector = Application(measurement, PATHS)
    scope = ImspectorMicroscope(imspector, {k: ParameterPath(*v) for k, v in PATHS.items()}, channel="STED",
                                pre_channel="Confocal_Pre", post_channel="Confocal_Post")
    optimizer = ThompsonOptimizer(axes_from_ranges(RANGES), max_bleaching=0.3, seed=0, initial_random=2)
    with QualityClient(server.address, timeout=30) as client:
        steps = run_loop(optimizer, scope, MissingScoreScorer(client), 3)
    with QualityClient(dead_address, timeout=1, retries=0) as client:
        steps += run_loop(optimizer, scope, MissingScoreScorer(client), 1)
    assert imspector.runs == 4
    written = dict(measurement.writes[-3:])
    for name, (path, scale) in PATHS.items():
        assert written[path] == pytest.approx(steps[-1].parameters[name] * scale)
    assert all(0 <= s.score <= 1 for s in steps[:3]) and math.isnan(steps[3].score)
    assert all(0 <= s.bleaching <= 1 for s in steps) and any(s.bleaching > 0 for s in steps)
    assert len(optimizer.scores) == 3   # the missing score taught it nothing


def test_loop_config_is_checked_key_by_key():
    from stedq.training.data.microscope import PARAMETER_RANGES

    config = load_loop_config(LOOP_CONFIG_EXAMPLE, PARAMETER_RANGES)
    assert config.parameters["dwell_time_us"] == ParameterPath("ExpControl/scan/dwelltime", 1e-6)
    assert config.ranges["p_sted_mw"] == (0.0, 150.0) and config.pre_channel == "Confocal_Pre"
    example = json.loads(LOOP_CONFIG_EXAMPLE)
    for change, message in [
        (lambda c: c["parameters"].pop("p_ex_uw"), r"no Imspector path for \['p_ex_uw'\]"),
        (lambda c: c.update(chanel="STED"), r"unknown keys \['chanel'\]"),
        (lambda c: c["parameters"]["dwell_time_us"].update(range=[50, 5]), "range: 50 is not below 5"),
        (lambda c: c.pop("post_channel"), "go together"),
    ]:
        broken = json.loads(json.dumps(example))
        change(broken)
        with pytest.raises(ImspectorError, match=message):
            load_loop_config(json.dumps(broken), PARAMETER_RANGES)


def test_stedq_loop_imspector_says_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    good = tmp_path / "scope.json"
    good.write_text(LOOP_CONFIG_EXAMPLE)
    command = [sys.executable, "-m", "stedq", "loop", "--iterations", "1", "--out", str(tmp_path / "out")]
    run = subprocess.run([*command, "--imspector", str(bad)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "not JSON" in run.stderr
    run = subprocess.run([*command, "--imspector", str(good)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "cannot reach Imspector" in run.stderr   # specpy finds no Imspector here

"""The napari widget in a real viewer (Xvfb display, pytest-xvfb) against a real stedq server: found
through its npe2 manifest, the score equals `stedq score` for the same file, the map layer covers the
image, the current frame of a series is scored, and failures show in the widget."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from tests.conftest import IN_CI, REPO_ROOT
from tests.server_support import ThreadedServer, model_bundle, server_settings

if not os.environ.get("DISPLAY"):   # pytest-xvfb sets it when Xvfb is installed (scripts/test installs it)
    if IN_CI:
        pytest.fail("no display for the napari tests: Xvfb should have been installed by scripts/test",
                    pytrace=False)
    pytest.skip("no display (install xvfb and pytest-xvfb)", allow_module_level=True)
napari = pytest.importorskip("napari", reason="the napari extra is not installed")

from stedq.clients.client import QualityClient  # noqa: E402
from stedq.clients.napari_widget import MAP_SUFFIX  # noqa: E402

REAL = REPO_ROOT / "validation" / "real-dev" / "degraded"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


@pytest.fixture
def viewer(qtbot):
    viewer = napari.Viewer(show=False)
    yield viewer
    viewer.close()


@pytest.fixture
def widget(viewer, server):
    _, widget = viewer.window.add_plugin_dock_widget("stedq", "Score with stedq")   # through npe2
    widget.server.setText(server.address)
    return widget


def score_in_widget(qtbot, widget, layer_name: str):
    widget.layer_box.setCurrentText(layer_name)
    widget.last = None
    widget.button.click()
    qtbot.waitUntil(lambda: widget.last is not None and widget.button.isEnabled(), timeout=TIMEOUT_MS)
    return widget.last


def stedq_score(server, path) -> dict:
    run = subprocess.run([sys.executable, "-m", "stedq", "score", str(path), "--server", server.address,
                          "--json", "-"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (row,) = json.loads(run.stdout)["results"]
    return row


def test_a_file_scores_as_stedq_score_says_with_its_map(qtbot, viewer, widget, server):
    path = REAL / "dendrite_01_Block_1__base.tif"
    (layer,) = viewer.open(str(path), plugin="napari")
    outcome = score_in_widget(qtbot, widget, layer.name)
    want = stedq_score(server, path)
    assert outcome.error == "" and outcome.score == pytest.approx(want["score"], abs=1e-4)
    assert widget.score_label.text() == f"{want['score']:.3f}"
    assert widget.fit_label.text() == ", ".join(outcome.fit) and outcome.fit
    with QualityClient(server.address) as client:
        assert widget.model_label.text() == client.model_info().version
    quality = viewer.layers[layer.name + MAP_SUFFIX]
    np.testing.assert_allclose(quality.extent.world, layer.extent.world)   # the image's extent
    assert quality.data.shape == layer.data.shape
    assert np.nanmean(quality.data) == pytest.approx(outcome.score, abs=0.05)


def test_the_current_frame_of_a_series_is_scored(qtbot, viewer, widget, server):
    frames = np.stack([tifffile.imread(REAL / f"axon_actin_1__{kind}.tif") for kind in ("base", "blur30", "thin010")])
    layer = viewer.add_image(frames, name="series")
    viewer.dims.set_current_step(0, 2)
    outcome = score_in_widget(qtbot, widget, "series")
    with QualityClient(server.address) as client:
        want = client.score(frames)
    assert outcome.score == pytest.approx(float(want[2]), abs=1e-5)
    assert "frame (2,)" in widget.message.text()
    assert viewer.layers["series" + MAP_SUFFIX].data.shape == frames.shape[1:]
    assert layer in viewer.layers


def test_failures_show_in_the_widget_not_as_tracebacks(qtbot, viewer, widget):
    small = viewer.add_image(np.full((40, 40), 9, np.uint16), name="small")
    outcome = score_in_widget(qtbot, widget, small.name)
    assert "smaller than the minimum 64x64" in outcome.error and widget.score_label.text() == "–"
    assert "smaller than the minimum 64x64" in widget.message.text()
    holes = np.ones((100, 100), np.float32)
    holes[5, 5] = np.nan
    viewer.add_image(holes, name="holes")
    assert "NaN" in score_in_widget(qtbot, widget, "holes").error
    viewer.add_image(np.zeros((100, 100, 3), np.uint8), name="colour", rgb=True)
    widget.layer_box.setCurrentText("colour")
    widget.button.click()   # refused before any request: no worker starts
    assert "RGB image, not photon counts" in widget.message.text() and widget.button.isEnabled()
    with socket.socket() as probe:   # a stopped server: nothing listens on this port
        probe.bind(("127.0.0.1", 0))
        widget.server.setText(f"127.0.0.1:{probe.getsockname()[1]}")
    outcome = score_in_widget(qtbot, widget, small.name)
    assert outcome.error.startswith("server not reachable") and "server not reachable" in widget.message.text()


def test_a_large_image_gets_a_tiled_map_on_its_pixels(qtbot, viewer, widget, server):
    """Four real images side by side (448 px): the map layer shows each tile's score where it lies,
    with the image's scale and offset."""
    parts = [tifffile.imread(REAL / f"{name}__base.tif").astype(np.uint16)
             for name in ("axon_actin_1", "axon_tubulin", "dendrite_01_Block_1", "axon_actin_2")]
    mosaic = np.block([[parts[0], parts[1]], [parts[2], parts[3]]])
    layer = viewer.add_image(mosaic, name="mosaic", scale=(0.02, 0.02), translate=(1.0, 2.0))
    outcome = score_in_widget(qtbot, widget, "mosaic")
    with QualityClient(server.address) as client:
        quality_map = client.score_map(mosaic)
    quality = viewer.layers["mosaic" + MAP_SUFFIX]
    np.testing.assert_allclose(quality.extent.world, layer.extent.world)
    np.testing.assert_allclose(quality.data, quality_map.per_pixel(448, 448), atol=1e-5)
    assert outcome.score == pytest.approx(float(np.mean(quality_map.scores)), abs=1e-5)
    assert len(np.unique(np.round(quality.data, 4))) > 3   # tiles differ

"""napari dock widget: score the image a microscopist is looking at through a stedq server.

Plugins ▸ stedq ▸ Score with stedq (npe2 manifest: stedq/clients/napari.yaml). Pick an image layer
(the current frame of a time series or stack is scored), press Score: the widget shows the score,
the fit verdict and the model version, and adds the quality map as a colour-mapped layer over the
image's tiles. Scoring runs on a worker thread with a busy indicator; errors (server down, image too
small, a dtype the pixel contract does not take) are shown in the widget, never as a traceback.
Needs the optional extra: pip install 'stedq[napari]'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

DEFAULT_SERVER = "localhost:50051"
MAP_SUFFIX = " quality map"


@dataclass(frozen=True)
class Outcome:
    """What one scoring gave: the result, or the error message to show (never both)."""
    score: float | None = None
    fit: tuple[str, ...] = ()
    model_version: str = ""
    quality: np.ndarray | None = None     # per-pixel tile scores, the image's shape
    error: str = ""


def current_frame(viewer, layer) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 2-D image of `layer` at the viewer's current position, and its index along leading axes."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if getattr(layer, "rgb", False):
        raise ValueError(f"layer '{layer.name}' is an RGB image, not photon counts of one channel")
    if layer.ndim == 2:
        return np.asarray(data), ()
    point = layer.world_to_data(viewer.dims.point[-layer.ndim:])
    index = tuple(int(np.clip(round(p), 0, n - 1)) for p, n in zip(point[:-2], data.shape[:-2], strict=True))
    return np.asarray(data[index]), index


def file_frame(layer, image: np.ndarray, index: tuple[int, ...]):
    """The same frame as `stedq score` reads it from the layer's file (ImageJ calibration applied, pixel
    size from the metadata), when the layer came from a file stedq reads and the frame matches; else None."""
    from stedq.files import ReadError, read_frames

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not Path(path).is_file():
        return None
    try:
        frames = read_frames(path)
    except ReadError:
        return None
    position = int(np.ravel_multi_index(index, layer.data.shape[:-2])) if index else 0
    if len(frames) > position and frames[position].image.shape == image.shape:
        return frames[position]
    return None


def score_frame(server: str, image: np.ndarray, frame=None, timeout: float = 30.0) -> Outcome:
    """Runs on the worker thread; every failure becomes Outcome.error (the message the user reads)."""
    from stedq.clients.client import QualityClient
    from stedq.clients.errors import QualityError

    try:
        with QualityClient(server, timeout=timeout, retries=1) as client:
            if frame is not None:
                (result,) = client.score_images([frame.image], intensity=frame.intensity,
                                                pixel_size_nm=frame.pixel_size_nm)
            else:
                (result,) = client.score_images([image])
            version = client.model_version
        # a tiled image's map, else one score over the whole (padded) image
        quality = (result.map.per_pixel(*image.shape) if result.map is not None
                   else np.full(image.shape, result.score, dtype=np.float64))
        return Outcome(result.score, result.fit, version, quality)
    except QualityError as exc:
        reason = "server not reachable" if exc.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else "refused"
        return Outcome(error=f"{reason}: {exc}")
    except (ValueError, TypeError) as exc:   # the pixel contract's word on the image (dtype, NaN, ...)
        return Outcome(error=f"cannot score this image: {exc}")


class ScoreWidget(QWidget):
    def __init__(self, napari_viewer, server: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.server = QLineEdit(server or os.environ.get("STEDQ_SERVER", DEFAULT_SERVER))
        self.layer_box = QComboBox()
        self.add_map = QCheckBox("add the quality map as a layer")
        self.add_map.setChecked(True)
        self.button = QPushButton("Score")
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)       # indeterminate: the server answers in one go
        self.busy.setVisible(False)
        self.score_label, self.fit_label, self.model_label = QLabel("–"), QLabel("–"), QLabel("–")
        self.message = QLabel("")
        self.message.setWordWrap(True)

        form = QFormLayout()
        form.addRow("server", self.server)
        form.addRow("image layer", self.layer_box)
        form.addRow("score", self.score_label)
        form.addRow("fit", self.fit_label)
        form.addRow("model", self.model_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.add_map)
        layout.addWidget(self.button)
        layout.addWidget(self.busy)
        layout.addWidget(self.message)
        layout.addStretch()

        self.button.clicked.connect(self.score)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self.worker = None
        self.last: Outcome | None = None

    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and not layer.name.endswith(MAP_SUFFIX)]

    def _refresh_layers(self, *_) -> None:
        current = self.layer_box.currentText()
        self.layer_box.clear()
        names = [layer.name for layer in self._image_layers()]
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        elif self.viewer.layers.selection.active is not None and self.viewer.layers.selection.active.name in names:
            self.layer_box.setCurrentText(self.viewer.layers.selection.active.name)

    def _show_error(self, text: str) -> None:
        self.message.setStyleSheet("color: #e06c6c")
        self.message.setText(text)

    def score(self) -> None:
        from napari.qt.threading import create_worker

        name = self.layer_box.currentText()
        if not name:
            self._show_error("no image layer to score: open an image first")
            return
        layer = self.viewer.layers[name]
        try:
            image, index = current_frame(self.viewer, layer)
            frame = file_frame(layer, image, index)
        except (ValueError, IndexError) as exc:
            self._show_error(str(exc))
            return
        self.button.setEnabled(False)
        self.busy.setVisible(True)
        self.message.setStyleSheet("")
        self.message.setText(f"scoring '{name}'" + (f" frame {index}" if index else "") + f" at {self.server.text()} …")
        self.worker = create_worker(score_frame, self.server.text().strip(), image, frame)
        self.worker.returned.connect(lambda outcome: self._show(outcome, layer, index))
        self.worker.finished.connect(self._done)
        self.worker.start()

    def _done(self) -> None:
        self.button.setEnabled(True)
        self.busy.setVisible(False)

    def _show(self, outcome: Outcome, layer, index: tuple[int, ...]) -> None:
        self.last = outcome
        if outcome.error:
            self.score_label.setText("–")
            self.fit_label.setText("–")
            self._show_error(outcome.error)
            return
        self.score_label.setText(f"{outcome.score:.3f}")
        self.fit_label.setText(", ".join(outcome.fit) or "–")
        self.model_label.setText(outcome.model_version or "–")
        self.message.setText(f"'{layer.name}'" + (f" frame {index}" if index else "") + " scored")
        if self.add_map.isChecked() and outcome.quality is not None:
            self._add_map(layer, outcome.quality)

    def _add_map(self, layer, quality: np.ndarray) -> None:
        """Over the image's last two axes, with its scale and offset: each tile's score on its pixels."""
        name = layer.name + MAP_SUFFIX
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_image(quality, name=name, colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.45,
                              blending="translucent", scale=layer.scale[-2:], translate=layer.translate[-2:])
        self.viewer.layers.selection.active = layer

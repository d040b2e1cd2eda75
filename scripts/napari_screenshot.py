"""The screenshot in docs/clients.md: the stedq widget in napari on a real-dev STED image.

    xvfb-run -a .venv/bin/python scripts/napari_screenshot.py docs/napari-widget.png

Starts `stedq serve` with the bundled model on a free local port, opens the image in a real napari
viewer, scores it through the widget (found by its npe2 manifest) and saves the whole window.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from stedq.bench.servers import stedq_server

IMAGE = Path(__file__).resolve().parents[1] / "validation" / "real-dev" / "degraded" / "axon_actin_2__base.tif"


def main(out: Path) -> int:
    server = stedq_server(out.parent, model=None, batching=True, threads=0, device="cpu", max_batch_size=32,
                          max_queue_delay_ms=2.0, variant="fp32")
    try:
        server.wait_ready(120)
        viewer = napari.Viewer(title="stedq in napari")
        viewer.window.resize(1200, 720)
        (layer,) = viewer.open(str(IMAGE), plugin="napari")
        _, widget = viewer.window.add_plugin_dock_widget("stedq", "Score with stedq")
        widget.server.setText(server.target)
        widget.layer_box.setCurrentText(layer.name)
        widget.button.click()
        deadline = time.monotonic() + 60
        while (widget.last is None or not widget.button.isEnabled()) and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        if widget.last is None or widget.last.error:
            print(f"scoring failed: {widget.last}", file=sys.stderr)
            return 1
        viewer.reset_view()
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        viewer.screenshot(str(out), canvas_only=False)
        print(f"wrote {out}: score {widget.last.score:.3f}, fit {', '.join(widget.last.fit)}")
        viewer.close()
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/napari-widget.png")))

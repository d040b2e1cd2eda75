"""What scoring adds to a Micro-Manager acquisition (a documented command, not a test):

    python -m stedq.bench.acquisition --out runs/acquisition [--frames 200] [--exposure-ms 10]

Runs the same pymmcore-plus acquisition (UniMMCore with a pure-Python camera playing real STED images,
no Micro-Manager binaries) without scoring, with scoring by a stedq server it starts on this machine,
and with the server down, alternating rounds; reports the acquisition's wall time per frame and how
long after the last frame the last score arrived. Writes OUT/acquisition.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

import numpy as np

REAL_DEV = Path(__file__).resolve().parents[1] / "validation" / "real-dev" / "degraded"


def playback_frames(size: int = 160) -> list[np.ndarray]:
    """size x size uint16 regions of the real-dev STED images (the repository's validation set)."""
    import tifffile

    frames = []
    for path in sorted(REAL_DEV.glob("*.tif")):
        image = tifffile.imread(path)
        if min(image.shape) >= size and "crop" not in path.name:
            frames.append(np.ascontiguousarray(image[:size, :size]).astype(np.uint16))
    if not frames:
        raise FileNotFoundError(f"no real-dev images in {REAL_DEV}")
    return frames


def playback_core(frames: list[np.ndarray], exposure_ms: float = 0.0, pixel_size_um: float = 0.02):
    """A UniMMCore whose camera returns the next frame (cycling) after `exposure_ms`, as a camera would."""
    from pymmcore_plus.experimental.unicore import SimpleCameraDevice, UniMMCore

    height, width = frames[0].shape

    class PlaybackCamera(SimpleCameraDevice):
        def __init__(self):
            super().__init__()
            self.count, self.exposure = 0, exposure_ms

        def sensor_shape(self):
            return (height, width)

        def dtype(self):
            return np.uint16

        def get_exposure(self) -> float:
            return self.exposure

        def set_exposure(self, exposure: float) -> None:
            self.exposure = exposure

        def snap(self, buffer: np.ndarray):
            if self.exposure:
                time.sleep(self.exposure / 1000.0)
            buffer[:] = frames[self.count % len(frames)]
            self.count += 1
            return {"playback_frame": self.count - 1}

    core = UniMMCore()
    core.loadPyDevice("Camera", PlaybackCamera())
    core.initializeDevice("Camera")
    core.setCameraDevice("Camera")
    core.setAutoShutter(False)   # no shutter device
    core.definePixelSizeConfig("res")
    core.setPixelSizeUm("res", pixel_size_um)
    core.setPixelSizeConfig("res")
    return core


def _round(core, frames: int, address: str | None) -> dict:
    import useq

    from stedq.clients.micromanager import MDAScoring

    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": frames})
    started = time.perf_counter()
    if address is None:
        core.mda.run(sequence)
        return {"acquisition_s": time.perf_counter() - started}
    with MDAScoring(core, address, timeout=2.0) as scoring:
        core.mda.run(scoring.events(sequence))
        acquired = time.perf_counter() - started
        scoring.wait(60)
        last_score = time.perf_counter() - started
        rows = scoring.table()
    return {"acquisition_s": acquired, "last_score_after_s": last_score - acquired,
            "scored": sum(r["status"] == "scored" for r in rows), "missing": sum(r["status"] == "missing" for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/acquisition"))
    parser.add_argument("--frames", type=int, default=200, help="frames per acquisition [default: 200]")
    parser.add_argument("--exposure-ms", type=float, default=10.0, help="camera time per frame [default: 10]")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per condition [default: 3]")
    args = parser.parse_args(argv)

    from stedq.bench.servers import stedq_server

    args.out.mkdir(parents=True, exist_ok=True)
    frames = playback_frames()
    with socket.socket() as probe:   # nothing listens here: the "server down" condition
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    server = stedq_server(args.out, model=None, batching=True, threads=0, device="cpu", max_batch_size=32,
                          max_queue_delay_ms=2.0, variant="fp32")
    server.wait_ready(120)
    conditions = {"no scoring": None, "scored": server.target, "server down": dead}
    results: dict[str, list[dict]] = {name: [] for name in conditions}
    try:
        for round_index in range(args.rounds):
            for name, address in conditions.items():
                core = playback_core(frames, args.exposure_ms)
                result = _round(core, args.frames, address)
                results[name].append(result)
                print(f"round {round_index + 1} {name}: {result['acquisition_s'] / args.frames * 1000:.2f} ms/frame"
                      + (f", last score {result['last_score_after_s'] * 1000:.0f} ms after the last frame, "
                         f"{result['scored']} scored, {result['missing']} missing" if address else ""),
                      flush=True)
    finally:
        server.stop()
    summary = {name: {"ms_per_frame": float(np.median([r["acquisition_s"] for r in rs])) / args.frames * 1000,
                      **({"last_score_after_ms": float(np.median([r["last_score_after_s"] for r in rs])) * 1000,
                          "scored": rs[-1]["scored"], "missing": rs[-1]["missing"]} if name != "no scoring" else {})}
               for name, rs in results.items()}
    base = summary["no scoring"]["ms_per_frame"]
    for name in ("scored", "server down"):
        summary[name]["added_ms_per_frame"] = summary[name]["ms_per_frame"] - base
    report = {"frames": args.frames, "exposure_ms": args.exposure_ms, "rounds": args.rounds,
              "frame_shape": list(frames[0].shape), "summary": summary, "rounds_raw": results}
    (args.out / "acquisition.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

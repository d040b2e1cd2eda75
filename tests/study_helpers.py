"""Helpers of the study tests (tests/test_study_*.py): labelled TIFF folders, studies, a running app."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile


def labelled_folder(root: Path, n: int = 6, seed: int = 0, size: int = 64) -> tuple[Path, Path]:
    """n uint16 TIFFs named <name>-<score>.tiff (brighter, less noisy = better) and a predictions CSV
    (the label plus noise); returns (folder, predictions.csv)."""
    rng = np.random.default_rng(seed)
    folder = root / "images"
    folder.mkdir(parents=True)
    lines = ["image,prediction"]
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        quality = round(float((i + 0.5) / n), 3)
        fibre = np.exp(-((xx - size / 2 - 8 * np.sin(yy / 9 + i)) ** 2) / (2 * (1 + 4 * (1 - quality)) ** 2))
        counts = rng.poisson(2 + 60 * quality * fibre)
        tifffile.imwrite(folder / f"img{i:02d}-{quality}.tiff", (counts * 200).clip(0, 65535).astype(np.uint16))
        lines.append(f"img{i:02d},{np.clip(quality + rng.normal(0, 0.08), 0, 1):.3f}")
    predictions = root / "predictions.csv"
    predictions.write_text("\n".join(lines) + "\n")
    return folder, predictions


@contextmanager
def running_app(study_dir: Path, timeout: float = 20.0) -> Iterator[str]:
    """The study web app on uvicorn at 127.0.0.1 on a free port, in a thread; yields its base URL."""
    import uvicorn

    from stedq.study.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(study_dir), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the study app did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, form: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; redirects are returned, not followed."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

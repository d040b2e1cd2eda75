"""The baseline stedq replaces: the paper code's serving design, rebuilt minimally.

    python -m stedq.bench.paper_http --model BUNDLE --port 8080 [--threads 0]

One image per HTTP request, its pixels as a JSON list of lists (photon counts), one forward pass per
request, the score as JSON: POST /predict {"image": [[...], ...]} -> {"score": 0.42}; GET /health.
The standard library's threading HTTP server, and the same onnxruntime session as stedq's engine, so
that the comparison measures the design (JSON pixels, no batching), not the inference library.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from stedq.engine import Engine
from stedq.pixels import to_model_input, to_wire_array


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as any HTTP client library would use

        def _answer(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/health":
                self._answer(200, {"status": "ok"})
            else:
                self._answer(404, {"error": f"{self.path}: not found (POST /predict, GET /health)"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/predict":
                self._answer(404, {"error": f"{self.path}: not found (POST /predict)"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                image = to_model_input(to_wire_array(np.asarray(json.loads(self.rfile.read(length))["image"])))
                if image.shape != (engine.info.input_height, engine.info.input_width):
                    raise ValueError(f"image: shape {image.shape}, expected "
                                     f"({engine.info.input_height}, {engine.info.input_width})")
            except (ValueError, KeyError, TypeError) as exc:
                self._answer(400, {"error": f"{type(exc).__name__}: {exc}"})
                return
            score = float(engine.run(image[None, None])[0])
            self._answer(200, {"score": score})

        def log_message(self, *args) -> None:  # one line per request would cost more than the request
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stedq.bench.paper_http", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle folder or .onnx (default: the bundled model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    engine = Engine(args.model, device=args.device, intra_op_threads=args.threads)
    engine.warm_up((1,))
    # http.server's listen backlog is 5: more simultaneous clients would have their connections reset
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer((args.host, args.port), make_handler(engine))
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

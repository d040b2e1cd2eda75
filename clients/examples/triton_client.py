"""Score STED images with tritonclient (KServe v2 over gRPC) against a stedq server.

stedq serves the KServe v2 / Open Inference Protocol beside its own API, so tools that already speak
it (tritonclient, KServe tooling) need no stedq package. This script uses only tritonclient, numpy and
tifffile: copy it into your own project as a starting point.

    pip install 'tritonclient[grpc]' tifffile
    stedq serve &                                   # in another terminal
    python clients/examples/triton_client.py image1.tif image2.npy
    python clients/examples/triton_client.py --repeat 200       # latency of the built-in test image
    python clients/examples/triton_client.py --fp32 --server triton:8001 image.tif   # any v2 server

The model ("quality" unless the server was started with --model-name) takes input "image", shape
[N, 1, H, W]: photon counts as UINT8, UINT16, INT16 or UINT32 (the same counts score the same whatever
the datatype), or FP32 on the model's scale (counts / 65535, in [0, 1]; FP32 counts need the input
parameter intensity="counts"). It answers output "score", FP32 [N, 1], in [0, 1]. stedq takes any H
and W from 64 px (smaller is padded, larger tiled and averaged; quality maps come from `stedq score`).

--fp32 sends what every server of this model takes: FP32 counts / 65535, 224x224. That is the one code
path for stedq, for Triton serving `stedq export --triton`'s repository and for KServe
(docs/deployment.md): Triton runs the bare ONNX graph, without stedq's pixel contract or tiling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

SIZE = 224       # the model's input: what Triton serving the bare graph takes
MIN_SIZE = 64    # stedq pads smaller images up to SIZE (and tiles larger ones)
COUNTS_PER_UNIT = 65535.0   # the model scale: FP32 = photon counts / 65535
DATATYPES = {"UINT8", "UINT16", "INT16", "UINT32", "FP32"}


def read_image(path: Path) -> np.ndarray:
    """One 224x224 image (or a stack of them) from a .tif/.tiff or .npy file."""
    if path.suffix.lower() in {".tif", ".tiff"}:
        import tifffile

        image = tifffile.imread(path)
    elif path.suffix.lower() == ".npy":
        image = np.load(path)
    else:
        raise ValueError(f"{path}: expected a .tif, .tiff or .npy file")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or min(image.shape[1:]) < MIN_SIZE:
        raise ValueError(f"{path}: shape {image.shape}; expected an image (or a stack of images of one size) "
                         f"of at least {MIN_SIZE}x{MIN_SIZE} pixels")
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    if np_to_triton_dtype(image.dtype) not in DATATYPES:
        raise ValueError(f"{path}: dtype {image.dtype}; send uint8/uint16/int16/uint32 photon counts or "
                         "float32 in [0, 1]")
    return image


def test_image(seed: int = 0) -> np.ndarray:
    """A synthetic uint16 image of a few blurred fibres, for trying the server without data."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    signal = np.zeros((SIZE, SIZE))
    for _ in range(5):
        angle, x0, y0 = rng.uniform(0, np.pi), *rng.uniform(0, SIZE, 2)
        signal += np.exp(-0.5 * (((xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle)) / 2.0) ** 2)
    return rng.poisson(signal * 40 + 2).astype(np.uint16)[None]


def portable(images: np.ndarray) -> np.ndarray:
    """Integer photon counts as FP32 on the model scale (float32 input is taken as already on it)."""
    if images.dtype == np.float32:
        return images
    return (images.astype(np.float32) / np.float32(COUNTS_PER_UNIT)).astype(np.float32)


def score(client: triton.InferenceServerClient, model: str, images: np.ndarray, headers: dict,
          timeout: float) -> np.ndarray:
    """Scores of (N, H, W) images. set_data_from_numpy sends the tensor as raw bytes."""
    batch = np.ascontiguousarray(images[:, None])                     # [N, 1, H, W]
    image = triton.InferInput("image", list(batch.shape), np_to_triton_dtype(batch.dtype))
    image.set_data_from_numpy(batch)
    result = client.infer(model, [image], outputs=[triton.InferRequestedOutput("score")],
                          headers=headers, client_timeout=timeout)
    return result.as_numpy("score")[:, 0]


def latency(client, model: str, images: np.ndarray, repeat: int, headers: dict, timeout: float) -> None:
    """Time `repeat` requests of the given batch, one at a time, after two warm-up calls."""
    for _ in range(2):
        score(client, model, images, headers, timeout)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        score(client, model, images, headers, timeout)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    print(f"{repeat} requests of {len(images)} image(s): p50 {np.percentile(ms, 50):.2f} ms, "
          f"p90 {np.percentile(ms, 90):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
          f"{len(images) * repeat / (ms.sum() / 1000):.1f} images/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="exit status: 0 scored, 1 an input was rejected, 3 server unreachable")
    parser.add_argument("paths", nargs="*", type=Path, help=".tif/.tiff/.npy files, 64x64 px or larger "
                                                            "(default: a built-in synthetic image)")
    parser.add_argument("--server", default="localhost:50051", help="HOST:PORT [default: localhost:50051]")
    parser.add_argument("--model", default="quality", help="model name [default: quality]")
    parser.add_argument("--token", help="bearer token, if the server was started with --token")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) of a server started with TLS")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call [default: 30]")
    parser.add_argument("--fp32", action="store_true",
                        help="send FP32 counts / 65535, the form Triton serving the exported repository takes too")
    parser.add_argument("--repeat", type=int, default=0, metavar="N",
                        help="also time N requests of the images (latency percentiles, images/s)")
    args = parser.parse_args()

    try:
        batches = [(str(p), read_image(p)) for p in args.paths] or [("test image", test_image())]
        if args.fp32:
            batches = [(name, portable(images)) for name, images in batches]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    client = triton.InferenceServerClient(
        args.server, ssl=args.tls_ca is not None,
        root_certificates=str(args.tls_ca) if args.tls_ca else None)
    try:
        if not client.is_model_ready(args.model, headers=headers, client_timeout=args.timeout):
            print(f"error: model '{args.model}' is not ready on {args.server}", file=sys.stderr)
            return 3
        meta = client.get_model_metadata(args.model, headers=headers, client_timeout=args.timeout)
        print(f"{args.server}: model {meta.name} version {', '.join(meta.versions)} ({meta.platform})")
        status = 0
        for name, images in batches:
            try:
                scores = score(client, args.model, images, headers, args.timeout)
            except InferenceServerException as exc:
                if "INVALID_ARGUMENT" not in str(exc.status()):
                    raise
                print(f"{name}: rejected: {exc.message()}", file=sys.stderr)
                status = 1
                continue
            for index, value in enumerate(scores):
                print(f"{name}" + (f"[{index}]" if len(scores) > 1 else "") + f"\t{value:.4f}")
        if args.repeat > 0:
            latency(client, args.model, batches[0][1], args.repeat, headers, args.timeout)
        return status
    except InferenceServerException as exc:
        print(f"error: {args.server}: {exc.status()}: {exc.message()}", file=sys.stderr)
        return 3
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())

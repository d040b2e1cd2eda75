"""The load generator: a separate process that the bench drives through its stdin and stdout.

    python -m stedq.bench.loadgen        # reads one JSON job per line, answers one JSON result per line

Each job names a protocol, a target, the images per request and the number of concurrent callers.
All callers of a job share one asyncio event loop in this one process, so on a small machine the
load generator itself costs little CPU (it reports how much: `client_cpu_cores`) and leaves the
cores to the server being measured. Requests are built the way each protocol's users build them:

    v1         stedq.clients.AsyncQualityClient.score, uint16 pixels (stedq.v1.Score, unary)
    v1-stream  one ScoreStream, `concurrency` single-image requests in flight (a sliding window)
    v2         tritonclient.grpc.aio (KServe v2 ModelInfer), FP32 [N, 1, H, W] as raw_input_contents
    http       the paper code's design: one image per HTTP POST, pixels as a JSON list of counts

tritonclient registers the KServe v2 protobuf messages, which clash with the server's own copy
(stedq.kserve): that is one more reason this runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stedq.bench.closed_loop import Recorder, run_async
from stedq.pixels import to_model_input

IMAGE_SIZE = 224


def bench_images(count: int, size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """(count, size, size) uint16 photon-count-like images (the model's cost does not depend on them)."""
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 300.0, (count, size, size))).clip(0, 65535).astype(np.uint16)


async def _v1(job: dict) -> dict:
    from stedq.clients import AsyncQualityClient

    images = bench_images(job["batch"])
    async with AsyncQualityClient(job["target"], timeout=job.get("timeout_s", 120.0), retries=0) as client:
        await client.wait_ready(job.get("ready_timeout_s", 30.0))

        async def call():   # score_images: what client.score does, keeping the server's timing
            return (await client.score_images(images))[0].timing

        return await run_async(call, len(images), concurrency=job["concurrency"],
                               duration_s=job["duration_s"], warmup_s=job["warmup_s"],
                               min_calls=job.get("min_calls", 5))


async def _v1_stream(job: dict) -> dict:
    """`concurrency` requests in flight on one stream; a new one is sent as each answer comes back."""
    import time

    from stedq.clients import AsyncQualityClient

    image = bench_images(1)[0]
    recorder = Recorder(job["warmup_s"], job["duration_s"], job.get("min_calls", 5))
    window = asyncio.Semaphore(job["concurrency"])
    sent: dict[str, float] = {}

    async def requests():
        index = 0
        while recorder.more():
            await window.acquire()
            sent[str(index)] = time.perf_counter()
            index += 1
            yield image

    async with AsyncQualityClient(job["target"], timeout=job.get("timeout_s", 120.0), retries=0) as client:
        await client.wait_ready(job.get("ready_timeout_s", 30.0))
        async for answer in client.stream(requests()):
            recorder.record(sent.pop(answer.request_id), time.perf_counter(), len(answer.results), answer.timing)
            window.release()
    return {**recorder.result(), "concurrency": job["concurrency"]}


async def _v2(job: dict) -> dict:
    import tritonclient.grpc as triton
    from tritonclient.grpc.aio import InferenceServerClient

    batch = to_model_input(bench_images(job["batch"]))[:, None]
    model = job.get("model_name", "quality")
    client = InferenceServerClient(job["target"])
    try:
        for _ in range(300):  # up to 30 s for the model to be ready
            try:
                if await client.is_model_ready(model):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            await asyncio.sleep(0.1)
        tensor = triton.InferInput("image", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput("score")]

        async def call():
            result = await client.infer(model, [tensor], outputs=outputs,
                                        client_timeout=job.get("timeout_s", 120.0))
            if result.as_numpy("score").size != len(batch):
                raise RuntimeError(f"{job['target']}: expected {len(batch)} scores")

        return await run_async(call, len(batch), concurrency=job["concurrency"],
                               duration_s=job["duration_s"], warmup_s=job["warmup_s"],
                               min_calls=job.get("min_calls", 5))
    finally:
        await client.close()


async def _http(job: dict) -> dict:
    """One image per POST /predict with {"image": [[...], ...]} (counts); the answer is {"score": s}."""
    host, port = job["target"].rsplit(":", 1)
    body = json.dumps({"image": bench_images(1)[0].tolist()}).encode()
    local = threading.local()

    def post() -> None:
        if getattr(local, "connection", None) is None:  # one keep-alive connection per caller thread
            local.connection = http.client.HTTPConnection(host, int(port), timeout=job.get("timeout_s", 120.0))
        local.connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = local.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{job['target']}: HTTP {response.status}: {answer[:200]!r}")
        json.loads(answer)["score"]  # noqa: B018 - the client parses the answer, as a real one would

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(job["concurrency"], thread_name_prefix="http-caller") as pool:
        async def call():
            await loop.run_in_executor(pool, post)

        return await run_async(call, 1, concurrency=job["concurrency"], duration_s=job["duration_s"],
                               warmup_s=job["warmup_s"], min_calls=job.get("min_calls", 5))


PROTOCOLS = {"v1": _v1, "v1-stream": _v1_stream, "v2": _v2, "http": _http}


def run_job(job: dict) -> dict:
    if job.get("protocol") not in PROTOCOLS:
        raise ValueError(f"protocol: {job.get('protocol')!r} is not one of {', '.join(PROTOCOLS)}")
    return asyncio.run(PROTOCOLS[job["protocol"]](job))


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": True, "result": run_job(json.loads(line))}
        except Exception as exc:  # noqa: BLE001 - reported to the bench, which says which job failed
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

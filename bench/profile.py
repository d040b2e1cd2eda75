"""Where the stedq server's CPU time goes under load: py-spy samples the server process while the
load generator runs 32 single-image clients against it.

The raw samples (collapsed stacks, one "frame;frame;... count" per line: flamegraph.pl and speedscope
read them) are kept; the summary is the functions with the most self time and the share of samples
in inference (onnxruntime), gRPC, image decoding, the batcher and the rest.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

BUCKETS = (("inference (onnxruntime)", ("onnxruntime", "engine.py")),
           ("image decoding", ("stedq/pixels.py", "servicer.py:decode")),
           ("batcher", ("batching.py",)),
           ("gRPC / asyncio", ("grpc", "asyncio", "selectors", "interceptors.py", "servicer.py")))


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).is_file():
        raise RuntimeError("py-spy is not installed (pip install py-spy, or the bench extra)")
    return found


def summarize_stacks(text: str, top: int = 15) -> dict:
    self_time: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_time[frames[-1]] += n
        for name, needles in BUCKETS:
            if any(needle in frame for frame in frames for needle in needles):
                buckets[name] += n
                break
        else:
            buckets["other"] += n
    return {"samples": total,
            "top_self": [(name, n / total) for name, n in self_time.most_common(top)] if total else [],
            "buckets": {name: n / total for name, n in buckets.most_common()} if total else {}}


def profile_server(server, loadgen, options, clients: int = 32) -> dict:
    seconds = max(3, int(round(4 * options.duration_s)))
    stacks = options.out / "profile_stedq_c32.txt"
    recorder = subprocess.Popen(
        [_py_spy(), "record", "--pid", str(server.pid()), "--duration", str(seconds), "--rate", "200",
         "--format", "raw", "--output", str(stacks), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    loadgen.run({"protocol": "v1", "target": server.target, "batch": 1, "concurrency": clients,
                 "duration_s": seconds + 1.0, "warmup_s": 0.0, "min_calls": 1})
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not stacks.is_file():
        raise RuntimeError(f"py-spy failed (status {recorder.returncode}): {err.strip()[-500:]}")
    return {"scenario": f"stedq/v1/concurrency/c{clients}/batching", "seconds": seconds, "stacks": str(stacks),
            **summarize_stacks(stacks.read_text())}

"""Where a request's time went, as the server tells the caller: one trailing-metadata entry on every
answer of stedq.v1 Score and KServe v2 ModelInfer (and the same text in each ScoreStreamResponse's
`timing_ms`, since a stream has one trailer for all its answers),

    stedq-timing-ms: decode=0.081;queue=0.012;inference=2.304;total=2.519

in milliseconds, measured in the server: decoding and checking the pixels (the fit verdict is computed
while the batch runs, so it is in no stage), waiting
in the batcher's queue, the onnxruntime runs this request's images were in (shared with the requests
batched with it), and everything from the request's arrival in the servicer to its answer. The client's
round trip minus `total` is the network and gRPC's own cost.
"""

from __future__ import annotations

TIMING_KEY = "stedq-timing-ms"
STAGES = ("decode", "queue", "inference", "total")


def format_timing(seconds: dict[str, float]) -> str:
    """{"decode": s, "queue": s, "inference": s, "total": s} -> the metadata value (ms, 3 decimals)."""
    return ";".join(f"{stage}={1000 * seconds.get(stage, 0.0):.3f}" for stage in STAGES)


def parse_timing(value: str) -> dict[str, float]:
    """The metadata value -> {stage: milliseconds}; unknown or malformed parts are skipped."""
    timing = {}
    for part in value.split(";"):
        name, _, number = part.partition("=")
        try:
            timing[name.strip()] = float(number)
        except ValueError:
            continue
    return timing


def timing_from(metadata) -> dict[str, float] | None:
    """The timing in a call's trailing metadata ((key, value) pairs), or None when the server sent none."""
    for key, value in metadata or ():
        if key == TIMING_KEY:
            return parse_timing(value if isinstance(value, str) else value.decode())
    return None

"""What one `stedq bench` run measures: the scenarios, in the order each round runs them.

A scenario is one (system, protocol, images per request, concurrent callers) point. Every round runs
every scenario once, so each comparison (stedq vs the limit vs the peers) is made from measurements
taken minutes apart at most, under the same background load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Scenario:
    id: str                  # e.g. "stedq/v1/concurrency/c32/batching"
    system: str              # in-process | grpc-floor(-model) | stedq | stedq-no-batching | mlserver | paper-http
    protocol: str            # onnxruntime | v1 | v1-stream | v2 | http
    batch: int               # images per request
    concurrency: int         # callers (for v1-stream: requests in flight on one stream)
    variant: str = "fp32"
    group: str = ""          # limit | unary | stream | concurrency | kserve | peer

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BenchOptions:
    out: Path
    quick: bool = False
    rounds: int = 3
    duration_s: float = 1.5
    warmup_s: float = 0.3
    min_calls: int = 5
    limit_batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    unary_batches: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    stream_windows: list[int] = field(default_factory=lambda: [1, 32])
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    peer_concurrency: int = 32
    peer_batches: list[int] = field(default_factory=lambda: [1, 32])
    int8: bool = True
    peers: tuple[str, ...] = ("kserve", "mlserver", "paper")
    mlserver_env: Path = Path(".venv-mlserver")
    profile: bool = False


def quick_options(out: Path, **overrides) -> BenchOptions:
    """Every kind of scenario once, briefly: proves the harness works, measures nothing worth quoting."""
    values = dict(out=out, quick=True, rounds=1, duration_s=0.2, warmup_s=0.05, min_calls=2,
                  limit_batches=[1, 4], unary_batches=[1, 4], stream_windows=[4], concurrency=[1, 4],
                  peer_concurrency=4, peer_batches=[1, 4], int8=False)
    values.update(overrides)
    return BenchOptions(**values)


def build_plan(options: BenchOptions, int8_available: bool) -> list[Scenario]:
    plan: list[Scenario] = []
    variants = ["fp32"] + (["int8"] if int8_available else [])
    for variant in variants:
        for batch in options.limit_batches:
            plan.append(Scenario(f"in-process/{variant}/b{batch}", "in-process", "onnxruntime", batch, 1,
                                 variant, "limit"))
    # What a single-image call costs in Python gRPC alone, measured with the same client (bench/grpc_floor.py).
    plan.append(Scenario("grpc-floor/v1/unary/b1", "grpc-floor", "v1", 1, 1, group="limit"))
    # The least a Python gRPC server that scores can add: the same bare service running the model.
    plan.append(Scenario("grpc-floor-model/v1/unary/b1", "grpc-floor-model", "v1", 1, 1, group="limit"))
    for batch in options.unary_batches:
        plan.append(Scenario(f"stedq/v1/unary/b{batch}", "stedq", "v1", batch, 1, group="unary"))
    for window in options.stream_windows:
        plan.append(Scenario(f"stedq/v1-stream/w{window}", "stedq", "v1-stream", 1, window, group="stream"))
    for clients in options.concurrency:
        plan.append(Scenario(f"stedq/v1/concurrency/c{clients}/batching", "stedq", "v1", 1, clients,
                             group="concurrency"))
        plan.append(Scenario(f"stedq/v1/concurrency/c{clients}/no-batching", "stedq-no-batching", "v1", 1,
                             clients, group="concurrency"))
    c = options.peer_concurrency
    if "kserve" in options.peers:
        for batch in options.peer_batches:
            plan.append(Scenario(f"stedq/v2/unary/b{batch}", "stedq", "v2", batch, 1, group="kserve"))
        plan.append(Scenario(f"stedq/v2/concurrency/c{c}", "stedq", "v2", 1, c, group="kserve"))
    if "mlserver" in options.peers:
        for batch in options.peer_batches:
            plan.append(Scenario(f"mlserver/v2/unary/b{batch}", "mlserver", "v2", batch, 1, group="peer"))
        plan.append(Scenario(f"mlserver/v2/concurrency/c{c}", "mlserver", "v2", 1, c, group="peer"))
    if "paper" in options.peers:
        plan.append(Scenario("paper-http/c1", "paper-http", "http", 1, 1, group="peer"))
        plan.append(Scenario(f"paper-http/c{c}", "paper-http", "http", 1, c, group="peer"))
    return plan

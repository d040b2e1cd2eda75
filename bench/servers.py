"""The servers under test, each in its own process: start (all at once), wait until ready, meter CPU
and memory, stop.

    stedq serve       (batching on, and a second one with --no-batching)
    paper-http        stedq.bench.paper_http, the baseline design
    mlserver          MLServer with stedq.bench.mlserver_model, from its own virtualenv

CPU and RSS are read with psutil over the server's whole process tree (MLServer runs inference in
worker processes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class ServerFailed(RuntimeError):
    """A server under test did not start; the message says which and shows the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Usage:
    cpu_s: float
    wall: float
    rss_mb: float


@dataclass
class ServerProcess:
    name: str
    command: list[str]
    target: str                      # what the load generator connects to (HOST:PORT)
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    extra_targets: dict[str, str] = field(default_factory=dict)   # e.g. mlserver's v2 gRPC port
    process: subprocess.Popen | None = None
    ready: Callable[[], bool] = lambda: True   # noqa: E731 - set by the factory below

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env}, cwd=self.cwd)
        self._psutil = psutil.Process(self.process.pid)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._psutil, *self._psutil.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def usage(self) -> Usage:
        """CPU seconds (user + system, children included) so far and the current RSS of the tree."""
        cpu, rss = 0.0, 0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return Usage(cpu_s=cpu, wall=time.perf_counter(), rss_mb=rss / 2**20)

    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        """Poll `self.ready()` until it is true; ServerFailed if the process exits or time runs out."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with status {self.process.returncode} during start-up; "
                                   f"its log ({self.log_path}) ends with:\n{self.log_tail()}")
            try:
                if self.ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise ServerFailed(f"{self.name} was not ready after {timeout_s:.0f} s; its log ({self.log_path}) ends "
                           f"with:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            children = self._tree()[1:]
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            for child in children:  # MLServer's workers, should the parent leave them behind
                if child.is_running():
                    child.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()


def grpc_serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    return status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def stedq_server(logs: Path, *, model: Path | None, batching: bool, threads: int, device: str,
                 max_batch_size: int, max_queue_delay_ms: float, variant: str) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "stedq", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--metrics-port", "0", "--device", device, "--variant", variant,
               "--intra-op-threads", str(threads), "--max-batch-size", str(max_batch_size),
               "--max-queue-delay-ms", str(max_queue_delay_ms), "--log-level", "WARNING",
               "--no-watch-model", "--batching" if batching else "--no-batching"]
    if model is not None:
        command += ["--model", str(model)]
    name = "stedq" if batching else "stedq-no-batching"
    server = ServerProcess(name, command, f"127.0.0.1:{port}", logs / f"{name}.log")
    server.ready = lambda: grpc_serving(server.target)
    server.start()
    return server


def floor_server(logs: Path, *, model: Path | None = None, variant: str = "fp32", threads: int = 0,
                 device: str = "cpu") -> ServerProcess:
    """A bare grpc.aio QualityService (stedq.bench.grpc_floor) that answers at once: Python gRPC's own cost;
    with `model`, after running it on the images in a worker thread: the least a scoring server costs."""
    port = free_port()
    command = [sys.executable, "-m", "stedq.bench.grpc_floor", "--port", str(port)]
    name = "grpc-floor"
    if model is not None:
        command += ["--model", str(model), "--variant", variant, "--intra-op-threads", str(threads),
                    "--device", device]
        name = "grpc-floor-model"
    server = ServerProcess(name, command, f"127.0.0.1:{port}", logs / f"{name}.log")
    server.ready = lambda: grpc_serving(server.target)
    server.start()
    return server


def paper_server(logs: Path, *, model: Path | None, threads: int, device: str) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "stedq.bench.paper_http", "--port", str(port), "--threads", str(threads),
               "--device", device]
    if model is not None:
        command += ["--model", str(model)]
    server = ServerProcess("paper-http", command, f"127.0.0.1:{port}", logs / "paper-http.log")
    server.ready = lambda: http_ok(f"http://{server.target}/health")
    server.start()
    return server


def mlserver_command(mlserver_env: Path) -> Path | None:
    """The `mlserver` executable of the virtualenv at `mlserver_env`, if there is one."""
    candidate = Path(mlserver_env).absolute() / "bin" / "mlserver"
    return candidate if candidate.is_file() else None


def mlserver_server(logs: Path, work: Path, *, mlserver_env: Path, onnx_file: Path, threads: int,
                    device: str, max_batch_size: int, max_queue_delay_ms: float) -> ServerProcess:
    """MLServer with its defaults (one inference worker process), the same gRPC message limit as stedq,
    adaptive batching set like stedq's dynamic batching (size and wait), the same ONNX file."""
    executable = mlserver_command(mlserver_env)
    if executable is None:
        raise ServerFailed(f"no MLServer at {mlserver_env}/bin/mlserver (create it as docs/benchmarks.md says, "
                           f"or pass --mlserver-env)")
    folder = (work / "mlserver").resolve()   # mlserver runs in it: relative paths would not resolve
    model_dir = folder / "quality"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("mlserver_model.py"), model_dir / "stedq_mlserver_model.py")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "debug": False,
        # gRPC's default 4 MiB refuses a batch of 32 FP32 images (6.4 MB); stedq's default is 64 MiB
        "grpc_max_message_length": 64 * 2**20}, indent=2))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "quality", "implementation": "stedq_mlserver_model.OnnxQualityModel",
        "parameters": {"uri": str(Path(onnx_file).resolve())},
        "max_batch_size": max_batch_size, "max_batch_time": max_queue_delay_ms / 1000.0}, indent=2))
    env = {"STEDQ_BENCH_INTRA_OP_THREADS": str(threads), "STEDQ_BENCH_DEVICE": device}
    server = ServerProcess("mlserver", [str(executable), "start", str(folder)], f"127.0.0.1:{grpc_port}",
                           logs / "mlserver.log", env=env, cwd=folder,
                           extra_targets={"http": f"127.0.0.1:{http_port}"})
    server.ready = lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/models/quality/ready")
    server.start()
    return server


def mlserver_version(mlserver_env: Path) -> str | None:
    python = Path(mlserver_env) / "bin" / "python"
    if not python.is_file():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('mlserver'))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None

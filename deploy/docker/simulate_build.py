"""Repeat the CPU image's build and start natively, for machines without a container engine.

Follows deploy/docker/Dockerfile as parsed by the deploy tests: copies what the build stage COPYs into
WORKDIR/src, creates the virtualenv, runs the build stage's install-and-check RUN there (paths mapped
to WORKDIR), then starts the ENTRYPOINT with the runtime stage's ENV (on 127.0.0.1 and free ports)
and runs the HEALTHCHECK command until it passes; finally SIGTERM must end the server with status 0.
Run it through deploy/docker/simulate-build (needs PyPI; a minute or two).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.deploy_support import DOCKERFILES, image_config  # noqa: E402
from tests.server_support import free_port  # noqa: E402

VENV_IN_IMAGE = "/opt/stedq"


def main() -> int:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="stedq-image-")).resolve()
    src, venv = work / "src", work / "venv"
    config = image_config(DOCKERFILES["cpu"])
    build = config.instructions[:len(config.instructions) - len(config.runtime)]

    # COPY: sources as the build context sees them (generated protobuf code is dockerignored)
    mapped: dict[str, str] = {VENV_IN_IMAGE: str(venv)}
    for instruction, value in build:
        if instruction != "COPY":
            continue
        *sources, target = value.split()
        for source in sources:
            path = REPO / source.rstrip("/")
            if target.startswith("/"):                       # e.g. /tmp/constraints.txt
                mapped[target] = str(work / Path(target).name)
                shutil.copy(path, work / Path(target).name)
            elif path.is_dir():
                shutil.copytree(path, src / target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*_pb2*.py", "*_pb2*.pyi"))
            else:
                (src / target).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, src / target)

    print(f"build: {work}")
    # the image's `python -m venv`, with this machine's python3 (the image has 3.11)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(work), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for instruction, value in build:
        if instruction == "RUN" and "pip install" in value:
            command = value
            for image_path, local in mapped.items():
                command = command.replace(image_path, local)
            subprocess.run(["bash", "-c", command], cwd=src, env=env, check=True)
    size = subprocess.run(["du", "-sh", str(venv)], capture_output=True, text=True).stdout.split()[0]
    print(f"build: ok ({size} virtualenv)")

    # run: the image's ENV and ENTRYPOINT, bound to loopback on free ports
    run_env = {k: v.replace(VENV_IN_IMAGE, str(venv)) for k, v in config.env.items()}
    run_env["PATH"] = f"{venv}/bin:/usr/bin:/bin"
    run_env.update(STEDQ_HOST="127.0.0.1", STEDQ_PORT=str(free_port()), STEDQ_METRICS_PORT=str(free_port()))
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(config.entrypoint, cwd="/", env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                print((work / "serve.log").read_text() + f"run: the server exited with {server.returncode}")
                return 1
            probe = subprocess.run(config.healthcheck, cwd="/", env=run_env, capture_output=True, text=True)
            if probe.returncode == 0:
                print(f"run: HEALTHCHECK {probe.stdout.strip()}")
                server.send_signal(signal.SIGTERM)
                code = server.wait(timeout=60)
                print(f"run: SIGTERM -> exit {code}; log: {work / 'serve.log'}")
                return 0 if code == 0 else 1
            time.sleep(2)
        print((work / "serve.log").read_text() + "run: not SERVING after 120 s")
        return 1
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())

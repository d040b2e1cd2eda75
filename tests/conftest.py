"""Shared fixtures. Tests use real components: real gRPC servers on 127.0.0.1, real onnxruntime, real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """Path of an external tool; skip the test when it is missing locally, fail in CI (where the
    README's test command installs it), so that CI never passes by skipping."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; scripts/test should have installed it")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shipped_server():
    """A real server on 127.0.0.1 with the bundled default model (tests that compare clients and files)."""
    import stedq
    from tests.server_support import ThreadedServer, server_settings

    with ThreadedServer(server_settings(stedq.DEFAULT_MODEL_DIR)) as running:
        yield running

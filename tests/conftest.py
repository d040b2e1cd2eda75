"""Shared fixtures. Tests use real components: real gRPC servers on 127.0.0.1, real onnxruntime, real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# The skips CI expects, by the start of their reason, and why each is not a gap. In CI any other skip
# fails the run (pytest_sessionfinish below): a test that silently stops running is a test lost.
EXPECTED_SKIPS = {
    "no MLServer virtualenv": "the MLServer comparison needs its peer virtualenv, built for `stedq bench` "
                              "(docs/benchmarks.md), not by the README's test command; the bench keeps it",
    "this machine has CUDA": "CPU-only fallbacks are checked on machines without a GPU",
    "py-spy may not attach": "py-spy needs ptrace, which some containers forbid",
}


def _expected(reason: str) -> bool:
    reason = reason.removeprefix("Skipped: ")
    return any(reason.startswith(start) for start in EXPECTED_SKIPS)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not IN_CI or reporter is None:
        return
    unexpected = []
    for report in reporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not _expected(reason):
            unexpected.append(f"{report.nodeid}: {reason}")
    if unexpected:
        reporter.write_line("unexpected skips in CI (tests/conftest.py EXPECTED_SKIPS lists the expected ones):",
                            red=True)
        for line in unexpected:
            reporter.write_line(f"  {line}", red=True)
        session.exitstatus = 1


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

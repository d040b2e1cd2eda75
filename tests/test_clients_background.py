"""stedq.clients.background.BackgroundScorer against a real server: frames that wait are sent together,
one bad frame does not spoil the others sent with it, and a backlog marks frames missing at once."""

from __future__ import annotations

import numpy as np
import pytest

from stedq.clients.background import BackgroundScorer
from stedq.clients.client import QualityClient
from tests.server_support import HeldEngine, ThreadedServer, model_bundle, server_settings


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


def frame(seed: int, size: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).poisson(5 + seed, (size, size)).astype(np.uint16)


def test_a_bad_frame_among_waiting_ones_is_the_only_one_missing(server):
    good = [frame(1), frame(2)]
    with HeldEngine(server.server.scorer) as held, BackgroundScorer(server.address, timeout=30) as scorer:
        scorer.submit("first", frame(0))          # goes alone; the engine holds it
        assert held.entered.wait(30)
        scorer.submit("a", good[0])               # these three wait, then go in one request
        scorer.submit("tiny", frame(3, size=40))
        scorer.submit("b", good[1])
        held.release.set()
        assert scorer.wait(60)
    results = {r.key: r for r in scorer.results}
    assert set(results) == {"first", "a", "tiny", "b"}
    assert results["tiny"].score is None and "INVALID_ARGUMENT" in results["tiny"].error
    assert "64x64" in results["tiny"].error
    with QualityClient(server.address) as client:
        want = client.score(good)
    assert [results["a"].score, results["b"].score] == pytest.approx(list(want), abs=1e-6)


def test_a_backlog_marks_frames_missing_at_once(server):
    with HeldEngine(server.server.scorer) as held, \
            BackgroundScorer(server.address, timeout=30, max_pending=2) as scorer:
        scorer.submit(0, frame(0))
        assert held.entered.wait(30)
        for key in range(1, 6):                   # 1 and 2 wait; 3, 4, 5 find the backlog full
            scorer.submit(key, frame(key))
        refused = [r.key for r in scorer.results]
        held.release.set()
        assert scorer.wait(60)
    assert refused == [3, 4, 5]
    results = {r.key: r for r in scorer.results}
    assert all("backlog full" in results[k].error and results[k].score is None for k in (3, 4, 5))
    assert all(results[k].scored for k in (0, 1, 2))

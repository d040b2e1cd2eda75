"""The dynamic batcher on its own: a real asyncio loop and a plain numpy `infer` (it knows no ONNX)."""

import asyncio
import threading
import time

import numpy as np
import pytest

from stedq.server.batching import BatcherClosed, DeadlineExceeded, DynamicBatcher, InferenceFailed, QueueFull


class Recorder:
    """infer(rows) = row sums; records every batch; can be held to keep the batcher busy."""

    def __init__(self):
        self.batches: list[np.ndarray] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.release.wait(10)
        self.batches.append(batch.copy())
        return batch.reshape(len(batch), -1).sum(axis=1)


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def test_concurrent_requests_merge_into_batches_and_keep_their_order():
    infer = Recorder()

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=8, max_queue_delay_s=0.05)
        results = await asyncio.gather(*[batcher.submit(rows(10 * i, 3)) for i in range(6)])
        await batcher.close()
        return results

    results = run(main())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, rows(10 * i, 3)[:, 0])
    sizes = [len(b) for b in infer.batches]
    assert sum(sizes) == 18 and max(sizes) == 8 and len(sizes) == 3  # 8 + 8 + 2: requests were split


def test_a_request_reaching_an_idle_batcher_runs_at_once_and_later_ones_batch_while_it_computes():
    # An acquisition loop sends one image at a time: it must not wait max_queue_delay for company that
    # is not coming. Requests arriving while an inference runs still form a batch.
    infer = Recorder()

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=8, max_queue_delay_s=2.0)
        started = time.monotonic()
        await batcher.submit(rows(0, 1))
        lone = time.monotonic() - started
        infer.release.clear()                      # hold the next inference ...
        first = asyncio.ensure_future(batcher.submit(rows(10, 1)))
        while not batcher._busy:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)                  # ... while two more arrive
        later = [asyncio.ensure_future(batcher.submit(rows(20 + 10 * i, 1))) for i in range(2)]
        await asyncio.sleep(0.05)
        infer.release.set()
        await asyncio.gather(first, *later)
        await batcher.close()
        return lone

    lone = run(main())
    assert lone < 1.0, f"a lone request waited {lone:.3f} s (the queue delay is 2 s)"
    assert [len(b) for b in infer.batches] == [1, 1, 2]


def test_a_large_request_is_split_at_max_batch_size():
    infer = Recorder()

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=4, max_queue_delay_s=0.0)
        result = await batcher.submit(rows(0, 10))
        await batcher.close()
        return result

    np.testing.assert_array_equal(run(main()), np.arange(10))
    assert [len(b) for b in infer.batches] == [4, 4, 2]


def test_without_merging_each_request_runs_alone():
    infer = Recorder()

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=8, max_queue_delay_s=0.05, merge=False)
        await asyncio.gather(*[batcher.submit(rows(0, 2)) for _ in range(4)])
        await batcher.close()

    run(main())
    assert [len(b) for b in infer.batches] == [2, 2, 2, 2]


def test_expired_requests_are_dropped_before_compute():
    infer = Recorder()
    infer.release.clear()  # the first batch blocks, so the second request waits in the queue

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=2, max_queue_delay_s=0.0)
        first = asyncio.ensure_future(batcher.submit(rows(0, 2)))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(batcher.submit(rows(100, 2), deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.2)  # the deadline passes while `late` is queued
        infer.release.set()
        await first
        with pytest.raises(DeadlineExceeded, match="before compute"):
            await late
        with pytest.raises(DeadlineExceeded):  # already past when submitted
            await batcher.submit(rows(0, 1), deadline=time.monotonic() - 1)
        await batcher.close()

    run(main())
    assert all(100 not in b for b in infer.batches)  # the expired rows never reached infer


def test_a_full_queue_refuses_instead_of_growing():
    infer = Recorder()
    infer.release.clear()

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=6)
        running = asyncio.ensure_future(batcher.submit(rows(0, 4)))   # taken into the blocked batch
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit(rows(10, 5)))   # waits: 5 of 6 places
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 5
        with pytest.raises(QueueFull, match="5 images waiting, 2 more requested, limit 6"):
            await batcher.submit(rows(20, 2))
        infer.release.set()
        await asyncio.gather(running, queued)
        await batcher.close()

    run(main())


def test_close_finishes_queued_work_then_refuses():
    infer = Recorder()
    infer.release.clear()

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=2, max_queue_delay_s=0.0)
        pending = [asyncio.ensure_future(batcher.submit(rows(i * 10, 2))) for i in range(3)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.05)
        with pytest.raises(BatcherClosed):
            await batcher.submit(rows(0, 1))
        infer.release.set()
        await closing
        return [p.result() for p in pending]

    results = run(main())
    assert [list(r) for r in results] == [[0, 1], [10, 11], [20, 21]]


def test_a_failing_infer_fails_only_its_batch():
    calls = []

    def infer(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch[:, 0]

    async def main():
        batcher = DynamicBatcher(infer, max_batch_size=2, max_queue_delay_s=0.0)
        with pytest.raises(InferenceFailed, match="RuntimeError: boom"):
            await batcher.submit(rows(0, 2))
        result = await batcher.submit(rows(5, 2))  # the batcher keeps working
        await batcher.close()
        return result

    np.testing.assert_array_equal(run(main()), [5, 6])

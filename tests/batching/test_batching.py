"""Dynamic batching: every caller gets exactly its rows, under random
interleavings; deadlines, a full queue, failures and cancellation behave."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scorewire
from scorewire.batching import BatchConfig, DynamicBatcher, merge_inputs, split_outputs
from scorewire.errors import DeadlineExceeded, Overloaded

WINE = scorewire.load_model(scorewire.demo_repository() / "wine" / "1")
FOREST = scorewire.load_model(scorewire.demo_repository() / "iris-forest" / "1")


@given(st.lists(st.integers(0, 9), min_size=1, max_size=12), st.data())
def test_merge_split_round_trip(sizes, data):
    inputs = [np.arange(n * 3, dtype=np.float64).reshape(n, 3) + 1000 * i for i, n in enumerate(sizes)]
    X, offsets = merge_inputs(inputs)
    assert X.shape == (sum(sizes), 3)
    outputs = {"a": X * 2, "b": X[:, 0].copy()}
    wanted = [data.draw(st.sampled_from([("a",), ("b",), ("a", "b")])) for _ in sizes]
    parts = split_outputs(outputs, offsets, wanted)
    for inp, names, part in zip(inputs, wanted, parts, strict=True):
        assert tuple(part) == names
        if "a" in names:
            np.testing.assert_array_equal(part["a"], inp * 2)
        if "b" in names:
            np.testing.assert_array_equal(part["b"], inp[:, 0])


async def _interleaved(model, seed: int, n_requests: int, config: BatchConfig):
    rng = random.Random(seed)
    batches: list[tuple[int, int]] = []
    batcher = DynamicBatcher(model.predict, model.output_names(None), config,
                             on_batch=lambda reqs, rows: batches.append((reqs, rows)))  # fmt: skip
    d = model.signature.n_features
    dtype = model.signature.input.dtype
    names = model.output_names(None)

    async def one(i: int):
        await asyncio.sleep(rng.random() * 0.002)
        X = np.random.default_rng(seed * 1000 + i).normal(size=(rng.randint(0, 7), d)).astype(dtype) + 4
        outputs = tuple(rng.sample(names, rng.randint(1, len(names))))
        got = await batcher.submit(X, outputs)
        return X, outputs, got

    results = await asyncio.gather(*(one(i) for i in range(n_requests)))
    await batcher.close()
    return results, batches


@pytest.mark.parametrize("model", [WINE, FOREST], ids=["native", "onnxruntime"])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), max_rows=st.integers(1, 40))
def test_each_caller_gets_exactly_its_rows(model, seed, max_rows):
    config = BatchConfig(enabled=True, max_batch_rows=max_rows, max_delay_us=300)
    results, batches = asyncio.run(_interleaved(model, seed, 30, config))
    for X, outputs, got in results:
        want = model.predict(X, outputs)
        assert tuple(got) == outputs
        for name in outputs:
            assert got[name].shape == want[name].shape
            np.testing.assert_array_equal(got[name], want[name])
    assert sum(r for r, _ in batches) == 30
    assert all(rows <= max_rows or reqs == 1 for reqs, rows in batches)


def test_requests_are_really_batched():
    config = BatchConfig(enabled=True, max_batch_rows=1000, max_delay_us=20_000)
    _, batches = asyncio.run(_interleaved(WINE, 1, 20, config))
    assert len(batches) < 20  # at least some requests shared a batch


def test_a_full_batch_goes_without_waiting_out_the_delay():
    async def scenario():
        batches = []
        config = BatchConfig(enabled=True, max_batch_rows=4, max_delay_us=60_000_000)  # a minute
        batcher = DynamicBatcher(WINE.predict, WINE.output_names(None), config, on_batch=lambda n, rows: batches.append(n))
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 13)), ()))
        await asyncio.sleep(0.01)  # the worker now waits for company
        futures = [first] + [asyncio.ensure_future(batcher.submit(np.zeros((1, 13)), ())) for _ in range(3)]
        done, _ = await asyncio.wait(futures, timeout=10)
        assert len(done) == 4 and batches == [4]
        await batcher.close()

    asyncio.run(scenario())


class Gate:
    """A model whose predict blocks (on a worker thread) until released."""

    def __init__(self, inner) -> None:
        self.inner, self.release, self.calls = inner, threading.Event(), 0

    def predict(self, X, outputs=None):
        self.calls += 1
        assert self.release.wait(10)
        return self.inner.predict(X, outputs)


def _gated_batcher(config: BatchConfig):
    from concurrent.futures import ThreadPoolExecutor

    gate = Gate(WINE)
    executor = ThreadPoolExecutor(1)
    batcher = DynamicBatcher(gate.predict, WINE.output_names(None), config, executor=executor, offload_min_values=0)
    return gate, batcher


def test_queue_full_is_refused_at_once():
    async def scenario():
        gate, batcher = _gated_batcher(BatchConfig(enabled=True, max_batch_rows=4, max_delay_us=0, max_queue_rows=10))
        X = np.zeros((4, 13))
        first = asyncio.ensure_future(batcher.submit(X, ()))  # held in the model
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit(X, ())) for _ in range(2)]  # 8 rows queued
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(X, ())  # 12 > 10
        assert time.monotonic() - started < 0.05
        gate.release.set()
        for f in (first, *queued):
            assert (await f)["probabilities"].shape == (4, 3)
        await batcher.close()

    asyncio.run(scenario())


def test_deadlines_are_checked_before_joining_a_batch():
    async def scenario():
        gate, batcher = _gated_batcher(BatchConfig(enabled=True, max_batch_rows=4, max_delay_us=0))
        X = np.zeros((4, 13))
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(X, (), deadline=time.monotonic() - 1)
        assert gate.calls == 0  # the work was not started
        first = asyncio.ensure_future(batcher.submit(X, ()))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(batcher.submit(X, (), deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.1)  # its deadline passes while it is queued
        gate.release.set()
        await first
        with pytest.raises(DeadlineExceeded, match="queued"):
            await late
        assert gate.calls == 1
        await batcher.close()

    asyncio.run(scenario())


def test_a_failed_batch_reaches_every_waiter_and_cancelled_callers_are_skipped():
    calls = []

    def broken(X, outputs=None):
        calls.append(X.shape[0])
        raise RuntimeError("boom")

    async def scenario():
        batcher = DynamicBatcher(broken, ("value",), BatchConfig(enabled=True, max_batch_rows=100, max_delay_us=20_000))
        futures = [asyncio.ensure_future(batcher.submit(np.zeros((2, 3)), ())) for _ in range(5)]
        await asyncio.sleep(0)
        futures[0].cancel()
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert all(isinstance(r, RuntimeError) for r in results[1:])
        assert calls == [8]  # one batch, without the cancelled request's rows
        await batcher.close()

    asyncio.run(scenario())


def test_close_answers_what_is_queued():
    async def scenario():
        batcher = DynamicBatcher(WINE.predict, WINE.output_names(None), BatchConfig(enabled=True, max_delay_us=50_000))
        futures = [asyncio.ensure_future(batcher.submit(np.zeros((1, 13)), ())) for _ in range(3)]
        await asyncio.sleep(0)
        await batcher.close()
        assert all(f.done() and f.result()["label"].shape == (1,) for f in futures)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "section, words",
    [({"enabled": "yes"}, "true or false"), ({"max_delay_us": -1}, "non-negative"), ({"max_batch_rows": 0}, "positive"), ({"x": 1}, "unknown")],
)
def test_batching_config_errors(section, words):
    from scorewire.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=words):
        BatchConfig.from_toml(section, "model.toml")
    assert BatchConfig().enabled_for("onnxruntime") and not BatchConfig().enabled_for("native")

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


async def until(condition, timeout: float = 30.0) -> None:
    """Let the event loop run until condition() holds (the timeout only turns a
    hang into a failure)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout)


class Gate:
    """A model whose predict blocks (on a worker thread) until the test releases it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.entered = threading.Event()  # a batch reached the model
        self.release = threading.Event()
        self.batches: list[int] = []  # the rows of each batch, in order

    @property
    def calls(self) -> int:
        return len(self.batches)

    def predict(self, X, outputs=None):
        self.batches.append(X.shape[0])
        self.entered.set()
        assert self.release.wait(60)
        return self.inner.predict(X, outputs)

    async def holding(self) -> None:
        """Until a batch is in the model (waited for on a thread: the loop runs on)."""
        assert await asyncio.to_thread(self.entered.wait, 30), "no batch reached the model"


def _gated_batcher(config: BatchConfig):
    from concurrent.futures import ThreadPoolExecutor

    gate = Gate(WINE)
    executor = ThreadPoolExecutor(1)
    batcher = DynamicBatcher(gate.predict, WINE.output_names(None), config, executor=executor, offload_min_values=0)
    return gate, batcher


def test_requests_queued_behind_a_batch_share_the_next_one():
    """No delay configured: requests that arrive while the model scores a batch
    queue up, and the next batch takes them all at once."""

    async def scenario():
        gate, batcher = _gated_batcher(BatchConfig(enabled=True, max_batch_rows=1000, max_delay_us=0))
        try:
            first = asyncio.ensure_future(batcher.submit(np.zeros((1, 13)), ()))
            await gate.holding()
            queued = [asyncio.ensure_future(batcher.submit(np.full((1, 13), float(i)), ())) for i in range(19)]
            await until(lambda: batcher.queued_rows == 19)
        finally:
            gate.release.set()
        results = await asyncio.gather(first, *queued)
        assert gate.batches == [1, 19]
        for i, got in enumerate(results[1:]):
            np.testing.assert_array_equal(got["probabilities"], WINE.predict(np.full((1, 13), float(i)))["probabilities"])
        await batcher.close()

    asyncio.run(scenario())


def test_a_full_batch_goes_without_waiting_out_the_delay():
    """The worker holds a batch open for company; the request that fills it ends
    the wait. The delay is a day: nothing else can end it during the test."""

    async def scenario():
        batches = []
        config = BatchConfig(enabled=True, max_batch_rows=4, max_delay_us=86_400_000_000)
        batcher = DynamicBatcher(WINE.predict, WINE.output_names(None), config, on_batch=lambda n, rows: batches.append(n))
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 13)), ()))
        await until(lambda: batcher.waiting_for_company)
        futures = [first] + [asyncio.ensure_future(batcher.submit(np.zeros((1, 13)), ())) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*futures), 30)  # answered before anything else could release it
        assert batches == [4] and not batcher.waiting_for_company
        await batcher.close()

    asyncio.run(scenario())


def test_queue_full_is_refused_at_once():
    """With the model holding one batch and the queue nearly full, a request that
    would overflow it is refused while the model still holds the batch: it is not
    queued behind it."""

    async def scenario():
        gate, batcher = _gated_batcher(BatchConfig(enabled=True, max_batch_rows=4, max_delay_us=0, max_queue_rows=10))
        X = np.zeros((4, 13))
        try:
            first = asyncio.ensure_future(batcher.submit(X, ()))  # held in the model
            await gate.holding()
            queued = [asyncio.ensure_future(batcher.submit(X, ())) for _ in range(2)]
            await until(lambda: batcher.queued_rows == 8)
            with pytest.raises(Overloaded, match="queue is full"):
                await asyncio.wait_for(batcher.submit(X, ()), 30)  # 12 > 10
            assert gate.calls == 1 and batcher.queued_rows == 8
        finally:
            gate.release.set()
        for f in (first, *queued):
            assert (await f)["probabilities"].shape == (4, 3)
        await batcher.close()

    asyncio.run(scenario())


def test_deadlines_are_checked_before_joining_a_batch():
    async def scenario():
        gate, batcher = _gated_batcher(BatchConfig(enabled=True, max_batch_rows=4, max_delay_us=0))
        X = np.zeros((4, 13))
        with pytest.raises(DeadlineExceeded, match="before the request was queued"):
            await batcher.submit(X, (), deadline=time.monotonic() - 1)
        assert gate.calls == 0  # the work was not started
        try:
            first = asyncio.ensure_future(batcher.submit(X, ()))
            await gate.holding()
            # a deadline far enough ahead for the request to be queued first ...
            deadline = time.monotonic() + 1.0
            late = asyncio.ensure_future(batcher.submit(X, (), deadline=deadline))
            await until(lambda: batcher.queued_rows == 4)
            # ... that passes while it waits behind the batch the model holds
            await until(lambda: time.monotonic() >= deadline)
        finally:
            gate.release.set()
        await first
        with pytest.raises(DeadlineExceeded, match="while the request was queued"):
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

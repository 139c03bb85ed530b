"""Models that are not tabular, in the core (no server): graphs with several inputs,
integer ids, strings, rank-4 images (tests/onnx_models.py) read truthfully, scored as
onnxruntime scores them, their inputs checked before onnxruntime sees them, batched
only with requests of the same shape, and monitored."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from scorewire.backends.ort import OnnxModel
from scorewire.batching import BatchConfig, DynamicBatcher
from scorewire.errors import InvalidInput, Overloaded
from scorewire.formats.model_toml import ModelConfig
from scorewire.monitoring.monitor import NOT_TABULAR
from scorewire.repository import ModelRepository
from scorewire.service import ScoringService
from scorewire.types import PredictRequest

from . import onnx_models as om


@pytest.fixture
def repo(tmp_path):
    repo = ModelRepository(om.write_repository(tmp_path), n_threads=1)
    repo.load_all()
    return repo


def run(coro):
    return asyncio.run(coro)


async def predict(repo, name, inputs, outputs=(), config=None):
    service = ScoringService(repo)
    try:
        return (await service.predict(PredictRequest(name, inputs, outputs=outputs))).outputs
    finally:
        await service.aclose()


def test_signatures_read_from_the_graph(repo):
    rec = repo.resolve("recommender").model.signature
    assert [(i.name, i.dtype, i.shape) for i in rec.inputs] == [("dense", "float32", (-1, 3)), ("ids", "int64", (-1, 2))]
    assert rec.input == rec.inputs[0] and not rec.tabular and rec.batched
    img = repo.resolve("image").model.signature
    assert [(i.name, i.dtype, i.shape) for i in img.inputs] == [("pixels", "uint8", (-1, 1, 8, 8))]
    assert [(o.name, o.dtype, o.shape) for o in img.outputs] == [("probabilities", "float32", (-1, 3))]
    text = repo.resolve("strings").model.signature
    assert [(i.name, i.dtype, i.shape) for i in text.inputs] == [("city", "object", (-1,))]
    out = repo.resolve("outputs").model.signature
    assert out.tabular  # one [N, 4] float input: given one matrix, as any tabular model
    assert [(o.name, o.dtype) for o in out.outputs] == [
        ("total", "float32"), ("index", "int64"), ("positive", "bool"), ("name", "object")
    ]


@pytest.mark.parametrize("name", sorted(om.MODELS))
@pytest.mark.parametrize("rows", [1, 5])
def test_outputs_equal_onnxruntime_run_directly(repo, name, rows):
    inputs = om.requests(rows)[name]
    got = run(predict(repo, name, inputs))
    want = om.expected(name, inputs)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k


def test_strings_as_bytes_or_numpy_text(repo):
    want = om.expected("strings", {"city": np.array(["lyon", "rome"], dtype=object)})
    for city in (np.array([b"lyon", b"rome"], dtype=object), np.array(["lyon", "rome"]), np.array([b"lyon", b"rome"])):
        got = run(predict(repo, "strings", {"city": city}))
        assert np.array_equal(got["code"], want["code"]) and np.array_equal(got["weight"], want["weight"])


def test_one_array_for_a_model_of_one_input(repo):
    pixels = om.requests(2)["image"]["pixels"]
    got = run(predict(repo, "image", pixels))
    assert np.array_equal(got["probabilities"], om.expected("image", {"pixels": pixels})["probabilities"])


def test_no_rows(repo):
    got = run(predict(repo, "recommender", {"dense": np.zeros((0, 3), np.float32), "ids": np.zeros((0, 2), np.int64)}))
    assert got["score"].shape == (0, 1)


def test_outputs_by_name(repo):
    x = om.requests(3)["outputs"]
    got = run(predict(repo, "outputs", x, outputs=("name", "positive")))
    assert list(got) == ["name", "positive"]
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        run(predict(repo, "outputs", x, outputs=("nope",)))


def _rec(rows=3, **changes):
    inputs = om.requests(rows)["recommender"]
    for k, v in changes.items():
        if v is None:
            del inputs[k]
        else:
            inputs[k] = v
    return inputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (_rec(ids=None), "input 'ids' is missing; model 'recommender' takes 'dense', 'ids'"),
        (_rec(extra=np.zeros((3, 1), np.float32)), "model 'recommender' has no input 'extra'"),
        (_rec(ids=np.zeros((3, 2), np.float32)), "input 'ids' must be int64, got float32"),
        (_rec(ids=np.zeros((3, 2), np.int32)), "input 'ids' must be int64, got int32"),
        (_rec(dense=np.zeros((3, 3), np.float64)), "input 'dense' must be float32, got float64"),
        (_rec(ids=np.zeros(3, np.int64)), r"input 'ids' must have rank 2 \(shape \[N, 2\]\), got rank 1"),
        (_rec(dense=np.zeros((3, 4), np.float32)), r"input 'dense' must have 3 in dim 1 \(shape \[N, 3\]\), got 4"),
        (_rec(ids=np.zeros((2, 2), np.int64)), "input 'ids' has 2 in dim 0 but input 'dense' has 3: the rows must agree"),
        (_rec(dense=np.full((3, 3), np.nan, np.float32)), "input 'dense' contains NaN or infinite values"),
        (_rec(ids=np.full((3, 2), 50, np.int64)), r"could not score these inputs: .*\(Gather node 'embedding'\)"),
        (np.zeros((3, 3), np.float32), r"model 'recommender' takes 2 inputs \('dense', 'ids'\): send them by name"),
        ({"dense": [[1.0, 2.0, 3.0]], "ids": np.zeros((1, 2), np.int64)}, "input 'dense' must be an array"),
    ],
)
def test_bad_inputs_are_invalid_input_naming_the_input(repo, inputs, message):
    with pytest.raises(InvalidInput, match=message) as info:
        run(predict(repo, "recommender", inputs))
    assert "0.0" not in str(info.value) and "[[" not in str(info.value)  # never the values


@pytest.mark.parametrize(
    ("city", "message"),
    [
        (np.array([b"\xff\xfe"], dtype=object), "input 'city' holds bytes that are not UTF-8 text"),
        (np.array([1, 2], dtype=object), "input 'city' must hold strings, got a int"),
        (np.array([1.0, 2.0]), "input 'city' must be strings, got float64"),
    ],
)
def test_bad_strings(repo, city, message):
    with pytest.raises(InvalidInput, match=message):
        run(predict(repo, "strings", {"city": city}))


def test_bad_image(repo):
    with pytest.raises(InvalidInput, match=r"input 'pixels' must have 1 in dim 1 \(shape \[N, 1, 8, 8\]\), got 3"):
        run(predict(repo, "image", np.zeros((2, 3, 8, 8), np.uint8)))
    with pytest.raises(InvalidInput, match="input 'pixels' must be uint8, got float32"):
        run(predict(repo, "image", np.zeros((2, 1, 8, 8), np.float32)))


def test_rows_over_the_limit_name_the_input(tmp_path):
    root = om.write_repository(tmp_path)
    (root / "recommender" / "model.toml").write_text("max_batch_rows = 4\n")
    repo = ModelRepository(root, n_threads=1)
    repo.load_all()
    with pytest.raises(Overloaded, match="input 'dense' has 5 rows, over the limit of 4 rows per request"):
        run(predict(repo, "recommender", _rec(5)))
    assert run(predict(repo, "recommender", _rec(4)))["score"].shape == (4, 1)


def test_nan_policy_allow_lets_non_finite_floats_through(tmp_path):
    root = om.write_repository(tmp_path)
    (root / "recommender" / "model.toml").write_text('nan_policy = "allow"\n')
    repo = ModelRepository(root, n_threads=1)
    repo.load_all()
    got = run(predict(repo, "recommender", _rec(dense=np.full((3, 3), np.nan, np.float32))))
    assert np.isnan(got["score"]).all()


def text_model(fixed_batch: bool = False) -> onnx.ModelProto:
    """int64 token ids [N, L] (L free) → embedding → mean over the tokens → [N, 4]."""
    emb = np.arange(40, dtype=np.float32).reshape(10, 4)
    batch = 2 if fixed_batch else "N"
    graph = h.make_graph(
        [h.make_node("Gather", ["emb", "tokens"], ["e"]), h.make_node("ReduceMean", ["e", "axes"], ["mean"], keepdims=0)],
        "text",
        [h.make_tensor_value_info("tokens", T.INT64, [batch, "L"])],
        [h.make_tensor_value_info("mean", T.FLOAT, [batch, 4])],
        [nh.from_array(emb, "emb"), nh.from_array(np.array([1], np.int64), "axes")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_symbolic_dims_and_fixed_batches():
    text = OnnxModel(text_model())
    sig = text.signature
    assert sig.inputs[0].shape == (-1, -1) and sig.inputs[0].dim_names == ("N", "L") and sig.batched
    fixed = OnnxModel(text_model(fixed_batch=True)).signature
    assert fixed.inputs[0].shape == (2, -1) and not fixed.batched and not fixed.tabular


def test_a_fixed_batch_is_not_batched_and_is_checked(tmp_path):
    (tmp_path / "fixed" / "1").mkdir(parents=True)
    (tmp_path / "fixed" / "1" / "model.onnx").write_bytes(text_model(fixed_batch=True).SerializeToString())
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    service = ScoringService(repo)
    assert service._lane(repo.resolve("fixed")).batcher is None
    with pytest.raises(InvalidInput, match="input 'tokens' must have 2 in dim 0"):
        run(predict(repo, "fixed", np.zeros((3, 5), np.int64)))
    assert run(predict(repo, "fixed", np.zeros((2, 5), np.int64)))["mean"].shape == (2, 4)


def test_requests_whose_other_dims_differ_are_never_merged():
    """
    1. A batcher over the text model (tokens [N, L]) waits long for company.
    2. Three requests are queued: L = 3, L = 5, L = 3.
    3. The batcher closes (it answers what it holds).
    Result: two batches, the two L = 3 requests merged, the L = 5 one alone; every
    request gets exactly its own rows, as onnxruntime gives them alone.
    """
    model = OnnxModel(text_model())
    calls = []

    def predict(X, names):
        calls.append({k: v.shape for k, v in X.items()})
        return model.predict(X, names)

    async def main():
        batcher = DynamicBatcher(predict, ("mean",), BatchConfig(enabled=True, max_delay_us=10**8))  # 1.
        rng = np.random.default_rng(3)
        reqs = [{"tokens": rng.integers(0, 10, size=(rows, width))} for rows, width in ((2, 3), (1, 5), (3, 3))]
        tasks = [asyncio.ensure_future(batcher.submit(r, ())) for r in reqs]  # 2.
        while batcher.queued_rows < 6:
            await asyncio.sleep(0)
        await batcher.close()  # 3.
        return reqs, await asyncio.gather(*tasks)

    reqs, results = run(main())
    assert calls == [{"tokens": (5, 3)}, {"tokens": (1, 5)}]
    for r, got in zip(reqs, results, strict=True):
        assert np.array_equal(got["mean"], model.predict(r)["mean"])


def test_outputs_that_are_not_per_row_are_scored_alone():
    """A graph that says its output has a row per input row but gives one row per
    call: a merged batch's outputs cannot be split, so each request is scored alone."""
    seen = []

    def predict(X, names):
        seen.append(X["x"].shape[0])
        return {"sum": X["x"].sum(keepdims=True).reshape(1)}

    async def main():
        batcher = DynamicBatcher(predict, ("sum",), BatchConfig(enabled=True, max_delay_us=10**8))
        reqs = [{"x": np.full((2, 1), v)} for v in (1.0, 2.0)]
        tasks = [asyncio.ensure_future(batcher.submit(r, ())) for r in reqs]
        while batcher.queued_rows < 4:
            await asyncio.sleep(0)
        await batcher.close()
        return await asyncio.gather(*tasks)

    results = run(main())
    assert seen == [4, 2, 2]
    assert [float(r["sum"][0]) for r in results] == [2.0, 4.0]


def test_batching_can_be_turned_off(tmp_path):
    repo = ModelRepository(om.write_repository(tmp_path, batching=False), n_threads=1)
    repo.load_all()
    service = ScoringService(repo)
    assert service._lane(repo.resolve("recommender")).batcher is None
    on = ModelRepository(om.write_repository(tmp_path / "on"), n_threads=1)
    on.load_all()
    assert ScoringService(on)._lane(on.resolve("recommender")).batcher is not None


def test_concurrent_requests_batched_get_their_own_rows(repo):
    async def main():
        service = ScoringService(repo)
        reqs = [om.requests(rows, seed=rows)["recommender"] for rows in (1, 2, 3, 4)]
        try:
            return reqs, await asyncio.gather(*(service.predict(PredictRequest("recommender", r)) for r in reqs))
        finally:
            await service.aclose()

    reqs, results = run(main())
    for r, got in zip(reqs, results, strict=True):
        np.testing.assert_allclose(got.outputs["score"], om.expected("recommender", r)["score"], rtol=1e-6)


def test_monitoring_drift_off_with_a_reason_feedback_and_counts_on(tmp_path, caplog):
    root = om.write_repository(tmp_path)
    (root / "strings" / "1" / "reference.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="scorewire.monitoring"):
        repo = ModelRepository(root, n_threads=1)
        repo.load_all()
    assert any("drift monitoring is off" in r.getMessage() and "strings" in r.getMessage() for r in caplog.records)
    from scorewire.monitoring.feedback import FeedbackItem

    async def main():
        service = ScoringService(repo)
        try:
            city = np.array(["lyon", "paris", "rome"], dtype=object)
            await service.predict(PredictRequest("strings", {"city": city}, request_id="r1"))
            fb = await service.feedback("strings", [FeedbackItem("r1", np.array([1, 0, -1]))])
            return fb, await service.model_stats("strings")
        finally:
            await service.aclose()

    fb, stats = run(main())
    assert fb[0][1].outcome.name == "MATCHED"
    (st,) = stats
    assert (st.requests, st.rows, st.drift, st.drift_reason) == (1, 3, None, NOT_TABULAR)
    assert st.feedback is not None and st.feedback.accuracy == 1.0


def test_in_memory_model_keeps_its_config(tmp_path):
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.add_model("rec", OnnxModel(om.recommender()), config=ModelConfig(nan_policy="allow"))
    got = run(predict(repo, "rec", _rec(dense=np.full((3, 3), np.inf, np.float32))))
    assert got["score"].shape == (3, 1)


def test_triton_model_config_of_a_model_that_does_not_batch(tmp_path):
    """Triton's way for a model without a batch dim: max_batch_size 0, full dims."""
    from scorewire.grpc._triton import model_config

    (tmp_path / "fixed" / "1").mkdir(parents=True)
    (tmp_path / "fixed" / "1" / "model.onnx").write_bytes(text_model(fixed_batch=True).SerializeToString())
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    cfg = model_config(repo.resolve("fixed"), 100)
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("tokens", [2, -1])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("mean", [2, 4])]


def test_a_shadow_version_scores_copies_of_requests_by_name(tmp_path):
    """
    1. The recommender in versions 1 and 2; version 2 shadows version 1's traffic.
    2. Requests by name, of 1 to 4 rows, answered by version 1.
    3. The service waits for its monitoring thread (it scores the copies).
    Result: the shadow compared every copy (the same graph: no disagreement), and
    version 1 answered every request as onnxruntime does.
    """
    root = tmp_path / "repo"
    for v in (1, 2):  # 1.
        (root / "rec" / str(v)).mkdir(parents=True)
        (root / "rec" / str(v) / "model.onnx").write_bytes(om.recommender().SerializeToString())
    (root / "rec" / "model.toml").write_text("[traffic]\nsplit = { 1 = 1 }\nshadow = 2\n")
    repo = ModelRepository(root, n_threads=1)
    repo.load_all()

    async def main():
        service = ScoringService(repo)
        try:
            reqs = [om.requests(rows, seed=rows)["recommender"] for rows in (1, 2, 3, 4)]
            answers = [await service.predict(PredictRequest("rec", r)) for r in reqs]  # 2.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60  # 3. only bounds a hang
            while loop.time() < deadline:
                stats = await service.model_stats("rec", 2)
                if stats[0].shadow and sum(s.compared for s in stats[0].shadow) >= 4:
                    break
                await asyncio.sleep(0.01)
            return reqs, answers, stats
        finally:
            await service.aclose()

    reqs, answers, stats = run(main())
    for r, a in zip(reqs, answers, strict=True):
        assert a.version == 1
        np.testing.assert_allclose(a.outputs["score"], om.expected("recommender", r)["score"], rtol=1e-6)
    (shadow,) = stats[0].shadow
    assert shadow.compared == 4 and shadow.failed == 0

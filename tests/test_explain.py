"""Explanations (README, "Explanations"): every native model gives each feature's
contribution to each decision, ``coef[c, j] * (x[j] - baseline[j])``, and the base
value ``coef @ baseline + intercept`` when a request names them.

For every native kind — linear, logistic, multinomial, one-vs-rest, ONNX graphs the
inspector recognises, PMML — the contributions equal that closed form computed here
in NumPy from the model's source (the scikit-learn estimator, the graph's weights,
the PMML tables), and for every row ``contributions.sum(-1) + base_value`` is the
model's decision: to 1e-12 in float64, relative to the size of the terms summed
(``max(|z|, sum_j |w_j (x_j - mu_j)| + |w . mu| + |b|)``, tests/parity.py's rule: a
decision can cancel to far below its terms). The baseline is the reference means
when the version has a reference.json, zeros without one; the model says which.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import scorewire
from scorewire.backends.native import NativeLinearModel
from scorewire.errors import InvalidInput
from scorewire.formats.linear_spec import LinearSpec
from scorewire.formats.reference import reference_statistics
from scorewire.repository import ModelRepository
from scorewire.service import ScoringService
from scorewire.types import PredictRequest

from .parity import RTOL
from .servers import SCOREWIRE, server_process
from .test_pmml import FEATURES, MULTI, REGRESSION, pmml_doc

EXPLAIN = ("contributions", "base_value")


# ----------------------------------------------------------------- helpers
def closed_form(W: np.ndarray, b: np.ndarray, X: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(contributions (n, k, d), base value (k,)) in float64, from the weights."""
    X = np.asarray(X, dtype=np.float64)
    return W[None, :, :] * (X[:, None, :] - mu), W @ mu + b


def assert_explained(model, X: np.ndarray, W: np.ndarray, b: np.ndarray, mu: np.ndarray) -> dict:
    """The model's explanations of X equal the closed form from (W, b, mu), and add
    up to its decision (its own decision output when it has one, else X @ W.T + b)."""
    k, d = W.shape
    dtype = X.dtype.name
    decision_name = model.signature.output_for("decision") or model.signature.output_for("value")
    names = EXPLAIN + ((decision_name,) if decision_name else ())
    out = model.predict(X, names)
    c, base = out["contributions"], out["base_value"]
    assert c.shape == ((len(X), d) if k == 1 else (len(X), k, d)) and c.dtype == X.dtype
    assert base.shape == (k,) and base.dtype == X.dtype
    want_c, want_base = closed_form(W, b, X, mu)
    c3 = c.reshape(len(X), k, d).astype(np.float64)
    np.testing.assert_allclose(c3, want_c, rtol=RTOL[dtype], atol=0)
    # the base value's terms may cancel: its error is relative to their size
    base_scale = np.abs(W) @ np.abs(mu) + np.abs(b)
    assert (np.abs(base - want_base) <= RTOL[dtype] * np.maximum(np.abs(want_base), base_scale)).all()
    # exactness: the contributions and the base value add up to the decision
    z = out[decision_name].reshape(len(X), k) if decision_name else np.asarray(X, np.float64) @ W.T + b
    total = c3.sum(axis=-1) + np.asarray(base, np.float64)
    scale = np.abs(want_c).sum(axis=-1) + np.abs(W @ mu) + np.abs(b)
    bound = RTOL[dtype] * np.maximum(np.abs(z), scale)
    assert (np.abs(total - z) <= bound).all(), np.abs(total - z).max()
    np.testing.assert_allclose(z, np.asarray(X, np.float64) @ W.T + b, rtol=RTOL[dtype], atol=float(bound.max()))
    return out


def write_reference(vdir, X: np.ndarray, names=None) -> np.ndarray:
    """reference.json of X into the version directory; returns the means it states."""
    doc = reference_statistics(X, names)
    (vdir / "reference.json").write_text(json.dumps(doc))
    return np.asarray([f["mean"] for f in doc["features"]])


@pytest.fixture
def rng() -> np.random.Generator:
    """This module's own generator: drawing from the session's (tests/conftest.py)
    would change the data of every test that runs after this module."""
    return np.random.default_rng(16)


@pytest.fixture(scope="module")
def bc():
    data = load_breast_cancer()
    return data.data, data.target


@pytest.fixture(scope="module")
def wine():
    data = load_wine()
    return data.data, data.target


# ------------------------------------------------- every native kind, exactly
def _sklearn_kinds():
    return {
        "linear": lambda X, y: LinearRegression().fit(X, X[:, 0] * 0.5 - X[:, 3] + 2.0),
        "logistic": lambda X, y: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, (y > 0).astype(int)),
        "multinomial": lambda X, y: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y),
        "ovr": lambda X, y: make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)).fit(X, y),
    }


def _sklearn_weights(est) -> tuple[np.ndarray, np.ndarray]:
    """The weights of the raw features, from scikit-learn's own attributes."""
    scaler = None
    if hasattr(est, "steps"):
        scaler, est = est.steps[0][1], est.steps[-1][1]
    W = np.atleast_2d(est.coef_).astype(np.float64)
    b = np.atleast_1d(est.intercept_).astype(np.float64)
    if scaler is not None:
        W = W / scaler.scale_
        b = b - W @ scaler.mean_
    return W, b


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("kind", sorted(_sklearn_kinds()))
def test_sklearn_kinds_from_model_json(kind, wine, tmp_path, rng):
    X, y = wine
    est = _sklearn_kinds()[kind](X, y)
    result = scorewire.export_estimator(est, tmp_path, "m", reference=X)
    model = scorewire.load_model(result.artifact)
    assert model.spec.link == {"linear": "identity", "logistic": "logistic", "multinomial": "softmax"}.get(kind, "ovr")
    assert model.signature.explanation_baseline == "reference"
    mu = np.asarray([f["mean"] for f in json.loads(result.reference.read_text())["features"]])
    np.testing.assert_allclose(mu, X.mean(axis=0), rtol=1e-12)
    W, b = _sklearn_weights(est)
    rows = np.vstack([X, X * rng.uniform(0.5, 1.5, size=X.shape), mu, np.zeros(X.shape[1])])
    out = assert_explained(model, rows, W, b, mu)
    # at the baseline row every contribution is 0 and the decision is the base value
    assert not out["contributions"][-2].any()
    if kind != "linear":  # and the decision scikit-learn gives
        z = est.decision_function(rows)
        np.testing.assert_allclose(out["decision"].reshape(z.shape), z, rtol=1e-9, atol=1e-9)


def _dense_onnx(W, b, *, mean=None, scale=None, softmax=False):
    """A float64 graph as tf2onnx/skl2onnx write a normalised dense layer:
    Sub(mean), Div(scale), Gemm(W, b, transB=1), optionally Softmax."""
    nodes, inits, x = [], [], "X"
    if mean is not None:
        nodes.append(helper.make_node("Sub", [x, "mean"], ["centred"]))
        inits.append(numpy_helper.from_array(mean, "mean"))
        x = "centred"
    if scale is not None:
        nodes.append(helper.make_node("Div", [x, "scale"], ["scaled"]))
        inits.append(numpy_helper.from_array(scale, "scale"))
        x = "scaled"
    out = "logits" if softmax else "Y"
    nodes.append(helper.make_node("Gemm", [x, "W", "b"], [out], transB=1))
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["Y"], axis=1))
    d = W.shape[1]
    g = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["N", d])],
                          [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, ["N", W.shape[0]])], inits)  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("softmax", [False, True], ids=["regression", "softmax"])
def test_onnx_graphs_recognised_as_linear(softmax, wine, tmp_path, rng):
    """A normalised dense layer: the normaliser is folded into the weights, so the
    contributions are those of the raw features, w_j / s_j * (x_j - mu_j)."""
    X, _ = wine
    k, d = (3 if softmax else 2), X.shape[1]
    W, b = rng.normal(size=(k, d)), rng.normal(size=k)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    vdir = tmp_path / "1"
    vdir.mkdir()
    (vdir / "model.onnx").write_bytes(_dense_onnx(W, b, mean=mean, scale=scale, softmax=softmax).SerializeToString())
    mu = write_reference(vdir, X)
    model = scorewire.load_model(vdir)
    assert model.backend == "native" and model.signature.explanation_baseline == "reference"
    raw_W = W / scale
    assert_explained(model, np.vstack([X, rng.normal(size=(50, d)) * scale + mean]), raw_W, b - raw_W @ mean, mu)


def test_skl2onnx_float32_export_explains_in_float32(bc, tmp_path, rng):
    """A float32 graph takes float32 rows: its explanations are float32 too."""
    X, y = bc
    X32 = X.astype(np.float32)
    clf = LogisticRegression(max_iter=5000).fit(X32, y)
    vdir = tmp_path / "1"
    vdir.mkdir()
    (vdir / "model.onnx").write_bytes(to_onnx(clf, X32[:1], options={"zipmap": False}).SerializeToString())
    mu = write_reference(vdir, X)
    model = scorewire.load_model(vdir)
    assert model.backend == "native" and model.signature.input.dtype == "float32"
    # skl2onnx writes two decision columns, (-w, w), each through a sigmoid; the
    # graph holds float32 weights
    assert model.spec.link == "sigmoid"
    w, b = clf.coef_[0].astype(np.float32).astype(np.float64), float(np.float32(clf.intercept_[0]))
    assert_explained(model, X32, np.vstack([-w, w]), np.asarray([-b, b]), mu)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("tables", ["regression", "softmax"])
def test_pmml(tables, tmp_path, rng):
    """PMML RegressionTables: the weights are the documents' own coefficients."""
    X = rng.normal(size=(257, len(FEATURES))) * np.array([10.0, 1000.0, 5.0, 1.0]) + np.array([40, 5e4, 3, 0])
    doc = pmml_doc(REGRESSION, function="regression", method="none") if tables == "regression" else (
        pmml_doc(MULTI, method="softmax"))  # fmt: skip
    table = REGRESSION if tables == "regression" else MULTI
    W = np.asarray([[coefs.get(f, 0.0) for f in FEATURES] for _, _, coefs in table])
    b = np.asarray([intercept for _, intercept, _ in table])
    vdir = tmp_path / "1"
    vdir.mkdir()
    (vdir / "model.pmml").write_text(doc)
    mu = write_reference(vdir, X[:100], list(FEATURES))
    model = scorewire.load_model(vdir)
    assert model.signature.explanation_baseline == "reference"
    assert_explained(model, X, W, b, mu)


# ------------------------------------------------------------------ baseline
def test_without_reference_the_baseline_is_zeros(wine, tmp_path):
    X, y = wine
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    result = scorewire.export_estimator(est, tmp_path, "m")  # no reference data
    assert result.reference is None
    model = scorewire.load_model(result.artifact)
    assert model.signature.explanation_baseline == "zeros"
    assert model.signature.to_dict()["explanation_baseline"] == "zeros"
    W, b = _sklearn_weights(est)
    out = assert_explained(model, X, W, b, np.zeros(X.shape[1]))
    np.testing.assert_array_equal(out["base_value"], model.spec.intercept)  # the decision at x = 0


def test_a_reference_without_every_mean_gives_the_zero_baseline(wine, tmp_path, caplog):
    X, y = wine
    est = LogisticRegression(max_iter=5000).fit(X, y)
    result = scorewire.export_estimator(est, tmp_path, "m", reference=X)
    doc = json.loads(result.reference.read_text())
    del doc["features"][3]["mean"]
    result.reference.write_text(json.dumps(doc))
    model = scorewire.load_model(result.artifact)
    assert model.signature.explanation_baseline == "zeros"
    assert any("mean" in r.getMessage() and "zero baseline" in r.getMessage() for r in caplog.records)


def test_explanations_of_an_in_memory_model(rng):
    """NativeLinearModel(spec, baseline=...) directly; a bad baseline is a load error."""
    W, b = rng.normal(size=(1, 6)), rng.normal(size=1)
    spec = LinearSpec("regression", "identity", W, b)
    mu = rng.normal(size=6)
    model = NativeLinearModel(spec, n_threads=1, baseline=mu)
    X = rng.normal(size=(9, 6))
    assert_explained(model, X, W, b, mu)
    assert model.output_names(None) == ("value",)  # not unless asked for
    assert model.predict(X[:0], EXPLAIN)["contributions"].shape == (0, 6)
    with pytest.raises(scorewire.ModelLoadError, match="6 finite feature values"):
        NativeLinearModel(spec, baseline=np.zeros(5))
    with pytest.raises(scorewire.ModelLoadError, match="6 finite feature values"):
        NativeLinearModel(spec, baseline=np.full(6, np.nan))


def test_a_model_output_named_contributions_keeps_its_name(rng):
    W, b = rng.normal(size=(1, 3)), rng.normal(size=1)
    spec = LinearSpec("regression", "identity", W, b, outputs={"contributions": "value"})
    model = NativeLinearModel(spec, n_threads=1)
    assert model.signature.output_names == ("contributions",) and model.signature.explanation_baseline == ""
    X = rng.normal(size=(4, 3))
    np.testing.assert_allclose(model.predict(X, ("contributions",))["contributions"], X @ W[0] + b[0], rtol=1e-12)
    with pytest.raises(InvalidInput, match="unknown output 'base_value'"):
        model.predict(X, ("base_value",))


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("k", [1, 3, 12])  # 12: wider than the kernel's on-stack scratch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "read-only"])
def test_the_kernel_grid(k, dtype, layout, rng):
    """Every memory layout the kernel reads, both dtypes, batch sizes 0 to past the
    parallel threshold, one and two threads: the contributions are the closed form
    to the last bit (one subtraction and one product in float64, rounded once to the
    input's dtype, in NumPy as in the kernel), with or without other outputs."""
    d = 9
    W, b, mu = rng.normal(size=(k, d)), rng.normal(size=k), rng.normal(size=d)
    spec = LinearSpec("classification", "softmax" if k > 1 else "logistic", W, b, classes=tuple(range(max(k, 2))))
    for n_threads in (1, 2):
        model = NativeLinearModel(spec, n_threads=n_threads, baseline=mu)
        for n in (0, 1, 7, 1000, 8000):  # 8000 x 9 x k: past the parallel threshold
            base = rng.normal(size=(n, 2 * d)).astype(dtype)
            X = {"C": np.ascontiguousarray(base[:, :d]), "F": np.asfortranarray(base[:, :d]),
                 "strided": base[:, ::2][:, :d], "read-only": np.ascontiguousarray(base[:, :d])}[layout]  # fmt: skip
            X.flags.writeable = layout != "read-only"
            want = (W[None] * (X.astype(np.float64)[:, None, :] - mu)).astype(dtype)
            for names in (EXPLAIN, ("label", "contributions")):
                got = model.predict(X, names)["contributions"]
                np.testing.assert_array_equal(got.reshape(n, k, d), want)
            assert model.predict(X, EXPLAIN)["base_value"].dtype == dtype


def test_large_batches_on_helper_threads_equal_one_row_at_a_time(bc, rng):
    """Above the parallel threshold the blocks run on the kernel's helper threads;
    each row's explanation is the one it gets alone."""
    X, _ = bc
    model = scorewire.load_model(scorewire.demo_repository() / "breast-cancer" / "1")
    big = np.vstack([X] * 8) * rng.uniform(0.9, 1.1, size=(8 * len(X), X.shape[1]))
    together = model.predict(big, EXPLAIN)["contributions"]
    alone = np.vstack([model.predict(big[i : i + 1], EXPLAIN)["contributions"] for i in range(0, len(big), 97)])
    np.testing.assert_array_equal(together[::97], alone)


# ------------------------------------------------------------- onnxruntime
def test_models_on_onnxruntime_refuse_explanations_by_name():
    forest = scorewire.load_model(scorewire.demo_repository() / "iris-forest" / "1")
    assert forest.backend == "onnxruntime" and forest.signature.explanation_baseline == ""
    assert not {"contributions", "base_value"} & set(forest.signature.output_names)
    for name in EXPLAIN:
        with pytest.raises(InvalidInput, match=f"output '{name}': explanations are available for native models"):
            forest.output_names((name,))


# ---------------------------------------------------------------- batching
def test_batched_requests_each_get_their_own_explanations(tmp_path, bc):
    """Requests merged into one batch: each gets its rows' contributions and the
    whole base value, whatever the others asked for."""
    X, _ = bc
    shutil.copytree(scorewire.demo_repository() / "breast-cancer", tmp_path / "m")
    # a batch is full at 6 rows, and waits an hour for them: three 2-row requests share it
    (tmp_path / "m" / "model.toml").write_text(
        "[batching]\nenabled = true\nmax_delay_us = 3600000000\nmax_batch_rows = 6\n"
    )
    asked = [("contributions", "base_value"), ("label",), ("decision", "contributions", "base_value")]
    parts = [X[0:2], X[100:102], X[200:202]]

    async def main():
        repo = ModelRepository(tmp_path, n_threads=1)
        repo.load_all()
        service = ScoringService(repo)
        assert service.resolve("m").config.batching.enabled
        answers = await asyncio.wait_for(
            asyncio.gather(*(service.predict(PredictRequest("m", P, outputs=o)) for P, o in zip(parts, asked, strict=True))),
            120,
        )
        await service.aclose()
        service.close()
        return [a.outputs for a in answers], repo.resolve("m").model

    answers, model = asyncio.run(main())
    for P, names, got in zip(parts, asked, answers, strict=True):
        assert sorted(got) == sorted(names)
        alone = model.predict(P, names)
        for name in names:
            np.testing.assert_array_equal(got[name], alone[name])
    assert answers[0]["base_value"].shape == (1,)


# ------------------------------------------------------------ the protocols
def test_both_protocols_unary_and_streams(bc):
    """scorewire.v1 Predict and PredictStream, OIP ModelInfer and ModelStreamInfer:
    the explanations as the model computes them; metadata lists them where they
    exist; a model on onnxruntime refuses them with INVALID_ARGUMENT."""
    from scorewire.grpc._codec import oip_raw_to_array
    from scorewire.grpc.stubs import array_to_tensor, oip, oip_grpc, pb, pb_grpc, tensor_to_array

    X, _ = bc
    X = X[:7]
    model = scorewire.load_model(scorewire.demo_repository() / "breast-cancer" / "1")
    want = model.predict(X, EXPLAIN)
    with server_process() as server, grpc.insecure_channel(server.addr) as channel:
        predict = pb_grpc.PredictServiceStub(channel)
        # 1. v1 Predict, raw and typed
        for raw in (True, False):
            request = pb.PredictRequest(model="breast-cancer", input=array_to_tensor(X, raw), outputs=EXPLAIN)
            got = predict.Predict(request, timeout=30).outputs
            for name in EXPLAIN:
                np.testing.assert_array_equal(tensor_to_array(got[name]), want[name])
        # 2. v1 PredictStream: explanations, then the onnxruntime model asked for them
        requests = [
            pb.PredictRequest(model="breast-cancer", input=array_to_tensor(X, True), outputs=EXPLAIN, request_id="a"),
            pb.PredictRequest(model="iris-forest", input=array_to_tensor(np.ones((1, 4), np.float32), True),
                              outputs=["contributions"], request_id="b"),
        ]  # fmt: skip
        answers = list(predict.PredictStream(iter(requests), timeout=30))
        assert [a.request_id for a in answers] == ["a", "b"]
        np.testing.assert_array_equal(tensor_to_array(answers[0].response.outputs["contributions"]), want["contributions"])
        assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "explanations are available for native models" in answers[1].error.message
        # 3. v1 unary, onnxruntime: INVALID_ARGUMENT naming the output
        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(requests[1], timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'contributions': explanations are available for native models" in err.value.details()
        # 4. GetModel: the outputs and the baseline
        info = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="breast-cancer"), timeout=30)
        sig = info.versions[0].signature
        assert sig.explanation_baseline == "reference"
        shapes = {o.name: (list(o.shape), o.role) for o in sig.outputs}
        assert shapes["contributions"] == ([-1, 30], "contributions") and shapes["base_value"] == ([1], "base_value")
        wine = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="wine"), timeout=30)
        assert {o.name: list(o.shape) for o in wine.versions[0].signature.outputs}["contributions"] == [-1, 3, 13]
        forest = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="iris-forest"), timeout=30)
        assert forest.versions[0].signature.explanation_baseline == ""
        assert not {"contributions", "base_value"} & {o.name for o in forest.versions[0].signature.outputs}
        # 5. OIP ModelInfer and ModelStreamInfer
        infer = oip_grpc.GRPCInferenceServiceStub(channel)

        def infer_request(name: str, A: np.ndarray, rid: str) -> oip.ModelInferRequest:
            r = oip.ModelInferRequest(model_name=name, id=rid)
            r.inputs.add(name="input", datatype="FP64" if A.dtype == np.float64 else "FP32", shape=A.shape)
            r.raw_input_contents.append(A.tobytes())
            for o in EXPLAIN:
                r.outputs.add(name=o)
            return r

        def outputs_of(response) -> dict[str, np.ndarray]:
            return {o.name: oip_raw_to_array(raw, o.datatype, tuple(o.shape))
                    for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}  # fmt: skip

        got = outputs_of(infer.ModelInfer(infer_request("breast-cancer", X, "u"), timeout=30))
        for name in EXPLAIN:
            np.testing.assert_array_equal(got[name], want[name])
        stream = list(infer.ModelStreamInfer(iter([
            infer_request("breast-cancer", X, "s1"), infer_request("iris-forest", np.ones((1, 4), np.float32), "s2"),
        ]), timeout=30))  # fmt: skip
        np.testing.assert_array_equal(outputs_of(stream[0].infer_response)["contributions"], want["contributions"])
        assert "explanations are available for native models" in stream[1].error_message
        with pytest.raises(grpc.RpcError) as err:
            infer.ModelInfer(infer_request("iris-forest", np.ones((1, 4), np.float32), "u2"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # 6. OIP ModelMetadata lists them for the native model only
        meta = infer.ModelMetadata(oip.ModelMetadataRequest(name="breast-cancer"), timeout=30)
        assert [o.name for o in meta.outputs][-2:] == ["contributions", "base_value"]
        meta = infer.ModelMetadata(oip.ModelMetadataRequest(name="iris-forest"), timeout=30)
        assert not {"contributions", "base_value"} & {o.name for o in meta.outputs}


# --------------------------------------------------------------------- CLI
def test_cli_predict_and_explain(bc):
    X, _ = bc
    rows = X[:3]
    model = scorewire.load_model(scorewire.demo_repository() / "breast-cancer" / "1")
    want = model.predict(rows, ("decision", *EXPLAIN))
    names = model.signature.feature_names
    csv_text = "\n".join(",".join(repr(float(v)) for v in x) for x in rows)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SCOREWIRE, *args], input=csv_text, capture_output=True, text=True, timeout=120)

    with server_process() as server:
        # 1. predict: the contributions headed by the feature names, the base value on every row
        r = run("predict", "-", "--model", "breast-cancer", "--addr", server.addr, "--outputs", "contributions", "base_value")
        assert r.returncode == 0, r.stderr
        header, *lines = r.stdout.strip().splitlines()
        assert header.split(",") == [f"contributions:{n}" for n in names] + ["base_value"]
        got = np.array([[float(v) for v in line.split(",")] for line in lines])
        np.testing.assert_array_equal(got[:, :30], want["contributions"])
        np.testing.assert_array_equal(got[:, 30], np.repeat(want["base_value"], 3))
        # 2. explain: each row's decision, base value and top features by |contribution|
        r = run("explain", "-", "--model", "breast-cancer", "--addr", server.addr, "--top", "3")
        assert r.returncode == 0, r.stderr
        text = r.stdout.splitlines()
        assert "reference baseline" in text[0]
        for i in range(3):
            start = text.index(next(t for t in text if t.startswith(f"row {i}:")))
            top = np.argsort(-np.abs(want["contributions"][i]), kind="stable")[:3]
            # the decision as explain adds it up (the same sum, the same bits)
            decision = float(want["contributions"][i].sum()) + float(want["base_value"][0])
            assert abs(decision - want["decision"][i, 0]) <= 1e-12 * np.abs(want["contributions"][i]).sum()
            assert f"decision {decision:.6g}" in text[start]
            assert f"base value {want['base_value'][0]:.6g}" in text[start]
            for line, j in zip(text[start + 1 : start + 4], top, strict=True):
                assert line.split()[-1] == f"{want['contributions'][i, j]:+.6g}" and names[j] in line
            assert "(27 other features)" in text[start + 4]
        # 3. a model on onnxruntime has none: a clear message, exit 1
        r = subprocess.run([*SCOREWIRE, "explain", "-", "--model", "iris-forest", "--addr", server.addr],
                           input="1,2,3,4\n", capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 1 and "available for native models" in r.stderr

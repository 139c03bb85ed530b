"""The ONNX graph inspector: recognised graphs score like onnxruntime, others are refused.

Every recognised graph is run through onnxruntime and through
``NativeLinearModel(spec)`` on the same rows (random ones, rows whose decisions are
±50 and ±800, and a zero row), and every output is compared: names, shapes, dtypes,
labels, floats to atol 1e-7 plus rtol 1e-6 (float32; 1e-12 and 1e-12 for
float64) of the value *or of the dot product's magnitude* ``|x| @ |w| + |b|``:
onnxruntime sums in float32, so where a decision cancels to near zero its error is
an ulp of the terms, not of the result (4e-7 on a decision of 0.1 from terms of 4);
the kernel sums in float64. Probabilities get half that slack (sigmoid and softmax
have slopes below 1/2). Labels are compared where that slack cannot flip them (exact
ties have their own test). The native side runs on both of the kernel's paths (the
``simd`` fixture, tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from scorewire.backends.native import NativeLinearModel
from scorewire.formats.linear_spec import LinearSpec
from scorewire.formats.onnx_graph import InspectResult, inspect_onnx

from .parity import assert_labels_equal, exact_ties, first_maximum

F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE
TOL = {np.dtype(np.float32): (1e-6, 1e-7), np.dtype(np.float64): (1e-12, 1e-12)}


# ----------------------------------------------------------------- helpers
def session(model: ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def recognised(model: ModelProto) -> LinearSpec:
    result = inspect_onnx(model)
    assert result.spec is not None, result.reason
    assert result.reason == ""
    return result.spec


def refused(model: ModelProto, *words: str) -> str:
    result = inspect_onnx(model)
    assert result.spec is None
    for word in words:
        assert word in result.reason
    return result.reason


def rows(spec: LinearSpec, rng: np.random.Generator, dtype=np.float32, n: int = 300) -> np.ndarray:
    """Random rows, rows whose decision c is exactly ±50 / ±800 (before rounding to
    dtype) for every c, and a zero row."""
    extreme = [
        (t - b) * w / (w @ w)
        for w, b in zip(spec.coef, spec.intercept, strict=True)
        for t in (-800.0, -50.0, 50.0, 800.0)
    ]
    X = np.vstack([rng.normal(size=(n, spec.n_features)), extreme, np.zeros((1, spec.n_features))])
    return X.astype(dtype)


def ort_outputs(model: ModelProto, X: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime's outputs by name; a ZipMap's sequence of maps becomes an (N, k)
    array in the ZipMap's own class order."""
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: X}), strict=True))
    for node in model.graph.node:
        if node.op_type == "ZipMap" and node.output[0] in out:
            attr = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            keys = attr.get("classlabels_int64s") or [s.decode() for s in attr["classlabels_strings"]]
            maps = out[node.output[0]]
            out[node.output[0]] = np.array([[m[k] for k in keys] for m in maps], dtype=np.float32)
    return out


def ort_bound(spec: LinearSpec, X: np.ndarray) -> np.ndarray:
    """How far onnxruntime's decisions may be from the exact ones (n, k): the
    tolerance of the float outputs below, of the row's largest dot product."""
    rtol, atol = TOL[X.dtype]
    X64 = X.astype(np.float64)
    terms = np.abs(X64) @ np.abs(spec.coef).T + np.abs(spec.intercept)
    return atol + rtol * (np.abs(X64 @ spec.coef.T + spec.intercept) + terms.max(axis=1, keepdims=True))


def assert_same_as_ort(model: ModelProto, X: np.ndarray, spec: LinearSpec | None = None) -> None:
    spec = spec or recognised(model)
    expected = ort_outputs(model, X)
    got = NativeLinearModel(spec, n_threads=1).predict(X)
    assert list(got) == list(expected)
    terms = np.abs(X.astype(np.float64)) @ np.abs(spec.coef).T + np.abs(spec.intercept)
    for name, want in expected.items():
        have = got[name]
        assert have.shape == want.shape, name
        assert have.dtype == want.dtype, name
        if want.dtype.kind == "f":
            rtol, atol = TOL[want.dtype]
            slack = terms.max(axis=1, keepdims=True) * (0.5 if spec.outputs[name] == "probabilities" else 1.0)
            err = np.abs(have.astype(np.float64) - want)
            allowed = atol + rtol * (np.abs(want.astype(np.float64)) + slack)
            assert np.all(err <= allowed), f"{name}: worst row {np.argmax((err - allowed).max(axis=1))}, err {err.max():.3g}"
        elif spec.outputs[name] == "label":
            # the kernel sums in float64, onnxruntime in float32: rows within that
            # rounding of a tie may get either label (exact ties: see below)
            z = X.astype(np.float64) @ spec.coef.T + spec.intercept
            assert_labels_equal(have, want, z, ort_bound(spec, X))
        else:
            np.testing.assert_array_equal(have, want, err_msg=name)


def graph(nodes, inits=(), *, elem=F32, d=4, outputs=(("Y", None),), opset=17, ml=False) -> ModelProto:
    """A one-input model; outputs are (name, elem or None for the input's)."""
    outs = [helper.make_tensor_value_info(n, e or elem, None) for n, e in outputs]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", elem, ["N", d])], outs,
        [numpy_helper.from_array(np.asarray(v), name) for name, v in inits],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 1)] if ml else [])
    model = helper.make_model(g, opset_imports=opsets)
    model.ir_version = 8
    return model


def linear_classifier(coef, intercepts, labels, post, *, d=4, normalizer=False, multi_class=0):
    key = "classlabels_strings" if isinstance(labels[0], str) else "classlabels_ints"
    nodes = [helper.make_node(
        "LinearClassifier", ["X"], ["label", "Z"], domain="ai.onnx.ml", coefficients=list(np.ravel(coef)),
        intercepts=list(intercepts), post_transform=post, multi_class=multi_class, **{key: list(labels)},
    )]
    if normalizer:
        nodes.append(helper.make_node("Normalizer", ["Z"], ["probabilities"], domain="ai.onnx.ml", norm="L1"))
    label_type = TensorProto.STRING if isinstance(labels[0], str) else TensorProto.INT64
    return graph(nodes, d=d, ml=True, outputs=(("label", label_type), ("probabilities" if normalizer else "Z", F32)))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)


@pytest.fixture
def data(rng):
    X = rng.normal(size=(300, 5)).astype(np.float32)
    X[:, 2] = X[:, 2] * 3 + 10  # a feature far from zero and from scale one: the scaler matters
    u = X[:, 0] + 0.5 * X[:, 1] - 0.2 * (X[:, 2] - 10)
    return X, (u > 0).astype(np.int64), np.digitize(u, [-0.6, 0.6])


# ---------------------------------------------------------- skl2onnx exports
@pytest.mark.usefixtures("simd")
def test_linear_regression_is_one_2d_value(data, rng):
    X, _, _ = data
    model = to_onnx(LinearRegression().fit(X, X @ [1.0, -2.0, 0.5, 3.0, 0.01] + 4), X[:1])
    spec = recognised(model)
    assert (spec.task, spec.link, spec.outputs, spec.value_2d) == ("regression", "identity", {"variable": "value"}, True)
    assert spec.input_name == "X" and spec.feature_names is None and spec.dtype == "float32"
    assert_same_as_ort(model, rows(spec, rng), spec)


@pytest.mark.usefixtures("simd")
def test_ridge_with_two_targets(data, rng):
    X, _, _ = data
    Y = np.c_[X @ [1.0, 2.0, 3.0, 4.0, 0.1], X @ [-4.0, 3.0, -2.0, 1.0, 0.0]]
    model = to_onnx(Ridge(alpha=0.5).fit(X, Y), X[:1])
    spec = recognised(model)
    assert spec.coef.shape == (2, 5)
    assert_same_as_ort(model, rows(spec, rng), spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("zipmap", [False, True])
def test_binary_logistic_regression(data, rng, zipmap):
    X, y2, _ = data
    clf = LogisticRegression().fit(X, y2)
    model = to_onnx(clf, X[:1], options={"zipmap": zipmap})
    spec = recognised(model)
    # skl2onnx writes two rows [-w, w] with LOGISTIC: per-column sigmoid
    assert (spec.link, spec.classes, spec.coef.shape) == ("sigmoid", (0, 1), (2, 5))
    assert set(spec.outputs.values()) == {"label", "probabilities"}
    Xr = rows(spec, rng)
    assert_same_as_ort(model, Xr, spec)
    proba = NativeLinearModel(spec).predict(X)[list(spec.outputs)[1]]
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("zipmap", [False, True])
@pytest.mark.parametrize("labels", [np.array([0, 1, 2]), np.array([10, -3, 7]), np.array(["cat", "dog", "émeu"])])
def test_multinomial_logistic_regression(data, rng, zipmap, labels):
    X, _, y3 = data
    clf = LogisticRegression().fit(X, labels[y3])
    model = to_onnx(clf, X[:1], options={"zipmap": zipmap})
    spec = recognised(model)  # LinearClassifier SOFTMAX + Normalizer L1
    assert spec.link == "softmax" and spec.classes == tuple(clf.classes_.tolist())
    assert_same_as_ort(model, rows(spec, rng), spec)


@pytest.mark.usefixtures("simd")
def test_raw_scores_are_the_decision(data, rng):
    X, y2, _ = data
    model = to_onnx(LogisticRegression().fit(X, y2), X[:1], options={"zipmap": False, "raw_scores": True})
    spec = recognised(model)
    assert spec.link == "identity" and spec.outputs == {"label": "label", "probabilities": "decision"}
    assert_same_as_ort(model, rows(spec, rng), spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("zipmap", [False, True])
def test_standard_scaler_is_folded(data, rng, zipmap):
    X, _, y3 = data
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y3)
    model = to_onnx(pipe, X[:1], options={id(pipe.steps[-1][1]): {"zipmap": zipmap}})
    assert model.graph.node[0].op_type == "Scaler"
    spec = recognised(model)
    assert_same_as_ort(model, rows(spec, rng), spec)
    np.testing.assert_allclose(NativeLinearModel(spec).predict(X)[list(spec.outputs)[-1]], pipe.predict_proba(X), atol=1e-6)


@pytest.mark.usefixtures("simd")
def test_float64_regression_exports(data, rng):
    """skl2onnx writes MatMul + Add + Reshape(-1, 1) for a float64 input (and Sub/Div
    for the scaler): scored natively in float64."""
    X, _, _ = data
    X = X.astype(np.float64)
    y = X @ [1.0, -2.0, 0.5, 3.0, 0.01] + 4
    for est in (LinearRegression(), Pipeline([("s", StandardScaler()), ("r", Ridge())])):
        model = to_onnx(est.fit(X, y), X[:1])
        spec = recognised(model)
        assert spec.dtype == "float64"
        assert_same_as_ort(model, rows(spec, rng, np.float64), spec)


def test_sgd_classifier_exports_are_not_linear_classifiers(data):
    """skl2onnx writes SGDClassifier(loss="log_loss") with ArgMax/ArrayFeatureExtractor
    over Sigmoid+Concat (binary) or Exp/Reciprocal/ReduceSum with a zero-sum fallback
    (multi-class), not a LinearClassifier: left to onnxruntime."""
    X, y2, y3 = data
    for y in (y2, y3):
        for zipmap in (False, True):
            clf = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
            refused(to_onnx(clf, X[:1], options={"zipmap": zipmap}), "ArgMax", "ArrayFeatureExtractor")


def test_float64_logistic_regression_export_is_refused(data):
    X, y2, _ = data
    model = to_onnx(LogisticRegression().fit(X, y2), X[:1].astype(np.float64), options={"zipmap": False})
    refused(model, "ArgMax")


def test_random_forest_is_refused(data):
    X, y2, _ = data
    model = to_onnx(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y2), X[:1])
    refused(model, "TreeEnsembleClassifier")


# ------------------------------------------------- LinearClassifier semantics
def test_onnxruntime_binary_linear_classifier_behaviour():
    """Pins what onnxruntime does with one coefficient row and two labels (z = x0 here):
    LOGISTIC: Z = [1 - sigmoid(z), sigmoid(z)]; NONE, SOFTMAX, SOFTMAX_ZERO: Z = [1 - z, z];
    Y = labels[1] if z > 0 else labels[0] in every case."""
    X = np.array([[0, 0], [0.5, 0], [-3, 0], [1e-8, 0], [50, 0], [-800, 0]], np.float32)
    z = X[:, 0].astype(np.float64)
    sig = np.exp(-np.logaddexp(0, -z))
    for post in ("LOGISTIC", "NONE", "SOFTMAX", "SOFTMAX_ZERO"):
        labels, Z = session(linear_classifier([1.0, 0.0], [0.0], [7, 3], post, d=2)).run(None, {"X": X})
        assert labels.tolist() == [7, 3, 7, 3, 3, 7]
        want = np.c_[1 - sig, sig] if post == "LOGISTIC" else np.c_[1 - z, z]
        np.testing.assert_allclose(Z, want, atol=1e-7)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("labels", [[7, 3], ["no", "yes"]])
def test_one_row_logistic_classifier_is_the_logistic_link(rng, labels):
    w, b = rng.normal(size=4), [0.3]
    model = linear_classifier(w, b, labels, "LOGISTIC")
    spec = recognised(model)
    assert (spec.link, spec.coef.shape, spec.classes) == ("logistic", (1, 4), tuple(labels))
    X = rows(spec, rng)
    X[-1] = 0  # z = b > 0
    X = np.vstack([X, -0.3 * w / (w @ w)]).astype(np.float32)  # z ~ 0
    assert_same_as_ort(model, X, spec)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "SOFTMAX_ZERO"])
def test_one_row_classifier_without_logistic_is_refused(rng, post):
    refused(linear_classifier(rng.normal(size=4), [0.1], [0, 1], post), "[1 - z, z]")


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize(("post", "link"), [("LOGISTIC", "sigmoid"), ("SOFTMAX", "softmax"), ("NONE", "identity")])
@pytest.mark.parametrize("multi_class", [0, 1])
def test_multi_row_linear_classifier(rng, post, link, multi_class):
    coef, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    model = linear_classifier(coef, b, [4, 2, 9], post, multi_class=multi_class)
    spec = recognised(model)
    assert spec.link == link
    assert spec.outputs == {"label": "label", "Z": "decision" if post == "NONE" else "probabilities"}
    X = rows(spec, rng)
    X = np.vstack([X, np.zeros((1, 4))]).astype(np.float32)
    assert_same_as_ort(model, X, spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize(("k", "post"), [(1, "LOGISTIC"), (3, "LOGISTIC"), (3, "SOFTMAX"), (3, "NONE")])
def test_exact_ties_give_the_first_class(rng, k, post):
    """Decisions tied exactly (small integers, exact in float32 in any order): onnxruntime
    and the kernel both give the first of the tied classes in the classifier's order,
    and with one decision column labels[0] at z == 0 (labels[1] only when z > 0)."""
    coef, b, X = exact_ties(k, 4, rng)
    labels = [6, 5] if k == 1 else [7, 5, 6]  # not sorted: first means first in the graph
    model = linear_classifier(coef, b, labels, post)
    spec = recognised(model)
    X32 = X.astype(np.float32)
    want = np.asarray(labels)[first_maximum(X @ coef.T + b)]
    np.testing.assert_array_equal(ort_outputs(model, X32)["label"], want)
    np.testing.assert_array_equal(NativeLinearModel(spec).predict(X32)["label"], want)


def ovr_model(data):
    X, _, y3 = data
    ovr = OneVsRestClassifier(LogisticRegression()).fit(X, y3)
    coef = np.vstack([e.coef_ for e in ovr.estimators_])
    b = np.concatenate([e.intercept_ for e in ovr.estimators_])
    # what skl2onnx wrote for LogisticRegression(multi_class="ovr") before scikit-learn 1.8
    return ovr, linear_classifier(coef, b, [0, 1, 2], "LOGISTIC", d=5, normalizer=True)


@pytest.mark.usefixtures("simd")
def test_logistic_then_l1_normalizer_is_one_vs_rest(data, rng):
    X, _, _ = data
    ovr, model = ovr_model(data)
    spec = recognised(model)
    assert spec.link == "ovr"
    assert_same_as_ort(model, rows(spec, rng), spec)
    np.testing.assert_allclose(NativeLinearModel(spec).predict(X)["probabilities"], ovr.predict_proba(X), atol=1e-6)


@pytest.mark.usefixtures("simd")
def test_one_vs_rest_where_onnxruntime_loses_precision(data):
    """Rows where every class's decision is very negative ("none of them"). onnxruntime's
    float32 sigmoid is 1 - sigmoid(|z|) below 0: absolutely within ~6e-8, but the L1
    normaliser divides that by the small row sum, and below z ~ -17 every sigmoid is 0
    and so is the row. The kernel gives the exact normalised sigmoid (as scikit-learn).

    Each row's best decision is at least 0.5 above the next: the labels (argmax z) are
    decided by the decisions, not by how either side rounds them."""
    _, model = ovr_model(data)
    spec = recognised(model)
    # NOTE: not (-50, -50, -60): an exact tie before rounding, which float32 (ours
    # after rounding the row: z0 - z1 = -6e-5; onnxruntime's float32 sums: +1e-5, of
    # terms ~8e3) breaks either way, so the labels differed by machine
    targets = np.array([[-5.0, -6.0, -7.0], [-10.0, -10.5, -11.0], [-20.0, -21.0, -22.0], [-50.0, -51.0, -60.0]])
    low = ((targets - spec.intercept) @ np.linalg.pinv(spec.coef).T).astype(np.float32)
    z = low.astype(np.float64) @ spec.coef.T + spec.intercept
    exact = np.exp(-np.logaddexp(0, -z))
    exact /= exact.sum(axis=1, keepdims=True)
    ours, theirs = NativeLinearModel(spec).predict(low), ort_outputs(model, low)
    np.testing.assert_allclose(ours["probabilities"], exact, rtol=1e-6)
    assert_labels_equal(ours["label"], theirs["label"], z, ort_bound(spec, low), min_decided=1.0)
    drift = np.abs(theirs["probabilities"] - exact).max(axis=1)
    assert drift[0] > 5e-7 and drift[1] > 3e-5  # measured: 1.2e-6 and 9.5e-5
    np.testing.assert_array_equal(theirs["probabilities"][2:], 0.0)


def test_linear_classifier_refusals(rng):
    coef = rng.normal(size=(3, 4))
    refused(linear_classifier(coef, [0, 0, 0], [0, 1, 2], "SOFTMAX_ZERO"), "SOFTMAX_ZERO")
    refused(linear_classifier(coef, [0, 0, 0], [0, 1, 2], "PROBIT"), "PROBIT")
    refused(linear_classifier(coef, [0, 0, 0], [0, 1, 2, 3], "SOFTMAX"), "3 coefficient rows for 4 classes")
    refused(linear_classifier(coef, [0, 0, 0], [0, 1, 2], "NONE", normalizer=True), "Normalizer")
    # float64 input: onnxruntime computes and returns float32
    model = linear_classifier(coef, [0, 0, 0], [0, 1, 2], "SOFTMAX")
    model.graph.input[0].type.tensor_type.elem_type = F64
    refused(model, "float32")


def test_string_attributes_that_are_not_utf8_are_refused(rng):
    """Found by tests/fuzz/fuzz_onnx.py: ONNX keeps string attributes as bytes it
    does not check; decoding post_transform or a class label raised
    UnicodeDecodeError out of the inspector, and the model failed to load with "unexpected
    error" instead of running on onnxruntime."""
    coef = rng.normal(size=(3, 4))
    refused(linear_classifier(coef, [0, 0, 0], [0, 1, 2], b"SOF\xacMAX"), "has post_transform SOF\ufffdMAX")
    model = linear_classifier(coef, [0, 0, 0], ["a", "b", "c"], "SOFTMAX")
    (labels,) = [a for a in model.graph.node[0].attribute if a.name == "classlabels_strings"]
    labels.strings[1] = b"\xff"
    refused(model, "a class label that is not UTF-8")


def zipmapped(model: ModelProto, source: str, **labels) -> ModelProto:
    """`model` with its output `source` replaced by ZipMap(source) named "P"."""
    model.graph.node.append(helper.make_node("ZipMap", [source], ["P"], domain="ai.onnx.ml", **labels))
    for i, out in enumerate(model.graph.output):
        if out.name == source:
            model.graph.output[i].CopyFrom(helper.make_value_info("P", helper.make_sequence_type_proto(
                helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(F32, None)))))
    return model


@pytest.mark.usefixtures("simd")
def test_one_row_logistic_with_zipmap(rng):
    model = zipmapped(linear_classifier(rng.normal(size=4), [0.2], [7, 3], "LOGISTIC"), "Z", classlabels_int64s=[7, 3])
    spec = recognised(model)
    assert spec.outputs == {"label": "label", "P": "probabilities"}
    assert_same_as_ort(model, rows(spec, rng), spec)


def test_zipmap_with_other_labels_is_refused(rng):
    model = linear_classifier(rng.normal(size=(3, 4)), [0, 0, 0], [0, 1, 2], "SOFTMAX")
    refused(zipmapped(model, "Z", classlabels_int64s=[0, 2, 1]), "labels its columns differently")
    # a one-column sigmoid has classes (0, 1) but one column: onnxruntime's ZipMap fails
    W, b = dense(rng, k=1)
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1), helper.make_node("Sigmoid", ["z"], ["Y"])]
    model = graph(nodes, [("W", W), ("b", b)], ml=True)
    refused(zipmapped(model, "Y", classlabels_int64s=[0, 1]), "labels its columns differently")


# ------------------------------------------------ Gemm / MatMul (torch, tf2onnx)
def dense(rng, d=4, k=3, dtype=np.float32):
    return rng.normal(size=(k, d)).astype(dtype), rng.normal(size=k).astype(dtype)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_as_torch_linear(rng, dtype):
    """torch.onnx's nn.Linear: Gemm(X, W, b, transB=1), plus alpha and beta."""
    W, b = dense(rng, dtype=dtype)
    elem = F32 if dtype == np.float32 else F64
    node = helper.make_node("Gemm", ["X", "W", "b"], ["Y"], transB=1, alpha=0.5, beta=2.0)
    model = graph([node], [("W", W), ("b", b)], elem=elem)
    spec = recognised(model)
    assert (spec.task, spec.outputs, spec.coef.shape) == ("regression", {"Y": "value"}, (3, 4))
    assert_same_as_ort(model, rows(spec, rng, dtype), spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("C", [np.float32(0.25), np.array([0.25], np.float32), np.ones((1, 3), np.float32)])
def test_gemm_without_transpose_and_broadcast_bias(rng, C):
    W, _ = dense(rng)
    node = helper.make_node("Gemm", ["X", "W", "C"], ["Y"])
    model = graph([node], [("W", W.T.copy()), ("C", C)])
    assert_same_as_ort(model, rows(recognised(model), rng))


@pytest.mark.usefixtures("simd")
def test_gemm_without_bias_at_opset_13(rng):
    W, _ = dense(rng, k=1)
    model = graph([helper.make_node("Gemm", ["X", "W"], ["Y"], transB=1)], [("W", W)], opset=13)
    spec = recognised(model)
    assert spec.value_2d
    assert_same_as_ort(model, rows(spec, rng), spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_add_softmax_as_tf2onnx_dense(rng, dtype):
    W, b = dense(rng, dtype=dtype)
    elem = F32 if dtype == np.float32 else F64
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["Y"], axis=-1),
    ]
    model = graph(nodes, [("W", W.T.copy()), ("b", b)], elem=elem)
    spec = recognised(model)
    assert (spec.link, spec.classes, spec.outputs) == ("softmax", (0, 1, 2), {"Y": "probabilities"})
    assert_same_as_ort(model, rows(spec, rng, dtype), spec)


@pytest.mark.usefixtures("simd")
def test_softmax_axis_1_at_opset_11_with_logits_output(rng):
    W, b = dense(rng)
    nodes = [
        helper.make_node("Gemm", ["X", "W", "b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["Y"], axis=1),
    ]
    model = graph(nodes, [("W", W), ("b", b)], opset=11, outputs=(("logits", None), ("Y", None)))
    spec = recognised(model)
    assert spec.outputs == {"logits": "decision", "Y": "probabilities"}
    assert_same_as_ort(model, rows(spec, rng), spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_of_one_column_stays_n_by_1(rng, dtype):
    W, b = dense(rng, k=1, dtype=dtype)
    elem = F32 if dtype == np.float32 else F64
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["z"], transB=1), helper.make_node("Sigmoid", ["z"], ["Y"])]
    model = graph(nodes, [("W", W), ("b", b)], elem=elem)
    spec = recognised(model)
    assert (spec.task, spec.link, spec.classes) == ("classification", "sigmoid", (0, 1))
    assert spec.signature().outputs[0].shape == (-1, 1)
    assert_same_as_ort(model, rows(spec, rng, dtype), spec)


@pytest.mark.usefixtures("simd")
def test_sigmoid_of_several_columns_is_multi_label(rng):
    W, b = dense(rng, k=3)
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["xw"]),
        helper.make_node("Add", ["b", "xw"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["Y"]),
    ]
    model = graph(nodes, [("W", W.T.copy()), ("b", b)])
    spec = recognised(model)
    assert (spec.link, spec.classes) == ("sigmoid", (0, 1, 2))
    assert_same_as_ort(model, rows(spec, rng), spec)


# ------------------------------------------------------------------- folding
@pytest.mark.usefixtures("simd")
def test_scaler_then_gemm(rng):
    W, b = dense(rng)
    # attributes are float32
    offset = (rng.normal(size=4) * 50).astype(np.float32).astype(np.float64)
    scale = rng.uniform(0.01, 3, size=4).astype(np.float32).astype(np.float64)
    nodes = [
        helper.make_node("Scaler", ["X"], ["s"], domain="ai.onnx.ml", offset=offset.tolist(), scale=scale.tolist()),
        helper.make_node("Gemm", ["s", "W", "b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["Y"]),
    ]
    model = graph(nodes, [("W", W), ("b", b)], ml=True)
    spec = recognised(model)
    np.testing.assert_allclose(spec.coef, W * scale, rtol=1e-12)
    np.testing.assert_allclose(spec.intercept, b - (W * scale) @ offset, rtol=1e-6)
    X = (rows(spec, rng) + offset).astype(np.float32)
    assert_same_as_ort(model, X, spec)


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sub_div_normaliser_then_matmul_add(rng, dtype):
    """(x - mean) / std per feature, * 2 and + 1 as scalars, then a Dense layer."""
    W, b = dense(rng, k=1, dtype=dtype)
    mean, std = (rng.normal(size=4) * 10).astype(dtype), rng.uniform(0.5, 4, size=4).astype(dtype)
    elem = F32 if dtype == np.float32 else F64
    nodes = [
        helper.make_node("Sub", ["X", "mean"], ["c"]),
        helper.make_node("Div", ["c", "std"], ["s"]),
        helper.make_node("Mul", ["two", "s"], ["s2"]),
        helper.make_node("Add", ["s2", "one"], ["s3"]),
        helper.make_node("MatMul", ["s3", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logit"]),
        helper.make_node("Identity", ["logit"], ["Y"]),
    ]
    inits = [("mean", mean.reshape(1, 4)), ("std", std), ("two", dtype(2)), ("one", np.array([1], dtype)),
             ("W", W.T.copy()), ("b", b)]
    model = graph(nodes, inits, elem=elem)
    spec = recognised(model)
    np.testing.assert_allclose(spec.coef, 2 * W / std, rtol=1e-6)
    assert_same_as_ort(model, (rows(spec, rng, dtype) + mean).astype(dtype), spec)


@pytest.mark.usefixtures("simd")
def test_constant_minus_input_and_constant_node(rng):
    W, b = dense(rng)
    nodes = [
        helper.make_node("Constant", [], ["ten"], value=numpy_helper.from_array(np.full(4, 10, np.float32))),
        helper.make_node("Sub", ["ten", "X"], ["r"]),
        helper.make_node("Gemm", ["r", "W", "b"], ["Y"], transB=1),
        helper.make_node("Cast", ["Y"], ["Yc"], to=F32),
    ]
    model = graph(nodes, [("W", W), ("b", b)], outputs=(("Yc", None),))
    spec = recognised(model)
    np.testing.assert_allclose(spec.coef, -W, rtol=1e-12)
    assert_same_as_ort(model, rows(spec, rng), spec)


# ---------------------------------------------------------------- refusals
def gemm(src="X", out="Y"):
    return helper.make_node("Gemm", [src, "W", "b"], [out], transB=1)


def test_extra_relu_is_refused(rng):
    W, b = dense(rng)
    model = graph([gemm(out="z"), helper.make_node("Relu", ["z"], ["Y"])], [("W", W), ("b", b)])
    refused(model, "Relu")


def test_non_constant_weights_are_refused(rng):
    W, b = dense(rng)
    model = graph([gemm()], [("W", W), ("b", b)])
    model.graph.input.append(helper.make_tensor_value_info("W", F32, [3, 4]))
    refused(model, "default value")  # W is an initializer a caller may override
    del model.graph.initializer[0]
    refused(model, "2 inputs")  # W is a second input
    model = graph([helper.make_node("Gemm", ["X", "X"], ["Y"], transB=1)], d=4)
    refused(model, "not a constant")


def test_two_inputs_are_refused(rng):
    W, b = dense(rng)
    model = graph([gemm(out="z"), helper.make_node("Add", ["z", "X2"], ["Y"])], [("W", W), ("b", b)])
    model.graph.input.append(helper.make_tensor_value_info("X2", F32, ["N", 3]))
    refused(model, "2 inputs")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("transA", 1)), "transposes"),
        (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("foo", 1)), "unexpected attributes"),
        (lambda m: m.opset_import[0].__setattr__("version", 6), "opset 6"),
        (lambda m: m.opset_import.append(helper.make_opsetid("com.microsoft", 1)), "com.microsoft"),
        (lambda m: m.graph.input[0].type.tensor_type.__setattr__("elem_type", TensorProto.INT64), "float32 or float64"),
        (lambda m: m.graph.input[0].type.tensor_type.shape.dim.add(), "2-D"),
        (lambda m: m.graph.output.append(helper.make_tensor_value_info("X", F32, None)), "not computed by a linear"),
        (lambda m: m.graph.output[0].type.tensor_type.__setattr__("elem_type", F64), "declared with another type"),
    ],
)
def test_gemm_variations_are_refused(rng, change, words):
    W, b = dense(rng)
    model = graph([gemm()], [("W", W), ("b", b)])
    assert inspect_onnx(model).spec is not None
    change(model)
    refused(model, words)


def test_other_refusals(rng):
    W, b = dense(rng)
    inits = [("W", W), ("b", b), ("zero", np.zeros(4, np.float32)), ("big", np.ones((2, 4), np.float32))]
    cases = {
        "Softmax node": [gemm(out="z"), helper.make_node("Softmax", ["z"], ["Y"], axis=0)],
        "divides by zero": [helper.make_node("Div", ["X", "zero"], ["d"]), gemm("d")],
        "changes the tensor's shape": [helper.make_node("Add", ["X", "big"], ["d"]), gemm("d")],
        "changes the element type": [gemm(out="z"), helper.make_node("Cast", ["z"], ["Y"], to=F64)],
        "applied to the input": [helper.make_node("Sigmoid", ["X"], ["s"]), gemm("s")],
        "after the link": [gemm(out="z"), helper.make_node("Sigmoid", ["z"], ["s"]), helper.make_node("Mul", ["s", "b"], ["Y"])],
        "combines two computed": [gemm(out="z"), helper.make_node("Add", ["z", "z"], ["Y"])],
        "first input": [gemm(out="z"), helper.make_node("MatMul", ["W", "z"], ["Y"])],
        "not computed by a linear model": [helper.make_node("Identity", ["X"], ["Y"])],
    }
    for words, nodes in cases.items():
        refused(graph(nodes, inits), words)
    two_links = [gemm(out="z"), helper.make_node("Sigmoid", ["z"], ["s"]), helper.make_node("Softmax", ["z"], ["Y"])]
    refused(graph(two_links, inits, outputs=(("s", None), ("Y", None))), "different links")
    two_decisions = [gemm(out="z"), helper.make_node("Add", ["z", "b"], ["Y"])]
    refused(graph(two_decisions, inits, outputs=(("z", None), ("Y", None))), "one decision")
    not_imported = graph([helper.make_node("Scaler", ["X"], ["s"], domain="ai.onnx.ml", offset=[0.0], scale=[1.0]), gemm("s")], inits)
    refused(not_imported, "not imported")


def test_non_finite_weights_are_refused(rng):
    W, b = dense(rng)
    W[0, 0] = np.inf
    refused(graph([gemm()], [("W", W), ("b", b)]), "finite")


def test_result_is_a_frozen_dataclass():
    result = InspectResult(None, "why")
    with pytest.raises(AttributeError):
        result.reason = "other"  # type: ignore[misc]

"""Native scores equal scikit-learn's, on real models trained here.

float64: 1e-12 relative; float32: 1e-6 (see tests/parity.py); labels identical
wherever no rounding within that can change them.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

from scorewire.backends.native import NativeLinearModel
from scorewire.export import linear_spec_from_sklearn
from scorewire.formats.linear_spec import LinearSpec

from .parity import (
    assert_decisions_close,
    assert_labels_equal,
    assert_proba_close,
    decision_bound,
    decision_scale,
    exact_ties,
    first_maximum,
)


def _data(name):
    if name == "diabetes":
        d = load_diabetes()
        return d.data, d.target
    if name == "diabetes-multi":
        d = load_diabetes()
        return d.data, np.column_stack([d.target, d.data[:, 2] * 100, -d.target])
    loader = {"breast_cancer": load_breast_cancer, "iris": load_iris, "wine": load_wine}[name]
    d = loader()
    return d.data, d.target


CASES = {
    "linreg": ("diabetes", lambda: LinearRegression()),
    "ridge-multi": ("diabetes-multi", lambda: Ridge(alpha=0.3)),
    "scaled-ridge": ("diabetes-multi", lambda: make_pipeline(StandardScaler(), Ridge(alpha=0.3))),
    "logreg-binary": ("breast_cancer", lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
    "logreg-binary-raw": ("breast_cancer", lambda: LogisticRegression(max_iter=10000, C=0.01)),
    "logreg-multinomial": ("wine", lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
    "logreg-iris-minmax": ("iris", lambda: make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=5000))),
    "logreg-maxabs": ("breast_cancer", lambda: make_pipeline(MaxAbsScaler(), LogisticRegression(max_iter=5000))),
    "sgd-binary": ("breast_cancer", lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0))),
    "sgd-ovr": ("wine", lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0))),
    "sgd-hinge": ("iris", lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", random_state=0))),
}


@pytest.fixture(scope="module")
def fitted():
    out = {}
    for key, (data, make) in CASES.items():
        X, y = _data(data)
        out[key] = (make().fit(X, y), X)
    return out


def _as(spec: LinearSpec, dtype: str) -> LinearSpec:
    return LinearSpec(**{**spec.__dict__, "dtype": dtype})


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("key", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_native_equals_sklearn(key, dtype, fitted, rng):
    est, X = fitted[key]
    spec = linear_spec_from_sklearn(est)
    assert spec is not None
    spec = _as(spec, dtype)
    # training rows plus perturbed rows, including some far outside the data
    X = np.vstack([X, X[:50] * rng.uniform(0.5, 1.5, size=X[:50].shape), X[:5] * 40]).astype(dtype)
    X64 = X.astype(np.float64)  # what scikit-learn sees (float32 data, widened exactly)
    got = NativeLinearModel(spec).predict(X)
    scale = decision_scale(X64, spec.coef, spec.intercept)
    if spec.task == "regression":
        want = est.predict(X64)
        assert_decisions_close(got["value"], want, scale.reshape(np.shape(want)), dtype)
        return
    dec = est.decision_function(X64).reshape(scale.shape)
    # the decision a pipeline computes scales first: compare at its own scale too
    scale = np.maximum(scale, np.abs(dec) + _pipeline_scale(est, X64))
    assert_decisions_close(got["decision"], dec, scale, dtype)
    # NOTE: labels at float64's bound whatever the dtype: the kernel picks them from
    # its float64 decision, scikit-learn from its own (X64 is the float32 data widened)
    assert_labels_equal(got["label"], est.predict(X64), dec, decision_bound(dec, scale, "float64"))
    if hasattr(est, "predict_proba"):
        assert_proba_close(got["probabilities"], est.predict_proba(X64), dtype)
    else:
        assert "probabilities" not in got


def _pipeline_scale(est, X):
    """sum |x'_j w_j| + |b| in the scaled space, where the pipeline itself sums."""
    if not hasattr(est, "steps"):
        return 0.0
    *pre, (_, final) = est.steps
    for _, step in pre:
        X = step.transform(X)
    return np.abs(X) @ np.abs(np.atleast_2d(final.coef_)).T + np.abs(final.intercept_)


TIE_ESTIMATORS = {
    # name: (estimator, classes, the link scorewire gives it)
    "logreg-binary": (lambda: LogisticRegression(), ("ant", "bee"), "logistic"),
    "logreg-multinomial": (lambda: LogisticRegression(), ("ant", "bee", "cat"), "softmax"),
    "sgd-ovr": (lambda: SGDClassifier(loss="log_loss", random_state=0), ("ant", "bee", "cat"), "ovr"),
    "hinge-binary": (lambda: SGDClassifier(loss="hinge", random_state=0), (3, 8), "identity"),
    "hinge-multi": (lambda: SGDClassifier(loss="hinge", random_state=0), (3, 8, 9), "identity"),
}


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("key", sorted(TIE_ESTIMATORS))
def test_exact_ties_are_decided_as_sklearn(key, rng):
    """Decisions tied exactly (small integers, exact in float64 in any order): the
    native labels are scikit-learn's. One decision column: classes[1] only when
    z > 0; several: the first of the tied classes (LinearClassifierMixin.predict)."""
    make, classes, link = TIE_ESTIMATORS[key]
    k = 1 if len(classes) == 2 else len(classes)
    coef, intercept, X = exact_ties(k, 6, rng)
    est = make().fit(rng.normal(size=(len(classes) * 4, 6)), np.repeat(classes, 4))
    est.coef_, est.intercept_ = coef, intercept  # the fitted model, with these weights
    spec = linear_spec_from_sklearn(est)
    assert spec is not None and spec.link == link
    want = est.classes_[first_maximum(X @ coef.T + intercept)]
    np.testing.assert_array_equal(est.predict(X), want)
    np.testing.assert_array_equal(NativeLinearModel(spec).predict(X)["label"], want)


def test_non_linear_estimators_are_not_linear_specs():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import PolynomialFeatures

    X, y = _data("iris")
    assert linear_spec_from_sklearn(RandomForestClassifier(n_estimators=3).fit(X, y)) is None
    pipe = make_pipeline(PolynomialFeatures(), LogisticRegression(max_iter=2000)).fit(X, y)
    assert linear_spec_from_sklearn(pipe) is None

"""scorewire.evaluate: NumPy metrics equal scikit-learn's on real data, and the
deployment parity check finds the served model equal to the estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import scorewire
from scorewire import evaluate as ev
from scorewire.errors import InvalidInput

from .parity import decided_rows

DEMO = scorewire.demo_repository()
BREAST = scorewire.load_model(DEMO / "breast-cancer" / "1")
WINE = scorewire.load_model(DEMO / "wine" / "1")
DIABETES = scorewire.load_model(DEMO / "diabetes" / "1")
IRIS_FOREST = scorewire.load_model(DEMO / "iris-forest" / "1")


def test_binary_metrics_equal_sklearn():
    X, y = load_breast_cancer(return_X_y=True)
    out = BREAST.predict(X)
    proba, labels = out["probabilities"], out["label"]
    assert ev.accuracy(y, labels) == skm.accuracy_score(y, labels)
    assert ev.roc_auc(y, proba, (0, 1)) == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), rel=1e-12)
    assert ev.roc_auc(y, proba[:, 1], (0, 1)) == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), rel=1e-12)
    assert ev.log_loss(y, proba, (0, 1)) == pytest.approx(skm.log_loss(y, proba), rel=1e-12)
    assert ev.log_loss(y, proba[:, 1], (0, 1)) == pytest.approx(skm.log_loss(y, proba), rel=1e-12)
    labels_, cm = ev.confusion_matrix(y, labels)
    assert labels_ == (0, 1)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, labels))


def test_roc_auc_with_ties_equals_sklearn(rng):
    """Scores rounded to one decimal: many ties between positives and negatives."""
    y = rng.integers(0, 2, 2000)
    score = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.25, 2000), 0, 1), 1)
    assert ev.binary_roc_auc(y == 1, score) == pytest.approx(skm.roc_auc_score(y, score), rel=1e-12)
    assert math.isnan(ev.binary_roc_auc(np.ones(5, bool), np.arange(5)))  # one class only


def test_multiclass_metrics_equal_sklearn():
    X, y = load_wine(return_X_y=True)
    proba = WINE.predict(X)["probabilities"]
    # a model this good is perfect on its training data: score a noisy copy too
    rng = np.random.default_rng(5)
    noisy = proba + rng.uniform(0, 0.6, proba.shape)
    noisy /= noisy.sum(axis=1, keepdims=True)
    for p in (proba, noisy):
        assert ev.roc_auc(y, p, (0, 1, 2)) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), rel=1e-12)
        assert ev.log_loss(y, p, (0, 1, 2)) == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    report = ev.classification_report(y, noisy.argmax(axis=1), (0, 1, 2), noisy)
    np.testing.assert_array_equal(report.confusion, skm.confusion_matrix(y, noisy.argmax(axis=1)))
    assert report.accuracy == skm.accuracy_score(y, noisy.argmax(axis=1))


def test_float32_probabilities_clip_at_float32_epsilon():
    X, y = load_iris(return_X_y=True)
    proba = IRIS_FOREST.predict(X.astype(np.float32))["probabilities"]
    assert proba.dtype == np.float32
    assert ev.log_loss(y, proba, (0, 1, 2)) == pytest.approx(skm.log_loss(y, proba), rel=1e-6)
    confident = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert ev.log_loss([1, 0], confident, (0, 1)) == pytest.approx(skm.log_loss([1, 0], confident), rel=1e-6)


def test_string_labels():
    y = np.array(["cat", "dog", "dog", "emu", "cat"], dtype=object)
    pred = np.array(["cat", "dog", "cat", "emu", "emu"], dtype=object)
    labels, cm = ev.confusion_matrix(y, pred)
    assert labels == ("cat", "dog", "emu")
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=list(labels)))
    # a CSV gives numbers as text or floats; classes may be integers
    np.testing.assert_array_equal(ev.encode_labels(["2", "0", 1.0], (0, 1, 2)), [2, 0, 1])
    with pytest.raises(InvalidInput, match="label 3 is not one of the model's classes"):
        ev.encode_labels([0.0, 3.0], (0, 1, 2))
    with pytest.raises(InvalidInput, match="'bird' is not one of"):
        ev.encode_labels(["cat", "bird"], ("cat", "dog"))


def test_regression_metrics_equal_sklearn():
    X, y = load_diabetes(return_X_y=True)
    pred = DIABETES.predict(X)["value"]
    assert ev.rmse(y, pred) == pytest.approx(skm.root_mean_squared_error(y, pred), rel=1e-12)
    assert ev.mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert ev.r2(y, pred) == pytest.approx(skm.r2_score(y, pred), rel=1e-12)
    # several targets: the mean over targets, as scikit-learn's default
    Y = np.column_stack([y, np.sqrt(y)])
    P = np.column_stack([pred, np.sqrt(np.abs(pred)) + 0.5])
    assert ev.rmse(Y, P) == pytest.approx(skm.root_mean_squared_error(Y, P), rel=1e-12)
    assert ev.mae(Y, P) == pytest.approx(skm.mean_absolute_error(Y, P), rel=1e-12)
    assert ev.r2(Y, P) == pytest.approx(skm.r2_score(Y, P), rel=1e-12)
    # a constant target: 1 for a perfect fit, else 0 (scikit-learn's force_finite)
    const = np.full(10, 3.0)
    assert ev.r2(const, const) == skm.r2_score(const, const) == 1.0
    assert ev.r2(const, const + 1) == skm.r2_score(const, const + 1) == 0.0
    # one-column predictions of one target
    assert ev.rmse(y, pred[:, None]) == ev.rmse(y, pred)


def test_mismatched_lengths_are_invalid_input():
    with pytest.raises(InvalidInput, match="3 true values for 2 predictions"):
        ev.accuracy([1, 2, 3], [1, 2])
    with pytest.raises(InvalidInput):
        ev.rmse([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInput, match=r"probabilities have shape \(3, 2\), expected \(rows, 3\)"):
        ev.log_loss([0, 1, 2], np.full((3, 2), 0.5), (0, 1, 2))


def test_reports_print_what_a_data_scientist_expects():
    X, y = load_breast_cancer(return_X_y=True)
    out = BREAST.predict(X)
    text = ev.format_report(ev.classification_report(y, out["label"], (0, 1), out["probabilities"]))
    lines = text.splitlines()
    assert lines[0] == "rows       569"
    assert lines[1].startswith("accuracy   0.98")
    assert lines[2].startswith("ROC AUC    0.99")
    assert lines[3].startswith("log-loss   0.05")
    cm = skm.confusion_matrix(y, out["label"])
    assert lines[-2].split() == ["0", str(cm[0, 0]), str(cm[0, 1])]
    assert lines[-1].split() == ["1", str(cm[1, 0]), str(cm[1, 1])]
    no_proba = ev.format_report(ev.classification_report(y, out["label"], (0, 1)))
    assert "ROC AUC    n/a" in no_proba
    Xd, yd = load_diabetes(return_X_y=True)
    text = ev.format_report(ev.regression_report(yd, DIABETES.predict(Xd)["value"]))
    assert text.splitlines()[1].startswith("RMSE       53.")
    assert text.splitlines()[3].startswith("R²         0.51")


# ------------------------------------------------------------ parity check

def test_parity_of_exported_linear_models(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    result = scorewire.export_estimator(clf, tmp_path, "bc")
    out = scorewire.load_model(result.artifact).predict(X)
    parity = ev.reference_parity(clf, X, probabilities=out["probabilities"], labels=out["label"])
    # 0 labels differ below because no row is within 1e-6 of a tie (rounding is ~1e-13)
    assert decided_rows(clf.decision_function(X), 1e-6).all()
    assert parity.compared == "probabilities" and parity.rows == len(X)
    assert parity.max_abs_diff < 1e-12 and parity.label_mismatches == 0
    assert "max |Δ probabilities| =" in parity.format() and "0 label(s) differ" in parity.format()

    Xd, yd = load_diabetes(return_X_y=True)
    reg = LinearRegression().fit(Xd, yd)
    served = scorewire.load_model(scorewire.export_estimator(reg, tmp_path, "db").artifact).predict(Xd)["value"]
    parity = ev.reference_parity(reg, Xd, values=served)
    assert parity.compared == "value" and parity.max_abs_diff < 1e-9 and parity.label_mismatches is None


def test_parity_of_an_onnx_model_shows_float32_rounding(tmp_path):
    X, y = load_iris(return_X_y=True)
    gb = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(X, y)
    model = scorewire.load_model(scorewire.export_estimator(gb, tmp_path, "gb").artifact)
    out = model.predict(X.astype(np.float32))
    parity = ev.reference_parity(gb, X, probabilities=out["probabilities"], labels=out["label"])
    assert 0 < parity.max_abs_diff < 1e-3
    assert parity.label_mismatches is not None and parity.label_mismatches <= 2
    # a broken deployment is visible: probabilities of the wrong columns
    wrong = ev.reference_parity(gb, X, probabilities=out["probabilities"][:, ::-1])
    assert wrong.max_abs_diff > 0.5


def test_nan_for_undefined_metrics():
    assert math.isnan(ev.accuracy([], []))
    assert math.isnan(ev.roc_auc([1, 1], [0.2, 0.9], (0, 1)))

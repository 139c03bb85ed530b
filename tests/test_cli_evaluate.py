"""`scorewire evaluate` end to end: labelled CSV files scored through a real
server, metrics equal to scikit-learn's, and the deployment parity check."""

from __future__ import annotations

import re

import joblib
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import scorewire

from .parity import decided_rows
from .servers import server_process
from .test_cli import run


def write_csv(path, names, X, y) -> None:
    lines = [",".join([*names, "target"])]
    lines += [",".join([*(repr(float(v)) for v in x), str(t)]) for x, t in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def number(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}\s+(\S+)$", text, re.MULTILINE)
    assert m, text
    return float(m.group(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A repository of four exported models, served; the fitted estimators and their data."""
    tmp = tmp_path_factory.mktemp("evaluate")
    repo = tmp / "repo"
    bc = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in bc.feature_names]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(bc.data, bc.target)
    scorewire.export_estimator(clf, repo, "bc", reference=bc.data, reference_names=names)
    Xd, yd = load_diabetes(return_X_y=True)
    reg = LinearRegression().fit(Xd, yd)
    scorewire.export_estimator(reg, repo, "db")
    wine = load_wine()
    cultivar = np.array(["barolo", "grignolino", "barbera"], dtype=object)[wine.target]
    wclf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(wine.data, cultivar)
    scorewire.export_estimator(wclf, repo, "wine")
    Xi, yi = load_iris(return_X_y=True)
    gb = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(Xi, yi)
    scorewire.export_estimator(gb, repo, "gb")
    for name, est in (("bc", clf), ("db", reg), ("wine", wclf), ("gb", gb)):
        joblib.dump(est, tmp / f"{name}.joblib")
    # the breast-cancer file has its columns in another order than the model: matched by name
    order = np.random.default_rng(0).permutation(30)
    write_csv(tmp / "bc.csv", [names[j] for j in order], bc.data[:, order], bc.target)
    write_csv(tmp / "db.csv", [f"x{j}" for j in range(10)], Xd, yd)
    write_csv(tmp / "wine.csv", [f"x{j}" for j in range(13)], wine.data, cultivar)
    write_csv(tmp / "gb.csv", [f"x{j}" for j in range(4)], Xi, yi)
    with server_process("--repo", str(repo)) as server:
        yield server, tmp, {"bc": (clf, bc.data, bc.target), "db": (reg, Xd, yd), "wine": (wclf, wine.data, cultivar),
                            "gb": (gb, Xi, yi)}  # fmt: skip


def evaluate(served, name: str, *extra: str):
    server, tmp, _ = served
    return run("evaluate", "--model", name, "--data", str(tmp / f"{name}.csv"), "--target", "target",
               "--addr", server.addr, *extra)  # fmt: skip


def test_binary_classifier(served):
    clf, X, y = served[2]["bc"]
    r = evaluate(served, "bc", "--reference", str(served[1] / "bc.joblib"), "--batch-rows", "100")
    assert r.returncode == 0, r.stderr
    proba, pred = clf.predict_proba(X), clf.predict(X)
    out = r.stdout
    assert out.splitlines()[0].startswith("model bc version 1, 569 rows of")
    assert number(out, "accuracy") == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert number(out, "ROC AUC") == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=1e-6)
    assert number(out, "log-loss") == pytest.approx(skm.log_loss(y, proba), abs=1e-6)
    cm = skm.confusion_matrix(y, pred)
    *_, header, row0, row1, parity = out.splitlines()
    assert header.split() == ["0", "1"]
    assert row0.split() == ["0", str(cm[0, 0]), str(cm[0, 1])]
    assert row1.split() == ["1", str(cm[1, 0]), str(cm[1, 1])]
    # 0 labels differ because no row is within 1e-6 of a tie (rounding is ~1e-13)
    assert decided_rows(clf.decision_function(X), 1e-6).all()
    m = re.search(r"max \|Δ probabilities\| = (\S+) over 569 rows, 0 label\(s\) differ", parity)
    assert m and float(m.group(1)) < 1e-12, out


def test_regressor(served):
    reg, X, y = served[2]["db"]
    r = evaluate(served, "db", "--reference", str(served[1] / "db.joblib"))
    assert r.returncode == 0, r.stderr
    pred = reg.predict(X)
    assert number(r.stdout, "RMSE") == pytest.approx(skm.root_mean_squared_error(y, pred), rel=1e-5)
    assert number(r.stdout, "MAE") == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-5)
    assert number(r.stdout, "R²") == pytest.approx(skm.r2_score(y, pred), rel=1e-5)
    m = re.search(r"max \|Δ value\| = (\S+) over 442 rows", r.stdout)
    assert m and float(m.group(1)) < 1e-9, r.stdout


def test_string_classes(served):
    wclf, X, y = served[2]["wine"]
    r = evaluate(served, "wine")
    assert r.returncode == 0, r.stderr
    proba = wclf.predict_proba(X)
    assert number(r.stdout, "ROC AUC") == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-6)
    assert number(r.stdout, "log-loss") == pytest.approx(skm.log_loss(y, proba), abs=1e-6)
    assert r.stdout.splitlines()[-4].split() == ["barbera", "barolo", "grignolino"]  # the model's class order


def test_onnx_model_classes_from_its_graph(served):
    gb, X, y = served[2]["gb"]
    r = evaluate(served, "gb", "--reference", str(served[1] / "gb.joblib"))
    assert r.returncode == 0, r.stderr
    assert "does not state its classes" not in r.stderr  # its classifier node names them
    assert number(r.stdout, "log-loss") == pytest.approx(skm.log_loss(y, gb.predict_proba(X)), abs=1e-4)
    m = re.search(r"max \|Δ probabilities\| = (\S+) over 150 rows", r.stdout)
    assert m and float(m.group(1)) < 1e-3  # float32 inputs and arithmetic in the ONNX graph


def test_mistakes_are_reported(served):
    server, tmp, _ = served
    r = run("evaluate", "--model", "bc", "--data", str(tmp / "bc.csv"), "--target", "label", "--addr", server.addr)
    assert r.returncode == 1 and "no column 'label'" in r.stderr
    r = run("evaluate", "--model", "nope", "--data", str(tmp / "bc.csv"), "--target", "target", "--addr", server.addr)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    r = run("evaluate", "--model", "db", "--data", str(tmp / "bc.csv"), "--target", "target", "--addr", server.addr)
    assert r.returncode == 1 and "30 feature columns, the model takes 10" in r.stderr
    assert "unpickles" in run("evaluate", "--help").stdout.replace("\n", " ").lower()

"""The scorewire command end to end: export a joblib file, serve it, predict a
CSV through the server, check health. (That a big request does not stall small
ones is checked in tests/grpc/test_server.py, where a test can hold it in the model.)"""

from __future__ import annotations

import json
import subprocess

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import scorewire

from .parity import assert_labels_equal
from .servers import SCOREWIRE, server_process


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCOREWIRE, *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_export_serve_predict(tmp_path):
    bc = load_breast_cancer()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(bc.data, bc.target)
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(bc.data, bc.target)
    joblib.dump(clf, tmp_path / "clf.joblib")
    joblib.dump(forest, tmp_path / "forest.joblib")
    header = ",".join(str(n).replace(" ", "_") for n in bc.feature_names) + ",target"
    rows = "\n".join(",".join(repr(float(v)) for v in [*x, y]) for x, y in zip(bc.data, bc.target, strict=True))
    (tmp_path / "train.csv").write_text(header + "\n" + rows + "\n")
    repo = tmp_path / "repo"

    # 1. export: linear → model.json (+ reference statistics), forest → model.onnx
    r = run("export", str(tmp_path / "clf.joblib"), "--repo", str(repo), "--name", "bc",
            "--reference-data", str(tmp_path / "train.csv"), "--target", "target")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "native backend" in r.stdout
    ref = json.loads((repo / "bc" / "1" / "reference.json").read_text())
    assert ref["n_rows"] == 569 and len(ref["features"]) == 30
    assert ref["features"][0]["name"] == "mean_radius"
    assert abs(sum(ref["features"][0]["bin_fractions"]) - 1) < 1e-12
    r = run("export", str(tmp_path / "forest.joblib"), "--repo", str(repo), "--name", "bc")
    assert r.returncode == 0 and "onnxruntime backend" in r.stdout, r.stderr
    assert (repo / "bc" / "2" / "model.onnx").is_file()
    r = run("export", str(tmp_path / "forest.joblib"), "--repo", str(repo), "--name", "bad/name")
    assert r.returncode == 1 and "invalid model name" in r.stderr
    assert "unpickles" in run("export", "--help").stdout.replace("\n", " ").lower()

    # 2. models prints the signatures
    r = run("models", "--repo", str(repo))
    assert r.returncode == 0 and "bc: READY" in r.stdout and "input  input: float32 [-1, 30]" in r.stdout

    # 3. serve version 1 and 2; predict through the server, from CSV and JSON
    (repo / "bc" / "model.toml").write_text('[version_policy]\npolicy = "all"\n')
    with server_process("--repo", str(repo)) as server:
        csv_text = "\n".join(",".join(repr(float(v)) for v in x) for x in bc.data[:5])
        r = run("predict", "--model", "bc", "--version", "1", "--addr", server.addr, "-", stdin=csv_text)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert lines[0] == "label,probabilities_0,probabilities_1,decision_0"
        got = np.array([[float(v) for v in line.split(",")[1:3]] for line in lines[1:]])
        np.testing.assert_allclose(got, clf.predict_proba(bc.data[:5]), rtol=1e-12, atol=1e-15)
        (tmp_path / "rows.json").write_text(json.dumps(bc.data[:3].tolist()))
        r = run("predict", "--model", "bc", "--addr", server.addr, "--format", "json", str(tmp_path / "rows.json"))
        assert r.returncode == 0, r.stderr
        X3 = bc.data[:3].astype(np.float32)
        # onnxruntime's float32 sums of the trees against scikit-learn's float64 mean
        assert_labels_equal(json.loads(r.stdout)["label"], forest.predict(X3), forest.predict_proba(X3), 1e-6,
                            min_decided=1.0)  # fmt: skip

        # 4. health: 0 when SERVING, 1 otherwise
        assert run("health", "--addr", server.addr).returncode == 0
        assert run("health", "--addr", server.addr, "--service", "model/bc").returncode == 0
        r = run("health", "--addr", server.addr, "--service", "model/nope")
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr
        r = run("predict", "--model", "bc", "--addr", server.addr, "-", stdin="1,2,3\n")
        assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "30 features" in r.stderr
    assert run("health", "--addr", server.addr, "--timeout", "1").returncode == 1


def test_serve_rejects_bad_settings():
    r = run("serve", "--port", "70000")
    assert r.returncode == 2 and "port" in r.stderr
    r = subprocess.run([*SCOREWIRE, "serve"], capture_output=True, text=True, env={"SCOREWIRE_MAX_MESSAGE_MB": "lots", "PATH": ""}, timeout=60)
    assert r.returncode == 2 and "SCOREWIRE_MAX_MESSAGE_MB" in r.stderr


def test_python_api_matches_cli_model(tmp_path):
    iris = load_iris()
    clf = LogisticRegression(max_iter=3000).fit(iris.data, iris.target)
    result = scorewire.export_estimator(clf, tmp_path, "iris", reference=iris.data)
    model = scorewire.load_model(result.artifact)
    np.testing.assert_allclose(model.predict(iris.data)["probabilities"], clf.predict_proba(iris.data), rtol=1e-12, atol=1e-15)
    assert result.reference is not None and result.reference.name == "reference.json"



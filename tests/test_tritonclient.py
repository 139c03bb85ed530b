"""tritonclient[grpc], the Open Inference Protocol reference client, against a real server.

tritonclient's generated protobuf module and scorewire's stubs both register the
package ``inference`` in the global descriptor pool, so this process never imports
tritonclient. Instead:

1. a server starts (`scorewire serve`, bundled demo repository);
2. tests/clients/triton_client.py runs in its own process with a plan (the calls to
   make) and the input arrays, and prints what tritonclient saw as JSON;
3. each test below checks one part of that report: against
   ``scorewire.load_model`` in this process, which in turn is checked against
   scikit-learn's own predictions of the demo models re-trained exactly as
   examples/make_demo_repo.py trains them (1e-12 in float64, 1e-6 in float32).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import scorewire

from .parity import (
    ATOL_PROBA,
    RTOL,
    assert_decisions_close,
    assert_labels_equal,
    assert_proba_close,
    decision_bound,
    decision_scale,
)
from .servers import server_process

CLIENT = Path(__file__).parent / "clients" / "triton_client.py"
MODELS = {"bc": "breast-cancer", "iris": "iris-forest"}  # array name → the model it is for
ALL_OUTPUTS = {"bc": ["label", "probabilities", "decision"], "iris": ["label", "probabilities"]}
#: the outputs a model serves only when asked for them by name (native models' explanations)
BY_NAME = {"bc": ["contributions", "base_value"], "iris": []}
DATATYPE = {"int64": "INT64", "float64": "FP64", "float32": "FP32"}  # numpy → OIP

# request id → (array, contents, requested outputs); [] asks for every output
INFER = {
    "bc-raw": ("bc", "raw", []),
    "bc-raw-probabilities": ("bc", "raw", ["probabilities"]),
    "bc-typed": ("bc", "typed", ["decision", "label"]),
    "bc-raw-explained": ("bc", "raw", ["decision", "contributions", "base_value"]),
    "iris-raw": ("iris", "raw", []),
    "iris-typed": ("iris", "typed", ["probabilities"]),
}
# request id → (model, array, contents, the status tritonclient reports)
ERRORS = {
    "unknown-model": ("no-such-model", "bc", "raw", "StatusCode.NOT_FOUND"),
    "fp32-to-float64-model": ("breast-cancer", "bc_fp32", "raw", "StatusCode.INVALID_ARGUMENT"),
    "29-features": ("breast-cancer", "bc_29", "raw", "StatusCode.INVALID_ARGUMENT"),
    "typed-29-features": ("breast-cancer", "bc_29", "typed", "StatusCode.INVALID_ARGUMENT"),
    "fp64-to-float32-model": ("iris-forest", "iris_fp64", "raw", "StatusCode.INVALID_ARGUMENT"),
}
# Triton's classification extension: request id → (array, output, k)
CLASSIFY = {
    "iris-top2": ("iris", "probabilities", 2),
    "bc-top5": ("bc", "probabilities", 5),  # 2 classes: k is clamped
}
# one ModelStreamInfer stream: (request id, model, array); two bad requests in the middle
STREAM = [
    ("s1", "breast-cancer", "bc"),
    ("s2", "breast-cancer", "bc_29"),
    ("s3", "iris-forest", "iris"),
    ("s4", "no-such-model", "bc"),
    ("s5", "breast-cancer", "bc"),
]


@pytest.fixture(scope="module")
def arrays(rng) -> dict[str, np.ndarray]:
    """Training rows plus perturbed ones, in each model's own dtype, and bad variants."""
    bc = load_breast_cancer().data
    bc = np.vstack([bc, bc[:40] * rng.uniform(0.5, 1.5, size=bc[:40].shape)])
    iris = load_iris().data
    iris = np.vstack([iris, iris + rng.normal(0, 0.3, size=iris.shape)]).astype(np.float32)
    return {
        "bc": bc,
        "iris": iris,
        "bc_fp32": bc.astype(np.float32),
        "bc_29": np.ascontiguousarray(bc[:, :29]),
        "iris_fp64": iris.astype(np.float64),
    }


@pytest.fixture(scope="module")
def models() -> dict[str, scorewire.Model]:
    demo = scorewire.demo_repository()
    return {key: scorewire.load_model(demo / name / "1") for key, name in MODELS.items()}


@pytest.fixture(scope="module")
def report(arrays, tmp_path_factory) -> dict:
    """Start a server, run the tritonclient session against it, return its JSON report."""
    plan = {
        "models": ["breast-cancer", "iris-forest", "no-such-model"],
        "infer": [
            *(
                {"id": i, "model": MODELS[a], "input": a, "contents": c, "outputs": o}
                for i, (a, c, o) in INFER.items()
            ),
            *(
                {"id": i, "model": m, "input": a, "contents": c, "outputs": []}
                for i, (m, a, c, _) in ERRORS.items()
            ),
        ],
        "classify": [
            {"id": i, "model": MODELS[a], "input": a, "output": o, "class_count": k}
            for i, (a, o, k) in CLASSIFY.items()
        ],
        "stream": [{"id": i, "model": m, "input": a} for i, m, a in STREAM],
    }
    tmp = tmp_path_factory.mktemp("tritonclient")
    np.savez(tmp / "arrays.npz", **arrays)
    (tmp / "plan.json").write_text(json.dumps(plan))
    with server_process() as server:
        run = subprocess.run(
            [
                sys.executable,
                str(CLIENT),
                server.addr,
                str(tmp / "arrays.npz"),
                str(tmp / "plan.json"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, f"tritonclient session failed:\n{run.stderr}"
    return json.loads(run.stdout)


def assert_result_matches(
    result: dict, request_id: str, key: str, X: np.ndarray, model, outputs: list[str]
) -> None:
    """One decoded InferResult equals load_model's prediction of the same rows."""
    assert "error" not in result, result
    echoed = (result["model_name"], result["model_version"], result["id"])
    assert echoed == (MODELS[key], "1", request_id)
    assert sorted(result["outputs"]) == sorted(outputs or ALL_OUTPUTS[key])
    want = model.predict(X, outputs or None)
    for name, got in result["outputs"].items():
        expected = want[name]
        assert got["datatype"] == DATATYPE[expected.dtype.name]
        assert got["shape"] == list(expected.shape)
        if expected.dtype.kind == "i":
            np.testing.assert_array_equal(got["data"], expected)
        else:
            dt = expected.dtype.name
            np.testing.assert_allclose(got["data"], expected, rtol=RTOL[dt], atol=ATOL_PROBA[dt])


# --------------------------------------------------------------- the in-process truth
def test_in_process_models_match_scikit_learn(arrays, models):
    """The reference for everything below: load_model == sklearn, re-trained as the demo was."""
    bc = load_breast_cancer()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(bc.data, bc.target)
    X = arrays["bc"]
    got = models["bc"].predict(X)
    assert_proba_close(got["probabilities"], clf.predict_proba(X), "float64")
    spec = models["bc"].spec
    dec, scale = clf.decision_function(X), decision_scale(X, spec.coef, spec.intercept)
    assert_decisions_close(got["decision"], dec, scale, "float64")
    assert_labels_equal(got["label"], clf.predict(X), dec, decision_bound(dec, scale, "float64"))

    iris = load_iris()
    gb = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
    gb.fit(iris.data.astype(np.float32), iris.target)
    X = arrays["iris"]
    got = models["iris"].predict(X)
    want = gb.predict_proba(X)
    assert_proba_close(got["probabilities"], want, "float32")
    bound = RTOL["float32"] * want + ATOL_PROBA["float32"]  # what assert_proba_close allows
    assert_labels_equal(got["label"], gb.predict(X), want, bound)


# ------------------------------------------------------------------ health and metadata
def test_server_live_and_ready(report):
    assert report["server_live"] is True
    assert report["server_ready"] is True


def test_ready_models_are_ready(report):
    assert report["model_ready"]["breast-cancer"] is True
    assert report["model_ready"]["iris-forest"] is True


def test_unknown_model_is_not_ready(report):
    # as Triton (core src/server.cc, InferenceServer::ModelIsReady): an unknown model is
    # "not ready" with an OK status, so tritonclient's is_model_ready returns False
    assert report["model_ready"]["no-such-model"] is False


def test_server_metadata(report):
    meta = report["server_metadata"]
    assert meta["name"] == "scorewire"
    assert meta["version"] == scorewire.__version__
    assert "model_repository" in meta["extensions"]


@pytest.mark.parametrize("key", sorted(MODELS))
def test_model_metadata(report, models, key):
    sig = models[key].signature
    meta = report["model_metadata"][MODELS[key]]
    assert meta["name"] == MODELS[key]
    assert meta["versions"] == ["1"]
    assert meta["platform"] == {"bc": "scorewire_native", "iris": "onnxruntime_onnx"}[key]
    assert meta["inputs"] == [
        {"name": "input", "datatype": DATATYPE[sig.input.dtype], "shape": list(sig.input.shape)}
    ]
    assert meta["outputs"] == [
        {"name": o.name, "datatype": DATATYPE[o.dtype], "shape": list(o.shape)} for o in sig.outputs
    ]
    assert [o["name"] for o in meta["outputs"]] == ALL_OUTPUTS[key] + BY_NAME[key]
    expected_input = {"bc": ("FP64", [-1, 30]), "iris": ("FP32", [-1, 4])}[key]
    assert (meta["inputs"][0]["datatype"], meta["inputs"][0]["shape"]) == expected_input


def test_model_metadata_of_unknown_model(report):
    assert report["model_metadata"]["no-such-model"]["error"]["status"] == "StatusCode.NOT_FOUND"


# ------------------------------------------------------------------------------ infer
@pytest.mark.parametrize("request_id", sorted(INFER))
def test_infer_matches_in_process(report, arrays, models, request_id):
    key, _, outputs = INFER[request_id]
    assert_result_matches(
        report["infer"][request_id], request_id, key, arrays[key], models[key], outputs
    )


@pytest.mark.parametrize("request_id", sorted(ERRORS))
def test_infer_errors(report, request_id):
    error = report["infer"][request_id].get("error")
    assert error is not None, f"{request_id} succeeded"
    assert error["status"] == ERRORS[request_id][3]
    assert error["message"]


# ---------------------------------------------------------------------------- stream
def test_stream_answers_in_order_and_survives_bad_requests(report, arrays, models):
    """ModelStreamInfer: each bad request's error reaches the callback; the stream goes on."""
    responses = report["stream"]
    assert len(responses) == len(STREAM)
    for response, (request_id, model, array) in zip(responses, STREAM, strict=True):
        if model == "no-such-model":
            assert "no-such-model" in response["error"]["message"]
        elif array == "bc_29":
            assert "30" in response["error"]["message"]
        else:
            key = array
            assert_result_matches(response, request_id, key, arrays[key], models[key], [])


# ------------------------------------------------------------- Triton's extensions
def test_server_metadata_lists_the_triton_extensions(report):
    assert {"classification", "model_configuration", "statistics"} <= set(report["server_metadata"]["extensions"])


@pytest.mark.parametrize("key", sorted(MODELS))
def test_model_config(report, models, key):
    """get_model_config: Triton's dims (no batch dimension) and the class labels."""
    sig = models[key].signature
    config = report["model_config"][MODELS[key]]
    assert config["name"] == MODELS[key]
    assert config["backend"] == {"bc": "scorewire_native", "iris": "onnxruntime"}[key]
    assert int(config["max_batch_size"]) > 0
    [inp] = config["input"]
    assert (inp["name"], inp["data_type"], inp["dims"]) == ("input", "TYPE_" + DATATYPE[sig.input.dtype], [str(sig.n_features)])
    assert json.loads(config["parameters"]["classes"]["string_value"]) == [int(c) for c in sig.classes]
    assert ("dynamic_batching" in config) == (key == "iris")


def test_model_config_of_unknown_model(report):
    assert report["model_config"]["no-such-model"]["error"]["status"] == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("request_id", sorted(CLASSIFY))
def test_classification_reads_class_names(report, arrays, models, request_id):
    """InferRequestedOutput(class_count=k): the top k "value:index:label" per row."""
    key, output, k = CLASSIFY[request_id]
    got = report["classify"][request_id]
    proba = models[key].predict(arrays[key])[output]
    n = min(k, proba.shape[1])
    assert (got["datatype"], got["shape"]) == ("BYTES", [proba.shape[0], n])
    classes = [str(c) for c in models[key].signature.classes]
    for row, p in zip(got["data"], proba, strict=True):
        values = [float(s.split(":")[0]) for s in row]
        indices = [int(s.split(":")[1]) for s in row]
        assert [s.split(":")[2] for s in row] == [classes[i] for i in indices]
        np.testing.assert_allclose(values, p[indices], atol=1e-6)  # written with 6 decimals
        np.testing.assert_allclose(values, np.sort(p)[::-1][:n], atol=1e-6)  # the k largest, largest first


def test_inference_statistics(report, arrays):
    """get_inference_statistics after the session: every model's requests counted."""
    stats = {s["name"]: s for s in report["statistics"]["model_stats"]}
    assert set(stats) == {"breast-cancer", "diabetes", "iris-forest", "wine"}
    bc = stats["breast-cancer"]
    # to breast-cancer: 4 infer calls (one asking for explanations), 2 stream messages and
    # 1 classification succeeded;
    # the 3 bad infer calls and the bad stream message failed its input check
    assert int(bc["inference_stats"]["success"]["count"]) == 7
    assert int(bc["inference_stats"]["fail"]["count"]) == 4
    assert int(bc["inference_count"]) == 7 * len(arrays["bc"])  # every request carried every row
    assert int(bc["execution_count"]) == 7  # scored alone: the native kernel does not batch
    assert int(bc["inference_stats"]["compute_infer"]["ns"]) > 0
    assert [int(b["batch_size"]) for b in bc["batch_stats"]] == [len(arrays["bc"])]

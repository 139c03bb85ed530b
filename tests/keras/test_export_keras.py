"""``scorewire export`` of Keras models (``.keras`` and legacy ``.h5``) without Keras:
models trained by Keras itself in another process (tests/keras/train.py), exported,
and scored by the native kernel to Keras's own ``predict`` within 1e-6; networks that
are not linear refused in one line that points to ONNX; files export does not read
refused in one line that names what it reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import scorewire
from scorewire.cli import main as cli_main
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..parity import assert_labels_equal
from ..servers import ROOT, SCOREWIRE, InProcessServer

EXPORTED = ("seed", "normalized", "softmax", "regression", "functional", "multilabel")
REFUSED = {
    "hidden_relu": "applies the 'relu' activation",
    "two_inputs": "several inputs",
    "embedding": "(Embedding) is not one scorewire folds",
    "softmax_one_unit": "a softmax over one unit",
}
#: Keras computes in float32; so does the served model: 1e-6, as promised
TOL = 1e-6


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keras")
    r = subprocess.run([sys.executable, "-m", "tests.keras.train", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def predictions(trained) -> dict[str, np.ndarray]:
    with np.load(trained / "predictions.npz") as npz:
        return dict(npz)


def export(path: Path, repo: Path, name: str, *extra: str) -> Path:
    assert cli_main(["export", str(path), "--repo", str(repo), "--name", name, *extra]) == 0
    return repo / name / "1"


def keras_view(spec_task: str, link: str, out: dict[str, np.ndarray]) -> np.ndarray:
    """The served outputs as Keras shapes them: one probability for a sigmoid unit."""
    if spec_task == "regression":
        return out["value"]
    return out["probabilities"][:, 1:] if link == "logistic" else out["probabilities"]


@pytest.mark.parametrize("suffix", ["keras", "h5"])
@pytest.mark.parametrize("name", EXPORTED)
def test_parity_with_keras_predict(trained, predictions, tmp_path, name, suffix):
    vdir = export(trained / f"{name}.{suffix}", tmp_path, name)
    model = scorewire.load_model(vdir)
    assert model.backend == "native"
    X, want = predictions[f"{name}_X"], predictions[name]
    out = model.predict(X)
    spec = {"task": model.spec.task, "link": model.spec.link}
    got = keras_view(spec["task"], spec["link"], out)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    if spec["task"] == "classification":
        decisions = want - 0.5 if spec["link"] == "logistic" else want
        expected = (want[:, 0] > 0.5).astype(np.int64) if spec["link"] == "logistic" else want.argmax(axis=1)
        assert_labels_equal(out["label"], expected, decisions, TOL)


def test_kinds(trained, tmp_path):
    """What each network becomes: task, link, classes, and the input it declares."""
    kinds = {}
    for name in EXPORTED:
        spec = json.loads((export(trained / f"{name}.keras", tmp_path, name) / "model.json").read_text())
        kinds[name] = (spec["kind"], spec.get("classes"), np.shape(spec["coefficients"]), spec["dtype"])
    assert kinds == {
        "seed": ("logistic", [0, 1], (1, 4), "float32"),
        "normalized": ("logistic", [0, 1], (1, 4), "float32"),
        "softmax": ("multinomial", [0, 1, 2], (3, 4), "float32"),
        "regression": ("linear", None, (2, 4), "float32"),
        "functional": ("multinomial", [0, 1, 2], (3, 4), "float32"),
        "multilabel": ("sigmoid", [0, 1, 2], (3, 4), "float32"),
    }


def test_seed_example_end_to_end(trained, predictions, tmp_path):
    """The README's path: export with reference data (no Keras, TensorFlow or JAX in
    the exporting process), serve, predict through scorewire.Client."""
    X = predictions["seed_X"]
    csv = tmp_path / "train.csv"
    np.savetxt(csv, np.c_[X, np.arange(len(X)) % 2], delimiter=",", header="a,b,c,d,y", comments="")
    repo = tmp_path / "repo"
    blocked = "import sys; sys.modules.update(dict.fromkeys(('keras', 'tensorflow', 'jax', 'torch')))"
    r = subprocess.run(
        [sys.executable, "-c", f"{blocked}; from scorewire.cli import main; sys.exit(main(sys.argv[1:]))",
         "export", str(trained / "seed.keras"), "--repo", str(repo), "--name", "seed",
         "--reference-data", str(csv), "--target", "y"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "model.json (native backend)" in r.stdout and "reference.json" in r.stdout
    vdir = repo / "seed" / "1"
    assert json.loads((vdir / "model.json").read_text())["feature_names"] == ["a", "b", "c", "d"]
    assert json.loads((vdir / "reference.json").read_text())

    server = InProcessServer(Settings(port=0, drain_delay_s=0), ModelRepository(repo, n_threads=1))
    try:
        with scorewire.Client(server.addr) as client:
            out = client.predict("seed", X, outputs=["probabilities", "label"])
    finally:
        server.stop()
    np.testing.assert_allclose(out["probabilities"][:, 1:], predictions["seed"], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("suffix", ["keras", "h5"])
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_networks_that_are_not_linear_are_refused(trained, tmp_path, name, suffix):
    r = subprocess.run([*SCOREWIRE, "export", str(trained / f"{name}.{suffix}"), "--repo", str(tmp_path),
                        "--name", name], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert REFUSED[name] in lines[0]
    if name != "softmax_one_unit":
        assert "ONNX" in lines[0]
    assert not (tmp_path / name).exists()  # nothing half-written


def pickle_error_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.txt", "not a model")


@pytest.mark.parametrize(
    ("filename", "make", "says"),
    [
        ("model.keras", lambda p: p.write_bytes(b"this is not a keras file\n"), "not a Keras model file"),
        ("model.h5", lambda p: p.write_bytes(b"\x00" * 64), "not a Keras model file"),
        ("model.bin", lambda p: p.write_bytes(b"GGUF\x03\x00\x00\x00"), "not a file scorewire export reads"),
        ("model.pt", lambda p: p.write_text("{}"), "not a file scorewire export reads"),
        ("model.joblib", lambda p: p.write_bytes(b"\x80\x04\x95garbage"), "not a pickle scorewire export can read"),
        ("model.keras", pickle_error_zip, "a zip file, but not a Keras model"),
        ("model.keras", lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 40), "not a Keras model scorewire can read"),
    ],
)
def test_files_export_does_not_read_get_one_line(tmp_path, filename, make, says):
    path = tmp_path / filename
    make(path)
    r = subprocess.run([*SCOREWIRE, "export", str(path), "--repo", str(tmp_path / "repo"), "--name", "m"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert says in lines[0]
    if "not a file" in says or "not a pickle" in says:
        assert "scikit-learn" in lines[0] and ".keras" in lines[0] and "ONNX" in lines[0]


def test_weights_only_file_is_refused(trained, tmp_path):
    with pytest.raises(scorewire.ModelLoadError, match="weights only"):
        scorewire.export_keras(trained / "seed.weights.h5", tmp_path, "seed")


def write_keras2_h5(path: Path, kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> None:
    """A model file laid out as tf.keras 2 writes one (which cannot be installed beside
    Keras 3): a Functional chain Input → Normalization → Dense(sigmoid), the config as
    bytes with Keras 2's nested inbound nodes, weights named ``layer/var:0``."""
    d = kernel.shape[0]
    config = {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": [
                {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
                 "config": {"batch_input_shape": [None, d], "dtype": "float32", "name": "input_1"}},
                {"class_name": "Normalization", "name": "normalization", "inbound_nodes": [[["input_1", 0, 0, {}]]],
                 "config": {"name": "normalization", "axis": [-1], "mean": None, "variance": None}},
                {"class_name": "Dense", "name": "dense", "inbound_nodes": [[["normalization", 0, 0, {}]]],
                 "config": {"name": "dense", "units": 1, "activation": "sigmoid", "use_bias": True}},
            ],
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["dense", 0, 0]],
        },
    }  # fmt: skip
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config).encode()
        h5.attrs["keras_version"] = b"2.15.0"
        weights = h5.create_group("model_weights")
        weights.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer, named in (("normalization", {"mean": mean, "variance": variance, "count": np.float32(100)}),
                             ("dense", {"kernel": kernel, "bias": bias})):  # fmt: skip
            group = weights.create_group(layer)
            group.attrs["weight_names"] = np.array([f"{layer}/{k}:0".encode() for k in named])
            for k, v in named.items():
                group.create_dataset(f"{layer}/{k}:0", data=np.asarray(v, dtype=np.float32))


def test_legacy_keras2_h5(tmp_path):
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(5, 1)), np.array([0.3])
    mean, variance = rng.normal(size=5) * 10, rng.uniform(0.5, 20, size=5)
    kernel, bias, mean, variance = (np.asarray(a, dtype=np.float32) for a in (kernel, bias, mean, variance))
    write_keras2_h5(tmp_path / "old.h5", kernel, bias, mean, variance)
    result = scorewire.export_keras(tmp_path / "old.h5", tmp_path / "repo", "old")
    assert result.backend == "native"
    X = (rng.normal(size=(50, 5)) * 10).astype(np.float32)
    x = (X.astype(np.float64) - mean) / np.maximum(np.sqrt(variance.astype(np.float64)), 1e-7)
    want = 1 / (1 + np.exp(-(x @ kernel.astype(np.float64) + bias)))
    got = scorewire.load_model(result.artifact).predict(X, outputs=("probabilities",))["probabilities"]
    np.testing.assert_allclose(got[:, 1:], want, rtol=TOL, atol=TOL)


def test_the_readme_keras_example_runs_as_written(tmp_path):
    """The README's Keras block trains and saves model.keras; its command exports it."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- keras-example -->\n```python\n(.*?)```\n<!-- /keras-example -->", text, re.S)
    assert block, "the README lost its keras-example"
    r = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    command = re.search(r"\n(scorewire export model\.keras [^\n]*)\n", text)
    assert command, "the README lost its export command"
    r = subprocess.run([*SCOREWIRE, *command.group(1).split()[1:]], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = scorewire.load_model(tmp_path / "models" / "churn" / "1")
    assert (model.backend, model.signature.task, model.signature.n_features) == ("native", "classification", 4)

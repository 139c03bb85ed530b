"""Model formats and the repository: good artifacts load, bad ones fail with a
message naming the file, and never stop the other models from loading."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import scorewire
from scorewire import ModelRepository, State
from scorewire.errors import ModelLoadError, NotFound, Unavailable
from scorewire.formats.linear_json import dump_linear_json, load_linear_json, parse_linear_json
from scorewire.formats.model_toml import VersionPolicy, parse_model_config

from .parity import assert_labels_equal, decision_bound, decision_scale

GOOD = {
    "format": "scorewire.linear",
    "format_version": 1,
    "kind": "logistic",
    "coefficients": [[0.5, -1.25, 2.0]],
    "intercepts": [0.1],
    "classes": [0, 1],
    "feature_names": ["age", "income", "debt"],
    "dtype": "float64",
}


def test_model_json_readme_example_scores_as_documented():
    spec = parse_linear_json(json.dumps(GOOD))
    model = scorewire.NativeLinearModel(spec)
    x = np.array([[1.0, 2.0, 3.0]])
    z = 0.5 * 1 - 1.25 * 2 + 2.0 * 3 + 0.1
    out = model.predict(x)
    np.testing.assert_allclose(out["probabilities"][0, 1], 1 / (1 + np.exp(-z)), rtol=1e-15)
    assert out["label"].tolist() == [1]
    assert model.signature.feature_names == ("age", "income", "debt")


def test_model_json_round_trip_is_exact(tmp_path, rng):
    spec = scorewire.LinearSpec(
        "classification", "softmax", rng.normal(size=(3, 5)), rng.normal(size=3), classes=("a", "b", "c"), dtype="float32"
    )
    dump_linear_json(spec, tmp_path / "model.json")
    back = load_linear_json(tmp_path / "model.json")
    assert np.array_equal(back.coef, spec.coef) and np.array_equal(back.intercept, spec.intercept)
    assert (back.link, back.classes, back.dtype) == ("softmax", ("a", "b", "c"), "float32")


@pytest.mark.parametrize(
    "change, words",
    [
        ({"coefficients": [[1.0, 2.0], [3.0]]}, "same length"),
        ({"intercepts": [0.1, 0.2]}, "one intercept per coefficient row: expected 1, got 2"),
        ({"classes": [0, 1, 2]}, "2 classes"),
        ({"kind": "tree"}, "kind"),
        ({"coefficients": [[1.0, "x", 2.0]]}, "finite numbers"),
        ({"feature_names": ["a"]}, "feature names"),
        ({"dtype": "int8"}, "dtype"),
        ({"format": "other"}, "format"),
        ({"colour": "blue"}, "unknown field"),
        ({"classes": [0, "a"]}, "all integers or all strings"),
        ({"classes": [1, 1]}, "distinct"),
    ],
)
def test_model_json_errors_name_the_file(change, words, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ModelLoadError, match=words) as info:
        load_linear_json(path)
    assert str(path) in info.value.message


@pytest.mark.parametrize(
    "change, words",
    [
        ({"kind": ["logistic"]}, '"kind" must be one of'),
        ({"kind": {"a": 1}}, '"kind" must be one of'),
        ({"coefficients": [[1.0, 10**400, 2.0]]}, "finite numbers"),
        ({"intercepts": [-(10**309)]}, "finite numbers"),
        ({"classes": [0, 2**64]}, "integer class labels must fit in 64 bits"),
        ({"x" * 100_000: 1}, "unknown field(s) 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"),
        ({"outputs": {"p" * 1000: "r" * 1000}}, "has unknown role 'rrrr"),
    ],
)
def test_model_json_found_by_fuzzing(change, words, tmp_path):
    """Inputs tests/fuzz/fuzz_model_json.py found (kept in its corpus too): a kind
    that is not a string (TypeError: unhashable), integers past float64 (OverflowError)
    or past int64 as class labels (OverflowError when the model is built), a name from
    the file echoed whole in the message. Each is now a one-line load error."""
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ModelLoadError) as info:
        scorewire.load_model(path)
    message = info.value.message
    assert message.startswith(f"{path}: ") and words in message and len(message) < 300, message


@pytest.mark.parametrize("text", ["{", '{"coefficients": [NaN]}', "[1, 2]", '{"a": Infinity}', "[" * 100_000])
def test_model_json_not_json(text, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(text)
    with pytest.raises(ModelLoadError) as info:
        load_linear_json(path)
    assert str(path) in info.value.message


def _repo(tmp_path):
    root = tmp_path / "repo"
    demo = scorewire.demo_repository()
    shutil.copytree(demo / "wine", root / "wine")
    shutil.copytree(demo / "iris-forest", root / "iris-forest")
    onnx_bytes = (demo / "iris-forest" / "1" / "model.onnx").read_bytes()
    bad = {
        "truncated-onnx": ("model.onnx", onnx_bytes[: len(onnx_bytes) // 2]),
        "garbage-onnx": ("model.onnx", b"not a model at all"),
        "bad-json": ("model.json", b'{"format": "scorewire.linear", "format_version": 1, "kind": "linear", "coefficients": [[1, 2]], "intercepts": [1, 2, 3]}'),
        "entity-pmml": ("model.pmml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><PMML>&a;</PMML>'),
    }  # fmt: skip
    for name, (artifact, data) in bad.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / artifact).write_bytes(data)
    (root / "two-artifacts" / "1").mkdir(parents=True)
    shutil.copy(demo / "wine" / "1" / "model.json", root / "two-artifacts" / "1")
    shutil.copy(demo / "iris-forest" / "1" / "model.onnx", root / "two-artifacts" / "1")
    (root / "no-versions").mkdir()
    (root / "bad..name").mkdir()
    return root


def test_bad_artifacts_fail_alone(tmp_path):
    root = _repo(tmp_path)
    repo = ModelRepository(root, n_threads=1)
    repo.load_all()
    entries = {e.name: e for e in repo.entries()}
    assert "bad..name" not in entries  # never loaded: not a valid name
    assert entries["wine"].state is State.READY and entries["iris-forest"].state is State.READY
    for name, words in {
        "truncated-onnx": "not a valid ONNX model",
        "garbage-onnx": "not a valid ONNX model",
        "bad-json": "one intercept per coefficient row",
        "entity-pmml": "model.pmml",
        "two-artifacts": "more than one model artifact",
    }.items():
        mv = entries[name].versions[1]
        assert mv.state is State.FAILED, name
        assert words in mv.error and str(root / name) in mv.error, (name, mv.error)
        assert "Traceback" not in mv.error
    assert "no version directory" in entries["no-versions"].error
    with pytest.raises(Unavailable):
        repo.resolve("truncated-onnx")
    with pytest.raises(NotFound):
        repo.resolve("bad..name")
    with pytest.raises(NotFound):
        repo.load("../repo")


def test_version_policy_and_explicit_versions(tmp_path):
    root = tmp_path / "repo"
    for v in (1, 2, 3):
        shutil.copytree(scorewire.demo_repository() / "diabetes" / "1", root / "m" / str(v))
    repo = ModelRepository(root)
    repo.load_all()
    assert repo.entry("m").ready_versions() == [3]  # default: the newest
    (root / "m" / "model.toml").write_text('[version_policy]\npolicy = "all"\n')
    repo.load("m")
    assert repo.entry("m").ready_versions() == [1, 2, 3]
    assert repo.resolve("m").version == 3 and repo.resolve("m", 2).version == 2
    assert VersionPolicy("specific", versions=(1, 3)).select([1, 2, 3]) == [1, 3]
    assert VersionPolicy("latest", count=2).select([3, 1, 2]) == [2, 3]


@pytest.mark.parametrize(
    "text, words",
    [
        ("backend = 'gpu'", "backend"),
        ("nan_policy = 'zero'", "nan_policy"),
        ("max_batch_rows = 0", "max_batch_rows"),
        ("[version_policy]\npolicy = 'specific'", "versions"),
        ("= broken", "not valid TOML"),
        ("a = " + "[" * 100_000, "not valid TOML"),  # found by fuzz_model_toml: RecursionError
        ("x" * 10_000 + " = 1", "unknown key(s) 'xxxxxxxxx"),
        ("[batching]\n" + "y" * 10_000 + " = 1", "unknown [batching] key(s) 'yyyyyy"),
    ],
)
def test_model_toml_errors(text, words):
    with pytest.raises(ModelLoadError, match=re.escape(words)) as info:
        parse_model_config(text.encode(), "model.toml")
    assert len(info.value.message) < 300


def test_backend_can_be_forced(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from scorewire.export import onnx_from_sklearn

    iris = load_iris()
    clf = LogisticRegression(max_iter=2000).fit(iris.data, iris.target)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_from_sklearn(clf, 4))
    assert scorewire.load_model(path).backend == "native"
    assert scorewire.load_model(path, backend="onnxruntime").backend == "onnxruntime"
    forest = scorewire.demo_repository() / "iris-forest" / "1" / "model.onnx"
    with pytest.raises(ModelLoadError, match="not linear"):
        scorewire.load_model(forest, backend="native")
    X = iris.data.astype(np.float32)
    native = scorewire.load_model(path)
    a = native.predict(X)
    b = scorewire.load_model(path, backend="onnxruntime").predict(X)
    # onnxruntime sums in float32: labels compared where that cannot flip them
    z = X.astype(np.float64) @ native.spec.coef.T + native.spec.intercept
    bound = decision_bound(z, decision_scale(X, native.spec.coef, native.spec.intercept), "float32")
    assert_labels_equal(a["label"], b["label"], z, bound)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-5, atol=1e-6)


def test_only_canonical_version_directories_are_versions(tmp_path, caplog):
    """Triton's rule: "1" is version 1; "01", "001" and "0" are not versions (else
    "01" and "1" would both be version 1 and one would shadow the other). They are
    ignored, with a warning in the log and in the model's record (GetModel)."""
    demo = scorewire.demo_repository() / "diabetes" / "1"
    shutil.copytree(demo, tmp_path / "m" / "1")
    for name in ("01", "001", "0", "2a"):
        shutil.copytree(demo, tmp_path / "m" / name)
    (tmp_path / "m" / "01" / "model.json").write_text("not json")  # would fail if it were loaded
    repo = ModelRepository(tmp_path)
    with caplog.at_level("WARNING", logger="scorewire.repository"):
        entry = repo.load("m")
    assert sorted(entry.versions) == [1] and entry.state is State.READY
    assert [w.split("'")[1] for w in entry.warnings] == ["0", "001", "01"]
    assert all("without leading zeros" in w for w in entry.warnings)
    assert sum("ignored" in r.getMessage() for r in caplog.records) == 3


def test_get_model_lists_the_warnings(tmp_path):
    from scorewire.grpc._predict import entry_to_pb

    shutil.copytree(scorewire.demo_repository() / "diabetes" / "1", tmp_path / "m" / "1")
    (tmp_path / "m" / "01").mkdir()
    info = entry_to_pb(ModelRepository(tmp_path).load("m"))
    assert [v.version for v in info.versions] == [1]
    assert len(info.warnings) == 1 and "'01' ignored" in info.warnings[0]


def test_outputs_declare_their_roles(tmp_path):
    """Every output says what it carries — native models from their spec, ONNX
    graphs from their output types — and GetModel sends the roles, so monitoring
    and clients never guess from names."""
    from scorewire.grpc._predict import signature_to_pb

    demo = scorewire.demo_repository()
    roles = {n: {o.name: o.role for o in scorewire.load_model(demo / n / "1").signature.outputs} for n in ("breast-cancer", "diabetes", "iris-forest")}
    explained = {"contributions": "contributions", "base_value": "base_value"}  # native models only
    assert roles == {
        "breast-cancer": {"label": "label", "probabilities": "probabilities", "decision": "decision", **explained},
        "diabetes": {"value": "value", **explained},
        "iris-forest": {"label": "label", "probabilities": "probabilities"},
    }
    # renamed outputs keep their roles
    spec = json.loads((demo / "wine" / "1" / "model.json").read_text())
    spec["outputs"] = {"cls": "label", "p": "probabilities"}
    (tmp_path / "model.json").write_text(json.dumps(spec))
    sig = scorewire.load_model(tmp_path / "model.json").signature
    assert (sig.output_for("label"), sig.output_for("probabilities"), sig.output_for("value")) == ("cls", "p", None)
    assert [(o.name, o.role) for o in signature_to_pb(sig).outputs] == [
        ("cls", "label"), ("p", "probabilities"), ("contributions", "contributions"), ("base_value", "base_value"),
    ]  # fmt: skip

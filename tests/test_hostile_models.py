"""Model directories someone else wrote: they may not make the server read outside
the repository, allocate without bound, or run code. Each refusal fails that model
(or version) with a load error naming the path, and the other models still load.
The repositories, links, sparse files and pickles are made here, in tmp dirs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import scorewire
from scorewire import ModelRepository, State
from scorewire.errors import ModelLoadError, NotFound
from scorewire.formats.files import DEFAULT_MAX_MODEL_MB, ModelFiles
from scorewire.formats.onnx_graph import parse_onnx
from scorewire.formats.pmml import parse_pmml
from scorewire.formats.reference import MAX_BIN_EDGES
from scorewire.settings import Settings, settings_from

DEMO = scorewire.demo_repository()
WINE_JSON = DEMO / "wine" / "1" / "model.json"


def repo_with_wine(tmp_path: Path) -> Path:
    """A repository holding the demo's wine model, which must keep loading."""
    root = tmp_path / "repo"
    shutil.copytree(DEMO / "wine", root / "wine")
    return root


def load(root: Path, **kwargs) -> dict[str, scorewire.repository.ModelEntry]:
    repo = ModelRepository(root, n_threads=1, **kwargs)
    repo.load_all()
    entries = {e.name: e for e in repo.entries()}
    assert entries["wine"].state is State.READY  # the others load whatever the bad ones do
    return entries


def failed_with(entry, *words: str) -> str:
    assert entry.state is State.FAILED
    error = entry.load_error()
    for word in words:
        assert word in error, error
    return error


# ------------------------------------------------------------ reading outside
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid model outside the repository (what a link would lead to)."""
    d = tmp_path / "elsewhere"
    shutil.copytree(DEMO / "breast-cancer", d / "model")
    return d


def test_a_model_directory_linked_out_of_the_repository_is_refused(tmp_path, outside):
    root = repo_with_wine(tmp_path)
    (root / "evil").symlink_to(outside / "model", target_is_directory=True)
    entries = load(root)
    error = failed_with(entries["evil"], f"{root / 'evil'}: ", "leads out of the model repository")
    assert str(outside) not in error  # where the link points is not told


def test_a_version_directory_linked_out_is_refused(tmp_path, outside):
    root = repo_with_wine(tmp_path)
    (root / "m").mkdir()
    (root / "m" / "1").symlink_to(outside / "model" / "1", target_is_directory=True)
    entries = load(root)
    failed_with(entries["m"], f"{root / 'm' / '1'}: ", "leads out of the model repository")


@pytest.mark.parametrize("name", ["model.json", "reference.json"])
def test_a_file_linked_out_is_refused(tmp_path, outside, name):
    root = repo_with_wine(tmp_path)
    shutil.copytree(DEMO / "breast-cancer", root / "m")
    (root / "m" / "1" / name).unlink()
    (root / "m" / "1" / name).symlink_to(outside / "model" / "1" / name)
    entries = load(root)
    failed_with(entries["m"], f"{root / 'm' / '1' / name}: ", "leads out of the model repository")


def test_a_model_toml_linked_out_is_refused(tmp_path, outside):
    root = repo_with_wine(tmp_path)
    shutil.copytree(DEMO / "breast-cancer", root / "m")
    (root / "m" / "model.toml").unlink()
    (root / "m" / "model.toml").symlink_to(outside / "model" / "model.toml")
    entries = load(root)
    assert entries["m"].state is State.FAILED
    assert entries["m"].error.startswith(f"{root / 'm' / 'model.toml'}: leads out of the model repository")


def test_a_link_through_dotdot_out_of_the_repository_is_refused(tmp_path, outside):
    root = repo_with_wine(tmp_path)
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.json").symlink_to(Path("..", "..", "..", "elsewhere", "model", "1", "model.json"))
    entries = load(root)
    failed_with(entries["m"], "leads out of the model repository")


def test_links_that_stay_inside_the_repository_are_followed(tmp_path):
    """Allowed: an alias of a model, a version directory and an artifact that are
    links to places inside the repository (as a mounted ConfigMap or a "current"
    link makes them)."""
    root = repo_with_wine(tmp_path)
    (root / "alias").symlink_to("wine", target_is_directory=True)
    (root / ".store").mkdir()
    shutil.copy(WINE_JSON, root / ".store" / "wine.json")
    (root / "linked" / "2").mkdir(parents=True)
    (root / "linked" / "2" / "model.json").symlink_to(Path("..", "..", ".store", "wine.json"))
    (root / "linked" / "3").symlink_to("2", target_is_directory=True)
    entries = load(root)
    assert entries["alias"].state is State.READY
    assert entries["linked"].state is State.READY and entries["linked"].ready_versions() == [3]


def test_names_with_dotdot_are_not_models(tmp_path):
    root = repo_with_wine(tmp_path)
    repo = ModelRepository(root, n_threads=1)
    for name in ("..", "../repo", "a/../wine", "wine/..", "..wine"):
        with pytest.raises(NotFound):
            repo.load(name)


def test_a_fifo_in_a_files_place_does_not_block_the_load(tmp_path):
    root = repo_with_wine(tmp_path)
    shutil.copytree(DEMO / "diabetes", root / "m")
    (root / "m" / "model.toml").unlink()
    os.mkfifo(root / "m" / "model.toml")  # opening it for reading would wait for a writer
    entries = load(root)
    assert entries["m"].error == f"{root / 'm' / 'model.toml'}: cannot read (not a regular file)"


# ------------------------------------------------------------- sizes and counts
def sparse(path: Path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk (reading it would take the memory)."""
    with open(path, "wb") as fh:
        fh.truncate(size)


@pytest.mark.parametrize("name", ["model.json", "model.onnx", "model.pmml", "reference.json"])
def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path, name):
    root = repo_with_wine(tmp_path)
    (root / "m" / "1").mkdir(parents=True)
    if name == "reference.json":
        shutil.copy(DEMO / "diabetes" / "1" / "model.json", root / "m" / "1")
    sparse(root / "m" / "1" / name, 64 << 30)  # 64 GiB
    entries = load(root, max_model_mb=2)
    error = failed_with(entries["m"], f"{root / 'm' / '1' / name}: the file has 6.554e+04 MiB")
    assert error.endswith("over the limit of 2 MiB (--max-model-mb)")


def test_a_model_toml_over_the_limit_is_refused(tmp_path):
    root = repo_with_wine(tmp_path)
    shutil.copytree(DEMO / "diabetes", root / "m")
    sparse(root / "m" / "model.toml", 3 << 20)
    entries = load(root, max_model_mb=2)
    assert entries["m"].state is State.FAILED
    assert entries["m"].error == f"{root / 'm' / 'model.toml'}: the file has 3 MiB, over the limit of 2 MiB (--max-model-mb)"


def test_model_json_coefficients_are_counted_before_they_are_allocated(tmp_path):
    root = repo_with_wine(tmp_path)
    (root / "m" / "1").mkdir(parents=True)
    doc = {"format": "scorewire.linear", "format_version": 1, "kind": "linear", "coefficients": [[0] * 300_000]}
    (root / "m" / "1" / "model.json").write_text(json.dumps(doc))  # 900 kB: under the file limit
    entries = load(root, max_model_mb=2)
    failed_with(entries["m"], "300000 coefficients would take 2.289 MiB, over the limit of 2 MiB")


def pmml_document(n_tables: int, n_features: int) -> bytes:
    fields = "".join(f'<DataField name="f{j}" optype="continuous" dataType="double"/>' for j in range(n_features))
    mining = "".join(f'<MiningField name="f{j}"/>' for j in range(n_features))
    tables = "".join(f'<RegressionTable intercept="0" targetCategory="c{i}"/>' for i in range(n_tables))
    return (
        f'<PMML version="4.4"><DataDictionary>{fields}<DataField name="y" optype="categorical" dataType="string"/>'
        f'</DataDictionary><RegressionModel functionName="classification" normalizationMethod="softmax">'
        f'<MiningSchema>{mining}<MiningField name="y" usageType="target"/></MiningSchema>{tables}'
        "</RegressionModel></PMML>"
    ).encode()


def test_a_pmml_declaring_a_huge_coefficient_matrix_is_refused_before_allocating_it():
    """3 000 tables over 3 000 features: a 0.5 MB document, 72 MB of coefficients."""
    data = pmml_document(3000, 3000)
    assert len(data) < 1 << 20
    with pytest.raises(ModelLoadError) as info:
        parse_pmml(data, "m/1/model.pmml", ModelFiles(max_bytes=16 << 20))
    assert info.value.message == (
        "m/1/model.pmml: PMML RegressionModel: 3000 RegressionTables x 3000 features would take "
        "68.66 MiB, over the limit of 16 MiB (--max-model-mb)"
    )


def test_a_pmml_with_too_many_elements_is_refused_before_it_is_parsed():
    data = b'<PMML version="4.4">' + b"<Extension/>" * 20_000 + b"</PMML>"  # 240 kB
    with pytest.raises(ModelLoadError, match=r"20002 XML elements would take 1.221 MiB, over the limit of 1 MiB"):
        parse_pmml(data, "m/1/model.pmml", ModelFiles(max_bytes=1 << 20))


def onnx_identity(initializer: TensorProto) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Identity", [initializer.name], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None])], [initializer],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_an_onnx_tensor_declaring_a_huge_shape_is_refused_before_it_is_read():
    big = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])  # 4 TiB, no data
    data = onnx_identity(big).SerializeToString()
    with pytest.raises(ModelLoadError) as info:
        parse_onnx(data, "m/1/model.onnx")
    assert info.value.message == (
        f"m/1/model.onnx: the graph's tensors declare 4.194e+06 MiB, over the limit of {DEFAULT_MAX_MODEL_MB} MiB "
        "(--max-model-mb)"
    )


def test_onnx_tensors_are_counted_in_subgraphs_too():
    inner = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=TensorProto(name="v", data_type=TensorProto.DOUBLE, dims=[1 << 40]))],
        "then", [], [helper.make_tensor_value_info("c", TensorProto.DOUBLE, None)],
    )  # fmt: skip
    cond = numpy_helper.from_array(np.array(True), "cond")
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["Y"], then_branch=inner, else_branch=inner)], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None)], [cond],
    )  # fmt: skip
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(ModelLoadError, match=r"the graph's tensors declare 1.678e[+]07 MiB, over the limit"):
        parse_onnx(data, "m/1/model.onnx")


def test_onnx_initializers_over_the_limit_are_refused():
    weights = numpy_helper.from_array(np.zeros(300_000, dtype=np.float32), "W")  # 1.14 MiB
    data = onnx_identity(weights).SerializeToString()
    with pytest.raises(ModelLoadError, match=r"the graph's tensors declare 1.144 MiB, over the limit of 1 MiB"):
        parse_onnx(data, "m/1/model.onnx", ModelFiles(max_bytes=1 << 20))
    assert parse_onnx(data, "m/1/model.onnx", ModelFiles(max_bytes=2 << 20)).graph.initializer[0].name == "W"


def test_onnx_external_data_is_refused(tmp_path):
    """A tensor whose data lives in another file (which onnxruntime would read
    relative to the server's working directory) fails the load."""
    root = repo_with_wine(tmp_path)
    (root / "m" / "1").mkdir(parents=True)
    weights = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="secret")
    (root / "m" / "1" / "model.onnx").write_bytes(onnx_identity(weights).SerializeToString())
    entries = load(root)
    failed_with(entries["m"], "model.onnx: a tensor's data is stored in another file (external data is not supported)")


LOAD_PEAK = """
import resource, sys
import scorewire
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = scorewire.load_model(sys.argv[1], n_threads=1)
print(model.backend, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_loading_an_onnx_graph_does_not_evaluate_it(tmp_path):
    """A 200-byte graph whose ConstantOfShape makes a 12 000 x 12 000 float tensor
    (550 MiB): onnxruntime's constant folding evaluated it while the model loaded
    (a peak of 1.1 GiB; a larger shape, gigabytes more). Loading it now allocates
    nothing of that size (the peak is measured in a process of its own)."""
    import subprocess
    import sys

    shape = numpy_helper.from_array(np.array([12_000, 12_000], dtype=np.int64), "s")
    one = numpy_helper.from_array(np.array([1.0], dtype=np.float32))
    g = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["big"], value=one),
         helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
         helper.make_node("Add", ["X", "total"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])], [shape],
    )  # fmt: skip
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert path.stat().st_size < 300
    r = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    backend, peak_mib = r.stdout.split()
    assert backend == "onnxruntime" and int(peak_mib) < 200, r.stdout


def reference(features: list[dict]) -> str:
    return json.dumps({"format": "scorewire.reference", "format_version": 1, "n_rows": 10, "features": features})


def test_a_reference_with_too_many_bins_is_refused(tmp_path):
    root = repo_with_wine(tmp_path)
    shutil.copytree(DEMO / "wine", root / "m")
    edges = list(range(MAX_BIN_EDGES + 1))
    feature = {"bin_edges": edges, "bin_fractions": [1.0] + [0.0] * (len(edges))}
    (root / "m" / "1" / "reference.json").write_text(reference([feature] * 13))
    entries = load(root)
    failed_with(entries["m"], "reference.json: feature 0: 256 bin_edges, over the limit of 255")


def test_a_reference_whose_histograms_would_pass_the_limit_is_refused(tmp_path):
    """One feature of 1 000 with 255 bins makes the drift monitor pad all of them:
    a 40 kB file, 31 MiB of histograms."""
    root = repo_with_wine(tmp_path)
    (root / "m" / "1").mkdir(parents=True)
    doc = {"format": "scorewire.linear", "format_version": 1, "kind": "linear", "coefficients": [[0.0] * 1000]}
    (root / "m" / "1" / "model.json").write_text(json.dumps(doc))
    narrow = {"bin_edges": [], "bin_fractions": [1.0]}
    wide = {"bin_edges": list(range(255)), "bin_fractions": [1.0] + [0.0] * 255}
    (root / "m" / "1" / "reference.json").write_text(reference([wide] + [narrow] * 999))
    entries = load(root, max_model_mb=16)
    failed_with(entries["m"], "reference.json: the drift monitor's histograms of its bins would take 31.25 MiB, over the limit of 16 MiB")


def test_the_limit_is_a_setting_passed_to_the_repository(tmp_path):
    assert Settings().max_model_mb == DEFAULT_MAX_MODEL_MB
    assert settings_from(environ={"SCOREWIRE_MAX_MODEL_MB": "3"}).max_model_mb == 3
    with pytest.raises(ValueError, match="max_model_mb must be positive"):
        Settings(max_model_mb=0).validate()
    from scorewire.grpc.server import Server

    server = Server(Settings(port=0, repo=tmp_path, max_model_mb=3))
    assert server.repository.files == ModelFiles(max_bytes=3 << 20, root=tmp_path)


# ------------------------------------------------------------------ no code
class RunsCode:
    """Unpickling this touches ``marker``: a stand-in for any code a pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every way to unpickle fails the test while it runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    import joblib

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (joblib, "load")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(np, "load", refuse)


def test_pickles_are_never_loaded(tmp_path, no_unpickling):
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(RunsCode(marker))
    root = repo_with_wine(tmp_path)
    for name in ("model.pkl", "model.joblib", "model.pickle", "model.npy"):
        (root / name.replace(".", "-") / "1").mkdir(parents=True)
        (root / name.replace(".", "-") / "1" / name).write_bytes(payload)
    for artifact in ("model.json", "model.onnx", "model.pmml"):  # a pickle under an artifact's name
        (root / f"as-{artifact}" / "1").mkdir(parents=True)
        (root / f"as-{artifact}" / "1" / artifact).write_bytes(payload)
    entries = load(root)
    for name in ("model-pkl", "model-joblib", "model-pickle", "model-npy"):
        failed_with(entries[name], "no model artifact (expected one of model.json, model.onnx, model.pmml)")
    failed_with(entries["as-model.json"], "model.json: not valid JSON")
    failed_with(entries["as-model.onnx"], "model.onnx: not a valid ONNX model")
    failed_with(entries["as-model.pmml"], "model.pmml: PMML RegressionModel: malformed XML")
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"py/object": "os.system"}, "unknown field"),
        ({"__reduce__": ["os.system", ["true"]]}, "unknown field"),
        ({"coefficients": {"py/reduce": [{"py/function": "os.system"}, ["true"]]}}, '"coefficients" must be a list'),
        ({"kind": {"py/object": "os.system"}}, '"kind" must be one of'),
        ({"classes": [{"py/object": "os.system"}, 1]}, '"classes" must be all integers or all strings'),
        ({"dtype": "O"}, '"dtype" must be "float32" or "float64"'),
    ],
)
def test_model_json_fields_cannot_smuggle_objects(tmp_path, no_unpickling, change, words):
    doc = json.loads(WINE_JSON.read_text()) | change
    root = repo_with_wine(tmp_path)
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.json").write_text(json.dumps(doc))
    entries = load(root)
    failed_with(entries["m"], f"{root / 'm' / '1' / 'model.json'}: ", words)

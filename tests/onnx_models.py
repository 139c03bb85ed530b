"""ONNX graphs that are not tabular, built with onnx.helper, for the onnxruntime
path's tests; and requests for them (what every client sends).

- ``recommender``: float32 dense features [N, 3] and int64 ids [N, 2] → Gather (an
  embedding of 50 rows) → Flatten → Concat → Gemm → Sigmoid → ``score`` [N, 1]
- ``image``: uint8 pixels [N, 1, 8, 8] → Cast → Conv → Relu → MaxPool → Flatten →
  Gemm → Softmax → ``probabilities`` [N, 3]
- ``strings``: a string ``city`` [N] → ai.onnx.ml CategoryMapper → int64 ``code`` [N],
  and ai.onnx.ml LabelEncoder → float ``weight`` [N]
- ``outputs``: float32 ``x`` [N, 4] → ``total`` float32 [N], ``index`` int64 [N],
  ``positive`` bool [N, 4] and ``name`` string [N] (outputs of four dtypes)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

OPSETS = [h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 3)]
CITIES = ["paris", "lyon", "nantes", "lille"]
NAMES = ["north", "east", "south", "west"]


def _model(nodes, name, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = h.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = h.make_model(graph, opset_imports=OPSETS)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def recommender() -> onnx.ModelProto:
    rng = np.random.default_rng(15)
    emb = rng.normal(size=(50, 4)).astype(np.float32)
    W = rng.normal(size=(3 + 2 * 4, 1)).astype(np.float32)
    nodes = [
        h.make_node("Gather", ["emb", "ids"], ["e"], name="embedding"),  # [N, 2, 4]
        h.make_node("Flatten", ["e"], ["ef"], axis=1),  # [N, 8]
        h.make_node("Concat", ["dense", "ef"], ["x"], axis=1),
        h.make_node("Gemm", ["x", "W", "b"], ["z"]),
        h.make_node("Sigmoid", ["z"], ["score"]),
    ]
    return _model(
        nodes, "recommender",
        [h.make_tensor_value_info("dense", T.FLOAT, ["N", 3]), h.make_tensor_value_info("ids", T.INT64, ["N", 2])],
        [h.make_tensor_value_info("score", T.FLOAT, ["N", 1])],
        [nh.from_array(emb, "emb"), nh.from_array(W, "W"), nh.from_array(np.array([0.1], np.float32), "b")],
    )  # fmt: skip


def image() -> onnx.ModelProto:
    rng = np.random.default_rng(16)
    conv = (rng.normal(size=(2, 1, 3, 3)) / 64).astype(np.float32)
    W = (rng.normal(size=(2 * 4 * 4, 3)) / 8).astype(np.float32)
    nodes = [
        h.make_node("Cast", ["pixels"], ["xf"], to=T.FLOAT),
        h.make_node("Conv", ["xf", "conv"], ["c"], pads=[1, 1, 1, 1]),  # [N, 2, 8, 8]
        h.make_node("Relu", ["c"], ["r"]),
        h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),  # [N, 2, 4, 4]
        h.make_node("Flatten", ["p"], ["f"], axis=1),
        h.make_node("Gemm", ["f", "W"], ["z"]),
        h.make_node("Softmax", ["z"], ["probabilities"], axis=1),
    ]
    return _model(
        nodes, "image",
        [h.make_tensor_value_info("pixels", T.UINT8, ["N", 1, 8, 8])],
        [h.make_tensor_value_info("probabilities", T.FLOAT, ["N", 3])],
        [nh.from_array(conv, "conv"), nh.from_array(W, "W")],
    )  # fmt: skip


def strings() -> onnx.ModelProto:
    nodes = [
        h.make_node("CategoryMapper", ["city"], ["code"], domain="ai.onnx.ml",
                    cats_strings=CITIES, cats_int64s=list(range(len(CITIES))), default_int64=-1),
        h.make_node("LabelEncoder", ["city"], ["weight"], domain="ai.onnx.ml",
                    keys_strings=CITIES, values_floats=[0.5, 1.5, 2.5, 3.5], default_float=-1.0),
    ]  # fmt: skip
    return _model(
        nodes, "strings",
        [h.make_tensor_value_info("city", T.STRING, ["N"])],
        [h.make_tensor_value_info("code", T.INT64, ["N"]), h.make_tensor_value_info("weight", T.FLOAT, ["N"])],
    )  # fmt: skip


def outputs() -> onnx.ModelProto:
    nodes = [
        h.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
        h.make_node("ArgMax", ["x"], ["index"], axis=1, keepdims=0),
        h.make_node("Greater", ["x", "zero"], ["positive"]),
        h.make_node("CategoryMapper", ["index"], ["name"], domain="ai.onnx.ml",
                    cats_strings=NAMES, cats_int64s=list(range(len(NAMES))), default_string="none"),
    ]  # fmt: skip
    return _model(
        nodes, "outputs",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("total", T.FLOAT, ["N"]), h.make_tensor_value_info("index", T.INT64, ["N"]),
         h.make_tensor_value_info("positive", T.BOOL, ["N", 4]), h.make_tensor_value_info("name", T.STRING, ["N"])],
        [nh.from_array(np.array([1], np.int64), "axes"), nh.from_array(np.array(0, np.float32), "zero")],
    )  # fmt: skip


MODELS = {"recommender": recommender, "image": image, "strings": strings, "outputs": outputs}


def requests(rows: int = 3, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """One request for each model: its inputs by name."""
    rng = np.random.default_rng(seed)
    return {
        "recommender": {
            "dense": rng.normal(size=(rows, 3)).astype(np.float32),
            "ids": rng.integers(0, 50, size=(rows, 2)).astype(np.int64),
        },
        "image": {"pixels": rng.integers(0, 256, size=(rows, 1, 8, 8)).astype(np.uint8)},
        "strings": {"city": np.array([CITIES[i % 4] if i % 5 != 4 else "rome" for i in range(rows)], dtype=object)},
        "outputs": {"x": rng.normal(size=(rows, 4)).astype(np.float32)},
    }


def write_repository(root: Path, batching: bool = True) -> Path:
    """A model repository holding the four models (version 1 each)."""
    for name, build in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(build().SerializeToString())
        if not batching:
            (root / name / "model.toml").write_text("[batching]\nenabled = false\n")
    return root


def expected(name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What onnxruntime gives, run directly."""
    import onnxruntime as ort

    session = ort.InferenceSession(MODELS[name]().SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))

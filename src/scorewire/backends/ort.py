"""Models that run on onnxruntime: everything the graph inspector does not compile."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import InvalidInput, ModelLoadError
from ..types import EXPLANATIONS, Signature, TensorSpec

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(string)": "object",
    "tensor(bool)": "bool",
}


def strip_zipmap(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each ZipMap that feeds a graph output by its input tensor.

    A ZipMap turns a probability tensor into a sequence of maps, which no tensor
    protocol can carry. Its output name is kept, so the model's outputs read the same
    whether scored natively or on onnxruntime: ``probabilities`` (N, classes).
    """
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap" and n.output[0] in outputs]
    if not zipmaps:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for node in list(graph.node):
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        src, dst = node.input[0], node.output[0]
        graph.node.remove(node)
        # rename the ZipMap's input to its output name wherever it is produced/used
        for other in graph.node:
            for i, name in enumerate(other.output):
                if name == src:
                    other.output[i] = dst
            for i, name in enumerate(other.input):
                if name == src:
                    other.input[i] = dst
        n_classes = max(
            (len(a.ints) or len(a.strings) for a in node.attribute if a.name.startswith("classlabels")),
            default=0,
        )
        for out in graph.output:
            if out.name == dst:
                # ZipMap takes tensor(float) only (ai.onnx.ml spec)
                out.type.CopyFrom(
                    onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [None, n_classes or None])
                )
    return model


def class_labels(model: onnx.ModelProto) -> tuple[object, ...] | None:
    """The class labels of an ONNX-ML classifier, in probability-column order: the
    ``classlabels_*`` attribute of its classifier (and ZipMap) nodes, when they all
    agree; else the constant a label is picked from by the ArgMax of the
    probabilities (``ArrayFeatureExtractor(classes, ArgMax(p))``, what skl2onnx
    writes for an MLP, say); None when the graph names none, or several different sets."""
    found: set[tuple[object, ...]] = set()
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml":
            continue
        for a in node.attribute:
            if a.name in ("classlabels_ints", "classlabels_int64s") and a.ints:
                found.add(tuple(int(v) for v in a.ints))
            elif a.name == "classlabels_strings" and a.strings:
                found.add(tuple(v.decode("utf-8", "replace") for v in a.strings))
    if not found:
        found = _picked_labels(model)
    return found.pop() if len(found) == 1 else None


def _picked_labels(model: onnx.ModelProto) -> set[tuple[object, ...]]:
    """The 1-D integer or string constants that an ``ArrayFeatureExtractor`` indexes
    with the output of an ``ArgMax``."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    argmax = {o for n in graph.node if n.op_type == "ArgMax" for o in n.output}
    found: set[tuple[object, ...]] = set()
    for node in graph.node:
        if node.op_type != "ArrayFeatureExtractor" or len(node.input) != 2 or node.input[1] not in argmax:
            continue
        t = constants.get(node.input[0])
        if t is None or len(t.dims) != 1:
            continue
        if t.data_type == onnx.TensorProto.STRING:
            found.add(tuple(v.decode("utf-8", "replace") for v in t.string_data))
        elif t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            found.add(tuple(int(v) for v in onnx.numpy_helper.to_array(t).tolist()))
    return found


#: graph optimisers onnxruntime does not run when it loads a model. Constant folding
#: evaluates, at load time, every node whose inputs are constants: a 200-byte graph
#: (a ConstantOfShape of a large constant shape) made loading allocate gigabytes,
#: whatever --max-model-mb says. A tabular model's graph has little to fold.
DISABLED_OPTIMIZERS = ["ConstantFolding"]


def session_options(n_threads: int) -> ort.SessionOptions:
    """onnxruntime options for a server: all graph optimisations (but
    DISABLED_OPTIMIZERS, given to the session), sequential
    execution, ``n_threads`` intra-op threads that sleep instead of spinning (a
    server's requests arrive in bursts; spinning burns the cores other requests need).
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(1, n_threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def with_roles(outputs: list[TensorSpec], task: str) -> tuple[TensorSpec, ...]:
    """A graph's outputs with their roles, read off their types (a graph states none):
    the first 1-D integer or string output is the label; a classifier's first 2-D
    float output the probabilities; a regressor's first float output the value."""
    taken: set[str] = set()
    out = []
    for o in outputs:
        role = ""
        if len(o.shape) == 1 and o.dtype in ("int64", "int32", "object"):
            role = "label"
        elif o.dtype in ("float32", "float64"):
            if task == "classification" and len(o.shape) == 2:
                role = "probabilities"
            elif task == "regression":
                role = "value"
        if role in taken:
            role = ""
        taken.add(role)
        out.append(dataclasses.replace(o, role=role))
    return tuple(out)


class OnnxModel:
    """An ONNX graph with one 2-D float input, scored by onnxruntime."""

    backend = "onnxruntime"

    def __init__(
        self, model: onnx.ModelProto, n_threads: int = 1, source: str = "model.onnx", native_reason: str = ""
    ) -> None:
        #: why the graph inspector did not compile it natively
        self.native_reason = native_reason
        model = strip_zipmap(model)
        try:
            self._session = ort.InferenceSession(
                model.SerializeToString(),
                sess_options=session_options(n_threads),
                providers=["CPUExecutionProvider"],
                disabled_optimizers=DISABLED_OPTIMIZERS,
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"{source}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{source}: scorewire serves models with one 2-D input, this one has {len(inputs)}")
        inp = inputs[0]
        dtype = _ONNX_DTYPES.get(inp.type)
        if dtype not in ("float32", "float64"):
            raise ModelLoadError(f"{source}: the input must be float or double, got {inp.type}")
        shape = list(inp.shape)
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise ModelLoadError(f"{source}: the input must have shape (N, features) with a fixed feature count")
        self._input_name = inp.name
        self._dtype = np.dtype(dtype)
        self._d = int(shape[1])
        outs = []
        for o in self._session.get_outputs():
            odt = _ONNX_DTYPES.get(o.type)
            if odt is None:
                continue  # not a tensor (e.g. a sequence): not served
            oshape = tuple(-1 if not isinstance(s, int) else int(s) for s in (o.shape or [-1]))
            outs.append(TensorSpec(o.name, odt, oshape))
        if not outs:
            raise ModelLoadError(f"{source}: the graph has no tensor output")
        task = "classification" if any(o.dtype in ("int64", "object") for o in outs) else "regression"
        self.signature = Signature(
            input=TensorSpec(inp.name, dtype, (-1, self._d)),
            outputs=with_roles(outs, task),
            task=task,
            classes=class_labels(model) if task == "classification" else None,
        )
        self._all = tuple(o.name for o in outs)

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]:
        if not requested:
            return self._all
        names = tuple(requested)
        for name in names:
            if name not in self._all:
                if name in EXPLANATIONS:
                    raise InvalidInput(
                        f"output {name!r}: explanations are available for native models; this one runs on onnxruntime"
                    )
                raise InvalidInput(f"unknown output {name[:64]!r}; this model gives {list(self._all)}")
        return names

    def predict(self, X: np.ndarray, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        names = self.output_names(outputs)
        X = np.asarray(X)
        if X.ndim != 2:
            raise InvalidInput(f"input must be a 2-D (rows, features) array, got {X.ndim} dimensions")
        if X.shape[1] != self._d:
            raise InvalidInput(f"expected {self._d} features, got {X.shape[1]}")
        if X.dtype.kind != "f":
            raise InvalidInput(f"input dtype must be float32 or float64, got {X.dtype}")
        if X.dtype != self._dtype or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=self._dtype)
        if X.shape[0] == 0:
            return {n: self._empty(n) for n in names}
        values = self._session.run(list(names), {self._input_name: X})
        return dict(zip(names, values, strict=True))

    def _empty(self, name: str) -> np.ndarray:
        spec = next(o for o in self.signature.outputs if o.name == name)
        shape = tuple(0 if i == 0 else max(s, 0) for i, s in enumerate(spec.shape))
        return np.empty(shape, dtype=np.dtype(spec.dtype))

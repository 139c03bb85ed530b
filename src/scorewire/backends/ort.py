"""Models that run on onnxruntime: everything the graph inspector does not compile."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from ..errors import InvalidInput, ModelLoadError
from ..types import Inputs, Signature, TensorSpec, requested_outputs

#: onnxruntime's tensor types → numpy dtype names (scorewire.types.DTYPES)
_ONNX_DTYPES = {
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}
#: the node an onnxruntime run error names: "... while running Gather node. Name:'g' ..."
_FAILED_NODE = re.compile(r"while running (\w+) node\. Name:'([^']{0,64})")
#: what onnxruntime raises when a node fails on the values it is given
_RUN_ERRORS = (ort_errors.InvalidArgument, ort_errors.Fail, ort_errors.RuntimeException)
#: a run's own log stays quiet: onnxruntime would log a failing node's message, values and all
_RUN_OPTIONS = ort.RunOptions()
_RUN_OPTIONS.log_severity_level = 4


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
    """A graph's outputs with their roles, read off their types (a graph states none;
    only outputs of rank 1 or 2 have one): the first 1-D integer or string output is the label; a classifier's first 2-D
    float output the probabilities; a regressor's first float output the value."""
    taken: set[str] = set()
    out = []
    for o in outputs:
        role = ""
        if len(o.shape) not in (1, 2):
            pass  # roles are per row: [rows] or [rows, k]
        elif len(o.shape) == 1 and o.dtype in ("int64", "int32", "object"):
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


def _spec(arg: ort.NodeArg, source: str, what: str) -> TensorSpec:
    """An input or output of the session as a TensorSpec: -1 for each symbolic dim,
    whose name (if any) goes to ``dim_names``."""
    dtype = _ONNX_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(
            f"{source}: {what} {arg.name[:64]!r} has type {arg.type[:64]}, not a tensor type scorewire serves"
        )
    dims = arg.shape if arg.shape is not None else [None]
    shape = tuple(int(d) if isinstance(d, int) and d >= 0 else -1 for d in dims)
    names = tuple(d if isinstance(d, str) else "" for d in dims)
    return TensorSpec(arg.name, dtype, shape, dim_names=names if any(names) else ())


def _batched(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> bool:
    """Whether requests may be merged along the first dim: every input's and every
    output's first dim is symbolic, and those that are named have one name (the
    graph declares them the same dim, or leaves it to onnxruntime to infer)."""
    names = set()
    for spec in (*inputs, *outputs):
        if not spec.shape or spec.shape[0] >= 0:
            return False
        if spec.dim_names and spec.dim_names[0]:
            names.add(spec.dim_names[0])
    # NOTE: onnxruntime names the dims it infers "unk__<n>": not a declaration
    return len({n for n in names if not n.startswith("unk__")}) <= 1


class OnnxModel:
    """An ONNX graph scored by onnxruntime: given one matrix when its signature is
    tabular, else its inputs by name (checked first: see scorewire.tensors)."""

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
        inputs = [_spec(i, source, "input") for i in self._session.get_inputs()]
        if not inputs:
            raise ModelLoadError(f"{source}: the graph has no input")
        outs = [_spec(o, source, "output") for o in self._session.get_outputs() if o.type in _ONNX_DTYPES]
        if not outs:  # what is not a tensor (e.g. a sequence) is not served
            raise ModelLoadError(f"{source}: the graph has no tensor output")
        task = "classification" if any(o.dtype in ("int64", "object") for o in outs) else "regression"
        signature = Signature(
            input=inputs[0],
            outputs=with_roles(outs, task),
            task=task,
            classes=class_labels(model) if task == "classification" else None,
            inputs=tuple(inputs),
            batched=_batched(inputs, outs),
        )
        if signature.tabular:  # as the kernel's signature reads: no dim names
            first = dataclasses.replace(inputs[0], dim_names=())
            signature = dataclasses.replace(signature, input=first, inputs=(first,), batched=True)
        self.signature = signature
        self._input_name = inputs[0].name
        self._dtype = np.dtype(inputs[0].dtype)
        #: a tabular model's feature count (-1: the model takes its inputs by name)
        self._d = inputs[0].shape[1] if signature.tabular else -1
        self._all = tuple(o.name for o in outs)

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]:
        return requested_outputs(requested, self._all, self._all, "runs on onnxruntime")

    def predict(self, X: Inputs, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        names = self.output_names(outputs)
        if not isinstance(X, np.ndarray):
            return self._run_named(X, names)
        if self._d < 0:
            raise InvalidInput(f"this model takes its inputs by name: {[i.name for i in self.signature.inputs]}")
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
        return self._run(names, {self._input_name: X})

    def _run_named(self, inputs: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Score inputs given by name, as :class:`~scorewire.tensors.InputSchema`
        checked them (the service does, before it batches them; only the names are
        checked again here, for a direct caller)."""
        sig = self.signature
        if len(inputs) != len(sig.inputs) or any(i.name not in inputs for i in sig.inputs):
            raise InvalidInput(f"this model takes the inputs {[i.name for i in sig.inputs]}")
        if sig.batched and next(iter(inputs.values())).shape[0] == 0:
            return {n: self._empty(n) for n in names}
        return self._run(names, dict(inputs))

    def _run(self, names: tuple[str, ...], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(list(names), feed, _RUN_OPTIONS)
        except _RUN_ERRORS as exc:
            # the inputs were checked against the signature: what fails now fails on
            # their values (an id beyond an embedding's rows, a size a Reshape
            # refuses). Named by its node, never in onnxruntime's words (they echo values)
            found = _FAILED_NODE.search(str(exc))
            where = ""
            if found:
                where = f" ({found.group(1)} node {found.group(2)!r})" if found.group(2) else f" (a {found.group(1)} node)"
            raise InvalidInput(f"the model could not score these inputs: an operator refused their values{where}") from None
        return dict(zip(names, values, strict=True))

    def _empty(self, name: str) -> np.ndarray:
        """An output for no rows: 0 rows, its other free dims 0 too."""
        spec = next(o for o in self.signature.outputs if o.name == name)
        shape = tuple(0 if i == 0 else max(s, 0) for i, s in enumerate(spec.shape))
        return np.empty(shape, dtype=np.dtype(spec.dtype))

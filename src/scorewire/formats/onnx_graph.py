"""Recognise ONNX graphs that compute a linear model, so the native kernel can score them.

:func:`inspect_onnx` reads a graph and returns an :class:`InspectResult`: a
:class:`~scorewire.formats.linear_spec.LinearSpec` whose ``NativeLinearModel(spec).predict(X)``
gives the outputs onnxruntime gives for the graph (same names, shapes, dtypes and
labels), or ``spec=None`` and a short reason; the model then runs on onnxruntime.

What is recognised
------------------
One graph input X, float32 or float64, of rank 2, then any chain of:

- normalisers, folded into the weights: ai.onnx.ml ``Scaler`` (``(x - offset) * scale``)
  and ``Add``/``Sub``/``Mul``/``Div`` by a constant scalar or per-column vector;
- linear operators: ``Gemm`` (alpha, beta, transA=0, transB 0|1, constant B and C),
  ``MatMul`` by a constant matrix (``+ Add`` of a bias is the rule above), ai.onnx.ml
  ``LinearRegressor`` (post_transform NONE), ai.onnx.ml ``LinearClassifier``
  (post_transform NONE, LOGISTIC, SOFTMAX);
- a link after a decision: ``Sigmoid`` (link "sigmoid": classes 0..k-1, or (0, 1) for
  one column, whose (N, 1) output stays (N, 1)) or ``Softmax`` over axis 1/-1 ("softmax");
- tails: ``Identity``; ``Cast`` to the type the tensor already has; ``Reshape`` of a
  (N, k) decision to (-1, k); ai.onnx.ml ``Normalizer`` L1 after a float32 link (a
  per-column sigmoid becomes "ovr": skl2onnx's one-vs-rest LinearClassifier LOGISTIC +
  Normalizer; softmax and logistic already sum to 1 and stay); ai.onnx.ml
  ``ZipMap``. onnxruntime returns a sequence of maps from ZipMap, which no tensor
  protocol carries: the ZipMap's output name is given the (N, k) tensor that went into
  it, columns in ZipMap's (= the classifier's) class order.

Outputs get roles: a decision without link is "value" (regression, kept (N, k)) or
"decision"; a linked tensor "probabilities"; LinearClassifier's Y "label".

onnxruntime's LinearClassifier, as measured (onnxruntime 1.23), z = X @ W.T + b (its
labels follow the kernel's rule, ``_label_row`` in ext/_kernel.pyx, ties included):

- k >= 2 rows and k labels: Y = labels[argmax z] (first maximum); Z = z (NONE, role
  "decision"), sigmoid(z) per column (LOGISTIC → "sigmoid"), softmax(z) (SOFTMAX).
  multi_class is ignored.
- 1 row and 2 labels: Y = labels[1] if z > 0 else labels[0], and Z has two columns:
  LOGISTIC gives [1 - sigmoid(z), sigmoid(z)] (→ "logistic", whose sigmoid(-z) is
  1 - sigmoid(z) up to float32 rounding); NONE, SOFTMAX and
  SOFTMAX_ZERO all give [1 - z, z] with no softmax at all. No link gives [1 - z, z]
  with labels by the sign of z, so those are left to onnxruntime.

Everything else is refused: other operators, SOFTMAX_ZERO and PROBIT, weights that are
not constants, more than one input, a float64 input into the ai.onnx.ml operators
(they compute and return float32), opsets outside default 7-25 / ai.onnx.ml 1-5,
unknown attributes. A false positive scores wrong; a false negative is only slower.

NOTE: the kernel computes in float64. onnxruntime's float32 sigmoid is
``1 - sigmoid(|z|)`` for z < 0: absolutely within 6e-8 but 0 below z ~ -17. After
an L1 Normalizer ("ovr") that error is divided by the row sum, so where every class
has z < -3 or so onnxruntime's float32 probabilities drift from the exact ones the
kernel gives (all zeros once every z < -17); elsewhere they agree to float32 rounding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ..errors import ModelLoadError
from .files import DEFAULT, ModelFiles, quoted
from .linear_spec import LinearSpec

__all__ = ["InspectResult", "inspect_onnx", "parse_onnx", "read_onnx"]

_FLOAT, _DOUBLE, _INT64, _STRING = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.STRING
_NP: dict[int, np.dtype[Any]] = {_FLOAT: np.dtype(np.float32), _DOUBLE: np.dtype(np.float64)}
_ML = "ai.onnx.ml"
_OPSETS = {"": (7, 25), "ai.onnx": (7, 25), _ML: (1, 5)}

#: (domain, op_type) -> the attributes it may carry
_ATTRS: dict[tuple[str, str], frozenset[str]] = {
    ("", "Identity"): frozenset(),
    ("", "Cast"): frozenset({"to", "saturate"}),
    ("", "Constant"): frozenset({"value"}),
    ("", "Add"): frozenset(),
    ("", "Sub"): frozenset(),
    ("", "Mul"): frozenset(),
    ("", "Div"): frozenset(),
    ("", "MatMul"): frozenset(),
    ("", "Gemm"): frozenset({"alpha", "beta", "transA", "transB"}),
    ("", "Reshape"): frozenset({"allowzero"}),
    ("", "Sigmoid"): frozenset(),
    ("", "Softmax"): frozenset({"axis"}),
    (_ML, "Scaler"): frozenset({"offset", "scale"}),
    (_ML, "LinearRegressor"): frozenset({"coefficients", "intercepts", "post_transform", "targets"}),
    (_ML, "LinearClassifier"): frozenset(
        {"classlabels_ints", "classlabels_strings", "coefficients", "intercepts", "multi_class", "post_transform"}
    ),
    (_ML, "Normalizer"): frozenset({"norm"}),
    (_ML, "ZipMap"): frozenset({"classlabels_int64s", "classlabels_strings"}),
}


@dataclass(frozen=True)
class InspectResult:
    """A native spec for the graph, or None and why not (a short sentence)."""

    spec: LinearSpec | None
    reason: str = ""


class _NotLinear(Exception):
    """The graph is not one we recognise; the message says why."""


# --------------------------------------------------------------- abstract values
# Each tensor of the graph is tracked as one of these (or an ndarray: a constant).


@dataclass(eq=False)
class _Columnwise:
    """t = x * scale + offset, column by column: the input before any matrix product.
    scale and offset have 1 or `width` values; width is None while unknown."""

    scale: np.ndarray
    offset: np.ndarray
    elem: int
    width: int | None


@dataclass(eq=False)
class _Affine:
    """t = X @ W.T + b, shape (N, m): a decision."""

    W: np.ndarray
    b: np.ndarray
    elem: int

    @property
    def width(self) -> int:
        return int(self.W.shape[0])


@dataclass(frozen=True, eq=False)
class _Head:
    """A classifier: decision z, a link, class labels in column order."""

    z: _Affine
    link: str
    classes: tuple[object, ...]


@dataclass(eq=False)
class _Scores:
    head: _Head
    elem: int
    zipped: bool = False  # a ZipMap's output: a sequence of maps in onnxruntime


@dataclass(eq=False)
class _Labels:
    head: _Head
    elem: int


_Value = _Columnwise | _Affine | _Scores | _Labels | np.ndarray


# ------------------------------------------------------------------ reading
def read_onnx(path: str | os.PathLike[str], files: ModelFiles = DEFAULT) -> onnx.ModelProto:
    """Read, parse and check an ONNX file (see :func:`parse_onnx` and
    :class:`~scorewire.formats.files.ModelFiles`)."""
    return parse_onnx(files.read_file(path), os.fspath(path), files)


def parse_onnx(data: bytes, source: str = "model.onnx", files: ModelFiles = DEFAULT) -> onnx.ModelProto:
    """Parse and check an ONNX model; ModelLoadError naming ``source`` when it is
    not valid, when a tensor's data lives in another file (external data: scorewire
    reads a model from its one file only), or when its tensors declare more than
    ``files.max_bytes`` in all (checked on their shapes, before anything reads them)."""
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        raise ModelLoadError(f"{source}: not a valid ONNX model (truncated or corrupt)") from None
    if not model.graph.node:
        raise ModelLoadError(f"{source}: not a valid ONNX model (empty graph)")
    total = 0
    for tensor in _tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            raise ModelLoadError(f"{source}: a tensor's data is stored in another file (external data is not supported)")
        total += _declared_bytes(tensor, source)
    files.check_size(source, "the graph's tensors declare", total)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "invalid"
        raise ModelLoadError(f"{source}: ONNX check failed ({first})") from None
    return model


def _tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor a model holds: initializers (sparse ones too), and the tensor
    attributes of every node, in every graph, subgraph and local function."""
    graphs = [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for sparse in g.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes.extend(g.node)
            continue
        for a in nodes.pop().attribute:
            if a.type == AttributeProto.TENSOR:
                yield a.t
            elif a.type == AttributeProto.TENSORS:
                yield from a.tensors
            elif a.type == AttributeProto.SPARSE_TENSOR:
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            elif a.type == AttributeProto.SPARSE_TENSORS:
                for sparse in a.sparse_tensors:
                    yield sparse.values
                    yield sparse.indices
            elif a.type == AttributeProto.GRAPH:
                graphs.append(a.g)
            elif a.type == AttributeProto.GRAPHS:
                graphs.extend(a.graphs)


def _declared_bytes(tensor: TensorProto, source: str) -> int:
    """What a tensor's shape says it holds, in bytes (its strings' own lengths)."""
    n = 1
    for dim in tensor.dims:
        if dim < 0:
            raise ModelLoadError(f"{source}: not a valid ONNX model (a tensor has a negative dimension)")
        n *= dim
    if tensor.data_type == TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8
    return n * itemsize


# ------------------------------------------------------------------ public API
def inspect_onnx(model: onnx.ModelProto) -> InspectResult:
    """Return a LinearSpec equivalent to `model`, or None and the reason it is not."""
    try:
        return InspectResult(_inspect(model), "")
    except _NotLinear as exc:
        return InspectResult(None, str(exc))
    except ModelLoadError as exc:
        return InspectResult(None, f"the folded weights are not a valid linear model: {exc.message}")


def _inspect(model: onnx.ModelProto) -> LinearSpec:
    graph = model.graph
    _check_opsets(model)
    if model.functions:
        raise _NotLinear("the model defines local functions")
    if graph.sparse_initializer:
        raise _NotLinear("the graph has sparse initializers")
    unknown = sorted({n.op_type for n in graph.node if (_domain(n), n.op_type) not in _ATTRS})
    if unknown:
        raise _NotLinear(f"the graph uses operators a linear model does not: {', '.join(op[:64] for op in unknown[:5])}")
    imported = {"" if op.domain == "ai.onnx" else op.domain for op in model.opset_import}
    if any(_domain(n) not in imported for n in graph.node):
        raise _NotLinear("a node's operator domain is not imported by the model")
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise _NotLinear(f"the graph has {len(inputs)} inputs; a linear model has one")
    if len(graph.input) != 1:
        raise _NotLinear("a graph input has a default value (an overridable initializer)")
    x = inputs[0]
    elem, width = _input_type(x)
    env: dict[str, _Value] = {t.name: _tensor(t, t.name) for t in graph.initializer}
    env[x.name] = _Columnwise(np.ones(1), np.zeros(1), elem, width)
    for i, node in enumerate(graph.node):
        where = f"{node.op_type} node {quoted(node.name)}" if node.name else f"{node.op_type} node #{i}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        extra = set(attrs) - _ATTRS[_domain(node), node.op_type]
        if extra:
            raise _NotLinear(f"{where} has unexpected attributes {sorted(extra)}")
        args = [env.get(name) if name else None for name in node.input]
        for name, arg in zip(node.input, args, strict=True):
            if name and arg is None:
                raise _NotLinear(f"{where} reads {quoted(name)}, which nothing defines")
        with np.errstate(all="ignore"):
            results = _step(node.op_type, where, args, attrs)
        if len(node.output) > len(results) or any(not o for o in node.output):
            raise _NotLinear(f"{where} has unexpected outputs")
        for name, value in zip(node.output, results, strict=False):
            if name in env:
                raise _NotLinear(f"{where} redefines {quoted(name)}")
            env[name] = value
    return _spec(graph, env, x.name, elem)


# ---------------------------------------------------------------- graph checks
def _check_opsets(model: onnx.ModelProto) -> None:
    for op in model.opset_import:
        domain = op.domain or ""
        if domain not in _OPSETS:
            raise _NotLinear(f"the model imports the operator domain {quoted(domain)}")
        low, high = _OPSETS[domain]
        if not low <= op.version <= high:
            raise _NotLinear(f"opset {op.version} of domain {domain or 'ai.onnx'!r} is not one we know ({low}-{high})")


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _input_type(x: onnx.ValueInfoProto) -> tuple[int, int | None]:
    if not x.type.HasField("tensor_type") or x.type.tensor_type.elem_type not in _NP:
        raise _NotLinear(f"the input {quoted(x.name)} is not a float32 or float64 tensor")
    tt = x.type.tensor_type
    if not tt.HasField("shape") or len(tt.shape.dim) != 2:
        raise _NotLinear(f"the input {quoted(x.name)} is not declared as a 2-D (rows, features) tensor")
    dim = tt.shape.dim[1]
    return tt.elem_type, (dim.dim_value if dim.HasField("dim_value") else None)


def _tensor(t: onnx.TensorProto, where: str) -> np.ndarray:
    if t.data_location == TensorProto.EXTERNAL:
        raise _NotLinear(f"the constant {quoted(where)} is stored as external data")
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:  # a malformed tensor: onnxruntime will say more
        raise _NotLinear(f"the constant {quoted(where)} cannot be read ({str(exc)[:120]})") from None


# ------------------------------------------------------------------ operators
def _step(op: str, where: str, args: list, attrs: dict) -> list[_Value]:
    """The values of one node's outputs."""
    if op == "Constant":
        if "value" not in attrs:
            raise _NotLinear(f"{where} has no tensor value")
        return [_tensor(attrs["value"], where)]
    if op in ("Add", "Sub", "Mul", "Div"):
        return [_arith(op, where, args)]
    if not args or args[0] is None or isinstance(args[0], np.ndarray):
        raise _NotLinear(f"{where} does not read a computed tensor as its first input")
    t = args[0]
    if op == "Identity":
        return [t]
    if op == "Cast":
        if attrs.get("to") != t.elem or getattr(t, "zipped", False):
            raise _NotLinear(f"{where} changes the element type")
        return [t]
    if op == "MatMul":
        return [_matmul(t, _const(args, 1, where, _float(t, where)), where)]
    if op == "Gemm":
        return [_gemm(t, args, attrs, where)]
    if op == "Reshape":
        return [_reshape(t, args, where)]
    if op in ("Sigmoid", "Softmax"):
        return [_activation(op, t, attrs, where)]
    if op == "Scaler":
        t = _float(t, where)
        _need_float32(t, where)
        offset, scale = np.asarray(attrs.get("offset", []), float), np.asarray(attrs.get("scale", []), float)
        if offset.size != scale.size:
            raise _NotLinear(f"{where} needs offset and scale of the same length")
        offset, scale = _row(offset, t.width, where), _row(scale, t.width, where)
        return [_elementwise(_elementwise(t, "Sub", offset, where), "Mul", scale, where)]
    if op == "LinearRegressor":
        return [_linear_regressor(t, attrs, where)]
    if op == "LinearClassifier":
        return _linear_classifier(t, attrs, where)
    if op == "Normalizer":
        return [_normalizer(t, attrs, where)]
    if op == "ZipMap":
        return [_zipmap(t, attrs, where)]
    raise AssertionError(op)  # pragma: no cover - _ATTRS lists exactly the ops above


def _float(t: _Value, where: str) -> _Columnwise | _Affine:
    if not isinstance(t, (_Columnwise, _Affine)):
        raise _NotLinear(f"{where} is applied after the link; only Identity, Cast, Normalizer and ZipMap may follow it")
    return t


def _need_float32(t: _Columnwise | _Affine | _Scores, where: str) -> None:
    if t.elem != _FLOAT:
        raise _NotLinear(f"{where} reads float64 but computes and returns float32")


def _const(args: list, i: int, where: str, t: _Columnwise | _Affine) -> np.ndarray:
    c = args[i] if i < len(args) else None
    if not isinstance(c, np.ndarray):
        raise _NotLinear(f"{where}: input {i} is not a constant")
    if c.dtype != _NP[t.elem]:
        raise _NotLinear(f"{where}: a constant of type {c.dtype} meets a {_NP[t.elem]} tensor")
    return c.astype(np.float64)


def _row(c: np.ndarray, width: int | None, where: str) -> np.ndarray:
    """c as the values it adds per column of an (N, width) tensor: 1 or `width` of them."""
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        raise _NotLinear(f"{where}: a constant of shape {c.shape} changes the tensor's shape")
    v = c.reshape(-1)
    if v.size == 0 or (v.size != 1 and width is not None and v.size != width):
        raise _NotLinear(f"{where}: a constant of {v.size} values meets {width} columns")
    return v


def _arith(op: str, where: str, args: list) -> _Value:
    if len(args) != 2 or args[0] is None or args[1] is None:
        raise _NotLinear(f"{where} does not have two inputs")
    a, b = args
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        raise _NotLinear(f"{where} computes on constants only")
    if isinstance(b, np.ndarray):
        t = _float(a, where)
        return _elementwise(t, op, _row(_const(args, 1, where, t), t.width, where), where)
    if not isinstance(a, np.ndarray):
        raise _NotLinear(f"{where} combines two computed tensors")
    t = _float(b, where)
    c = _row(_const(args, 0, where, t), t.width, where)
    if op == "Sub":  # c - t = (-t) + c
        return _elementwise(_elementwise(t, "Mul", np.array([-1.0]), where), "Add", c, where)
    if op == "Div":
        raise _NotLinear(f"{where} divides by a computed tensor")
    return _elementwise(t, op, c, where)


@overload
def _elementwise(t: _Affine, op: str, v: np.ndarray, where: str) -> _Affine: ...
@overload
def _elementwise(t: _Columnwise | _Affine, op: str, v: np.ndarray, where: str) -> _Columnwise | _Affine: ...
def _elementwise(t: _Columnwise | _Affine, op: str, v: np.ndarray, where: str) -> _Columnwise | _Affine:
    """t (op) v for a per-column vector v of 1 or t.width values."""
    if op == "Div":
        if not np.all(v != 0):
            raise _NotLinear(f"{where} divides by zero")
        op, v = "Mul", 1.0 / v
    if isinstance(t, _Columnwise):
        width = t.width if t.width is not None or v.size == 1 else v.size
        scale, offset = t.scale, t.offset
        if op == "Mul":
            scale, offset = scale * v, offset * v
        else:
            offset = offset + v if op == "Add" else offset - v
        return _Columnwise(scale, offset, t.elem, width)
    W, b = t.W, t.b
    if op == "Mul":
        W, b = W * v[:, None], b * v
    else:
        b = b + v if op == "Add" else b - v
    return _Affine(W, np.broadcast_to(b, (t.width,)).copy(), t.elem)


def _matmul(t: _Value, M: np.ndarray, where: str) -> _Affine:
    """t @ M for a constant (m, p) matrix M."""
    t = _float(t, where)
    if M.ndim != 2 or M.shape[0] < 1 or M.shape[1] < 1:
        raise _NotLinear(f"{where}: the weights have shape {M.shape}, not (inputs, outputs)")
    if t.width is not None and t.width != M.shape[0]:
        raise _NotLinear(f"{where}: {M.shape[0]} weight rows meet {t.width} columns")
    if isinstance(t, _Columnwise):
        d = M.shape[0]
        scale, offset = np.broadcast_to(t.scale, (d,)), np.broadcast_to(t.offset, (d,))
        return _Affine(M.T * scale[None, :], offset @ M, t.elem)
    return _Affine(M.T @ t.W, t.b @ M, t.elem)


def _gemm(t: _Value, args: list, attrs: dict, where: str) -> _Affine:
    # Y = alpha * A @ B' + beta * C, B' = B.T if transB
    if attrs.get("transA", 0) != 0 or attrs.get("transB", 0) not in (0, 1):
        raise _NotLinear(f"{where} transposes its input")
    t = _float(t, where)
    B = _const(args, 1, where, t)
    z = _matmul(t, B.T if attrs.get("transB", 0) and B.ndim == 2 else B, where)
    z = _elementwise(z, "Mul", np.array([float(attrs.get("alpha", 1.0))]), where)
    if len(args) > 2 and args[2] is not None:
        C = _row(_const(args, 2, where, t), z.width, where)
        z = _elementwise(z, "Add", float(attrs.get("beta", 1.0)) * C, where)
    return z


def _reshape(t: _Value, args: list, where: str) -> _Value:
    shape = args[1] if len(args) > 1 else None
    if not isinstance(t, _Affine) or not isinstance(shape, np.ndarray) or shape.dtype != np.int64:
        raise _NotLinear(f"{where} reshapes something other than a decision")
    if shape.tolist() != [-1, t.width]:
        raise _NotLinear(f"{where} changes the (rows, {t.width}) shape")
    return t


def _activation(op: str, t: _Value, attrs: dict, where: str) -> _Scores:
    z = _float(t, where)
    if not isinstance(z, _Affine):
        raise _NotLinear(f"{where} is applied to the input, not to a decision")
    k = z.width
    if op == "Softmax":
        if attrs.get("axis", -1) not in (1, -1):
            raise _NotLinear(f"{where} is not over the last axis")
        if k < 2:
            raise _NotLinear(f"{where} is over a single column (always 1)")
    classes = tuple(range(k)) if k > 1 else (0, 1)
    return _Scores(_Head(z, "sigmoid" if op == "Sigmoid" else "softmax", classes), z.elem)


def _coefficients(t: _Columnwise | _Affine, attrs: dict, k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(k, m) coefficients and (k,) intercepts of an ai.onnx.ml linear operator."""
    coef = np.asarray(attrs.get("coefficients", []), dtype=np.float64)
    if k < 1 or coef.size == 0 or coef.size % k:
        raise _NotLinear(f"{where}: {coef.size} coefficients do not split into {k} rows")
    coef = coef.reshape(k, -1)
    if t.width is not None and coef.shape[1] != t.width:
        raise _NotLinear(f"{where}: {coef.shape[1]} coefficients per row meet {t.width} columns")
    intercepts = np.asarray(attrs.get("intercepts", [0.0] * k), dtype=np.float64)
    if intercepts.shape != (k,):
        raise _NotLinear(f"{where}: {intercepts.size} intercepts for {k} rows")
    return coef, intercepts


def _linear_regressor(t: _Value, attrs: dict, where: str) -> _Affine:
    t = _float(t, where)
    _need_float32(t, where)
    if attrs.get("post_transform", b"NONE") != b"NONE":
        raise _NotLinear(f"{where} has a post_transform")
    coef, intercepts = _coefficients(t, attrs, int(attrs.get("targets", 1)), where)
    return _elementwise(_matmul(t, coef.T, where), "Add", intercepts, where)


def _linear_classifier(t: _Value, attrs: dict, where: str) -> list[_Value]:
    t = _float(t, where)
    _need_float32(t, where)
    ints, strings = attrs.get("classlabels_ints"), attrs.get("classlabels_strings")
    if (ints is None) == (strings is None):
        raise _NotLinear(f"{where} needs exactly one of classlabels_ints and classlabels_strings")
    classes = tuple(int(c) for c in ints) if ints is not None else _texts(strings or (), where)
    if "intercepts" not in attrs:
        raise _NotLinear(f"{where} has no intercepts (the number of rows is ambiguous)")
    k = len(attrs["intercepts"])
    coef, intercepts = _coefficients(t, attrs, k, where)
    post = attrs.get("post_transform", b"NONE").decode("utf-8", "replace")[:64]  # ONNX does not check it
    if attrs.get("multi_class", 0) not in (0, 1):
        raise _NotLinear(f"{where} has multi_class {attrs['multi_class']}")
    if len(set(classes)) != len(classes):
        raise _NotLinear(f"{where} repeats a class label")
    if k == 1 and len(classes) == 2:
        if post != "LOGISTIC":
            raise _NotLinear(
                f"{where} has one coefficient row and post_transform {post}: onnxruntime "
                "returns scores [1 - z, z] with labels by the sign of z, which no link gives"
            )
        link = "logistic"
    elif k != len(classes) or k < 2:
        raise _NotLinear(f"{where} has {k} coefficient rows for {len(classes)} classes")
    elif post in ("NONE", "LOGISTIC", "SOFTMAX"):
        link = {"NONE": "identity", "LOGISTIC": "sigmoid", "SOFTMAX": "softmax"}[post]
    else:
        raise _NotLinear(f"{where} has post_transform {post}")
    z = _elementwise(_matmul(t, coef.T, where), "Add", intercepts, where)
    head = _Head(z, link, classes)
    return [_Labels(head, _INT64 if ints is not None else _STRING), _Scores(head, _FLOAT)]


def _texts(values: Iterable[bytes], where: str) -> tuple[str, ...]:
    """String attribute values (bytes in ONNX, which does not check them) as text."""
    try:
        return tuple(v.decode() for v in values)
    except UnicodeDecodeError:
        raise _NotLinear(f"{where} has a class label that is not UTF-8") from None


def _normalizer(t: _Value, attrs: dict, where: str) -> _Scores:
    if attrs.get("norm", b"MAX") != b"L1":
        raise _NotLinear(f"{where} is not an L1 normaliser")
    if not isinstance(t, _Scores) or t.elem != _FLOAT or t.zipped or t.head.link == "identity":
        raise _NotLinear(f"{where} does not follow probabilities")
    head = t.head
    if head.link == "sigmoid":  # per-column sigmoid / row sum: one-vs-rest
        head = _Head(head.z, "ovr", head.classes)
    return _Scores(head, _FLOAT)


def _zipmap(t: _Value, attrs: dict, where: str) -> _Scores:
    if not isinstance(t, _Scores) or t.elem != _FLOAT or t.zipped:
        raise _NotLinear(f"{where} does not follow class scores")
    ints, strings = attrs.get("classlabels_int64s"), attrs.get("classlabels_strings")
    keys = tuple(int(c) for c in ints) if ints is not None else _texts(strings or (), where)
    columns = 2 if t.head.link == "logistic" else t.head.z.width
    if keys != t.head.classes or len(keys) != columns:
        raise _NotLinear(f"{where} labels its columns differently from the classifier")
    return _Scores(t.head, t.elem, zipped=True)


# --------------------------------------------------------------------- result
def _spec(graph: onnx.GraphProto, env: dict[str, _Value], input_name: str, elem: int) -> LinearSpec:
    outputs: dict[str, str] = {}
    decisions: dict[int, _Affine] = {}
    links: set[str] = set()  # of the scores (labels are argmax z, whatever the link)
    heads: dict[tuple[object, ...], _Head] = {}
    for out in graph.output:
        v = env.get(out.name)
        if isinstance(v, _Affine):
            z, role = v, "value"
        elif isinstance(v, (_Scores, _Labels)):
            z = v.head.z
            heads[v.head.classes] = v.head
            if isinstance(v, _Labels):
                role = "label"
            else:
                links.add(v.head.link)
                role = "decision" if v.head.link == "identity" else "probabilities"
        else:
            raise _NotLinear(f"the output {quoted(out.name)} is not computed by a linear model")
        if getattr(v, "zipped", False):
            ok = out.type.HasField("sequence_type")
        else:
            ok = out.type.HasField("tensor_type") and out.type.tensor_type.elem_type in (0, v.elem)
        if not ok:
            raise _NotLinear(f"the output {quoted(out.name)} is declared with another type than it has")
        if role != "label" and v.elem != elem:
            raise _NotLinear(f"the output {quoted(out.name)} has another element type than the input")
        decisions[id(z)] = z
        outputs[out.name] = role
    if len(decisions) != 1:
        raise _NotLinear("the outputs are not all computed from one decision")
    if len(links) > 1 or len(heads) > 1:
        raise _NotLinear("the outputs apply different links to the decision")
    (z,) = decisions.values()
    dtype = _NP[elem].name
    if heads:
        (head,) = heads.values()
        link, classes = links.pop() if links else head.link, head.classes
        outputs = {n: "decision" if r == "value" else r for n, r in outputs.items()}
        return LinearSpec("classification", link, z.W, z.b, classes=classes, dtype=dtype,
                          outputs=outputs, input_name=input_name)
    return LinearSpec("regression", "identity", z.W, z.b, dtype=dtype, outputs=outputs,
                      input_name=input_name, value_2d=True)

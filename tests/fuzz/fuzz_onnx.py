"""Fuzz target: ``model.onnx`` — the ONNX reader (``parse_onnx``) and the graph
inspector (``inspect_onnx``) that decides whether the native kernel scores a graph.

Oracle, for any bytes: ``parse_onnx`` returns a checked ModelProto or raises
ModelLoadError (one line, starting with the file's name) and nothing else;
``inspect_onnx`` answers, never raises. When it finds a linear model, the native
model of its spec gives what onnxruntime gives for the same graph: the same output
names, shapes and dtypes, floats within the tolerance of a float32 (or float64)
dot product, and the same labels wherever no rounding can flip them — a false
positive would score wrong in production. Nothing hangs (``-timeout``) or grows
past ``-rss_limit_mb`` (a graph's tensors may declare no more than the size limit).

The first byte chooses how the rest is read: as the file itself, or as the choices
that build a graph from the operators the inspector knows (so most runs reach it).
"""

from __future__ import annotations

try:
    from . import harness
except ImportError:  # run as a script
    import harness  # type: ignore[no-redef]

with harness.instrumented(__name__):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from scorewire.backends.native import NativeLinearModel
    from scorewire.errors import ModelLoadError
    from scorewire.formats.files import ModelFiles
    from scorewire.formats.onnx_graph import inspect_onnx, parse_onnx

SOURCE = "models/m/1/model.onnx"
#: small, so that the fuzzer meets the limits on the inputs it makes
FILES = ModelFiles(max_bytes=1 << 20)
F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE
#: constants (none near the float32 range: there onnxruntime, computing node by node in
#: float32, overflows where the folded float64 weights do not — a known difference)
VALUES = [0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-3, 100.0, -100.0, 3.0, 0.25]


# ------------------------------------------------------------ graphs from choices
def _array(c: harness.Choices, shape: tuple[int, ...], elem: int) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    values = [c.pick(VALUES) for _ in range(n)]
    return np.asarray(values, dtype=np.float32 if elem == F32 else np.float64).reshape(shape)


def graph(c: harness.Choices) -> onnx.ModelProto:
    """A chain of operators over one input X (N, d), each reading the last tensor."""
    elem = F32 if c.chance(3) or not c.chance(2) else F64
    d = 1 + c.below(4)
    width: int = d  # columns of the last tensor
    last, n = "X", 0
    nodes, inits, outputs = [], [], []
    ml = False

    def const(shape: tuple[int, ...], kind: int | None = None) -> str:
        name = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(_array(c, shape, kind or elem), name))
        return name

    def out() -> str:
        nonlocal n
        n += 1
        return f"t{n}"

    for _ in range(1 + c.below(5)):
        op = c.pick(["Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Sigmoid", "Softmax", "Scaler",
                     "LinearRegressor", "LinearClassifier", "Normalizer", "ZipMap", "Identity", "Cast",
                     "Reshape"])  # fmt: skip
        t = out()
        if op in ("Add", "Sub", "Mul", "Div"):
            shape = c.pick([(width,), (1,), (1, width), (width + 1,), ()])
            args = [last, const(shape)] if not c.chance(4) else [const(shape), last]
            nodes.append(helper.make_node(op, args, [t]))
        elif op == "MatMul":
            k = 1 + c.below(3)
            nodes.append(helper.make_node("MatMul", [last, const((width + (c.chance(8)), k))], [t]))
            width = k
        elif op == "Gemm":
            k = 1 + c.below(3)
            trans = c.below(2)
            b = const((k, width) if trans else (width, k))
            args = [last, b] + ([const(c.pick([(k,), (1,), (1, k)]))] if c.chance(2) else [])
            attrs = {"transB": trans, "alpha": c.pick(VALUES), "beta": c.pick(VALUES)}
            nodes.append(helper.make_node("Gemm", args, [t], **attrs))
            width = k
        elif op in ("Sigmoid", "Identity"):
            nodes.append(helper.make_node(op, [last], [t]))
        elif op == "Softmax":
            nodes.append(helper.make_node("Softmax", [last], [t], axis=c.pick([1, -1, 0])))
        elif op == "Cast":
            nodes.append(helper.make_node("Cast", [last], [t], to=c.pick([elem, elem, F32, F64])))
        elif op == "Reshape":
            shape = np.asarray(c.pick([[-1, width], [width, -1], [-1]]), dtype=np.int64)
            name = f"c{len(inits)}"
            inits.append(numpy_helper.from_array(shape, name))
            nodes.append(helper.make_node("Reshape", [last, name], [t]))
        elif op == "Scaler":
            ml = True
            size = c.pick([width, 1, width + 1])
            nodes.append(helper.make_node("Scaler", [last], [t], domain="ai.onnx.ml",
                                          offset=[c.pick(VALUES) for _ in range(size)],
                                          scale=[c.pick(VALUES) for _ in range(size)]))  # fmt: skip
        elif op == "LinearRegressor":
            ml = True
            k = 1 + c.below(3)
            nodes.append(helper.make_node(
                "LinearRegressor", [last], [t], domain="ai.onnx.ml", targets=k,
                coefficients=[c.pick(VALUES) for _ in range(k * width)],
                intercepts=[c.pick(VALUES) for _ in range(k)],
                post_transform=c.pick(["NONE", "NONE", "SOFTMAX"]),
            ))  # fmt: skip
            width = k
        elif op == "LinearClassifier":
            ml = True
            k = c.pick([1, 2, 3])
            n_labels = c.pick([k, k, 2, k + 1])
            labels = {"classlabels_ints": [c.pick([0, 1, 2, 3, 7, -1]) for _ in range(n_labels)]}
            if c.chance(2):
                labels = {"classlabels_strings": [c.pick(["a", "b", "c", "d"]) for _ in range(n_labels)]}
            label = out()
            nodes.append(helper.make_node(
                "LinearClassifier", [last], [label, t], domain="ai.onnx.ml",
                coefficients=[c.pick(VALUES) for _ in range(k * width)],
                intercepts=[c.pick(VALUES) for _ in range(k)],
                post_transform=c.pick(["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]),
                multi_class=c.below(2), **labels,
            ))  # fmt: skip
            kind = TensorProto.INT64 if "classlabels_ints" in labels else TensorProto.STRING
            if c.chance(2):
                outputs.append(helper.make_tensor_value_info(label, kind, [None]))
            width = 2 if k == 1 else k
        elif op == "Normalizer":
            ml = True
            nodes.append(helper.make_node("Normalizer", [last], [t], domain="ai.onnx.ml",
                                          norm=c.pick(["L1", "L2", "MAX"])))  # fmt: skip
        else:  # ZipMap
            ml = True
            keys = {"classlabels_int64s": list(range(width))} if c.chance(2) else {
                "classlabels_strings": [c.pick(["a", "b", "c", "d"]) for _ in range(width)]}
            nodes.append(helper.make_node("ZipMap", [last], [t], domain="ai.onnx.ml", **keys))
            key = TensorProto.INT64 if "classlabels_int64s" in keys else TensorProto.STRING
            value = helper.make_map_type_proto(key, helper.make_tensor_type_proto(F32, None))
            outputs.append(helper.make_value_info(t, helper.make_sequence_type_proto(value)))
            last = t
            break
        last = t
    if not any(o.name == last for o in outputs):
        outputs.append(helper.make_tensor_value_info(last, 0 if c.chance(4) else elem, [None, None]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", elem, ["N", d])], outputs, inits)
    opsets = [helper.make_opsetid("", c.pick([17, 13, 11, 21]))]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", c.pick([1, 3])))
    model = helper.make_model(g, opset_imports=opsets)
    model.ir_version = 8
    return model


# ------------------------------------------------------------------- the oracle
def ort_outputs(model: onnx.ModelProto, X: np.ndarray) -> dict[str, np.ndarray] | None:
    """onnxruntime's outputs by name (a ZipMap's maps as an (N, k) array in its key
    order); None when onnxruntime cannot run the graph."""
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: X}), strict=True))
    except Exception:  # onnxruntime's own errors have no common type
        return None
    for node in model.graph.node:
        if node.op_type == "ZipMap" and node.output[0] in out:
            attr = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            keys = attr.get("classlabels_int64s") or [s.decode() for s in attr["classlabels_strings"]]
            out[node.output[0]] = np.array([[m[k] for k in keys] for m in out[node.output[0]]], dtype=np.float32)
    return out


#: float attributes that hold weights, offsets or scales
_WEIGHTS = ("alpha", "beta", "coefficients", "intercepts", "scale", "offset")


def magnitudes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with every constant made non-negative and every subtraction an
    addition (a Scaler adds its offset): on |X| its decision bounds, column by
    column, the sum of the magnitudes of every term every node adds up — onnxruntime
    rounds each node's result in float32, and that rounding error, carried through
    the later nodes, is at most a float32 epsilon of it per node. The folded weights
    can hide how large those intermediate terms were (a cancellation between nodes)."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    for t in m.graph.initializer:
        if t.data_type in (F32, F64):
            t.CopyFrom(numpy_helper.from_array(np.abs(numpy_helper.to_array(t)), t.name))
    for node in m.graph.node:
        if node.op_type == "Sub":
            node.op_type = "Add"
        for a in node.attribute:
            if a.name in _WEIGHTS and a.type == onnx.AttributeProto.FLOAT:
                a.f = abs(a.f)
            elif a.name in _WEIGHTS and a.type == onnx.AttributeProto.FLOATS:
                values = [-abs(v) if a.name == "offset" else abs(v) for v in a.floats]
                del a.floats[:]
                a.floats.extend(values)
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in (F32, F64):
                a.t.CopyFrom(numpy_helper.from_array(np.abs(numpy_helper.to_array(a.t)), a.t.name))
    return m


def same_as_ort(model: onnx.ModelProto, spec) -> None:  # type: ignore[no-untyped-def]
    dtype = np.dtype(spec.dtype)
    X = np.linspace(-1, 1, 5 * spec.n_features).reshape(5, spec.n_features).astype(dtype)
    want = ort_outputs(model, X)
    if want is None:  # no reference to hold it to (e.g. an output of undefined type)
        return
    got = NativeLinearModel(spec, n_threads=1).predict(X)
    assert list(got) == list(want), (list(got), list(want))
    X64 = X.astype(np.float64)
    z = X64 @ spec.coef.T + spec.intercept
    bound = magnitudes(model)
    abs_spec = inspect_onnx(bound).spec
    if abs_spec is None:  # e.g. a Div by |c| = 0
        return
    terms = (np.abs(X64) @ abs_spec.coef.T + abs_spec.intercept).max(axis=1, keepdims=True)
    terms = np.maximum(terms, (np.abs(X64) @ np.abs(spec.coef).T + np.abs(spec.intercept)).max(axis=1, keepdims=True))
    # per node, an epsilon of the terms (float32: 6e-8; float64: 1.1e-16), with room
    eps = 1e-6 if dtype == np.float32 else 1e-14
    rtol = eps * (1 + len(model.graph.node))
    for name, w in want.items():
        have = got[name]
        assert have.shape == w.shape and have.dtype == w.dtype, (name, have.shape, w.shape, have.dtype, w.dtype)
        role = spec.outputs[name]
        if role == "label":
            top = np.sort(z, axis=1)
            margin = np.abs(z[:, 0]) if z.shape[1] == 1 else top[:, -1] - top[:, -2]
            clear = margin > 2 * rtol * (1 + terms[:, 0])
            assert np.array_equal(have[clear], w[clear]), (name, have, w)
            continue
        rows = np.ones(len(X), dtype=bool)
        if spec.link == "ovr" and role == "probabilities":
            rows = z.max(axis=1) > -3  # onnxruntime's float32 sigmoid loses the rest (see onnx_graph)
        have64, w64 = have.astype(np.float64)[rows], w.astype(np.float64)[rows]
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(have64 - w64)
            allowed = 1e-6 + rtol * (np.abs(w64) + terms[rows])
            ok = (have64 == w64) | (np.isnan(have64) & np.isnan(w64)) | (err <= allowed)
        assert np.all(ok), (name, role, spec.link, have64[~ok][:3], w64[~ok][:3])


def model_bytes(data: bytes) -> bytes:
    if not data or data[0] & 1 == 0:
        return data[1:]
    return graph(harness.Choices(data[1:])).SerializeToString()


def one_input(data: bytes) -> None:
    try:
        model = parse_onnx(model_bytes(data), SOURCE, FILES)
    except ModelLoadError as exc:
        assert exc.message.startswith(SOURCE + ": "), exc.message
        assert "\n" not in exc.message and len(exc.message) < 500, exc.message
        return
    result = inspect_onnx(model)
    if result.spec is None:  # the reason is shown to clients (GetModel's backend_reason)
        assert result.reason and "\n" not in result.reason and len(result.reason) < 500, result.reason
        return
    assert not result.reason
    if result.spec.n_features <= 1000:
        same_as_ort(model, result.spec)


if __name__ == "__main__":
    harness.main("onnx", one_input)

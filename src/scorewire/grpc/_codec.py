"""Paired converters between wire tensors and NumPy arrays.

``*_to_array`` decodes (raw bytes with ``np.frombuffer``: read-only, no copy);
``array_to_*`` encodes. tests/grpc/test_codec.py checks each pair as a round trip.
Every check raises InvalidInput with a message that names the problem and never
echoes the caller's data.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidInput
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._wire import MAX_ELEMENTS  # the largest tensor a request may describe (elements)

# --------------------------------------------------------------------------- v1
#: each numeric DataType's little-endian dtype (STRING has none: its elements vary)
_V1_DTYPES: dict[int, np.dtype[Any]] = {
    pb.FLOAT16: np.dtype("<f2"),
    pb.FLOAT32: np.dtype("<f4"),
    pb.FLOAT64: np.dtype("<f8"),
    pb.INT8: np.dtype("i1"),
    pb.INT16: np.dtype("<i2"),
    pb.INT32: np.dtype("<i4"),
    pb.INT64: np.dtype("<i8"),
    pb.UINT8: np.dtype("u1"),
    pb.UINT16: np.dtype("<u2"),
    pb.UINT32: np.dtype("<u4"),
    pb.UINT64: np.dtype("<u8"),
    pb.BOOL: np.dtype("?"),
}
#: the typed values field of each DataType (narrow types share a wider field)
_V1_FIELDS: dict[int, str] = {
    pb.FLOAT16: "float_values",
    pb.FLOAT32: "float_values",
    pb.FLOAT64: "double_values",
    pb.INT8: "int32_values",
    pb.INT16: "int32_values",
    pb.INT32: "int32_values",
    pb.INT64: "int64_values",
    pb.UINT8: "uint32_values",
    pb.UINT16: "uint32_values",
    pb.UINT32: "uint32_values",
    pb.UINT64: "uint64_values",
    pb.BOOL: "bool_values",
    pb.STRING: "string_values",
}
_V1_OF_NUMPY: dict[str, Any] = {
    "float16": pb.FLOAT16, "float32": pb.FLOAT32, "float64": pb.FLOAT64,
    "int8": pb.INT8, "int16": pb.INT16, "int32": pb.INT32, "int64": pb.INT64,
    "uint8": pb.UINT8, "uint16": pb.UINT16, "uint32": pb.UINT32, "uint64": pb.UINT64,
    "bool": pb.BOOL, "object": pb.STRING,
}  # fmt: skip
_TYPED_FIELDS = tuple(_V1_FIELDS.values())
# NOTE: keyed by (kind, itemsize), two C fields: dtype.name is built in Python
# (~1.5 µs), and dtype.num differs between equal types (int64 is long or longlong)
_V1_OF_KIND: dict[tuple[str, int], Any] = {
    (np.dtype(k).kind, np.dtype(k).itemsize): v for k, v in _V1_OF_NUMPY.items()
}
#: a DataType's numpy dtype name ("object": STRING)
_NUMPY_OF_V1: dict[int, str] = {v: k for k, v in _V1_OF_NUMPY.items()}


class Ranks(NamedTuple):
    """The ranks a tensor may have: its role (for messages) and each rank's layout."""

    what: str
    layouts: dict[int, str]


#: a tabular model takes one input of shape [rows, features]. The one place this
#: rule lives: each decoder of a request's one input for a tabular model (scorewire.v1
#: and OIP, raw and typed) checks its shape against it in :func:`check_shape`, before
#: anything is reshaped or allocated; ``scorewire.grpc._wire`` reads only matrices and
#: leaves any other rank to those decoders. The inputs of any other model are read at
#: any rank (None), and checked against its signature by the core
INPUT_RANKS = Ranks("input", {2: "[rows, features]"})
#: a FeedbackItem's truth: one label or value per row, [rows] or [rows, targets]
TRUTH_RANKS = Ranks("truth", {1: "[rows]", 2: "[rows, targets]"})
#: the most dimensions any decoded tensor may have (NumPy 1.x holds 32; scorewire's
#: own tensors have 1 or 2): for decoding a tensor whose role sets no rank
MAX_RANK = 32


def check_shape(shape: list[int] | tuple[int, ...], ranks: Ranks | None) -> int:
    """The element count of a shape; InvalidInput for a rank that ``ranks`` does not
    allow (None: any rank up to MAX_RANK), a negative dim, or a dim or count over
    MAX_ELEMENTS. Only looks at the dims: allocates nothing."""
    rank = len(shape)
    if ranks is None:
        if rank > MAX_RANK:
            raise InvalidInput(f"tensor has rank {rank}, over the limit of {MAX_RANK}")
    elif rank not in ranks.layouts:
        layouts = " or ".join(ranks.layouts.values())
        allowed = " or ".join(str(r) for r in ranks.layouts)
        raise InvalidInput(f"{ranks.what} must have shape {layouts} (rank {allowed}), got rank {rank}")
    count = nonzero = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput("tensor shape has a negative dimension")
        if dim > MAX_ELEMENTS:  # even beside a 0 dim: NumPy cannot describe it
            raise InvalidInput("tensor shape is too large")
        count *= dim
        if dim:
            nonzero *= dim
        # NOTE: NumPy refuses a shape whose nonzero dims overflow, 0 dim or not
        if count > MAX_ELEMENTS or nonzero > MAX_ELEMENTS:
            raise InvalidInput("tensor shape is too large")
    return count


_LITTLE = sys.byteorder == "little"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def packed_values(msg: Any, field_number: int, dtype: np.dtype[Any]) -> np.ndarray | None:
    """The packed fixed-width repeated field ``field_number`` of ``msg`` as an array.

    Reading ``msg.double_values`` element by element creates a Python float per
    value (~40 ns each: 0.35 ms for 256 rows × 30 features). Serializing the small
    message again (the packed field is one memcpy) and viewing the field's bytes
    with np.frombuffer costs a few µs. proto3 writes repeated scalars packed, so
    the field is one length-delimited record. None when it is absent.
    """
    buf = msg.SerializeToString()
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if number == field_number:
                return np.frombuffer(buf, dtype=dtype, count=length // dtype.itemsize, offset=pos)
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:  # pragma: no cover - groups are not proto3
            return None
    return None


def _typed_values(msg: Any, field_number: int, dtype: np.dtype[Any], values: Any) -> np.ndarray:
    """Typed contents as an array: fixed-width floats through :func:`packed_values`,
    varint-encoded integers element by element. Floats always through their bytes:
    a float32 that goes through a Python float (a double) and back comes back the
    same, but for a signalling NaN, which comes back quiet (other bits than were
    sent, and than the wire decoder reads)."""
    if dtype.kind == "f" and len(values):
        arr = packed_values(msg, field_number, dtype)
        if arr is not None and arr.size == len(values):
            return arr
    return np.asarray(values, dtype=dtype.newbyteorder("="))


def _checked_ints(values: Any, dtype: np.dtype[Any], what: str) -> np.ndarray:
    """Typed integers sent in a wider field, as ``dtype``: InvalidInput for a value
    the narrower type cannot hold."""
    wide = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
    info = np.iinfo(dtype)
    if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise InvalidInput(f"{what} holds a value out of the range of {dtype.name}")
    return wide.astype(dtype.newbyteorder("="))


def _typed_array(msg: Any, field: str, number: int, dtype: np.dtype[Any], values: Any, what: str) -> np.ndarray:
    """Typed values as an array of ``dtype``, which may be narrower than its field's
    (INT8 in int32_values, FLOAT16 in float_values)."""
    if dtype.kind in "iu" and dtype.itemsize < (8 if field.endswith("64_values") else 4):
        return _checked_ints(values, dtype, what)
    if dtype.kind == "f" and dtype.itemsize == 2:
        return _typed_values(msg, number, np.dtype("<f4"), values).astype(np.float16)
    return _typed_values(msg, number, dtype, values)


def _raw_bools(raw: bytes, what: str) -> np.ndarray:
    """BOOL contents as raw bytes: each 0 or 1 (NumPy reads any other byte as a bool
    that is neither)."""
    a = np.frombuffer(raw, dtype=np.uint8)
    if a.size and a.max() > 1:
        raise InvalidInput(f"{what}: BOOL raw bytes must each be 0 or 1")
    return a.view(np.bool_)


def bytes_to_array(raw: bytes, count: int, what: str) -> np.ndarray:
    """BYTES/STRING raw contents — each element a 4-byte little-endian length, then
    its bytes (the Open Inference Protocol's layout, as Triton writes it) — as an
    object array of ``count`` bytes elements; InvalidInput unless the bytes are
    exactly that."""
    pos, end = 0, len(raw)
    if count * 4 > end:  # before allocating: each element takes 4 bytes at least
        raise InvalidInput(f"{what}: raw BYTES contents of {end} bytes cannot hold {count} elements")
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidInput(f"{what}: raw BYTES contents end before element {i} of {count}")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise InvalidInput(f"{what}: raw BYTES element {i} is longer than the bytes left")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != end:
        raise InvalidInput(f"{what}: raw BYTES contents hold more than {count} elements")
    return out


def tensor_to_array(t: pb.Tensor, ranks: Ranks | None = None) -> np.ndarray:
    """A scorewire.v1 Tensor → ndarray of its shape (zero-copy for raw bytes);
    ``ranks``: the ranks its role allows (a request's input: INPUT_RANKS), see
    :func:`check_shape`."""
    # NOTE: one ListFields() call reads every set field; cheaper than probing each
    code = 0
    shape: tuple[int, ...] = ()
    raw = b""
    typed: list[tuple[str, Any]] = []
    for fd, value in t.ListFields():
        name = fd.name
        if name == "raw":
            raw = value
        elif name == "shape":
            shape = tuple(value)
        elif name == "dtype":
            code = value
        else:
            typed.append((name, value))
    dtype = _V1_DTYPES.get(code)
    if dtype is None and code != pb.STRING:
        raise InvalidInput("tensor dtype is missing or unknown (use one of DataType's values, e.g. FLOAT32)")
    if not shape:
        raise InvalidInput("tensor shape is missing")
    count = check_shape(shape, ranks)
    if raw:
        if typed:
            raise InvalidInput("tensor sets both raw bytes and typed values; set one")
        if dtype is None:  # STRING
            return bytes_to_array(raw, count, "tensor").reshape(shape)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"raw tensor has {len(raw)} bytes, shape {list(shape)} of {dtype.name} needs {count * dtype.itemsize}"
            )
        if code == pb.BOOL:
            return _raw_bools(raw, "tensor").reshape(shape)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    expected = _V1_FIELDS[code]
    if len(typed) > 1 or (typed and typed[0][0] != expected):
        raise InvalidInput(f"a {pb.DataType.Name(code)} tensor carries its values in {expected}")
    values = typed[0][1] if typed else ()
    if len(values) != count:
        raise InvalidInput(f"tensor has {len(values)} values, shape {list(shape)} needs {count}")
    if dtype is None:  # STRING
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    number = pb.Tensor.DESCRIPTOR.fields_by_name[expected].number
    return _typed_array(t, expected, number, dtype, values, "tensor").reshape(shape)


def named_tensors_to_arrays(inputs: Any, ranks: Ranks | None = None) -> dict[str, np.ndarray]:
    """scorewire.v1 NamedTensors → arrays by name (each read as
    :func:`tensor_to_array` reads it, at ``ranks``); InvalidInput naming the input
    for a name given twice, no name, or a tensor that cannot be read."""
    out: dict[str, np.ndarray] = {}
    for named in inputs:
        name = named.name
        if not name:
            raise InvalidInput("an input has no name")
        if name in out:
            raise InvalidInput(f"input {name[:64]!r} is given twice")
        try:
            out[name] = tensor_to_array(named.tensor, ranks)
        except InvalidInput as exc:
            raise InvalidInput(f"input {name[:64]!r}: {exc.message}") from None
    return out


def _text(v: object) -> str:
    """A string element as text (bytes decoded as UTF-8, what is not replaced)."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def fill_tensor(t: pb.Tensor, a: np.ndarray, raw: bool) -> None:
    """Write ndarray ``a`` into the (empty) Tensor ``t``; strings always as string_values."""
    code = _V1_OF_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        if a.dtype.kind not in "US":  # NumPy's fixed-width text: STRING too
            raise TypeError(f"cannot encode {a.dtype}")
        code = pb.STRING
    t.dtype = code
    t.shape.extend(a.shape)
    if code == pb.STRING:
        t.string_values.extend(_text(v) for v in a.reshape(-1))
    elif raw:
        if _LITTLE and a.dtype.isnative:
            t.raw = a.tobytes()
        else:
            t.raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    else:
        getattr(t, _V1_FIELDS[code]).extend(a.reshape(-1).tolist())


def array_to_tensor(a: np.ndarray, raw: bool) -> pb.Tensor:
    """An ndarray → a new scorewire.v1 Tensor (see :func:`fill_tensor`)."""
    t = pb.Tensor()
    fill_tensor(t, a, raw)
    return t


def dtype_to_v1(name: str) -> Any:
    """The v1 DataType of a numpy dtype name ("float32" → FLOAT32, "object" → STRING)."""
    return _V1_OF_NUMPY[name]


def dtype_of_v1(code: int) -> str:
    """The numpy dtype name of a v1 DataType ("" for an unknown one)."""
    return _NUMPY_OF_V1.get(code, "")


# ---------------------------------------------------------------------- OIP v2
#: each numeric datatype's little-endian dtype (BYTES has none: its elements vary)
_OIP_DTYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
#: the typed contents field of each datatype (FP16 has none: raw contents only)
_OIP_FIELDS = {
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "BOOL": "bool_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_OIP_OF_NUMPY = {
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "bool": "BOOL", "object": "BYTES",
}  # fmt: skip
_OIP_ALL_FIELDS = (
    "bool_contents", "int_contents", "int64_contents", "uint_contents",
    "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents",
)  # fmt: skip


_OIP_OF_KIND = {(np.dtype(k).kind, np.dtype(k).itemsize): v for k, v in _OIP_OF_NUMPY.items()}


def oip_datatype(numpy_name: str) -> str:
    """The OIP datatype of a numpy dtype name ("float32" → "FP32")."""
    return _OIP_OF_NUMPY[numpy_name]


def oip_datatype_of(a: np.ndarray) -> str:
    """The OIP datatype of an array (strings, as object arrays or NumPy text, are BYTES)."""
    if a.dtype.kind in "US":
        return "BYTES"
    return _OIP_OF_KIND[(a.dtype.kind, a.dtype.itemsize)]


def oip_input_to_array(request: oip.ModelInferRequest, ranks: Ranks | None = INPUT_RANKS) -> tuple[str, np.ndarray]:
    """The one input tensor of a ModelInferRequest → (name, ndarray), its shape
    checked against ``ranks`` (a tabular model's: INPUT_RANKS)."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"the request has {len(request.inputs)} input tensors; this model takes 1")
    n_raw = len(request.raw_input_contents)
    if n_raw not in (0, 1):
        raise InvalidInput("raw_input_contents must have one entry per input tensor")
    inp = request.inputs[0]
    what = f"input {inp.name[:64]!r}" if inp.name else "input"
    return inp.name, _oip_tensor(inp, request.raw_input_contents[0] if n_raw else None, ranks, what)


def oip_inputs_to_arrays(request: oip.ModelInferRequest, ranks: Ranks | None = None) -> dict[str, np.ndarray]:
    """Every input tensor of a ModelInferRequest → arrays by name (each read as
    :func:`oip_input_to_array` reads one); InvalidInput naming the input for a name
    given twice, no name, or a tensor that cannot be read."""
    n_raw = len(request.raw_input_contents)
    if n_raw not in (0, len(request.inputs)):
        raise InvalidInput("raw_input_contents must have one entry per input tensor")
    out: dict[str, np.ndarray] = {}
    for i, inp in enumerate(request.inputs):
        name = inp.name
        if not name:
            raise InvalidInput("an input has no name")
        if name in out:
            raise InvalidInput(f"input {name[:64]!r} is given twice")
        out[name] = _oip_tensor(inp, request.raw_input_contents[i] if n_raw else None, ranks, f"input {name[:64]!r}")
    return out


def _oip_tensor(inp: Any, raw: bytes | None, ranks: Ranks | None, what: str) -> np.ndarray:
    """One InferInputTensor and its raw contents (None: typed) → ndarray."""
    datatype = inp.datatype
    dtype = _OIP_DTYPES.get(datatype)
    if dtype is None and datatype != "BYTES":
        raise InvalidInput(
            f"{what} datatype must be one of FP16, FP32, FP64, INT8-INT64, UINT8-UINT64, BOOL, BYTES"
        )
    shape = tuple(inp.shape)
    if not shape:
        raise InvalidInput(f"{what} shape is missing")
    count = check_shape(shape, ranks)
    # NOTE: with raw contents (Triton's way) the typed fields are looked at only if
    # the contents message was sent at all
    typed = [f for f in _OIP_ALL_FIELDS if len(getattr(inp.contents, f))] if raw is None or inp.HasField("contents") else []
    if raw is not None:
        if typed:
            raise InvalidInput(f"{what} sets both raw_input_contents and typed contents; set one")
        if dtype is None:  # BYTES
            return bytes_to_array(raw, count, what).reshape(shape)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"raw {what} has {len(raw)} bytes, shape {list(shape)} of {datatype} needs {count * dtype.itemsize}"
            )
        if datatype == "BOOL":
            return _raw_bools(raw, what).reshape(shape)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    expected = _OIP_FIELDS.get(datatype)
    if expected is None:
        raise InvalidInput(f"a {datatype} {what} carries its values in raw_input_contents (it has no typed field)")
    if typed and typed != [expected]:
        raise InvalidInput(f"a {datatype} {what} carries its values in contents.{expected}")
    values = getattr(inp.contents, expected)
    if len(values) != count:
        raise InvalidInput(f"{what} has {len(values)} values, shape {list(shape)} needs {count}")
    if dtype is None:  # BYTES
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    number = oip.InferTensorContents.DESCRIPTOR.fields_by_name[expected].number
    return _typed_array(inp.contents, expected, number, dtype, values, what).reshape(shape)


def _bytes_element(v: object) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


def array_to_oip_raw(a: np.ndarray) -> bytes:
    """An output's raw_output_contents entry: little-endian row-major bytes, or for
    BYTES tensors each element as a 4-byte little-endian length and its bytes."""
    if a.dtype.kind == "O" or a.dtype.kind in "US":
        parts = []
        for v in a.reshape(-1):
            b = _bytes_element(v)
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    if _LITTLE and a.dtype.isnative:
        return a.tobytes()
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def oip_raw_to_array(raw: bytes, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`array_to_oip_raw` (used by tests and the CLI)."""
    if datatype == "BYTES":
        count = 1
        for d in shape:
            count *= d
        return bytes_to_array(raw, count, "output").reshape(shape)
    return np.frombuffer(raw, dtype=_OIP_DTYPES[datatype]).reshape(shape)

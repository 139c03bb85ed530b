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
_V1_DTYPES: dict[int, np.dtype[Any]] = {
    pb.FLOAT32: np.dtype("<f4"),
    pb.FLOAT64: np.dtype("<f8"),
    pb.INT32: np.dtype("<i4"),
    pb.INT64: np.dtype("<i8"),
}
_V1_FIELDS: dict[int, str] = {
    pb.FLOAT32: "float_values",
    pb.FLOAT64: "double_values",
    pb.INT32: "int32_values",
    pb.INT64: "int64_values",
    pb.STRING: "string_values",
}
_V1_OF_NUMPY: dict[str, Any] = {"float32": pb.FLOAT32, "float64": pb.FLOAT64, "int32": pb.INT32, "int64": pb.INT64, "object": pb.STRING}
_TYPED_FIELDS = tuple(_V1_FIELDS.values())
# NOTE: keyed by (kind, itemsize), two C fields: dtype.name is built in Python
# (~1.5 µs), and dtype.num differs between equal types (int64 is long or longlong)
_V1_OF_KIND: dict[tuple[str, int], Any] = {
    (np.dtype(k).kind, np.dtype(k).itemsize): v for k, v in _V1_OF_NUMPY.items()
}


class Ranks(NamedTuple):
    """The ranks a tensor may have: its role (for messages) and each rank's layout."""

    what: str
    layouts: dict[int, str]


#: every model scorewire serves takes one input of shape [rows, features]. The one
#: place this rule lives: each decoder of a request's input (scorewire.v1 and OIP,
#: raw and typed) checks its shape against it in :func:`check_shape`, before
#: anything is reshaped or allocated; ``scorewire.grpc._wire`` reads only matrices and
#: leaves any other rank to those decoders
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
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput("tensor shape has a negative dimension")
        if dim > MAX_ELEMENTS:  # even beside a 0 dim: NumPy cannot describe it
            raise InvalidInput("tensor shape is too large")
        count *= dim
        if count > MAX_ELEMENTS:
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
    if dtype is None:
        if code == pb.STRING:
            raise InvalidInput("STRING tensors are not accepted as input")
        raise InvalidInput("tensor dtype is missing or unknown (use FLOAT32, FLOAT64, INT32 or INT64)")
    if not shape:
        raise InvalidInput("tensor shape is missing")
    count = check_shape(shape, ranks)
    if raw:
        if typed:
            raise InvalidInput("tensor sets both raw bytes and typed values; set one")
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"raw tensor has {len(raw)} bytes, shape {list(shape)} of {dtype.name} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    expected = _V1_FIELDS[code]
    if len(typed) > 1 or (typed and typed[0][0] != expected):
        raise InvalidInput(f"a {pb.DataType.Name(code)} tensor carries its values in {expected}")
    values = typed[0][1] if typed else ()
    if len(values) != count:
        raise InvalidInput(f"tensor has {len(values)} values, shape {list(shape)} needs {count}")
    number = pb.Tensor.DESCRIPTOR.fields_by_name[expected].number
    return _typed_values(t, number, dtype, values).reshape(shape)


def fill_tensor(t: pb.Tensor, a: np.ndarray, raw: bool) -> None:
    """Write ndarray ``a`` into the (empty) Tensor ``t``; strings always as string_values."""
    code = _V1_OF_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        raise TypeError(f"cannot encode {a.dtype}")
    t.dtype = code
    t.shape.extend(a.shape)
    if code == pb.STRING:
        t.string_values.extend(str(v) for v in a.reshape(-1))
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
    return _V1_OF_NUMPY[name]


# ---------------------------------------------------------------------- OIP v2
_OIP_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
_OIP_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents"}
_OIP_OF_NUMPY = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64", "object": "BYTES", "bool": "BOOL"}
_OIP_ALL_FIELDS = (
    "bool_contents", "int_contents", "int64_contents", "uint_contents",
    "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents",
)  # fmt: skip


_OIP_OF_KIND = {(np.dtype(k).kind, np.dtype(k).itemsize): v for k, v in _OIP_OF_NUMPY.items()}


def oip_datatype(numpy_name: str) -> str:
    """The OIP datatype of a numpy dtype name ("float32" → "FP32")."""
    return _OIP_OF_NUMPY[numpy_name]


def oip_datatype_of(a: np.ndarray) -> str:
    """The OIP datatype of an array (strings, as object arrays, are BYTES)."""
    return _OIP_OF_KIND[(a.dtype.kind, a.dtype.itemsize)]


def oip_input_to_array(request: oip.ModelInferRequest) -> tuple[str, np.ndarray]:
    """The one input tensor of a ModelInferRequest → (name, ndarray)."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"the request has {len(request.inputs)} input tensors; scorewire models take 1")
    n_raw = len(request.raw_input_contents)
    if n_raw not in (0, len(request.inputs)):
        raise InvalidInput("raw_input_contents must have one entry per input tensor")
    inp = request.inputs[0]
    dtype = _OIP_DTYPES.get(inp.datatype)
    if dtype is None:
        raise InvalidInput("input datatype must be FP32, FP64, INT32 or INT64")
    shape = tuple(inp.shape)
    if not shape:
        raise InvalidInput("input shape is missing")
    count = check_shape(shape, INPUT_RANKS)
    # NOTE: with raw contents (Triton's way) the typed fields are looked at only if
    # the contents message was sent at all
    typed = [f for f in _OIP_ALL_FIELDS if len(getattr(inp.contents, f))] if not n_raw or inp.HasField("contents") else []
    if n_raw:
        if typed:
            raise InvalidInput("the input sets both raw_input_contents and typed contents; set one")
        raw = request.raw_input_contents[0]
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"raw input has {len(raw)} bytes, shape {list(shape)} of {inp.datatype} needs {count * dtype.itemsize}"
            )
        return inp.name, np.frombuffer(raw, dtype=dtype).reshape(shape)
    expected = _OIP_FIELDS[inp.datatype]
    if typed and typed != [expected]:
        raise InvalidInput(f"a {inp.datatype} input carries its values in contents.{expected}")
    values = getattr(inp.contents, expected)
    if len(values) != count:
        raise InvalidInput(f"input has {len(values)} values, shape {list(shape)} needs {count}")
    number = oip.InferTensorContents.DESCRIPTOR.fields_by_name[expected].number
    return inp.name, _typed_values(inp.contents, number, dtype, values).reshape(shape)


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
        out, pos = [], 0
        while pos < len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            out.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return np.asarray(out, dtype=object).reshape(shape)
    return np.frombuffer(raw, dtype=_OIP_DTYPES[datatype]).reshape(shape)

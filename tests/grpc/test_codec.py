"""Paired converters (STYLE.md point 2): each encode/decode pair as a round trip,
and each malformed tensor rejected with a message that does not echo the data."""

from __future__ import annotations

import numpy as np
import pytest

from scorewire.errors import InvalidInput
from scorewire.grpc._codec import (
    array_to_oip_raw,
    array_to_tensor,
    oip_input_to_array,
    oip_raw_to_array,
    tensor_to_array,
)
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7, 5)])
def test_v1_round_trip(dtype, raw, shape, rng):
    a = (rng.normal(size=shape) * 100).astype(dtype)
    t = array_to_tensor(a, raw=raw)
    back = tensor_to_array(pb.Tensor.FromString(t.SerializeToString()))
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    if raw and a.size:
        assert not back.flags.writeable  # zero-copy view of the message bytes


def test_v1_strings_encode():
    t = array_to_tensor(np.array(["a", "bé"], dtype=object), raw=True)
    assert t.dtype == pb.STRING and list(t.string_values) == ["a", "bé"]


SECRET = 123456.789


@pytest.mark.parametrize(
    "tensor, message",
    [
        (pb.Tensor(shape=[1, 1], double_values=[SECRET]), "dtype"),
        (pb.Tensor(dtype=pb.FLOAT64, double_values=[SECRET]), "shape is missing"),
        (pb.Tensor(dtype=pb.FLOAT64, shape=[1, -1], double_values=[SECRET]), "negative"),
        (pb.Tensor(dtype=pb.FLOAT64, shape=[1 << 40, 1 << 40]), "too large"),
        (pb.Tensor(dtype=pb.FLOAT64, shape=[1, 2], double_values=[SECRET]), "has 1 values"),
        (pb.Tensor(dtype=pb.FLOAT64, shape=[1, 1], raw=b"\x00" * 7), "7 bytes"),
        (pb.Tensor(dtype=pb.FLOAT64, shape=[1, 1], raw=b"\x00" * 8, double_values=[SECRET]), "both"),
        (pb.Tensor(dtype=pb.FLOAT64, shape=[1, 1], float_values=[SECRET]), "double_values"),
        (pb.Tensor(dtype=pb.STRING, shape=[1, 1], string_values=["x"]), "STRING"),
    ],
)
def test_v1_malformed(tensor, message):
    with pytest.raises(InvalidInput, match=message) as info:
        tensor_to_array(tensor)
    assert "123456" not in info.value.message


@pytest.mark.parametrize("dtype, datatype", [("float32", "FP32"), ("float64", "FP64"), ("int64", "INT64")])
@pytest.mark.parametrize("raw", [True, False])
def test_oip_round_trip(dtype, datatype, raw, rng):
    a = (rng.normal(size=(4, 3)) * 10).astype(dtype)
    req = oip.ModelInferRequest(model_name="m")
    inp = req.inputs.add(name="input", datatype=datatype, shape=a.shape)
    if raw:
        req.raw_input_contents.append(array_to_oip_raw(a))
    else:
        field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents"}[datatype]
        getattr(inp.contents, field).extend(a.reshape(-1).tolist())
    name, back = oip_input_to_array(oip.ModelInferRequest.FromString(req.SerializeToString()))
    assert name == "input"
    np.testing.assert_array_equal(back, a)
    np.testing.assert_array_equal(oip_raw_to_array(array_to_oip_raw(a), datatype, a.shape), a)


def test_oip_bytes_round_trip():
    a = np.array(["setosa", "", "virginica"], dtype=object)
    back = oip_raw_to_array(array_to_oip_raw(a), "BYTES", (3,))
    assert [b.decode() for b in back] == ["setosa", "", "virginica"]


def _req(**kw):
    req = oip.ModelInferRequest(model_name="m")
    inp = req.inputs.add(name="input", datatype=kw.pop("datatype", "FP64"), shape=kw.pop("shape", [1, 1]))
    if "fp64" in kw:
        inp.contents.fp64_contents.extend(kw.pop("fp64"))
    if "fp32" in kw:
        inp.contents.fp32_contents.extend(kw.pop("fp32"))
    for raw in kw.pop("raw", []):
        req.raw_input_contents.append(raw)
    return req


@pytest.mark.parametrize(
    "req, message",
    [
        (oip.ModelInferRequest(model_name="m"), "0 input tensors"),
        (_req(datatype="BYTES"), "datatype"),
        (_req(shape=[], fp64=[SECRET]), "shape is missing"),
        (_req(shape=[-1, 1], fp64=[SECRET]), "negative"),
        (_req(fp64=[SECRET, SECRET]), "has 2 values"),
        (_req(raw=[b"\x00" * 3]), "3 bytes"),
        (_req(raw=[b"\x00" * 8], fp64=[SECRET]), "both"),
        (_req(raw=[b"\x00" * 8, b"\x00" * 8]), "one entry per input"),
        (_req(fp32=[SECRET]), "fp64_contents"),
    ],
)
def test_oip_malformed(req, message):
    with pytest.raises(InvalidInput, match=message) as info:
        oip_input_to_array(req)
    assert "123456" not in info.value.message


def test_equal_dtypes_of_another_number_encode_alike():
    """int64 may be numpy's long or longlong (as onnxruntime returns it)."""
    from scorewire.grpc._codec import oip_datatype_of

    for a in (np.array([1, 2], dtype=np.longlong), np.array([1, 2], dtype=np.int64)):
        assert array_to_tensor(a, raw=True).dtype == pb.INT64
        assert oip_datatype_of(a) == "INT64"
    assert oip_datatype_of(np.array(["x"], dtype=object)) == "BYTES"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 9, 7680])
def test_typed_floats_decode_through_packed_bytes(dtype, n, rng):
    """Large typed float tensors are read from the packed field's bytes; the values
    (NaN, -0.0, extremes included) are exactly the ones sent."""
    from scorewire.grpc._codec import packed_values

    a = rng.normal(size=n).astype(dtype)
    a[0] = -0.0
    if n > 2:
        a[1], a[2] = np.nan, np.finfo(dtype).max
    t = array_to_tensor(a.reshape(1, n), raw=False)
    back = tensor_to_array(pb.Tensor.FromString(t.SerializeToString()))
    np.testing.assert_array_equal(back.reshape(-1), a)
    assert np.signbit(back.reshape(-1)[0])
    field = 4 if dtype == "float32" else 5
    assert np.array_equal(packed_values(t, field, np.dtype(dtype).newbyteorder("<")), a, equal_nan=True)
    assert packed_values(pb.Tensor(dtype=pb.FLOAT64, shape=[1]), 5, np.dtype("<f8")) is None

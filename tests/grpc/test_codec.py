"""Paired converters: each encode/decode pair as a round trip,
and each malformed tensor rejected with a message that does not echo the data."""

from __future__ import annotations

import numpy as np
import pytest

from scorewire.errors import InvalidInput
from scorewire.grpc._codec import (
    INPUT_RANKS,
    MAX_RANK,
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
        (pb.Tensor(dtype=pb.STRING, shape=[1, 2], string_values=["x"]), "has 1 values"),
        (pb.Tensor(dtype=pb.STRING, shape=[1, 1], raw=b"\x05\x00\x00\x00ab"), "longer than the bytes left"),
        (pb.Tensor(dtype=pb.INT8, shape=[1, 1], int32_values=[300]), "out of the range of int8"),
        (pb.Tensor(dtype=pb.BOOL, shape=[1, 1], raw=b"\x02"), "0 or 1"),
    ],
)
def test_v1_malformed(tensor, message):
    with pytest.raises(InvalidInput, match=message) as info:
        tensor_to_array(tensor)
    assert "123456" not in info.value.message


@pytest.mark.parametrize("rank", [1, 3, 33, 65, 200])
@pytest.mark.parametrize("raw", [True, False])
def test_an_input_of_another_rank_is_named_before_anything_is_reshaped(rank, raw):
    """Every model takes [rows, features]: any other rank is InvalidInput from the
    shape alone, contents of the right length or not (NumPy holds 64 dims at most;
    reshaping first raised its ValueError, answered INTERNAL)."""
    shape = [1] * (rank - 1) + [3]
    values = [SECRET] * 3
    t = pb.Tensor(dtype=pb.FLOAT64, shape=shape)
    req = _req(shape=shape, raw=[np.array(values).tobytes()] if raw else [], fp64=[] if raw else values)
    if raw:
        t.raw = np.array(values).tobytes()
    else:
        t.double_values.extend(values)
    for decode in (lambda: tensor_to_array(t, INPUT_RANKS), lambda: oip_input_to_array(req)):
        with pytest.raises(InvalidInput) as info:
            decode()
        assert info.value.message == f"input must have shape [rows, features] (rank 2), got rank {rank}"


@pytest.mark.parametrize("shape", [[0, 1 << 62], [1 << 62, 0], [0, (1 << 63) - 1], [0, 1 << 35, 1 << 35]])
def test_a_dim_too_large_is_rejected_even_beside_a_zero(shape):
    """No values are needed, but NumPy cannot describe the shape."""
    with pytest.raises(InvalidInput, match="too large"):
        tensor_to_array(pb.Tensor(dtype=pb.FLOAT64, shape=shape))
    with pytest.raises(InvalidInput, match="too large" if len(shape) == 2 else "rank 3"):
        oip_input_to_array(_req(shape=shape))


def test_a_tensor_whose_role_sets_no_rank_has_at_most_max_rank():
    """An output read back by a client, say: any rank NumPy 1.x holds."""
    ok = pb.Tensor(dtype=pb.INT64, shape=[1] * MAX_RANK, int64_values=[7])
    assert tensor_to_array(ok).shape == (1,) * MAX_RANK
    with pytest.raises(InvalidInput, match=f"rank {MAX_RANK + 1}, over the limit of {MAX_RANK}"):
        tensor_to_array(pb.Tensor(dtype=pb.INT64, shape=[1] * (MAX_RANK + 1), int64_values=[7]))


@pytest.mark.parametrize("dtype", [pb.INT64, pb.STRING])
def test_truth_is_rows_or_rows_by_targets(dtype):
    from scorewire.grpc._predict import truth_to_array

    def truth(shape, n):
        if dtype == pb.STRING:
            return pb.Tensor(dtype=dtype, shape=shape, string_values=["1"] * n)
        return pb.Tensor(dtype=dtype, shape=shape, int64_values=[1] * n)

    assert truth_to_array(truth([3], 3)).shape == (3,)
    assert truth_to_array(truth([3, 2], 6)).shape == (3, 2)
    for shape in ([3, 1, 1], [1] * 65):
        with pytest.raises(InvalidInput) as info:
            truth_to_array(truth(shape, 3))
        want = f"truth must have shape [rows] or [rows, targets] (rank 1 or 2), got rank {len(shape)}"
        assert info.value.message == want


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
        (_req(datatype="COMPLEX64"), "datatype"),
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


def test_bytes_contents_too_short_for_their_shape_allocate_nothing():
    """Found by make fuzz: a BYTES shape of 2^34 elements with a few raw bytes was
    an object array of 2^34 slots (128 GiB) before its length was checked."""
    from scorewire.grpc._codec import bytes_to_array

    with pytest.raises(InvalidInput, match="cannot hold 17179869183 elements"):
        bytes_to_array(b"\x00" * 8, (1 << 34) - 1, "input 'x'")
    req = oip.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="BYTES", shape=[(1 << 34) - 1])
    req.raw_input_contents.append(b"\x00" * 8)
    with pytest.raises(InvalidInput, match="input 'x': raw BYTES contents of 8 bytes"):
        oip_input_to_array(req, None)


def test_dims_beside_a_zero_that_numpy_cannot_hold():
    """Found by make fuzz: [0, 2^34, 2^34] holds no values, but NumPy refuses the
    shape (its nonzero dims overflow): InvalidInput at any rank, not a ValueError."""
    t = pb.Tensor(dtype=pb.INT64, shape=[0, 1 << 34, 1 << 34])
    with pytest.raises(InvalidInput, match="too large"):
        tensor_to_array(t)


@pytest.mark.parametrize(
    ("dtype", "field", "values", "want"),
    [
        (pb.INT8, "int32_values", [-128, 127], np.array([-128, 127], np.int8)),
        (pb.UINT8, "uint32_values", [0, 255], np.array([0, 255], np.uint8)),
        (pb.UINT64, "uint64_values", [0, (1 << 64) - 1], np.array([0, (1 << 64) - 1], np.uint64)),
        (pb.BOOL, "bool_values", [True, False], np.array([True, False])),
        (pb.FLOAT16, "float_values", [0.5, -2.0], np.array([0.5, -2.0], np.float16)),
        (pb.STRING, "string_values", ["a", "bé"], np.array(["a", "bé"], dtype=object)),
    ],
)
def test_v1_typed_values_of_every_dtype(dtype, field, values, want):
    t = pb.Tensor(dtype=dtype, shape=[2], **{field: values})
    got = tensor_to_array(pb.Tensor.FromString(t.SerializeToString()))
    assert got.dtype == want.dtype and got.tolist() == want.tolist()
    back = array_to_tensor(got, raw=True)  # and raw, round trip (strings stay typed)
    again = tensor_to_array(back)
    assert again.dtype == want.dtype and again.tolist() == want.tolist()


def test_v1_and_oip_strings_raw_in_the_bytes_layout():
    raw = b"\x01\x00\x00\x00a\x03\x00\x00\x00b\xc3\xa9"
    assert tensor_to_array(pb.Tensor(dtype=pb.STRING, shape=[2], raw=raw)).tolist() == [b"a", "bé".encode()]
    assert array_to_oip_raw(np.array(["a", "bé"], dtype=object)) == raw

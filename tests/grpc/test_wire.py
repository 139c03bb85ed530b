"""scorewire.grpc._wire against protobuf itself: what it decodes equals what the general
decoder makes of the same bytes, what it encodes parses back to the message the
general encoder builds, and whatever it declines is left to the general path."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scorewire.errors import InvalidInput
from scorewire.grpc import _wire
from scorewire.grpc._codec import (
    INPUT_RANKS,
    MAX_ELEMENTS,
    array_to_tensor,
    fill_tensor,
    tensor_to_array,
)
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._oip import OIP
from scorewire.grpc._predict import V1

from ..fuzz.reading import OneModel


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def fields(request: _wire.Request) -> tuple:
    """Everything of a read request but its matrix."""
    r = request
    return r.model, r.version, r.request_id, r.outputs, r.input_name, r.raw, r.error


def decode_tensor(blob: bytes) -> np.ndarray | None:
    """The tensor decoder, through ``decode_predict``: ``blob`` as the input (field 3)
    of an otherwise empty request."""
    request = _wire.decode_predict(b"\x1a" + _varint(len(blob)) + blob)
    return None if request is None else request.X


def decode_infer_input(blob: bytes) -> tuple[str, np.ndarray] | None:
    """The OIP input decoder, through ``decode_infer``."""
    request = _wire.decode_infer(blob)
    return None if request is None else (request.input_name, request.X)


FLOATS = st.sampled_from([np.float32, np.float64])
MATRIX_SHAPES = hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), dtype=FLOATS, shape=MATRIX_SHAPES, raw=st.booleans())
def test_decode_equals_the_general_decoder(data, dtype, shape, raw):
    X = data.draw(hnp.arrays(dtype, shape, elements=st.floats(width=32 if dtype == np.float32 else 64)))
    blob = array_to_tensor(X, raw).SerializeToString()
    got = decode_tensor(blob)
    want = tensor_to_array(pb.Tensor.FromString(blob))
    assert got is not None
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.flags.c_contiguous and got.flags.aligned and got.flags.writeable
    np.testing.assert_array_equal(got, want)  # NaN == NaN here, bit patterns included
    assert got.tobytes() == want.tobytes()


def _declined(t: pb.Tensor) -> None:
    assert decode_tensor(t.SerializeToString()) is None


X2 = np.arange(6, dtype=np.float64).reshape(2, 3)


@pytest.mark.parametrize(
    "tensor",
    [
        pb.Tensor(dtype=pb.STRING, shape=[1, 1], raw=b"\x05\x00\x00\x00a"),  # strings, short
        pb.Tensor(dtype=pb.FLOAT64, raw=X2.tobytes()),  # no shape
        pb.Tensor(dtype=pb.FLOAT64, shape=[2, 3], raw=X2.tobytes()[:-1]),  # short
        pb.Tensor(dtype=pb.FLOAT64, shape=[2, 2], raw=X2.tobytes()),  # long
        pb.Tensor(dtype=pb.FLOAT64, shape=[2, 3], double_values=range(5)),
        pb.Tensor(dtype=pb.FLOAT64, shape=[2, 3], float_values=range(6)),  # wrong field
        pb.Tensor(dtype=pb.FLOAT32, shape=[2, 3], double_values=range(6)),
        pb.Tensor(dtype=pb.FLOAT64, shape=[2, 3], raw=X2.tobytes(), double_values=range(6)),  # both
        pb.Tensor(shape=[2, 3], raw=X2.tobytes()),  # no dtype
        pb.Tensor(dtype=pb.FLOAT64, shape=[2, 3]),  # no values
        pb.Tensor(dtype=pb.FLOAT64, shape=[1 << 20, 1 << 20]),  # absurd
        pb.Tensor(dtype=pb.FLOAT64, shape=[0, 1 << 62]),  # absurd beside a 0 dim
        pb.Tensor(dtype=pb.FLOAT64, shape=[6], raw=X2.tobytes()),  # 1-D
        pb.Tensor(dtype=pb.FLOAT64, shape=[1, 2, 3], raw=X2.tobytes()),  # 3-D
        pb.Tensor(dtype=pb.FLOAT64, shape=[1] * 64 + [6], raw=X2.tobytes()),  # rank 65
    ],
)
def test_what_it_declines_the_general_path_rejects(tensor):
    _declined(tensor)
    with pytest.raises(InvalidInput):
        tensor_to_array(tensor, INPUT_RANKS)


@pytest.mark.parametrize(
    "tensor",
    [
        pb.Tensor(dtype=pb.INT64, shape=[2, 3], int64_values=range(6)),
        pb.Tensor(dtype=pb.INT32, shape=[2, 3], raw=np.zeros(6, np.int32).tobytes()),
    ],
)
def test_declines_tensors_the_service_checks(tensor):
    """Integer tensors decode the general way; the service then answers with the
    model's own dtype message."""
    _declined(tensor)
    assert tensor_to_array(tensor, INPUT_RANKS).size == 6


def test_declines_unusual_encodings_the_general_path_reads():
    """Protobuf allows them; scorewire's fast path leaves them to protobuf."""
    ok = array_to_tensor(X2, raw=True).SerializeToString()
    unknown = ok + b"\x78\x01"  # field 15, varint: an unknown field
    twice = ok + b"\x08\x02"  # dtype written again
    unpacked = b"\x08\x02\x10\x02\x10\x03\x1a\x30" + X2.tobytes()  # shape as two varint records
    for blob in (unknown, twice, unpacked):
        assert decode_tensor(blob) is None
        np.testing.assert_array_equal(tensor_to_array(pb.Tensor.FromString(blob)), X2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_are_declined_or_decoded_as_protobuf_reads_them(blob):
    got = decode_tensor(blob)
    if got is None:
        return
    want = tensor_to_array(pb.Tensor.FromString(blob))
    assert got.tobytes() == want.tobytes() and got.shape == want.shape and got.dtype == want.dtype


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(min_value=0))
def test_truncated_tensors_never_crash(data, cut):
    X = np.frombuffer(data[: len(data) // 8 * 8] or b"\0" * 8, dtype=np.float64).reshape(1, -1)
    blob = array_to_tensor(X, raw=False).SerializeToString()
    assert decode_tensor(blob[: cut % len(blob)]) is None



EDGE_DIMS = [0, 1, -1, MAX_ELEMENTS, MAX_ELEMENTS + 1, 1 << 62, (1 << 63) - 1, -(1 << 63)]
ANY_SHAPES = st.one_of(
    st.lists(st.integers(0, 4), max_size=70),  # any rank, small dims (contents that fit)
    st.lists(st.sampled_from(EDGE_DIMS), min_size=2, max_size=2),  # a matrix, dims at the limits
    st.lists(st.sampled_from(EDGE_DIMS), max_size=4),  # a few dims at the limits
    st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=4),  # a few dims, any int64
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(shape=ANY_SHAPES, dtype=FLOATS, wrong=st.integers(0, 8))
@example(shape=[1] * 64 + [3], dtype=np.float64, wrong=0)  # rank 65: more than NumPy holds
@example(shape=[0, 1 << 62], dtype=np.float64, wrong=0)  # no values, but NumPy cannot describe it
def test_any_shape_is_read_as_a_matrix_or_left_to_a_general_path_that_rejects_it(shape, dtype, wrong):
    """Whatever the rank and dims, raw or typed, with as many values as the shape
    needs (when that is a few) or ``wrong`` many: the wire decoders read a matrix
    exactly when the general decoders accept the input, and give what they give;
    what they decline, the general decoders reject with InvalidInput (never
    NumPy's ValueError for a rank or size it cannot hold)."""
    from scorewire.grpc._codec import oip_input_to_array
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    needed = math.prod(shape) if all(d >= 0 for d in shape) else -1
    fp64 = dtype == np.float64
    for n in {needed, wrong} if 0 <= needed <= 256 else {wrong}:
        for raw in (True, False):
            values = np.arange(n, dtype=dtype)
            tensor = pb.Tensor(dtype=pb.FLOAT64 if fp64 else pb.FLOAT32, shape=shape)
            request = oip.ModelInferRequest(model_name="m")
            inp = request.inputs.add(name="input", datatype="FP64" if fp64 else "FP32", shape=shape)
            if raw:
                tensor.raw = values.tobytes()
                request.raw_input_contents.append(values.tobytes())
            else:
                (tensor.double_values if fp64 else tensor.float_values).extend(values.tolist())
                (inp.contents.fp64_contents if fp64 else inp.contents.fp32_contents).extend(values.tolist())
            _read_alike(decode_tensor(tensor.SerializeToString()), partial(tensor_to_array, tensor, INPUT_RANKS), shape)
            infer = decode_infer_input(request.SerializeToString())
            _read_alike(None if infer is None else infer[1], partial(oip_input_to_array, request), shape)


def _read_alike(got: np.ndarray | None, general, shape: list[int]) -> None:
    """A wire decoder's matrix (None: declined) against the general decoder's
    answer (an array, or a name and an array) for the same input."""
    if got is None:
        with pytest.raises(InvalidInput):
            general()
        return
    want = general()
    want = want[1] if isinstance(want, tuple) else want
    assert got.ndim == 2 and got.shape == want.shape == tuple(shape)
    assert got.tobytes() == want.tobytes()

TEXT = st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(), dtype=FLOATS, shape=MATRIX_SHAPES, raw=st.booleans(), model=TEXT, request_id=TEXT,
    version=st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), outputs=st.lists(TEXT, max_size=3),
)  # fmt: skip
def test_decode_predict_equals_protobuf(data, dtype, shape, raw, model, request_id, version, outputs):
    X = data.draw(hnp.arrays(dtype, shape, elements=st.floats(width=32 if dtype == np.float32 else 64)))
    request = pb.PredictRequest(
        model=model, version=version, input=array_to_tensor(X, raw), outputs=outputs, request_id=request_id
    )
    got = _wire.decode_predict(request.SerializeToString())
    assert got is not None
    assert fields(got) == (model, version, request_id, tuple(outputs), "", bool(request.input.raw), None)
    want = tensor_to_array(request.input)
    assert got.X.dtype == want.dtype and got.X.shape == want.shape and got.X.tobytes() == want.tobytes()


def test_decode_predict_leaves_the_rare_to_protobuf():
    body = pb.PredictRequest(model="m", input=array_to_tensor(X2, raw=True), request_id="r").SerializeToString()
    assert _wire.decode_predict(body) is not None
    parseable = [
        body + b"\x78\x01",  # field 15, an unknown field
        body + b"\x0a\x01n",  # model written twice (protobuf: the last wins)
        body + b"\x10\x01\x10\x02",  # version twice
        body + b"\x2a\x01s",  # request_id twice
        body + b"\x1a\x00",  # input twice (protobuf merges them)
        b"\x12\x01m" + body,  # field 2 with the wrong wire type
        pb.PredictRequest(model="m").SerializeToString(),  # no input
        pb.PredictRequest(model="m", input=pb.Tensor(dtype=pb.INT64, shape=[1, 1], int64_values=[1])).SerializeToString(),
    ]
    unparseable = [b"\x0a\x02\xff\xfe" + body, body[:-1], b"\xff\xff\xff"]  # bad UTF-8, truncated, garbage
    _left_to_protobuf(_wire.decode_predict, pb.PredictRequest, parseable, unparseable)


def test_an_empty_raw_field_reads_as_protobuf_reads_it():
    """Found by tests/fuzz/fuzz_predict.py: a raw field written empty (zero rows) is
    no raw field to protobuf, so the answer is typed; the wire decoder said raw."""
    tensor = b"\x08\x02\x12\x02\x00\x03\x1a\x00"  # FLOAT64, shape [0, 3], raw = b""
    blob = b"\x1a" + _varint(len(tensor)) + tensor
    got = _wire.decode_predict(blob)
    assert got is not None and got.raw is False and got.X.shape == (0, 3)
    assert fields(got) == fields(V1(OneModel()).from_message(pb.PredictRequest.FromString(blob)))


#: a length-delimited field's key (field 1, wire type 2: 0x0a) written in more bytes
#: than protobuf reads a key in (a tag is a 32-bit varint: at most 5 bytes)
SIX_BYTE_KEY = b"\x8a\x80\x80\x80\x80\x00"
#: five bytes, but a value past 2**32 - 1
FIVE_BYTE_KEY_PAST_32_BITS = b"\x8a\x80\x80\x80\x10"
#: five bytes: protobuf reads it
FIVE_BYTE_KEY = b"\x8a\x80\x80\x80\x00"


def test_keys_protobuf_refuses_are_left_to_it():
    """Found by tests/fuzz/fuzz_predict.py: a key in 6 bytes is a valid varint but a
    malformed message to protobuf; the wire decoders read it."""
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    body = pb.PredictRequest(input=array_to_tensor(X2, raw=True)).SerializeToString()
    tensor = array_to_tensor(X2, raw=True).SerializeToString()
    infer = _infer_request(X2, True).SerializeToString()
    bad = [SIX_BYTE_KEY, FIVE_BYTE_KEY_PAST_32_BITS]
    _left_to_protobuf(_wire.decode_predict, pb.PredictRequest, [], [body + key + b"\x01n" for key in bad])
    in_tensor = tensor + SIX_BYTE_KEY + b"\x00"  # an empty field 1 record, in the tensor
    _left_to_protobuf(_wire.decode_predict, pb.PredictRequest, [], [b"\x1a" + _varint(len(in_tensor)) + in_tensor])
    _left_to_protobuf(_wire.decode_infer, oip.ModelInferRequest, [], [infer + key + b"\x01n" for key in bad])
    assert _wire.decode_predict(body + FIVE_BYTE_KEY + b"\x01n").model == "n"
    unnamed = _infer_request(X2, True)
    unnamed.model_name = ""
    assert _wire.decode_infer(unnamed.SerializeToString() + FIVE_BYTE_KEY + b"\x01n").model == "n"


def test_a_contents_field_numbered_0_is_left_to_protobuf():
    """Found by tests/fuzz/fuzz_infer.py: a length-delimited field numbered 0 in an
    input's contents (protobuf refuses field 0) was read as its values."""
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    X = np.array([[0.0, 1.0]])
    contents = b"\x02\x10" + X.tobytes()  # key 0x02: field 0, length-delimited
    inp = b"\x0a\x05input\x12\x04FP64\x1a\x02\x01\x02\x2a" + _varint(len(contents)) + contents
    blob = b"\x2a" + _varint(len(inp)) + inp
    _left_to_protobuf(_wire.decode_infer, oip.ModelInferRequest, [], [blob])
    good = blob.replace(b"\x2a\x12\x02\x10", b"\x2a\x12\x3a\x10")  # fp64_contents (7)
    assert _wire.decode_infer(good).X.tolist() == X.tolist()


def test_a_float32_signalling_nan_reads_the_same_bits_on_both_paths():
    """Found by tests/fuzz/fuzz_predict.py: the general path read few float32 values
    through Python floats (doubles), which quiet a signalling NaN: other bits than
    the wire decoder's, which copies the bytes sent."""
    from scorewire.grpc._codec import oip_input_to_array
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    values = np.array([[1.5, 0.0]], dtype="<f4")
    values.view("<u4")[0, 1] = 0xFFB20A0A  # a signalling NaN, with a payload
    tensor = b"\x08\x01\x12\x02\x01\x02\x22\x08" + values.tobytes()  # FLOAT32 [1, 2], float_values
    blob = b"\x1a" + _varint(len(tensor)) + tensor
    got = _wire.decode_predict(blob).X
    want = tensor_to_array(pb.PredictRequest.FromString(blob).input, INPUT_RANKS)
    assert got.tobytes() == want.tobytes() == values.tobytes()
    contents = b"\x32\x08" + values.tobytes()  # fp32_contents, the bytes as they are
    inp = b"\x0a\x05input\x12\x04FP32\x1a\x02\x01\x02\x2a" + _varint(len(contents)) + contents
    blob = b"\x2a" + _varint(len(inp)) + inp
    assert oip_input_to_array(oip.ModelInferRequest.FromString(blob))[1].tobytes() == values.tobytes()
    assert _wire.decode_infer(blob).X.tobytes() == values.tobytes()


def test_an_input_named_twice_first_not_utf8_is_left_to_protobuf():
    """Found by tests/fuzz/fuzz_infer.py: protobuf refuses a string field that is not
    UTF-8 wherever it occurs; the wire decoder checked only the last name."""
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    inp = b"\x0a\x02\xe2\x82\x12\x04FP64\x0a\x01n\x1a\x02\x00\x03"  # name, datatype, name, shape [0, 3]
    blob = b"\x2a" + _varint(len(inp)) + inp + b"\x3a\x00"  # the input, empty raw contents
    _left_to_protobuf(_wire.decode_infer, oip.ModelInferRequest, [], [blob])
    fixed = blob.replace(b"\xe2\x82", b"ok")
    assert _wire.decode_infer(fixed).input_name == "n"


def _left_to_protobuf(decode, message_class, parseable, unparseable) -> None:
    """``decode`` declines every blob; protobuf parses the first ones and refuses
    the others (so the caller's protobuf parse answers them)."""
    for blob in parseable:
        assert decode(blob) is None
        message_class.FromString(blob)
    for blob in unparseable:
        assert decode(blob) is None
        with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError, by its own name per backend
            message_class.FromString(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_requests_are_declined_or_decoded_as_protobuf_reads_them(blob):
    got = _wire.decode_predict(blob)
    if got is None:
        return
    want = V1(OneModel()).from_message(pb.PredictRequest.FromString(blob))  # protobuf's reading, as served
    assert fields(got) == fields(want)
    assert got.X.tobytes() == want.X.tobytes() and got.X.shape == want.X.shape


OUTPUT_DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.int64])


@st.composite
def outputs(draw):
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=4, unique=True))
    out = {}
    for name in names:
        dtype = draw(OUTPUT_DTYPES)
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6))
        if np.dtype(dtype).kind == "f":
            elements = st.floats(width=32 if dtype == np.float32 else 64)
        else:
            info = np.iinfo(dtype)
            elements = st.integers(int(info.min), int(info.max))
        out[name] = draw(hnp.arrays(dtype, shape, elements=elements))
    return out


@settings(max_examples=200, deadline=None)
@given(
    model=st.text(max_size=20),
    version=st.integers(min_value=0, max_value=2**62),
    request_id=st.text(max_size=20),
    outs=outputs(),
    raw=st.booleans(),
)
def test_encode_parses_to_the_message_the_general_encoder_builds(model, version, request_id, outs, raw):
    body = _wire.encode_response(model, version, request_id, outs, raw)
    want = pb.PredictResponse(model=model, version=version, request_id=request_id)
    for name, value in outs.items():
        fill_tensor(want.outputs[name], value, raw)
    assert body is not None
    got = pb.PredictResponse.FromString(body)
    # NaN payloads compare unequal as floats: compare the canonical serializations
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    "value",
    [
        np.array(["a", "b"], dtype=object),  # string labels: protobuf's string_values
        np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
        np.arange(3, dtype=">f8"),  # big-endian
        np.arange(3, dtype=np.uint8),
        np.arange(3, dtype=np.float16),
        [1.0, 2.0],  # not an ndarray
    ],
)
def test_encode_declines_what_it_does_not_write(value):
    assert _wire.encode_response("m", 1, "", {"out": value}, False) is None


@pytest.mark.parametrize("request_id", ["", "r-1", "é" * 200])
def test_stream_response_wraps_the_body(request_id):
    inner = pb.PredictResponse(model="m", version=2, request_id=request_id)
    fill_tensor(inner.outputs["value"], np.arange(3.0), raw=False)
    got = pb.PredictStreamResponse.FromString(_wire.stream_response(request_id, inner.SerializeToString()))
    assert got == pb.PredictStreamResponse(request_id=request_id, response=inner)


@settings(max_examples=150, deadline=None)
@given(
    model=st.text(max_size=20),
    version=st.integers(min_value=1, max_value=2**40).map(str),
    request_id=st.text(max_size=20),
    outs=outputs(),
)
def test_encode_infer_response_parses_to_the_general_one(model, version, request_id, outs):
    from scorewire.grpc._codec import array_to_oip_raw, oip_datatype_of
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    body = _wire.encode_infer_response(model, version, request_id, outs)
    want = oip.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for name, value in outs.items():
        want.outputs.add(name=name, datatype=oip_datatype_of(value), shape=value.shape)
        want.raw_output_contents.append(array_to_oip_raw(value))
    assert body is not None
    assert oip.ModelInferResponse.FromString(body) == want
    stream = oip.ModelStreamInferResponse.FromString(_wire.stream_response("", body))
    assert stream == oip.ModelStreamInferResponse(infer_response=want)


def test_encode_infer_response_declines_string_outputs():
    assert _wire.encode_infer_response("m", "1", "", {"label": np.array(["a"], dtype=object)}) is None


def _infer_request(X, raw: bool, name: str = "input", **extra):
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    request = oip.ModelInferRequest(model_name="m", model_version="1", id="x", **extra)
    datatype = "FP32" if X.dtype == np.float32 else "FP64"
    inp = request.inputs.add(name=name, datatype=datatype, shape=X.shape)
    if raw:
        request.raw_input_contents.append(X.tobytes())
    else:
        getattr(inp.contents, "fp32_contents" if datatype == "FP32" else "fp64_contents").extend(X.ravel().tolist())
    return request


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=FLOATS, shape=MATRIX_SHAPES, raw=st.booleans(), name=st.text(max_size=10))
def test_decode_infer_input_equals_the_general_decoder(data, dtype, shape, raw, name):
    from scorewire.grpc._codec import oip_input_to_array

    X = data.draw(hnp.arrays(dtype, shape, elements=st.floats(width=32 if dtype == np.float32 else 64)))
    request = _infer_request(X, raw, name)
    request.outputs.add(name="label")
    got = decode_infer_input(request.SerializeToString())
    want_name, want = oip_input_to_array(request)
    assert got is not None
    assert got[0] == want_name and got[1].dtype == want.dtype and got[1].shape == want.shape
    assert got[1].tobytes() == want.tobytes() and got[1].flags.aligned


def test_decode_infer_input_declines_what_the_general_path_handles():
    from scorewire.grpc._codec import oip_input_to_array
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    two_inputs = _infer_request(X, True)
    two_inputs.inputs.add(name="b", datatype="FP64", shape=[2, 3])
    both = _infer_request(X, True)
    both.inputs[0].contents.fp64_contents.extend(range(6))
    ints = oip.ModelInferRequest(model_name="m")
    ints.inputs.add(name="input", datatype="INT64", shape=[2, 3]).contents.int64_contents.extend(range(6))
    short = _infer_request(X, True)
    short.raw_input_contents[0] = X.tobytes()[:-8]
    wrong_field = _infer_request(X, False)
    wrong_field.inputs[0].datatype = "FP32"
    one_d = _infer_request(X.ravel(), True)
    rank_65 = _infer_request(X, True)
    del rank_65.inputs[0].shape[:]
    rank_65.inputs[0].shape.extend([1] * 64 + [6])  # NumPy holds at most 64 dims
    for request in (two_inputs, both, short, wrong_field, one_d, rank_65):
        assert decode_infer_input(request.SerializeToString()) is None
        with pytest.raises(InvalidInput):
            oip_input_to_array(request)
    # decoded the general way; the service checks the dtype
    assert decode_infer_input(ints.SerializeToString()) is None
    assert oip_input_to_array(ints)[1].size == 6


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(), dtype=FLOATS, shape=MATRIX_SHAPES, raw=st.booleans(), name=TEXT, model=TEXT, version=TEXT,
    request_id=TEXT, outputs=st.lists(TEXT, max_size=3),
)  # fmt: skip
def test_decode_infer_equals_protobuf(data, dtype, shape, raw, name, model, version, request_id, outputs):
    from scorewire.grpc._codec import oip_input_to_array

    X = data.draw(hnp.arrays(dtype, shape, elements=st.floats(width=32 if dtype == np.float32 else 64)))
    request = _infer_request(X, raw, name)
    request.model_name, request.model_version, request.id = model, version, request_id
    for out in outputs:
        request.outputs.add(name=out)
    got = _wire.decode_infer(request.SerializeToString())
    assert got is not None
    assert fields(got) == (model, version, request_id, tuple(outputs), name, False, None)
    want = oip_input_to_array(request)[1]
    assert got.X.dtype == want.dtype and got.X.shape == want.shape and got.X.tobytes() == want.tobytes()


def test_decode_infer_leaves_the_rare_to_protobuf():
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    body = _infer_request(X, True).SerializeToString()
    assert _wire.decode_infer(body) is not None
    with_parameters = _infer_request(X, True)
    with_parameters.parameters["priority"].int64_param = 1
    output_parameters = _infer_request(X, True)
    output_parameters.outputs.add(name="label").parameters["classification"].int64_param = 2
    parseable = [
        with_parameters.SerializeToString(),
        output_parameters.SerializeToString(),
        body + b"\x42\x00",  # field 8, an unknown field
        body + b"\x0a\x01n",  # model_name twice (protobuf: the last wins)
        body + b"\x1a\x01i",  # id twice
        body + b"\x20\x01",  # field 4 with the wrong wire type
    ]
    unparseable = [b"\x0a\x02\xff\xfe" + body, body[:-1]]  # bad UTF-8, truncated
    _left_to_protobuf(_wire.decode_infer, oip.ModelInferRequest, parseable, unparseable)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_infer_requests_are_declined_or_decoded_as_protobuf_reads_them(blob):
    from scorewire.grpc._gen.inference import grpc_service_pb2 as oip

    got = _wire.decode_infer(blob)
    if got is None:
        return
    want = OIP(OneModel()).from_message(oip.ModelInferRequest.FromString(blob))  # protobuf's reading, as served
    assert fields(got) == fields(want)
    assert got.X.tobytes() == want.X.tobytes() and got.X.shape == want.X.shape

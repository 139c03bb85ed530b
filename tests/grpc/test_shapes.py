"""Input shapes of any rank and size through a real server: scorewire.v1 Predict
and PredictStream, OIP ModelInfer and ModelStreamInfer, raw and typed contents,
each message read by scorewire.grpc._wire or, with an unknown field appended, by
protobuf. A bad shape is INVALID_ARGUMENT (never INTERNAL or UNKNOWN) with a
message that names the problem and echoes neither the data nor a traceback; on a
stream it is answered in band and the stream goes on; the server scores
afterwards."""

from __future__ import annotations

import logging
import math
import shutil

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import example, given, settings
from hypothesis import strategies as st

import scorewire
from scorewire.grpc._codec import MAX_ELEMENTS
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import InProcessServer

SC = grpc.StatusCode
SECRET = 987654.321  # every value sent; never in an error message
FEATURES = 13  # the wine model's
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

#: appended to a serialized request, an unknown field: scorewire.grpc._wire declines
#: the message and protobuf parses it
UNKNOWN_FIELD = {"v1": b"\x78\x07", "oip": b"\x42\x00"}  # PredictRequest field 15, ModelInferRequest field 8

EDGE_DIMS = [0, 1, FEATURES, -1, MAX_ELEMENTS, MAX_ELEMENTS + 1, 1 << 62, INT64_MAX, INT64_MIN]
DIMS = st.one_of(st.integers(0, 3), st.sampled_from(EDGE_DIMS), st.integers(INT64_MIN, INT64_MAX))
SHAPES = st.one_of(
    st.tuples(st.integers(0, 3), st.just(FEATURES)).map(list),  # a matrix the model takes
    st.lists(st.sampled_from(EDGE_DIMS), min_size=2, max_size=2),  # a matrix, dims at the limits
    st.lists(DIMS, max_size=70),  # any rank, 0 (no shape) included, any dims
    st.lists(st.integers(0, 3), max_size=70),  # any rank, small dims (contents that fit)
    st.integers(1, 70).map(lambda rank: [1] * (rank - 1) + [FEATURES]),  # [1, ..., 1, features]
)
#: the issue's case: rank 65, contents of the right length
RANK_65 = [1] * 64 + [FEATURES]
#: no values, but a dim NumPy cannot describe
ZERO_BESIDE_HUGE = [0, 1 << 62]


def needed(shape: list[int]) -> int | None:
    """The number of values ``shape`` describes, when it is a few (the contents
    sent: else ``wrong_count`` values)."""
    if any(d < 0 or d > MAX_ELEMENTS for d in shape):
        return None
    n = math.prod(shape)
    return n if n <= 64 else None


def valid(shape: list[int], fp64: bool, n: int) -> bool:
    """Whether the wine model scores this input."""
    return fp64 and len(shape) == 2 and shape[1] == FEATURES and shape[0] >= 0 and n == needed(shape)


def v1_request(shape: list[int], fp64: bool, raw: bool, n: int) -> bytes:
    values = np.full(n, SECRET, dtype=np.float64 if fp64 else np.float32)
    t = pb.Tensor(dtype=pb.FLOAT64 if fp64 else pb.FLOAT32, shape=shape)
    if raw:
        t.raw = values.tobytes()
    else:
        (t.double_values if fp64 else t.float_values).extend(values.tolist())
    return pb.PredictRequest(model="wine", input=t, request_id="shape").SerializeToString()


def oip_request(shape: list[int], fp64: bool, raw: bool, n: int) -> bytes:
    values = np.full(n, SECRET, dtype=np.float64 if fp64 else np.float32)
    request = oip.ModelInferRequest(model_name="wine", id="shape")
    inp = request.inputs.add(name="input", datatype="FP64" if fp64 else "FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(values.tobytes())
    else:
        (inp.contents.fp64_contents if fp64 else inp.contents.fp32_contents).extend(values.tolist())
    return request.SerializeToString()


BUILD = {"v1": v1_request, "oip": oip_request}
UNARY = {"v1": "/scorewire.v1.PredictService/Predict", "oip": "/inference.GRPCInferenceService/ModelInfer"}
STREAM = {
    "v1": "/scorewire.v1.PredictService/PredictStream",
    "oip": "/inference.GRPCInferenceService/ModelStreamInfer",
}
STREAM_RESPONSE = {"v1": pb.PredictStreamResponse, "oip": oip.ModelStreamInferResponse}
GOOD = {"v1": v1_request([1, FEATURES], True, True, FEATURES), "oip": oip_request([1, FEATURES], True, True, FEATURES)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(scorewire.demo_repository() / "wine", root / "wine")
    srv = InProcessServer(Settings(port=0, reflection=False), ModelRepository(root, n_threads=1))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


def check_message(message: str, shape: list[int]) -> None:
    """A client error's message: names the problem, never the data, no traceback."""
    assert message
    assert "987654" not in message and "Traceback" not in message and "\n" not in message
    if len(shape) > 2:
        assert len(message) < 200  # not the shape of rank 70 spelled out
    if len(shape) == 0:
        assert "shape is missing" in message
    elif len(shape) != 2:
        assert f"got rank {len(shape)}" in message and "rank 2" in message


def assert_still_scores(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    for protocol in ("v1", "oip"):
        call = channel.unary_unary(UNARY[protocol], request_serializer=None, response_deserializer=None)
        assert call(GOOD[protocol], timeout=10)


def no_unexpected_errors(caplog) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the server logged an unexpected error"


# NOTE: each example sends its shape four ways (raw or typed, read by _wire or by
# protobuf); 40 examples per test keep the four tests within a few seconds
EXAMPLES = settings(max_examples=40, deadline=None, derandomize=True, database=None)


@pytest.mark.parametrize("protocol", ["v1", "oip"])
def test_any_shape_unary(channel, protocol, caplog):
    call = channel.unary_unary(UNARY[protocol], request_serializer=None, response_deserializer=None)

    @EXAMPLES
    @given(shape=SHAPES, fp64=st.booleans(), wrong_count=st.integers(0, 3))
    @example(shape=RANK_65, fp64=True, wrong_count=0)
    @example(shape=ZERO_BESIDE_HUGE, fp64=True, wrong_count=0)
    def check(shape, fp64, wrong_count):
        n = needed(shape)
        n = wrong_count if n is None else n
        for raw in (True, False):
            blob = BUILD[protocol](shape, fp64, raw, n)
            for extra in (b"", UNKNOWN_FIELD[protocol]):
                try:
                    call(blob + extra, timeout=10)
                except grpc.RpcError as err:
                    assert err.code() == SC.INVALID_ARGUMENT, (shape, raw, extra, err.code(), err.details())
                    assert not valid(shape, fp64, n), err.details()
                    check_message(err.details(), shape)
                else:
                    assert valid(shape, fp64, n), (shape, raw, extra)

    check()
    assert_still_scores(channel)
    no_unexpected_errors(caplog)


@pytest.mark.parametrize("protocol", ["v1", "oip"])
def test_any_shape_on_a_stream_is_answered_in_band(channel, protocol, caplog):
    call = channel.stream_stream(
        STREAM[protocol], request_serializer=None, response_deserializer=STREAM_RESPONSE[protocol].FromString
    )

    @EXAMPLES
    @given(shape=SHAPES, fp64=st.booleans(), wrong_count=st.integers(0, 3))
    @example(shape=RANK_65, fp64=True, wrong_count=0)
    @example(shape=ZERO_BESIDE_HUGE, fp64=True, wrong_count=0)
    def check(shape, fp64, wrong_count):
        n = needed(shape)
        n = wrong_count if n is None else n
        ok = valid(shape, fp64, n)
        messages = []
        for raw in (True, False):
            blob = BUILD[protocol](shape, fp64, raw, n)
            messages += [blob, blob + UNKNOWN_FIELD[protocol], GOOD[protocol]]
        out = list(call(iter(messages), timeout=10))  # a bad message does not end the stream
        assert len(out) == len(messages)
        for i, r in enumerate(out):
            answered = r.HasField("response") if protocol == "v1" else not r.error_message
            if i % 3 == 2 or ok:
                assert answered, (shape, i, r)
                continue
            assert not answered, (shape, i)
            if protocol == "v1":
                assert r.error.code == SC.INVALID_ARGUMENT.value[0] and r.request_id == "shape"
                check_message(r.error.message, shape)
            else:
                assert r.infer_response.id == "shape"
                check_message(r.error_message, shape)

    check()
    assert_still_scores(channel)
    no_unexpected_errors(caplog)


TRUTH_SHAPES = st.one_of(
    st.lists(st.integers(0, 3), max_size=70),
    st.lists(DIMS, max_size=5),
    st.integers(1, 70).map(lambda rank: [1] * rank),
)


def test_feedback_truth_of_any_shape_is_an_item_outcome(channel, caplog):
    """Truth may be [rows] or [rows, targets]; any other shape, or a count of
    values its shape does not need, is that item's INVALID outcome, never an
    error for the call."""
    stub = channel.unary_unary(
        "/scorewire.v1.PredictService/Feedback",
        request_serializer=pb.FeedbackRequest.SerializeToString,
        response_deserializer=pb.FeedbackResponse.FromString,
    )

    @EXAMPLES
    @given(shape=TRUTH_SHAPES)
    @example(shape=[1] * 65)
    @example(shape=ZERO_BESIDE_HUGE)
    def check(shape):
        n = needed(shape)
        counts = [1] if n is None else [n, n + 1]
        items = []
        for count in counts:
            items.append(pb.FeedbackItem(request_id="never-sent", truth=pb.Tensor(
                dtype=pb.INT64, shape=shape, int64_values=[987654] * count)))  # fmt: skip
            items.append(pb.FeedbackItem(request_id="never-sent", truth=pb.Tensor(
                dtype=pb.STRING, shape=shape, string_values=[str(SECRET)] * count)))  # fmt: skip
        response = stub(pb.FeedbackRequest(model="wine", items=items), timeout=10)
        assert len(response.results) == len(items)
        for item, result in zip(items, response.results, strict=True):
            count = len(item.truth.int64_values) + len(item.truth.string_values)
            if len(shape) in (1, 2) and count == n:
                assert result.outcome == pb.UNKNOWN_ID, (shape, result)
                continue
            assert result.outcome == pb.INVALID, (shape, result)
            assert "987654" not in result.message and "Traceback" not in result.message
            if len(shape) > 2:
                assert f"got rank {len(shape)}" in result.message and len(result.message) < 200

    check()
    assert_still_scores(channel)
    no_unexpected_errors(caplog)

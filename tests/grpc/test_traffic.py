"""Traffic between versions through a real server: the key header the model.toml
names places callers (unary, streams, OIP), GetModel shows the split and each
version's share, GetModelStats and /metrics the shadow's disagreement; a bad split
answers LoadModel with FAILED_PRECONDITION naming model.toml, and a [traffic]
section the server cannot use fails its model, never a call."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..observability.helpers import free_port, scrape, total, value, wait_for
from ..servers import InProcessServer
from ..test_traffic import make_model, values
from ..traffic import FEATURES, linear_json, publish

TOML = '[traffic]\nsplit = { 1 = 50, 2 = 50 }\nkey_header = "x-user-id"\nshadow = 3\n'
ROW = np.zeros((1, FEATURES))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("traffic")
    make_model(root, values([1, 2, 3]), TOML, name="split")
    make_model(root, {1: linear_json(1), 2: linear_json(2, features=FEATURES + 1)},
               "[traffic]\nsplit = { 1 = 1 }\nshadow = 2\n", name="bad-shadow")  # fmt: skip
    make_model(root, values([1]), name="spare")
    port = free_port()
    srv = InProcessServer(Settings(port=0, metrics_port=port, monitor_interval_s=0.2), ModelRepository(root, n_threads=1))
    srv.metrics_port = port
    srv.root = root
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


def predict(channel, user: str | None, request_id: str = "", model: str = "split", version: int = 0) -> int:
    stub = pb_grpc.PredictServiceStub(channel)
    metadata = [("x-user-id", user)] if user is not None else None
    r = stub.Predict(pb.PredictRequest(model=model, version=version, request_id=request_id,
                                       input=array_to_tensor(ROW, raw=True)), metadata=metadata, timeout=30)  # fmt: skip
    assert np.frombuffer(r.outputs["value"].raw, "<f8")[0] == r.version  # each version answers its number
    return r.version


def test_the_key_header_places_callers_whatever_their_request_ids(channel):
    placed = {}
    for i in range(200):
        user = f"user-{i}"
        versions = {predict(channel, user, request_id=f"{user}-{j}") for j in range(3)}
        assert len(versions) == 1, user
        placed[user] = versions.pop()
    assert set(placed.values()) == {1, 2}  # 50/50 over 200 callers: both
    # without the header, the request id is the key: the same id, the same version
    for i in range(50):
        assert len({predict(channel, None, request_id=f"req-{i}") for _ in range(3)}) == 1
    # a request naming a version gets it, header or not
    assert {predict(channel, "user-1", version=v) for v in (1, 2, 3)} == {1, 2, 3}


def test_a_stream_and_oip_place_callers_by_the_same_header(channel):
    """A stream's header places each of its messages; OIP's ModelInfer too, and
    both agree with unary Predict on where a caller goes."""
    users = [f"user-{i}" for i in range(40)]
    unary = {u: predict(channel, u) for u in users}
    stub = pb_grpc.PredictServiceStub(channel)
    infer = oip_grpc.GRPCInferenceServiceStub(channel)
    for u in users:
        messages = [pb.PredictRequest(model="split", request_id=f"s{j}", input=array_to_tensor(ROW, raw=True))
                    for j in range(3)]  # fmt: skip
        got = {r.response.version for r in stub.PredictStream(iter(messages), metadata=[("x-user-id", u)], timeout=30)}
        assert got == {unary[u]}, u
        inp = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=[1, FEATURES])
        inp.contents.fp64_contents.extend([0.0] * FEATURES)
        r = infer.ModelInfer(oip.ModelInferRequest(model_name="split", id="o", inputs=[inp]),
                             metadata=[("x-user-id", u)], timeout=30)  # fmt: skip
        assert int(r.model_version) == unary[u], u
    # OIP still checks the input's name, against the version that answers
    bad = oip.ModelInferRequest.InferInputTensor(name="features", datatype="FP64", shape=[1, FEATURES])
    bad.contents.fp64_contents.extend([0.0] * FEATURES)
    with pytest.raises(grpc.RpcError) as info:
        infer.ModelInfer(oip.ModelInferRequest(model_name="split", inputs=[bad]), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "model 'split' has one input, named 'input'"


def test_get_model_shows_the_split_and_each_versions_share(channel):
    info = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="split"), timeout=30)
    assert [(w.version, w.weight) for w in info.traffic.weights] == [(1, 50.0), (2, 50.0)]
    assert (info.traffic.key_header, info.traffic.shadow_version, info.traffic.shadow_fraction) == ("x-user-id", 3, 1.0)
    assert [(v.version, v.traffic_share, v.shadow) for v in info.versions] == [(1, 0.5, False), (2, 0.5, False),
                                                                              (3, 0.0, True)]  # fmt: skip
    spare = pb_grpc.ModelServiceStub(channel).GetModel(pb.GetModelRequest(name="spare"), timeout=30)
    assert not spare.HasField("traffic") and [v.traffic_share for v in spare.versions] == [1.0]


def test_the_shadows_disagreement_in_get_model_stats_and_metrics(server, channel):
    """Versions 1 and 2 answer 1 and 2, the shadow 3: per serving version, every
    copy compared, a mean and largest absolute difference of 2 and 1."""
    answered = [predict(channel, f"m-{i}") for i in range(100)]
    models = pb_grpc.ModelServiceStub(channel)

    def shadow_stats():
        stats = models.GetModelStats(pb.GetModelStatsRequest(name="split", version=3), timeout=30)
        [v3] = stats.versions
        compared = sum(s.compared for s in v3.shadow)
        return v3.shadow if compared >= sum(s.mirrored for s in v3.shadow) >= 100 else None

    shadow = {s.serving_version: s for s in wait_for(shadow_stats, what="the shadow to compare 100 copies")}
    assert set(shadow) == {1, 2}
    for v, s in shadow.items():
        [out] = s.outputs
        assert (s.dropped, s.failed, s.compared) == (0, 0, s.mirrored)
        assert (out.name, out.kind, out.values, out.mean_abs_diff, out.max_abs_diff) == (
            "value", "numeric", s.compared_rows, float(3 - v), float(3 - v))  # fmt: skip
        assert np.isnan(out.differing_share)
    assert sum(s.mirrored for s in shadow.values()) >= answered.count(1) + answered.count(2)
    m = scrape(server.metrics_port)
    labels = {"model": "split", "version": "3", "serving_version": "1"}
    compared = value(m, "scorewire_shadow_requests_total", **labels, outcome="compared")
    assert compared == shadow[1].compared and value(m, "scorewire_shadow_requests_total", **labels, outcome="dropped") == 0
    assert value(m, "scorewire_shadow_compared_values_total", **labels, output="value") == shadow[1].compared_rows
    assert value(m, "scorewire_shadow_abs_diff_total", **labels, output="value") == 2.0 * shadow[1].compared_rows
    assert value(m, "scorewire_shadow_abs_diff_max", **labels, output="value") == 2.0
    assert total(m, "scorewire_shadow_requests_total", model="split", version="3") == sum(
        s.compared for s in shadow.values())  # fmt: skip


def test_a_failing_shadow_is_counted_never_answered(server, channel):
    assert {predict(channel, None, request_id=f"r{i}", model="bad-shadow") for i in range(30)} == {1}
    models = pb_grpc.ModelServiceStub(channel)

    def failed():
        [v2] = models.GetModelStats(pb.GetModelStatsRequest(name="bad-shadow", version=2), timeout=30).versions
        return v2.shadow if v2.shadow and v2.shadow[0].failed >= 30 else None

    [s] = wait_for(failed, what="30 failed copies")
    assert (s.serving_version, s.mirrored, s.failed, s.compared) == (1, 30, 30, 0)
    m = scrape(server.metrics_port)
    assert value(m, "scorewire_shadow_requests_total", model="bad-shadow", version="2", serving_version="1",
                 outcome="failed") == 30  # fmt: skip


def test_load_model_with_a_bad_split_is_failed_precondition_naming_the_file(server, channel):
    models = pb_grpc.ModelServiceStub(channel)
    path = server.root / "spare" / "model.toml"
    publish(path, "[traffic]\nsplit = { 1 = 0 }\n")
    try:
        with pytest.raises(grpc.RpcError) as info:
            models.LoadModel(pb.LoadModelRequest(name="spare"), timeout=60)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert str(path) in info.value.details() and "must be a positive number" in info.value.details()
    finally:
        path.unlink()
        models.LoadModel(pb.LoadModelRequest(name="spare"), timeout=60)


#: model.toml files a server cannot use, and what the error says (after the path)
BAD_TRAFFIC = {
    "missing-version": ("[traffic]\nsplit = { 1 = 50, 7 = 50 }\n", "traffic.split names version 7, which has no version directory"),
    "zero-weight": ("[traffic]\nsplit = { 1 = 0 }\n", "the weight of version 1 must be a positive number"),
    "infinite-weight": ("[traffic]\nsplit = { 1 = inf }\n", "the weight of version 1 must be a positive number"),
    "shadow-in-split": ("[traffic]\nsplit = { 1 = 1, 2 = 1 }\nshadow = 2\n", "version 2 is in traffic.split"),
    "reserved-header": ("[traffic]\nsplit = { 1 = 1 }\nkey_header = 'grpc-trace'\n", "traffic.key_header must be"),
    "lonely-shadow": ("[traffic]\nshadow = 2\n[version_policy]\npolicy = 'specific'\nversions = [2]\n",
                      "traffic.shadow is version 2 and no other version is served"),
}  # fmt: skip


def test_a_traffic_section_the_server_cannot_use_fails_the_model_never_a_call(tmp_path, caplog):
    """Each model above, at start: not served (FAILED, no version), its error in
    GetModel and in the log, naming model.toml; its calls — unary, a stream's
    message, OIP — answer UNAVAILABLE (NOT_FOUND for a version), LoadModel
    FAILED_PRECONDITION with the same message, health NOT_SERVING; never INTERNAL.
    A model whose only ready version is its shadow (its split's version failed)
    answers UNAVAILABLE and is NOT_SERVING too. The other models serve."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    caplog.set_level("ERROR", logger="scorewire")
    for name, (toml, _) in BAD_TRAFFIC.items():
        make_model(tmp_path, values([1, 2]), toml, name=name)
    make_model(tmp_path, {1: "not json", 2: linear_json(2)}, "[traffic]\nsplit = { 1 = 1 }\nshadow = 2\n", name="shadow-only")
    make_model(tmp_path, values([1]), name="fine")
    srv = InProcessServer(Settings(port=0), ModelRepository(tmp_path, n_threads=1))
    try:
        with grpc.insecure_channel(srv.addr) as channel:
            models = pb_grpc.ModelServiceStub(channel)
            predict_stub = pb_grpc.PredictServiceStub(channel)
            infer = oip_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            def calls(name: str) -> dict[str, tuple[str, str]]:
                """What each kind of call to ``name`` answers: (code, message)."""
                out = {}
                for what, version in (("predict", 0), ("predict v1", 1)):
                    try:
                        predict_stub.Predict(pb.PredictRequest(model=name, version=version, input=array_to_tensor(ROW, raw=True)),
                                             timeout=30)  # fmt: skip
                        out[what] = ("OK", "")
                    except grpc.RpcError as exc:
                        out[what] = (exc.code().name, exc.details())
                [r] = predict_stub.PredictStream(iter([pb.PredictRequest(model=name, input=array_to_tensor(ROW, raw=True))]),
                                                 timeout=30)  # fmt: skip
                code = next(c.name for c in grpc.StatusCode if c.value[0] == r.error.code)
                out["stream"] = (code, r.error.message)
                inp = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=[1, FEATURES])
                inp.contents.fp64_contents.extend([0.0] * FEATURES)
                try:
                    infer.ModelInfer(oip.ModelInferRequest(model_name=name, inputs=[inp]), timeout=30)
                    out["oip"] = ("OK", "")
                except grpc.RpcError as exc:
                    out["oip"] = (exc.code().name, exc.details())
                return out

            for name, (_, words) in BAD_TRAFFIC.items():
                path = str(tmp_path / name / "model.toml")
                info = models.GetModel(pb.GetModelRequest(name=name), timeout=30)
                assert info.state == pb.FAILED and not info.versions, name
                assert info.error.startswith(f"{path}: ") and words in info.error, info.error
                assert any(r.levelname == "ERROR" and info.error in r.getMessage() for r in caplog.records), name
                assert calls(name) == {
                    "predict": ("UNAVAILABLE", f"model {name!r} failed to load"),
                    "predict v1": ("NOT_FOUND", f"model {name!r} has no version 1"),
                    "stream": ("UNAVAILABLE", f"model {name!r} failed to load"),
                    "oip": ("UNAVAILABLE", f"model {name!r} failed to load"),
                }, name
                assert not infer.ModelReady(oip.ModelReadyRequest(name=name), timeout=30).ready
                status = health.Check(health_pb2.HealthCheckRequest(service=f"model/{name}"), timeout=30).status
                assert status == health_pb2.HealthCheckResponse.NOT_SERVING, name
                with pytest.raises(grpc.RpcError) as load:
                    models.LoadModel(pb.LoadModelRequest(name=name), timeout=60)
                assert load.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert load.value.details() == f"model {name!r} failed to load: {info.error}"

            info = models.GetModel(pb.GetModelRequest(name="shadow-only"), timeout=30)
            assert [(v.version, v.state, v.shadow, v.traffic_share) for v in info.versions] == [
                (1, pb.FAILED, False, 0.0), (2, pb.READY, True, 0.0)]  # fmt: skip
            got = calls("shadow-only")
            unanswered = ("UNAVAILABLE", "model 'shadow-only' has no version ready to take traffic (its shadow takes none)")
            assert (got["predict"], got["stream"], got["oip"]) == (unanswered,) * 3
            assert got["predict v1"] == ("UNAVAILABLE", "model 'shadow-only' version 1 failed to load")
            status = health.Check(health_pb2.HealthCheckRequest(service="model/shadow-only"), timeout=30).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING

            assert set(calls("fine").values()) == {("OK", "")}
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status == (
                health_pb2.HealthCheckResponse.SERVING)  # fmt: skip
    finally:
        srv.stop()


def test_the_python_client_sees_the_split_and_never_takes_the_shadow_for_the_model(server):
    """``Client.served(model)`` (what ``scorewire predict`` casts its input by) is a
    version that takes requests without a version: not the newer shadow, whose
    input differs here."""
    from scorewire import Client

    with Client(server.addr, timeout=30) as client:
        assert client.model("split").traffic == {1: 0.5, 2: 0.5}
        assert client.served("split").version == 2
        served = client.served("bad-shadow")
        assert (served.version, served.n_features) == (1, FEATURES)
        assert client.served("bad-shadow", 2).n_features == FEATURES + 1
        assert client.predict("bad-shadow", ROW).version == 1


def test_the_python_client_sends_the_key_header(server):
    """``metadata=`` places a caller by the split's key header, whatever its request
    ids, in both clients and on streams: the placement the raw stubs get."""
    import asyncio

    from scorewire import AsyncClient, Client

    users = [f"user-{i}" for i in range(40)]
    with grpc.insecure_channel(server.addr) as ch:
        want = {u: predict(ch, u) for u in users}
    with Client(server.addr, timeout=30) as client:
        for u in users:
            got = {client.predict("split", ROW, request_id=f"{u}-{j}", metadata={"x-user-id": u}).version
                   for j in range(3)}  # fmt: skip
            assert got == {want[u]}, u
        streamed = list(client.stream("split", [ROW] * 3, request_ids=["a", "b", "c"], metadata={"X-User-Id": users[0]}))
        assert {p.version for p in streamed} == {want[users[0]]}

    async def placed() -> dict[str, int]:
        async with AsyncClient(server.addr, timeout=30) as aclient:
            return {u: (await aclient.predict("split", ROW, metadata={"x-user-id": u})).version for u in users}

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(placed()) == want
    finally:
        loop.close()
    assert set(want.values()) == {1, 2}  # the header placed callers on both versions


"""An ensemble through a real server: a soft vote of a native member (pinned to its
older version) and an onnxruntime member is a model like any other — its own
signature, metadata, health, metrics, drift and feedback — and follows its
members: a member unloaded turns it NOT_SERVING and its calls UNAVAILABLE (never
INTERNAL), the member loaded again brings it back, and the ensemble unloaded
itself is NOT_FOUND."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

import scorewire
from scorewire.export import onnx_from_sklearn
from scorewire.formats.reference import reference_statistics
from scorewire.grpc.stubs import oip, oip_grpc, pb, pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..ensembles import (
    CLASSES,
    linear_doc,
    margin_blobs,
    members_toml,
    write_ensemble,
    write_json_model,
)
from ..observability.helpers import free_port, scrape, value, wait_for
from ..servers import InProcessServer

D = 4
#: the ensemble: lr version 1 counts twice, mlp's newest version once
ENSEMBLE = members_toml("soft_vote", [{"model": "lr", "version": 1, "weight": 2.0}, "mlp"])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    X, y = margin_blobs(rng, n=300, d=D)
    return X, np.asarray(CLASSES)[y]


@pytest.fixture(scope="module")
def root(tmp_path_factory, data):
    """lr: two versions (native), mlp: one (onnxruntime, float64), and the ensemble
    over them, with a reference for drift."""
    X, y = data
    root = tmp_path_factory.mktemp("ensemble-repo")
    for version, rows in ((1, slice(None)), (2, slice(0, 150))):
        lr = LogisticRegression(max_iter=2000).fit(X[rows], y[rows])
        write_json_model(root, "lr", linear_doc("multinomial", lr.coef_, lr.intercept_, CLASSES), version)
    (root / "lr" / "model.toml").write_text('[version_policy]\npolicy = "all"\n')
    mlp = MLPClassifier(hidden_layer_sizes=(6,), max_iter=2000, random_state=0).fit(X, y)
    (root / "mlp" / "1").mkdir(parents=True)
    (root / "mlp" / "1" / "model.onnx").write_bytes(onnx_from_sklearn(mlp, D, "float64"))
    ens = write_ensemble(root, "ens", ENSEMBLE)
    (ens / "1" / "reference.json").write_text(json.dumps(reference_statistics(X)))
    return root


@pytest.fixture(scope="module")
def server(root):
    port = free_port()
    srv = InProcessServer(Settings(port=0, metrics_port=port, monitor_interval_s=0.2), ModelRepository(root, n_threads=1))
    srv.metrics_port = port
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with scorewire.Client(server.addr, timeout=30.0, retries=False) as c:
        yield c


@pytest.fixture(scope="module")
def stubs(server):
    with grpc.insecure_channel(server.addr) as channel:
        yield pb_grpc.ModelServiceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)


def expected(root, X):
    """(2 P_lr,v1 + P_mlp) / 3, from the members' own files."""
    lr = scorewire.load_model(root / "lr" / "1").predict(X)["probabilities"]
    mlp = scorewire.load_model(root / "mlp" / "1").predict(X)["probabilities"]
    return (2 * lr + mlp) / 3


def infer(oip_stub, X):
    r = oip.ModelInferRequest(model_name="ens", id="oip-1")
    r.inputs.add(name="input", datatype="FP64", shape=list(X.shape)).contents.fp64_contents.extend(X.ravel())
    return oip_stub.ModelInfer(r, timeout=30)


def code_of(call) -> tuple[grpc.StatusCode | str, str]:
    try:
        call()
    except scorewire.ClientError as err:
        return err.code, err.details
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call succeeded")


def test_an_ensemble_is_served_as_a_model_of_its_own(server, client, stubs, root, data):
    models, oip_stub = stubs
    X = data[0][::7]
    # 1. health, metadata: its own signature, backend "ensemble", made of which versions
    assert client.health("model/ens") == "SERVING"
    served = client.served("ens")
    assert (served.backend, served.input_dtype, served.n_features, served.classes) == ("ensemble", "float64", D, CLASSES)
    reason = models.GetModel(pb.GetModelRequest(name="ens"), timeout=30).versions[0].backend_reason
    assert "'lr' v1 (native)" in reason and "'mlp' v1 (onnxruntime)" in reason
    md = oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="ens"), timeout=30)
    assert md.platform == "scorewire_ensemble" and md.inputs[0].datatype == "FP64" and list(md.inputs[0].shape) == [-1, D]
    assert oip_stub.ModelReady(oip.ModelReadyRequest(name="ens"), timeout=30).ready
    # 2. scoring: the weighted mean of the members' probabilities, on both protocols
    p = client.predict("ens", X, request_id="ens-batch")
    np.testing.assert_allclose(p["probabilities"], expected(root, X), rtol=1e-12)
    np.testing.assert_array_equal(p["label"], np.asarray(CLASSES)[np.argmax(expected(root, X), axis=1)])
    r = infer(oip_stub, X)
    assert r.model_version == "1" and [o.name for o in r.outputs] == ["label", "probabilities"]
    # 3. feedback joins to its own requests
    fb = client.feedback("ens", {"ens-batch": data[1][::7]})
    assert fb.outcomes == {"ens-batch": "MATCHED"}
    # 4. its own request counts, drift and feedback metrics, and Prometheus series
    for _ in range(40):  # drift bins one row in 16 of these: 500 rows in its window
        client.predict("ens", data[0])

    def stats():
        [v] = models.GetModelStats(pb.GetModelStatsRequest(name="ens"), timeout=30).versions
        return v if v.drift.sampled_rows >= 500 else None  # PSI is NaN below

    v = wait_for(stats, what="drift samples of the ensemble")
    assert v.requests.count >= 41 and v.drift.available and len(v.drift.features) == D
    assert max(f.psi for f in v.drift.features) < v.drift.moderate_threshold  # its training data
    assert v.feedback.task == "classification" and v.feedback.accuracy == 1.0
    samples = scrape(server.metrics_port)
    assert value(samples, "scorewire_model_state", model="ens", version="1", state="READY") == 1
    assert value(samples, "scorewire_requests_total", model="ens", version="1", rpc="Predict", code="OK") >= 41


def test_a_member_unloaded_turns_the_ensemble_not_serving_until_it_is_back(server, client, stubs, root, data):
    """1. mlp unloaded 2. the ensemble is NOT_SERVING, Predict and ModelInfer
    UNAVAILABLE, GetModel and LoadModel name the member 3. mlp loaded again 4. the
    ensemble serves again 5. the ensemble unloaded itself: NOT_FOUND."""
    models, oip_stub = stubs
    X = data[0][:5]
    models.UnloadModel(pb.UnloadModelRequest(name="mlp"), timeout=30)
    wait_for(lambda: client.health("model/ens") == "NOT_SERVING", what="the ensemble NOT_SERVING")
    code, details = code_of(lambda: client.predict("ens", X))
    assert code == "UNAVAILABLE" and "ens" in details
    code, _ = code_of(lambda: infer(oip_stub, X))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert not oip_stub.ModelReady(oip.ModelReadyRequest(name="ens"), timeout=30).ready
    info = models.GetModel(pb.GetModelRequest(name="ens"), timeout=30)
    assert info.state == pb.FAILED and "member 'mlp' cannot be used" in info.versions[0].error
    code, details = code_of(lambda: models.LoadModel(pb.LoadModelRequest(name="ens"), timeout=60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "member 'mlp'" in details
    assert client.health("model/lr") == "SERVING"  # the other member is untouched

    models.LoadModel(pb.LoadModelRequest(name="mlp"), timeout=60)
    wait_for(lambda: client.health("model/ens") == "SERVING", what="the ensemble SERVING again")
    np.testing.assert_allclose(client.predict("ens", X)["probabilities"], expected(root, X), rtol=1e-12)

    models.UnloadModel(pb.UnloadModelRequest(name="ens"), timeout=30)
    wait_for(lambda: client.health("model/ens") == "NOT_SERVING", what="the unloaded ensemble NOT_SERVING")
    code, _ = code_of(lambda: client.predict("ens", X))
    assert code == "NOT_FOUND"
    assert client.predict("mlp", X)["probabilities"].shape == (5, 3)  # its members still serve

"""Who may call what, through a real server: every (credential × RPC × bind) cell's
status; the control plane's own port; the access file read again when it changes;
tokens never in logs or errors."""

from __future__ import annotations

import hashlib
import shutil
import socket
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import scorewire
from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.inference import grpc_service_pb2 as oip
from scorewire.grpc._gen.inference import grpc_service_pb2_grpc as oip_grpc
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import InProcessServer

SC = grpc.StatusCode
DATA_TOKEN = "data-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
WRONG_TOKEN = "wrong-token-0123456789abcdef"
ACCESS = f"""
[[token]]
name = "scoring-app"
token = "{DATA_TOKEN}"
groups = ["data"]

[[token]]
name = "operator"
sha256 = "{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}"
groups = ["data", "control"]
"""
CREDENTIALS = {"none": None, "wrong": WRONG_TOKEN, "data": DATA_TOKEN, "admin": ADMIN_TOKEN}
CALLS = ("Predict", "ModelInfer", "Feedback", "Health", "LoadModel", "UnloadModel")


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name in ("diabetes", "wine"):
        shutil.copytree(scorewire.demo_repository() / name, root / name)
    shutil.copytree(scorewire.demo_repository() / "diabetes", root / "spare")  # loaded and unloaded by the tests
    return root


def access_file(tmp_path, text: str = ACCESS):
    path = tmp_path / "access.toml"
    path.write_text(text)
    return path


def server(repo_dir, **settings) -> InProcessServer:
    repo = ModelRepository(repo_dir, n_threads=1)
    return InProcessServer(Settings(port=0, drain_delay_s=0, **settings), repo)


def call(channel: grpc.Channel, rpc: str, token: str | None) -> str:
    """The status name one RPC gets with ``token`` (None: no authorization metadata)."""
    md = () if token is None else (("authorization", f"Bearer {token}"),)
    X = np.full((1, 10), 0.01)
    try:
        if rpc == "Predict":
            pb_grpc.PredictServiceStub(channel).Predict(
                pb.PredictRequest(model="diabetes", input=array_to_tensor(X, raw=True)), metadata=md, timeout=30
            )
        elif rpc == "ModelInfer":
            tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=[1, 10])
            oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                oip.ModelInferRequest(model_name="diabetes", inputs=[tensor], raw_input_contents=[X.tobytes()]),
                metadata=md, timeout=30,
            )  # fmt: skip
        elif rpc == "Feedback":
            item = pb.FeedbackItem(request_id="never-sent", truth=array_to_tensor(np.zeros(1), raw=True))
            pb_grpc.PredictServiceStub(channel).Feedback(pb.FeedbackRequest(model="diabetes", items=[item]), metadata=md, timeout=30)
        elif rpc == "Health":
            r = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), metadata=md, timeout=30)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        elif rpc == "LoadModel":
            pb_grpc.ModelServiceStub(channel).LoadModel(pb.LoadModelRequest(name="spare"), metadata=md, timeout=60)
        elif rpc == "UnloadModel":
            pb_grpc.ModelServiceStub(channel).UnloadModel(pb.UnloadModelRequest(name="spare"), metadata=md, timeout=30)
    except grpc.RpcError as err:
        assert err.details() and "Traceback" not in err.details()
        for secret in (DATA_TOKEN, ADMIN_TOKEN, WRONG_TOKEN):
            assert secret not in err.details()
        return err.code().name
    return "OK"


def matrix(addr: str) -> dict[str, dict[str, str]]:
    with grpc.insecure_channel(addr) as channel:
        return {cred: {rpc: call(channel, rpc, token) for rpc in CALLS} for cred, token in CREDENTIALS.items()}


def expected(control_served: bool) -> dict[str, dict[str, str]]:
    unauth = {rpc: "UNAUTHENTICATED" for rpc in CALLS} | {"Health": "OK"}
    data = {rpc: "OK" for rpc in CALLS} | {"LoadModel": "PERMISSION_DENIED", "UnloadModel": "PERMISSION_DENIED"}
    admin = {rpc: "OK" for rpc in CALLS}
    if not control_served:
        admin |= {"LoadModel": "PERMISSION_DENIED", "UnloadModel": "PERMISSION_DENIED"}
    return {"none": unauth, "wrong": unauth, "data": data, "admin": admin}


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"], ids=["loopback-bind", "non-loopback-bind"])
def test_every_credential_on_every_rpc(repo_dir, tmp_path, host, caplog):
    caplog.set_level("DEBUG")
    """{no token, wrong token, data token, admin token} × six RPCs × {loopback,
    non-loopback bind}: on a port bound beyond loopback the control plane is off by
    default, so even an admin token is refused there. Tokens appear in no log line."""
    srv = server(repo_dir, host=host, auth_tokens=access_file(tmp_path))
    try:
        got = matrix(f"127.0.0.1:{srv.port}")
    finally:
        srv.stop()
    assert got == expected(control_served=host == "127.0.0.1")
    for secret in (DATA_TOKEN, ADMIN_TOKEN, WRONG_TOKEN):
        assert not any(secret in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "host, control_plane, served",
    [("127.0.0.1", "auto", True), ("0.0.0.0", "auto", False), ("0.0.0.0", "on", True), ("127.0.0.1", "off", False)],
)
def test_the_control_plane_without_an_access_file(repo_dir, host, control_plane, served):
    """Without tokens every caller may call the data plane; the control plane follows
    --control-plane (auto: only on a loopback bind)."""
    srv = server(repo_dir, host=host, control_plane=control_plane)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            got = {rpc: call(channel, rpc, None) for rpc in CALLS}
    finally:
        srv.stop()
    control = "OK" if served else "PERMISSION_DENIED"
    assert got == {rpc: "OK" for rpc in CALLS} | {"LoadModel": control, "UnloadModel": control}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_admin_port_serves_the_control_plane_and_the_main_port_does_not(repo_dir):
    srv = server(repo_dir, control_plane="on", admin_port=free_port())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as main, grpc.insecure_channel(
            f"127.0.0.1:{srv.server.admin_port}"
        ) as admin:
            assert [call(main, rpc, None) for rpc in ("Predict", "LoadModel", "UnloadModel")] == [
                "OK", "PERMISSION_DENIED", "PERMISSION_DENIED",
            ]  # fmt: skip
            assert [call(admin, rpc, None) for rpc in ("Predict", "LoadModel", "UnloadModel", "Health")] == ["OK"] * 4
    finally:
        srv.stop()


def test_the_access_file_is_read_again_when_it_changes(repo_dir, tmp_path, caplog):
    """A token added to the file works once the server has read it again (it looks at
    most once a second); a file that no longer parses keeps the previous rules."""
    path = access_file(tmp_path)
    new_token = "rotated-token-0123456789abcdef"
    srv = server(repo_dir, auth_tokens=path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            assert call(channel, "Predict", new_token) == "UNAUTHENTICATED"
            path.write_text(ACCESS + f'\n[[token]]\nname = "new"\ntoken = "{new_token}"\ngroups = ["data"]\n')
            deadline = time.monotonic() + 60
            while call(channel, "Predict", new_token) != "OK":
                assert time.monotonic() < deadline, "the new token was never accepted"
                time.sleep(0.05)
            path.write_text("this is not TOML [[[")
            while not any("previous rules stay in force" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the broken file was never read"
                assert call(channel, "Predict", new_token) == "OK"
                time.sleep(0.05)
            # the server has read the broken file: the previous rules are still in force
            assert call(channel, "Predict", new_token) == "OK"
            assert call(channel, "Predict", WRONG_TOKEN) == "UNAUTHENTICATED"
    finally:
        srv.stop()

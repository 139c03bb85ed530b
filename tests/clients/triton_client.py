"""One tritonclient[grpc] session against a running server; prints what it saw as JSON.

    python triton_client.py ADDR ARRAYS.npz PLAN.json

Run by tests/test_tritonclient.py in a process of its own: tritonclient's generated
``service_pb2`` registers the protobuf package ``inference`` in the global descriptor
pool, and so do scorewire's stubs, so the two cannot be imported into one process.
This script therefore imports tritonclient, numpy and grpc only — never scorewire.

PLAN.json names the arrays in ARRAYS.npz and says what to do::

    {"models": [model names: is_model_ready, get_model_metadata and get_model_config],
     "infer": [{"id", "model", "input", "contents": "raw" | "typed", "outputs": [...]}],
     "classify": [{"id", "model", "input", "output", "class_count"}],
     "stream": [{"id", "model", "input"}]}

"classify" asks for one output through ``InferRequestedOutput(name, class_count=k)``
(Triton's classification extension) and reports tritonclient's ``as_numpy`` of it,
decoded to text. Last, ``get_inference_statistics`` of every model.

"raw" inputs go through ``InferInput.set_data_from_numpy`` (raw_input_contents, the
tritonclient default); "typed" inputs are set in ``InferTensorContents`` of a
``service_pb2.ModelInferRequest`` sent with the ``service_pb2_grpc`` stub, and the
response is read back with tritonclient's ``InferResult``. A failed call becomes
``{"error": {"status": ..., "message": ...}}`` instead of a result.
"""

from __future__ import annotations

import json
import queue
import sys
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

#: which InferTensorContents field carries each datatype
CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
}


def error_of(exc: InferenceServerException) -> dict[str, Any]:
    return {"error": {"status": exc.status(), "message": exc.message()}}


def capture(call: Callable[[], Any]) -> Any:
    """call()'s result, or its InferenceServerException as an error dict."""
    try:
        return call()
    except InferenceServerException as exc:
        return error_of(exc)


def tensor_json(t: Any) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}


def metadata_json(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "versions": list(m.versions),
        "platform": m.platform,
        "inputs": [tensor_json(t) for t in m.inputs],
        "outputs": [tensor_json(t) for t in m.outputs],
    }


def result_json(result: grpcclient.InferResult) -> dict[str, Any]:
    """An InferResult as JSON: each output decoded by tritonclient's as_numpy."""
    response = result.get_response()
    outputs = {}
    for out in response.outputs:
        outputs[out.name] = {**tensor_json(out), "data": result.as_numpy(out.name).tolist()}
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": outputs,
    }


def classify(client: grpcclient.InferenceServerClient, case: dict, X: np.ndarray) -> dict[str, Any]:
    output = grpcclient.InferRequestedOutput(case["output"], class_count=case["class_count"])
    result = client.infer(case["model"], [raw_input(X)], request_id=case["id"], outputs=[output])
    out = result.get_output(case["output"])
    top = result.as_numpy(case["output"])
    return {**tensor_json(out), "data": [[v.decode() for v in row] for row in top]}


def raw_input(X: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("input", list(X.shape), np_to_triton_dtype(X.dtype))
    return inp.set_data_from_numpy(X)


def infer_raw(
    client: grpcclient.InferenceServerClient, case: dict, X: np.ndarray
) -> dict[str, Any]:
    outputs = [grpcclient.InferRequestedOutput(name) for name in case["outputs"]] or None
    result = client.infer(case["model"], [raw_input(X)], request_id=case["id"], outputs=outputs)
    return result_json(result)


def infer_typed(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, case: dict, X: np.ndarray
) -> dict[str, Any]:
    datatype = np_to_triton_dtype(X.dtype)
    request = service_pb2.ModelInferRequest(model_name=case["model"], id=case["id"])
    tensor = request.inputs.add(name="input", datatype=datatype, shape=X.shape)
    getattr(tensor.contents, CONTENTS[datatype]).extend(X.ravel().tolist())
    for name in case["outputs"]:
        request.outputs.add(name=name)
    try:
        response = stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        return {"error": {"status": str(exc.code()), "message": exc.details()}}
    return result_json(grpcclient.InferResult(response))


def stream(
    client: grpcclient.InferenceServerClient, cases: list[dict], arrays: Any
) -> list[dict[str, Any]]:
    """ModelStreamInfer: every case on one stream; the responses in arrival order."""
    received: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    for case in cases:
        client.async_stream_infer(
            case["model"], [raw_input(arrays[case["input"]])], request_id=case["id"]
        )
    client.stop_stream()  # NOTE: waits until the server has answered every request
    out = []
    while not received.empty():
        result, error = received.get()
        out.append(error_of(error) if error is not None else result_json(result))
    return out


def main(addr: str, arrays_path: str, plan_path: str) -> None:
    arrays = np.load(arrays_path)
    with open(plan_path) as f:
        plan = json.load(f)
    report: dict[str, Any] = {}
    with grpcclient.InferenceServerClient(addr) as client, grpc.insecure_channel(addr) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        report["server_live"] = capture(client.is_server_live)
        report["server_ready"] = capture(client.is_server_ready)
        report["server_metadata"] = capture(lambda: client.get_server_metadata(as_json=True))
        report["model_ready"] = {
            m: capture(lambda m=m: client.is_model_ready(m)) for m in plan["models"]
        }
        report["model_metadata"] = {
            m: capture(lambda m=m: metadata_json(client.get_model_metadata(m)))
            for m in plan["models"]
        }
        report["infer"] = {}
        for case in plan["infer"]:
            X = arrays[case["input"]]
            if case["contents"] == "raw":
                report["infer"][case["id"]] = capture(
                    lambda case=case, X=X: infer_raw(client, case, X)
                )
            else:
                report["infer"][case["id"]] = infer_typed(stub, case, X)
        report["model_config"] = {
            m: capture(lambda m=m: client.get_model_config(m, as_json=True)["config"])
            for m in plan["models"]
        }
        report["classify"] = {
            case["id"]: capture(lambda case=case: classify(client, case, arrays[case["input"]]))
            for case in plan.get("classify", [])
        }
        report["stream"] = stream(client, plan["stream"], arrays)
        report["statistics"] = capture(lambda: client.get_inference_statistics(as_json=True))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:4])

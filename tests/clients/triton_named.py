"""One tritonclient[grpc] session sending models their inputs by name; prints what it
saw as JSON.

    python triton_named.py ADDR ARRAYS.npz PLAN.json

Run by tests/test_named_inputs_server.py in a process of its own (tritonclient's
``service_pb2`` and scorewire's stubs both register the protobuf package
``inference``: see triton_client.py). Imports tritonclient, numpy and grpc only.

PLAN.json::

    {"models": [names: get_model_metadata and get_model_config for each],
     "infer": [{"id", "model", "inputs": [[input name, array name, datatype or null]],
                "contents": "raw" | "typed", "outputs": [...],
                "raw": {input name: hex}}],   # optional: raw contents as given
     "stream": [{"id", "model", "inputs": [...]}]}

An array of text (NumPy ``U``) is sent as BYTES, each element UTF-8. "raw" inputs go
through ``InferInput.set_data_from_numpy`` (raw_input_contents: for BYTES, Triton's
4-byte length-prefixed layout); "typed" inputs through ``InferTensorContents`` of a
``service_pb2.ModelInferRequest`` sent with the stub, as is a case with "raw"
contents given (each input's raw bytes, hex, or its array's bytes) or a datatype
given (not its array's). Each output is read by ``InferResult.as_numpy``; BYTES elements are
reported as text. A failed call becomes ``{"error": {"status", "message"}}``.
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

#: which InferTensorContents field carries each datatype
CONTENTS = {
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "BOOL": "bool_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def error_of(exc: InferenceServerException) -> dict[str, Any]:
    return {"error": {"status": exc.status(), "message": exc.message()}}


def array_of(arrays: Any, key: str) -> np.ndarray:
    a = arrays[key]
    if a.dtype.kind == "U":  # text: BYTES, each element UTF-8
        a = np.array([s.encode("utf-8") for s in a.reshape(-1)], dtype=object).reshape(a.shape)
    return a


def datatype_of(a: np.ndarray, override: str | None) -> str:
    return override or ("BYTES" if a.dtype.kind == "O" else np_to_triton_dtype(a.dtype))


def tensor_json(t: Any) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}


def result_json(result: grpcclient.InferResult) -> dict[str, Any]:
    response = result.get_response()
    outputs = {}
    for out in response.outputs:
        a = result.as_numpy(out.name)
        data = [v.decode("utf-8") for v in a.reshape(-1)] if out.datatype == "BYTES" else a.reshape(-1).tolist()
        outputs[out.name] = {**tensor_json(out), "data": data}
    return {"model_name": response.model_name, "model_version": response.model_version, "id": response.id,
            "outputs": outputs}  # fmt: skip


def infer_inputs(case: dict, arrays: Any) -> list[grpcclient.InferInput]:
    out = []
    for name, key, _ in case["inputs"]:
        a = array_of(arrays, key)
        out.append(grpcclient.InferInput(name, list(a.shape), datatype_of(a, None)).set_data_from_numpy(a))
    return out


def infer_stub(stub: service_pb2_grpc.GRPCInferenceServiceStub, case: dict, arrays: Any) -> dict[str, Any]:
    """Typed contents, or raw contents as the case gives them, through the stub."""
    request = service_pb2.ModelInferRequest(model_name=case["model"], id=case["id"])
    overrides = case.get("raw", {})
    for name, key, override in case["inputs"]:
        a = array_of(arrays, key)
        datatype = datatype_of(a, override)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=a.shape)
        if overrides:
            request.raw_input_contents.append(bytes.fromhex(overrides[name]) if name in overrides else a.tobytes())
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(a.reshape(-1).tolist())
    for name in case["outputs"]:
        request.outputs.add(name=name)
    try:
        response = stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        return {"error": {"status": str(exc.code()), "message": exc.details()}}
    return result_json(grpcclient.InferResult(response))


def infer_raw(client: grpcclient.InferenceServerClient, case: dict, arrays: Any) -> dict[str, Any]:
    outputs = [grpcclient.InferRequestedOutput(name) for name in case["outputs"]] or None
    try:
        result = client.infer(case["model"], infer_inputs(case, arrays), request_id=case["id"], outputs=outputs)
    except InferenceServerException as exc:
        return error_of(exc)
    return result_json(result)


def stream(client: grpcclient.InferenceServerClient, cases: list[dict], arrays: Any) -> list[dict[str, Any]]:
    """ModelStreamInfer: every case on one stream; the responses in arrival order."""
    received: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    for case in cases:
        client.async_stream_infer(case["model"], infer_inputs(case, arrays), request_id=case["id"])
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
    report: dict[str, Any] = {"metadata": {}, "infer": {}}
    with grpcclient.InferenceServerClient(addr) as client, grpc.insecure_channel(addr) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for m in plan["models"]:
            meta = client.get_model_metadata(m)
            report["metadata"][m] = {"inputs": [tensor_json(t) for t in meta.inputs],
                                     "outputs": [tensor_json(t) for t in meta.outputs]}  # fmt: skip
            report.setdefault("config", {})[m] = client.get_model_config(m, as_json=True)["config"]
        for case in plan["infer"]:
            if case["contents"] == "raw" and "raw" not in case and not any(i[2] for i in case["inputs"]):
                report["infer"][case["id"]] = infer_raw(client, case, arrays)
            else:
                report["infer"][case["id"]] = infer_stub(stub, case, arrays)
        report["stream"] = stream(client, plan["stream"], arrays)
        report["server_ready"] = client.is_server_ready()
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:4])

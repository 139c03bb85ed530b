"""The command line's client half: what ``scorewire predict``, ``evaluate`` and
``health`` ask a running server, over scorewire.v1 and grpc.health.v1, with
answers in plain Python and NumPy (the CLI itself never sees protobuf or grpc).

>>> with Client("127.0.0.1:50051", timeout=10) as client:     # doctest: +SKIP
...     served = client.served("breast-cancer")
...     version, outputs = client.predict("breast-cancer", X, outputs=("label",))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._codec import array_to_tensor, tensor_to_array
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc


class ClientError(Exception):
    """A call the server refused: its gRPC status code's name and its message."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class NotReady(Exception):
    """The model (or the version asked for) has no ready version."""


@dataclass(frozen=True)
class ServedModel:
    """What a client needs of a ready model version, from ``GetModel``."""

    version: int
    input_dtype: str  # "float32" | "float64"
    n_features: int | None
    task: str
    feature_names: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    #: output names in the model's own order
    outputs: tuple[str, ...] = ()
    #: role ("label", "probabilities", "value", "decision") → output name
    roles: dict[str, str] = field(default_factory=dict)


def tensor_to_array_any(t: pb.Tensor) -> np.ndarray:
    """Any output tensor as an array, STRING tensors included."""
    if t.dtype == pb.STRING:
        return np.asarray(list(t.string_values), dtype=object).reshape(tuple(t.shape))
    return tensor_to_array(t)


class Client:
    """One channel to a server; every call raises :class:`ClientError` for a
    status other than OK."""

    def __init__(
        self,
        addr: str,
        timeout: float,
        max_message_bytes: int | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        token: str | None = None,
    ) -> None:
        """``ca``: TLS with this CA's PEM file (else plaintext); ``cert``/``key``: this
        client's certificate (mutual TLS); ``token``: a bearer token sent with every call."""
        options = []
        if max_message_bytes is not None:
            options = [("grpc.max_send_message_length", max_message_bytes),
                       ("grpc.max_receive_message_length", max_message_bytes)]  # fmt: skip
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if ca is None:
            if cert or key:
                raise ValueError("--cert and --key need --ca (TLS)")
            self._channel = grpc.insecure_channel(addr, options=options)
        else:
            creds = grpc.ssl_channel_credentials(
                Path(ca).read_bytes(),
                Path(key).read_bytes() if key else None,
                Path(cert).read_bytes() if cert else None,
            )
            self._channel = grpc.secure_channel(addr, creds, options=options)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._predict = pb_grpc.PredictServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details() or "") from None

    def served(self, model: str, version: int = 0) -> ServedModel:
        """The newest ready version of ``model`` (or ``version``); NotReady when
        there is none."""
        info = self._call(self._models.GetModel, pb.GetModelRequest(name=model))
        ready = [v for v in info.versions if v.state == pb.READY and version in (0, v.version)]
        if not ready:
            raise NotReady(f"version {version} of {model!r}" if version else repr(model))
        v = ready[-1]
        sig = v.signature
        roles: dict[str, str] = {}
        for o in sig.outputs:
            if o.role:
                roles.setdefault(o.role, o.name)
        return ServedModel(
            version=v.version,
            input_dtype="float32" if sig.input.dtype == pb.FLOAT32 else "float64",
            n_features=sig.input.shape[1] if len(sig.input.shape) == 2 else None,
            task=sig.task,
            feature_names=tuple(sig.feature_names),
            classes=tuple(sig.classes),
            outputs=tuple(o.name for o in sig.outputs),
            roles=roles,
        )

    def predict(
        self, model: str, X: np.ndarray, version: int = 0, outputs: tuple[str, ...] = ()
    ) -> tuple[int, dict[str, np.ndarray]]:
        """(the version that answered, the outputs by name) for rows X (sent raw)."""
        request = pb.PredictRequest(model=model, version=version, input=array_to_tensor(X, raw=True), outputs=outputs)
        response = self._call(self._predict.Predict, request)
        return response.version, {name: tensor_to_array_any(t) for name, t in response.outputs.items()}

    def health(self, service: str = "") -> str:
        """The health status of ``service`` ("" for the server): SERVING, NOT_SERVING, …"""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

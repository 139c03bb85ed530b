"""scorewire's Python client: the calls a program makes to a running server, in
plain Python and NumPy — no protobuf, no gRPC in sight. ``Client`` is synchronous,
``AsyncClient`` its asyncio twin; the command line uses ``Client``.

>>> import scorewire
>>> with scorewire.Client("127.0.0.1:50051") as client:          # doctest: +SKIP
...     p = client.predict("wine", X, outputs=("label", "probabilities"), request_id="r-1")
...     p["probabilities"], p["label"], p.version
...     client.feedback("wine", {"r-1": [2]})
...     for p in client.stream("wine", [X[:1], X[1:2]]): ...
...     client.predict("recommender", {"dense": dense, "ids": ids})  # inputs by name

Every call has a deadline (``timeout``, the client's by default). The calls that
are safe to repeat — Predict, the model listings, health checks — are retried by
gRPC when the server answers UNAVAILABLE (a replica shutting down or restarting),
up to three times with backoff; Feedback is not (a retry could count an item twice).
A status other than OK raises :class:`ClientError`. TLS: ``ca`` (and ``cert``/``key``
for mutual TLS); ``token``: a bearer token for a server with an access file.
The generated stubs, for what this client does not cover, are in
``scorewire.grpc.stubs``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._codec import array_to_tensor, dtype_of_v1, tensor_to_array
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

__all__ = ["AsyncClient", "Client", "ClientError", "FeedbackResult", "ModelInfo", "NotReady", "Prediction", "ServedModel"]

DEFAULT_TARGET = "127.0.0.1:50051"
#: headers a call carries besides the token's: name → value
Metadata = Mapping[str, str] | None

#: the calls gRPC retries on UNAVAILABLE (safe to repeat), and how
_RETRIED = [
    {"service": "scorewire.v1.PredictService", "method": "Predict"},
    {"service": "scorewire.v1.ModelService", "method": "ListModels"},
    {"service": "scorewire.v1.ModelService", "method": "GetModel"},
    {"service": "scorewire.v1.ModelService", "method": "GetModelStats"},
    {"service": "grpc.health.v1.Health", "method": "Check"},
]
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": _RETRIED,
        "retryPolicy": {
            "maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})  # fmt: skip


class ClientError(Exception):
    """A call the server refused: its gRPC status code's name and its message."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class NotReady(Exception):
    """The model (or the version asked for) has no ready version."""


@dataclass(frozen=True, eq=False)
class Prediction(Mapping[str, np.ndarray]):
    """One answer: a read-only dict of the outputs by name (NumPy arrays), with the
    model and version that gave it and the request id. A stream's answer to a message
    the server refused has no outputs and carries ``error``."""

    model: str
    version: int
    request_id: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: ClientError | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)


@dataclass(frozen=True)
class ServedModel:
    """What a client needs of a ready model version, from ``GetModel``."""

    version: int
    input_dtype: str  # "float32" | "float64" (a model that is not tabular: its first input's)
    n_features: int | None
    task: str
    feature_names: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    #: output names in the model's own order
    outputs: tuple[str, ...] = ()
    #: role ("label", "probabilities", "value", "decision", "contributions",
    #: "base_value") → output name
    roles: dict[str, str] = field(default_factory=dict)
    backend: str = ""
    #: what the explanations are measured from: "reference" or "zeros" ("" without them)
    explanation_baseline: str = ""
    #: every input: name → (numpy dtype name, shape; -1 for a free dim)
    inputs: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    #: True when the model takes one matrix [rows, features]; else send its inputs by name
    tabular: bool = True


@dataclass(frozen=True)
class ModelInfo:
    """A model the server knows: its state, and each version's state and (for a
    ready one) what it serves."""

    name: str
    state: str  # "READY", "LOADING", "FAILED", "UNLOADED"
    versions: dict[int, str]  # version → state
    ready: dict[int, ServedModel]  # the ready versions
    error: str = ""
    warnings: tuple[str, ...] = ()
    #: the share of the requests without a version each version takes now (a
    #: model.toml [traffic] split; else the newest ready version takes them all)
    traffic: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackResult:
    """What became of each item (request id → "MATCHED", "UNKNOWN_ID", "EXPIRED",
    "DUPLICATE" or "INVALID"), and the counts."""

    outcomes: dict[str, str]
    matched: int = 0
    unknown: int = 0
    expired: int = 0
    duplicate: int = 0
    invalid: int = 0


def tensor_to_array_any(t: pb.Tensor) -> np.ndarray:
    """Any output tensor as an array, STRING tensors included."""
    if t.dtype == pb.STRING:
        return np.asarray(list(t.string_values), dtype=object).reshape(tuple(t.shape))
    return tensor_to_array(t)


# ------------------------------------------------------ messages, both clients
def _channel_options(max_message_bytes: int | None, retries: bool) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = []
    if max_message_bytes is not None:
        options += [("grpc.max_send_message_length", max_message_bytes),
                    ("grpc.max_receive_message_length", max_message_bytes)]  # fmt: skip
    if retries:
        options += [("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG)]
    return options


def _credentials(ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> grpc.ChannelCredentials | None:
    if ca is None:
        if cert or key:
            raise ValueError("cert and key need ca (TLS)")
        return None
    if (cert is None) != (key is None):
        raise ValueError("cert and key go together")
    return grpc.ssl_channel_credentials(
        Path(ca).read_bytes(), Path(key).read_bytes() if key else None, Path(cert).read_bytes() if cert else None
    )


def _predict_request(model: str, X: Any, outputs: Iterable[str], version: int, request_id: str) -> pb.PredictRequest:
    """``X``: the rows (sent as raw float64, or float32 when X is float32), or a
    mapping of the model's inputs by name (each sent in its own dtype; strings as
    STRING)."""
    request = pb.PredictRequest(model=model, version=version, outputs=list(outputs), request_id=request_id)
    if isinstance(X, Mapping):
        for name, value in X.items():
            a = np.asarray(value)
            if a.dtype.kind == "O" and a.size and not isinstance(a.reshape(-1)[0], (str, bytes)):
                raise TypeError(f"input {name!r}: an object array must hold strings")
            request.inputs.add(name=name, tensor=array_to_tensor(a, raw=True))
        return request
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    request.input.CopyFrom(array_to_tensor(X, raw=True))
    return request


def _prediction(r: pb.PredictResponse) -> Prediction:
    return Prediction(r.model, r.version, r.request_id, {n: tensor_to_array_any(t) for n, t in r.outputs.items()})


def _stream_answer(model: str, r: pb.PredictStreamResponse) -> Prediction:
    if r.HasField("error"):
        code = grpc.StatusCode.UNKNOWN
        for c in grpc.StatusCode:
            if c.value[0] == r.error.code:
                code = c
        return Prediction(model, 0, r.request_id, error=ClientError(code.name, r.error.message))
    return _prediction(r.response)


def _feedback_request(model: str, truth: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> pb.FeedbackRequest:
    pairs = truth.items() if isinstance(truth, Mapping) else truth
    items = []
    for request_id, value in pairs:
        a = np.atleast_1d(np.asarray(value))
        tensor = pb.Tensor(dtype=pb.STRING, shape=a.shape, string_values=[str(v) for v in a.reshape(-1)]) \
            if a.dtype.kind in "OUS" else array_to_tensor(a, raw=False)  # fmt: skip
        items.append(pb.FeedbackItem(request_id=request_id, truth=tensor))
    return pb.FeedbackRequest(model=model, items=items)


def _feedback_result(r: pb.FeedbackResponse) -> FeedbackResult:
    return FeedbackResult(
        {x.request_id: pb.FeedbackOutcome.Name(x.outcome) for x in r.results},
        r.matched, r.unknown, r.expired, r.duplicate, r.invalid,
    )  # fmt: skip


def _served(v: pb.VersionInfo) -> ServedModel:
    sig = v.signature
    roles: dict[str, str] = {}
    for o in sig.outputs:
        if o.role:
            roles.setdefault(o.role, o.name)
    inputs = sig.inputs or [sig.input]  # a server before inputs were named: its one input
    tabular = sig.tabular if sig.inputs else True
    return ServedModel(
        version=v.version,
        input_dtype=("float32" if sig.input.dtype == pb.FLOAT32 else "float64") if tabular else dtype_of_v1(sig.input.dtype),
        n_features=sig.input.shape[1] if tabular and len(sig.input.shape) == 2 else None,
        task=sig.task,
        feature_names=tuple(sig.feature_names),
        classes=tuple(sig.classes),
        outputs=tuple(o.name for o in sig.outputs),
        roles=roles,
        backend=v.backend,
        explanation_baseline=sig.explanation_baseline,
        inputs={i.name: (dtype_of_v1(i.dtype), tuple(i.shape)) for i in inputs},
        tabular=tabular,
    )


def _model_info(m: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=m.name,
        state=pb.ModelState.Name(m.state),
        versions={v.version: pb.ModelState.Name(v.state) for v in m.versions},
        ready={v.version: _served(v) for v in m.versions if v.state == pb.READY},
        error=m.error,
        warnings=tuple(m.warnings),
        traffic={v.version: v.traffic_share for v in m.versions if v.traffic_share > 0},
    )


def _newest_ready(info: ModelInfo, model: str, version: int) -> ServedModel:
    # version 0: among the versions that take requests without a version (never a shadow)
    ready = [v for v in sorted(info.ready) if v == version or (not version and (v in info.traffic or not info.traffic))]
    if not ready:
        raise NotReady(f"version {version} of {model!r}" if version else repr(model))
    return info.ready[ready[-1]]


# ---------------------------------------------------------------- the clients
class _Base:
    def __init__(
        self,
        target: str,
        timeout: float,
        ca: str | Path | None,
        cert: str | Path | None,
        key: str | Path | None,
        token: str | None,
        max_message_mb: int | None,
        retries: bool,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = _credentials(ca, cert, key)
        self._options = _channel_options(None if max_message_mb is None else max_message_mb << 20, retries)

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _with(self, metadata: Metadata) -> tuple[tuple[str, str], ...]:
        """The call's metadata: the token's, then ``metadata`` (e.g. the header a
        model's traffic split places callers by)."""
        if not metadata:
            return self._metadata
        return (*self._metadata, *((str(k).lower(), str(v)) for k, v in metadata.items()))


class Client(_Base):
    """A synchronous client of one server (or balancer) ``target``; see the module
    docstring. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        max_message_mb: int | None = None,
        retries: bool = True,
    ) -> None:
        super().__init__(target, timeout, ca, cert, key, token, max_message_mb, retries)
        if self._credentials is None:
            self._channel = grpc.insecure_channel(target, options=self._options)
        else:
            self._channel = grpc.secure_channel(target, self._credentials, options=self._options)
        self._predict = pb_grpc.PredictServiceStub(self._channel)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None, metadata: Metadata = None) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._with(metadata))
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details() or "") from None

    def predict(
        self, model: str, X: Any, *, outputs: Iterable[str] = (), version: int = 0, request_id: str = "",
        timeout: float | None = None, metadata: Metadata = None,
    ) -> Prediction:  # fmt: skip
        """Score the rows ``X`` (sent as raw float64, or float32 when X is float32),
        or the inputs ``X`` by name (a mapping of arrays, each sent in its dtype).
        ``metadata``: headers sent with the call (e.g. a traffic split's key header)."""
        request = _predict_request(model, X, outputs, version, request_id)
        return _prediction(self._call(self._predict.Predict, request, timeout, metadata))

    def stream(
        self, model: str, batches: Iterable[Any], *, outputs: Iterable[str] = (), version: int = 0,
        request_ids: Iterable[str] | None = None, timeout: float | None = None, metadata: Metadata = None,
    ) -> Iterator[Prediction]:  # fmt: skip
        """Score each batch of rows on one stream; the answers come in order (one the
        server refused carries ``error``, and the stream goes on)."""
        outputs = tuple(outputs)
        ids = iter(request_ids) if request_ids is not None else None
        requests = (
            _predict_request(model, X, outputs, version, next(ids) if ids is not None else "") for X in batches
        )
        try:
            for r in self._predict.PredictStream(requests, timeout=self._deadline(timeout), metadata=self._with(metadata)):
                yield _stream_answer(model, r)
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details() or "") from None

    def feedback(self, model: str, truth: Mapping[str, Any] | Iterable[tuple[str, Any]], *, timeout: float | None = None) -> FeedbackResult:
        """Ground truth for earlier request ids (request id → the true label(s) or value(s))."""
        return _feedback_result(self._call(self._predict.Feedback, _feedback_request(model, truth), timeout))

    def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        return [_model_info(m) for m in self._call(self._models.ListModels, pb.ListModelsRequest(), timeout).models]

    def model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        return _model_info(self._call(self._models.GetModel, pb.GetModelRequest(name=name), timeout))

    def served(self, model: str, version: int = 0, *, timeout: float | None = None) -> ServedModel:
        """The newest ready version of ``model`` that takes requests without a
        version (or ``version``); NotReady when none is."""
        return _newest_ready(self.model(model, timeout=timeout), model, version)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The health of ``service`` ("" for the server, ``model/<name>`` for a model):
        "SERVING", "NOT_SERVING", …"""
        r = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same methods, awaited (``stream`` is
    an async iterator). Use it as an async context manager, or await :meth:`close`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        max_message_mb: int | None = None,
        retries: bool = True,
    ) -> None:
        super().__init__(target, timeout, ca, cert, key, token, max_message_mb, retries)
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
        self._predict = pb_grpc.PredictServiceStub(self._channel)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None, metadata: Metadata = None) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout), metadata=self._with(metadata))
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details() or "") from None

    async def predict(
        self, model: str, X: Any, *, outputs: Iterable[str] = (), version: int = 0, request_id: str = "",
        timeout: float | None = None, metadata: Metadata = None,
    ) -> Prediction:  # fmt: skip
        request = _predict_request(model, X, outputs, version, request_id)
        return _prediction(await self._call(self._predict.Predict, request, timeout, metadata))

    async def stream(
        self, model: str, batches: Iterable[Any], *, outputs: Iterable[str] = (), version: int = 0,
        request_ids: Iterable[str] | None = None, timeout: float | None = None, metadata: Metadata = None,
    ) -> AsyncIterator[Prediction]:  # fmt: skip
        outputs = tuple(outputs)
        ids = iter(request_ids) if request_ids is not None else None
        requests = [_predict_request(model, X, outputs, version, next(ids) if ids is not None else "") for X in batches]
        call = self._predict.PredictStream(iter(requests), timeout=self._deadline(timeout), metadata=self._with(metadata))
        try:
            async for r in call:
                yield _stream_answer(model, r)
        except grpc.RpcError as err:
            raise ClientError(err.code().name, err.details() or "") from None

    async def feedback(self, model: str, truth: Mapping[str, Any] | Iterable[tuple[str, Any]], *, timeout: float | None = None) -> FeedbackResult:
        return _feedback_result(await self._call(self._predict.Feedback, _feedback_request(model, truth), timeout))

    async def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        r = await self._call(self._models.ListModels, pb.ListModelsRequest(), timeout)
        return [_model_info(m) for m in r.models]

    async def model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        return _model_info(await self._call(self._models.GetModel, pb.GetModelRequest(name=name), timeout))

    async def served(self, model: str, version: int = 0, *, timeout: float | None = None) -> ServedModel:
        return _newest_ready(await self.model(model, timeout=timeout), model, version)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        r = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))

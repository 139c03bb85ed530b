"""Triton's extensions of the Open Inference Protocol, as converters: a model
version's configuration (``ModelConfig``), its request statistics
(``ModelStatistics``), and top-k classification of an output (the
``classification`` parameter of a requested output).

Triton's conventions are followed where its clients rely on them:

- ``max_batch_size`` > 0 and every tensor's ``dims`` without the batch dimension
  (rows); an output of the batch dimension alone is ``dims [1]`` with ``reshape []``.
  A model whose inputs are not all batched along their first dimension (see
  ``Signature.batched``) has ``max_batch_size`` 0 and every tensor's full ``dims``
  (-1 for a symbolic one), as Triton describes a model that does not batch.
- A classification is a BYTES tensor of shape [rows, k]: each row's k largest values
  as ``"value:index"``, and ``":label"`` after them when the output's columns are
  the model's classes; values as C's ``std::to_string`` writes them (``%f`` for
  floating point).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..observability.infer_stats import Duration, StatsSnapshot
from ..repository import ModelVersion
from ..types import Signature, TensorSpec
from ._gen.inference import grpc_service_pb2 as oip
from ._gen.inference import model_config_pb2 as mc
from ._wire import Request

#: scorewire's backends as Triton names a platform (what ModelMetadata says too).
#: NOTE: an ensemble is not Triton's platform "ensemble", a pipeline of steps its
#: ModelConfig must list (perf_analyzer reads them, and crashes on none): it is one
#: model that combines its members
PLATFORMS = {"native": "scorewire_native", "onnxruntime": "onnxruntime_onnx", "ensemble": "scorewire_ensemble"}
#: ... and as Triton names a backend
BACKENDS = {"native": "scorewire_native", "onnxruntime": "onnxruntime", "ensemble": "scorewire_ensemble"}

_DATA_TYPES = {
    "float16": mc.TYPE_FP16,
    "float32": mc.TYPE_FP32,
    "float64": mc.TYPE_FP64,
    "int8": mc.TYPE_INT8,
    "int16": mc.TYPE_INT16,
    "int32": mc.TYPE_INT32,
    "int64": mc.TYPE_INT64,
    "uint8": mc.TYPE_UINT8,
    "uint16": mc.TYPE_UINT16,
    "uint32": mc.TYPE_UINT32,
    "uint64": mc.TYPE_UINT64,
    "object": mc.TYPE_STRING,
    "bool": mc.TYPE_BOOL,
}

#: Triton's ModelConfig.max_batch_size is an int32
_INT32_MAX = 2**31 - 1


def _plain(value: object) -> object:
    """A class label as JSON writes it (numpy scalars as Python's)."""
    return value.item() if isinstance(value, np.generic) else value


def _dims(spec: TensorSpec, batched: bool = True) -> tuple[list[int], mc.ModelTensorReshape | None]:
    """A tensor's dims without the batch dimension (and its reshape, for a tensor
    of the batch dimension alone), as Triton describes a batching model's tensors;
    all of them for a model that is not ``batched``."""
    if not batched:
        return list(spec.shape), None
    dims = list(spec.shape[1:])
    if not dims:
        return [1], mc.ModelTensorReshape(shape=[])
    return dims, None


def model_config(mv: ModelVersion, max_rows: int) -> mc.ModelConfig:
    """The configuration of a ready model version, as Triton writes one: what runs
    it, the rows a request may carry (``max_rows``), its tensors, its dynamic
    batching, its version policy; its task, classes (JSON, in column order) and
    feature names as parameters."""
    model = mv.model
    assert model is not None
    sig = model.signature
    config = mv.config
    batched = sig.batched
    cfg = mc.ModelConfig(
        name=mv.name,
        platform=PLATFORMS.get(model.backend, model.backend),
        backend=BACKENDS.get(model.backend, model.backend),
        max_batch_size=min(max_rows, _INT32_MAX) if batched else 0,
    )
    policy = config.version_policy
    if policy.policy == "all":
        cfg.version_policy.all.SetInParent()
    elif policy.policy == "specific":
        cfg.version_policy.specific.versions.extend(policy.versions)
    else:
        cfg.version_policy.latest.num_versions = policy.count
    for i in sig.inputs:
        dims, reshape = _dims(i, batched)
        inp = cfg.input.add(name=i.name, data_type=_DATA_TYPES[i.dtype], dims=dims)
        if reshape is not None:
            inp.reshape.CopyFrom(reshape)
    for o in sig.outputs:
        dims, reshape = _dims(o, batched)
        out = cfg.output.add(name=o.name, data_type=_DATA_TYPES[o.dtype], dims=dims)
        if reshape is not None:
            out.reshape.CopyFrom(reshape)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    batching = config.batching
    if batching.enabled_for(model.backend) and batched:
        cfg.dynamic_batching.max_queue_delay_microseconds = batching.max_delay_us
        cfg.parameters["batching.max_batch_rows"].string_value = str(batching.max_batch_rows)
        cfg.parameters["batching.max_queue_rows"].string_value = str(batching.max_queue_rows)
    cfg.parameters["task"].string_value = sig.task
    if sig.classes is not None:
        cfg.parameters["classes"].string_value = json.dumps([_plain(c) for c in sig.classes])
    if sig.feature_names:
        cfg.parameters["feature_names"].string_value = json.dumps(list(sig.feature_names))
    if config.description:
        cfg.parameters["description"].string_value = config.description
    if model.native_reason:
        cfg.parameters["native_reason"].string_value = model.native_reason
    return cfg


def _duration(d: Duration) -> oip.StatisticDuration:
    return oip.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(mv: ModelVersion, s: StatsSnapshot) -> oip.ModelStatistics:
    """One version's statistics as Triton's ``ModelStatistics``."""
    return oip.ModelStatistics(
        name=mv.name,
        version=str(mv.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=oip.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
        ),
        batch_stats=[
            oip.InferBatchStatistics(
                batch_size=b.batch_size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for b in s.batches
        ],
    )


# ------------------------------------------------------------------ classification
CLASSIFICATION = "classification"
#: a tensor parameter of Triton's shared-memory extension, which scorewire has not
SHARED_MEMORY_REGION = "shared_memory_region"
NO_SHARED_MEMORY = "shared memory is not implemented by scorewire: send tensors in the request (raw_input_contents)"


class ClassifiedRequest(Request):
    """A ModelInferRequest that asks for some outputs as top-k classes:
    ``classification`` maps those outputs to k."""

    classification: dict[str, int]


def requested_classification(message: oip.ModelInferRequest) -> dict[str, int]:
    """The outputs a request asks to classify, each with its k (InvalidInput for a
    ``classification`` that is not a positive int64_param, or for shared memory)."""
    for inp in message.inputs:
        if SHARED_MEMORY_REGION in inp.parameters:
            raise InvalidInput(NO_SHARED_MEMORY)
    out: dict[str, int] = {}
    for o in message.outputs:
        if SHARED_MEMORY_REGION in o.parameters:
            raise InvalidInput(NO_SHARED_MEMORY)
        if CLASSIFICATION not in o.parameters:
            continue
        p = o.parameters[CLASSIFICATION]
        if p.WhichOneof("parameter_choice") != "int64_param" or p.int64_param < 1:
            raise InvalidInput(
                f"output {o.name[:64]!r}: parameter 'classification' must be an int64_param of at least 1 "
                "(the number of classes to return)"
            )
        out[o.name] = p.int64_param
    return out


def class_labels(sig: Signature) -> tuple[str, ...] | None:
    """The labels classification writes after each index: the model's classes."""
    return None if sig.classes is None else tuple(str(_plain(c)) for c in sig.classes)


def _format(value: Any) -> str:
    # std::to_string: "%f" for floating point, the integer itself otherwise
    return f"{value:f}" if isinstance(value, float) else str(value)


def classify(values: np.ndarray, k: int, labels: Sequence[str] | None) -> np.ndarray:
    """Each row's ``k`` largest values of an output of shape (rows,) or (rows,
    columns), largest first (ties: the lower index first), as a BYTES tensor of
    shape (rows, min(k, columns)). ``labels``: written after each index when there
    is one per column."""
    if values.dtype.kind not in "fiu":
        raise InvalidInput(f"classification needs a numeric output, this one is {values.dtype}")
    rows = values.reshape(values.shape[0], int(np.prod(values.shape[1:])))
    n = min(k, rows.shape[1])
    if labels is not None and len(labels) != rows.shape[1]:
        labels = None
    order = np.argsort(-rows if rows.dtype.kind == "f" else -rows.astype(np.float64), axis=1, kind="stable")[:, :n]
    top = np.take_along_axis(rows, order, axis=1).tolist()
    indices = order.tolist()
    out = np.empty((rows.shape[0], n), dtype=object)
    for r, (vs, ix) in enumerate(zip(top, indices, strict=True)):
        if labels is None:
            out[r] = [f"{_format(v)}:{i}".encode() for v, i in zip(vs, ix, strict=True)]
        else:
            out[r] = [f"{_format(v)}:{i}:{labels[i]}".encode() for v, i in zip(vs, ix, strict=True)]
    return out

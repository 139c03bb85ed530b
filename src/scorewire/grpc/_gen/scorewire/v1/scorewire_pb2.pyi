from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    FLOAT32: _ClassVar[DataType]
    FLOAT64: _ClassVar[DataType]
    INT32: _ClassVar[DataType]
    INT64: _ClassVar[DataType]
    STRING: _ClassVar[DataType]
    BOOL: _ClassVar[DataType]
    FLOAT16: _ClassVar[DataType]
    INT8: _ClassVar[DataType]
    INT16: _ClassVar[DataType]
    UINT8: _ClassVar[DataType]
    UINT16: _ClassVar[DataType]
    UINT32: _ClassVar[DataType]
    UINT64: _ClassVar[DataType]

class FeedbackOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_OUTCOME_UNSPECIFIED: _ClassVar[FeedbackOutcome]
    MATCHED: _ClassVar[FeedbackOutcome]
    UNKNOWN_ID: _ClassVar[FeedbackOutcome]
    EXPIRED: _ClassVar[FeedbackOutcome]
    DUPLICATE: _ClassVar[FeedbackOutcome]
    INVALID: _ClassVar[FeedbackOutcome]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    LOADING: _ClassVar[ModelState]
    READY: _ClassVar[ModelState]
    FAILED: _ClassVar[ModelState]
    UNLOADED: _ClassVar[ModelState]
DATA_TYPE_UNSPECIFIED: DataType
FLOAT32: DataType
FLOAT64: DataType
INT32: DataType
INT64: DataType
STRING: DataType
BOOL: DataType
FLOAT16: DataType
INT8: DataType
INT16: DataType
UINT8: DataType
UINT16: DataType
UINT32: DataType
UINT64: DataType
FEEDBACK_OUTCOME_UNSPECIFIED: FeedbackOutcome
MATCHED: FeedbackOutcome
UNKNOWN_ID: FeedbackOutcome
EXPIRED: FeedbackOutcome
DUPLICATE: FeedbackOutcome
INVALID: FeedbackOutcome
MODEL_STATE_UNSPECIFIED: ModelState
LOADING: ModelState
READY: ModelState
FAILED: ModelState
UNLOADED: ModelState

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "raw", "float_values", "double_values", "int32_values", "int64_values", "string_values", "bool_values", "uint32_values", "uint64_values")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUES_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUES_FIELD_NUMBER: _ClassVar[int]
    INT32_VALUES_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUES_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUES_FIELD_NUMBER: _ClassVar[int]
    UINT32_VALUES_FIELD_NUMBER: _ClassVar[int]
    UINT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw: bytes
    float_values: _containers.RepeatedScalarFieldContainer[float]
    double_values: _containers.RepeatedScalarFieldContainer[float]
    int32_values: _containers.RepeatedScalarFieldContainer[int]
    int64_values: _containers.RepeatedScalarFieldContainer[int]
    string_values: _containers.RepeatedScalarFieldContainer[str]
    bool_values: _containers.RepeatedScalarFieldContainer[bool]
    uint32_values: _containers.RepeatedScalarFieldContainer[int]
    uint64_values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., raw: _Optional[bytes] = ..., float_values: _Optional[_Iterable[float]] = ..., double_values: _Optional[_Iterable[float]] = ..., int32_values: _Optional[_Iterable[int]] = ..., int64_values: _Optional[_Iterable[int]] = ..., string_values: _Optional[_Iterable[str]] = ..., bool_values: _Optional[_Iterable[bool]] = ..., uint32_values: _Optional[_Iterable[int]] = ..., uint64_values: _Optional[_Iterable[int]] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "input", "outputs", "request_id", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    input: Tensor
    outputs: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "request_id", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    request_id: str
    outputs: _containers.MessageMap[str, Tensor]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., request_id: _Optional[str] = ..., outputs: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: PredictResponse
    error: Error
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("model", "items")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[FeedbackItem]
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[FeedbackItem, _Mapping]]] = ...) -> None: ...

class FeedbackItem(_message.Message):
    __slots__ = ("request_id", "truth")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRUTH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    truth: Tensor
    def __init__(self, request_id: _Optional[str] = ..., truth: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class FeedbackResult(_message.Message):
    __slots__ = ("request_id", "outcome", "version", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    outcome: FeedbackOutcome
    version: int
    message: str
    def __init__(self, request_id: _Optional[str] = ..., outcome: _Optional[_Union[FeedbackOutcome, str]] = ..., version: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("results", "matched", "unknown", "expired", "duplicate", "invalid")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FeedbackResult]
    matched: int
    unknown: int
    expired: int
    duplicate: int
    invalid: int
    def __init__(self, results: _Optional[_Iterable[_Union[FeedbackResult, _Mapping]]] = ..., matched: _Optional[int] = ..., unknown: _Optional[int] = ..., expired: _Optional[int] = ..., duplicate: _Optional[int] = ..., invalid: _Optional[int] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "dtype", "shape", "role", "dim_names")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DIM_NAMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    role: str
    dim_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., role: _Optional[str] = ..., dim_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("input", "outputs", "feature_names", "task", "classes", "explanation_baseline", "inputs", "tabular", "batched")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_BASELINE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TABULAR_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    input: TensorInfo
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    task: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    explanation_baseline: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    tabular: bool
    batched: bool
    def __init__(self, input: _Optional[_Union[TensorInfo, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., feature_names: _Optional[_Iterable[str]] = ..., task: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., explanation_baseline: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., tabular: _Optional[bool] = ..., batched: _Optional[bool] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "state", "backend", "error", "signature", "backend_reason", "traffic_share", "shadow")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REASON_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: ModelState
    backend: str
    error: str
    signature: Signature
    backend_reason: str
    traffic_share: float
    shadow: bool
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., backend: _Optional[str] = ..., error: _Optional[str] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ..., backend_reason: _Optional[str] = ..., traffic_share: _Optional[float] = ..., shadow: _Optional[bool] = ...) -> None: ...

class TrafficSplit(_message.Message):
    __slots__ = ("weights", "key_header", "shadow_version", "shadow_fraction")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    KEY_HEADER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[VersionWeight]
    key_header: str
    shadow_version: int
    shadow_fraction: float
    def __init__(self, weights: _Optional[_Iterable[_Union[VersionWeight, _Mapping]]] = ..., key_header: _Optional[str] = ..., shadow_version: _Optional[int] = ..., shadow_fraction: _Optional[float] = ...) -> None: ...

class VersionWeight(_message.Message):
    __slots__ = ("version", "weight")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    version: int
    weight: float
    def __init__(self, version: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "state", "versions", "description", "error", "warnings", "traffic")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ModelState
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    description: str
    error: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    traffic: TrafficSplit
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., description: _Optional[str] = ..., error: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., traffic: _Optional[_Union[TrafficSplit, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelStatsRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStats]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStats, _Mapping]]] = ...) -> None: ...

class VersionStats(_message.Message):
    __slots__ = ("version", "state", "requests", "drift", "feedback", "shadow")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: ModelState
    requests: RequestStats
    drift: DriftStats
    feedback: FeedbackStats
    shadow: _containers.RepeatedCompositeFieldContainer[ShadowStats]
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., requests: _Optional[_Union[RequestStats, _Mapping]] = ..., drift: _Optional[_Union[DriftStats, _Mapping]] = ..., feedback: _Optional[_Union[FeedbackStats, _Mapping]] = ..., shadow: _Optional[_Iterable[_Union[ShadowStats, _Mapping]]] = ...) -> None: ...

class ShadowStats(_message.Message):
    __slots__ = ("serving_version", "mirrored", "dropped", "compared", "compared_rows", "failed", "outputs")
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_ROWS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    serving_version: int
    mirrored: int
    dropped: int
    compared: int
    compared_rows: int
    failed: int
    outputs: _containers.RepeatedCompositeFieldContainer[OutputDisagreement]
    def __init__(self, serving_version: _Optional[int] = ..., mirrored: _Optional[int] = ..., dropped: _Optional[int] = ..., compared: _Optional[int] = ..., compared_rows: _Optional[int] = ..., failed: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[OutputDisagreement, _Mapping]]] = ...) -> None: ...

class OutputDisagreement(_message.Message):
    __slots__ = ("name", "kind", "rows", "differing_rows", "differing_share", "values", "mean_abs_diff", "max_abs_diff")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_ROWS_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_SHARE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    rows: int
    differing_rows: int
    differing_share: float
    values: int
    mean_abs_diff: float
    max_abs_diff: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., rows: _Optional[int] = ..., differing_rows: _Optional[int] = ..., differing_share: _Optional[float] = ..., values: _Optional[int] = ..., mean_abs_diff: _Optional[float] = ..., max_abs_diff: _Optional[float] = ...) -> None: ...

class RequestStats(_message.Message):
    __slots__ = ("count", "rows", "latency_available", "answered", "errors", "latency_mean_s", "latency_p50_s", "latency_p99_s")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MEAN_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_S_FIELD_NUMBER: _ClassVar[int]
    count: int
    rows: int
    latency_available: bool
    answered: int
    errors: int
    latency_mean_s: float
    latency_p50_s: float
    latency_p99_s: float
    def __init__(self, count: _Optional[int] = ..., rows: _Optional[int] = ..., latency_available: _Optional[bool] = ..., answered: _Optional[int] = ..., errors: _Optional[int] = ..., latency_mean_s: _Optional[float] = ..., latency_p50_s: _Optional[float] = ..., latency_p99_s: _Optional[float] = ...) -> None: ...

class DriftStats(_message.Message):
    __slots__ = ("available", "features", "sampled_rows", "estimated_rows", "window_s", "alert_threshold", "moderate_threshold", "sample_every", "reason")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_ROWS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODERATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_EVERY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    available: bool
    features: _containers.RepeatedCompositeFieldContainer[FeaturePsi]
    sampled_rows: int
    estimated_rows: float
    window_s: float
    alert_threshold: float
    moderate_threshold: float
    sample_every: int
    reason: str
    def __init__(self, available: _Optional[bool] = ..., features: _Optional[_Iterable[_Union[FeaturePsi, _Mapping]]] = ..., sampled_rows: _Optional[int] = ..., estimated_rows: _Optional[float] = ..., window_s: _Optional[float] = ..., alert_threshold: _Optional[float] = ..., moderate_threshold: _Optional[float] = ..., sample_every: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class FeaturePsi(_message.Message):
    __slots__ = ("name", "psi")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    name: str
    psi: float
    def __init__(self, name: _Optional[str] = ..., psi: _Optional[float] = ...) -> None: ...

class FeedbackStats(_message.Message):
    __slots__ = ("task", "window_rows", "accuracy", "log_loss", "roc_auc", "rmse", "mae", "recorded", "pending", "matched", "matched_rows", "unknown", "expired", "duplicate", "invalid")
    TASK_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    ROC_AUC_FIELD_NUMBER: _ClassVar[int]
    RMSE_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    MATCHED_ROWS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    task: str
    window_rows: int
    accuracy: float
    log_loss: float
    roc_auc: float
    rmse: float
    mae: float
    recorded: int
    pending: int
    matched: int
    matched_rows: int
    unknown: int
    expired: int
    duplicate: int
    invalid: int
    def __init__(self, task: _Optional[str] = ..., window_rows: _Optional[int] = ..., accuracy: _Optional[float] = ..., log_loss: _Optional[float] = ..., roc_auc: _Optional[float] = ..., rmse: _Optional[float] = ..., mae: _Optional[float] = ..., recorded: _Optional[int] = ..., pending: _Optional[int] = ..., matched: _Optional[int] = ..., matched_rows: _Optional[int] = ..., unknown: _Optional[int] = ..., expired: _Optional[int] = ..., duplicate: _Optional[int] = ..., invalid: _Optional[int] = ...) -> None: ...

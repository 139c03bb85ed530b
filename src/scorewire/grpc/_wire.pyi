# Type stub for the compiled wire codec (ext/_wire.pyx).
from typing import Any

import numpy as np

#: the largest tensor a request may describe (elements)
MAX_ELEMENTS: int

def encode_response(
    model: str, version: int, request_id: str, outputs: dict[str, np.ndarray], raw: bool
) -> bytes | None: ...
def stream_response(request_id: str, body: bytes) -> bytes: ...
def encode_infer_response(
    model_name: str, model_version: str, request_id: str, outputs: dict[str, np.ndarray]
) -> bytes | None: ...
class Request:
    model: str
    version: Any  # v1: int; OIP: the model_version text
    request_id: str
    outputs: tuple[str, ...]
    input_name: str
    #: one matrix (or one input of another rank), or inputs by name; None only with ``error`` set
    X: np.ndarray | dict[str, np.ndarray]
    raw: bool
    error: BaseException | None
    def __init__(
        self,
        model: str,
        version: Any,
        request_id: str,
        outputs: tuple[str, ...],
        input_name: str,
        X: np.ndarray | dict[str, np.ndarray] | None,
        raw: bool = False,
        error: BaseException | None = None,
    ) -> None: ...

def decode_predict(blob: bytes) -> Request | None: ...
def decode_infer(blob: bytes) -> Request | None: ...

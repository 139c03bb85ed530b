# Type stub for the compiled wire codec (ext/_wire.pyx).
import numpy as np

def decode_tensor(blob: bytes) -> np.ndarray | None: ...
def encode_response(
    model: str, version: int, request_id: str, outputs: dict[str, np.ndarray], raw: bool
) -> bytes | None: ...

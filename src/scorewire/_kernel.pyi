# Type stub for the compiled kernel (ext/_kernel.pyx).
import numpy as np

LINK_IDENTITY: int
LINK_LOGISTIC: int
LINK_SOFTMAX: int
LINK_SIGMOID: int
LINK_OVR: int
PARALLEL_MIN_ROWS: int

def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def all_finite(X: np.ndarray) -> bool: ...

class LinearKernel:
    coef: np.ndarray
    intercept: np.ndarray
    link: int
    n_features: int
    n_decisions: int
    def __init__(self, coef: np.ndarray, intercept: np.ndarray, link: int) -> None: ...
    def predict(
        self, X: np.ndarray, want_proba: bool, want_labels: bool, out64: bool, n_threads: int
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]: ...
    def score(
        self, X: np.ndarray, z: np.ndarray, out: np.ndarray | None, labels: np.ndarray | None, n_threads: int
    ) -> None: ...

# Type stub for the compiled kernel (ext/_kernel.pyx).
import numpy as np

LINK_IDENTITY: int
LINK_LOGISTIC: int
LINK_SOFTMAX: int
LINK_SIGMOID: int
LINK_OVR: int
ROLE_VALUE: int
ROLE_DECISION: int
ROLE_PROBABILITIES: int
ROLE_LABEL: int
ROLE_CONTRIBUTIONS: int
ROLE_BASE_VALUE: int
PARALLEL_MIN_ROWS: int
PARALLEL_MIN_WORK: int

#: what LinearKernel.predict and try_predict take: ((output name, ROLE_*), ...)
Plan = tuple[tuple[str, int], ...]

def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def simd_available() -> bool: ...
def simd_enabled() -> bool: ...
def all_finite(X: np.ndarray) -> bool: ...

# for tests
def _set_simd(on: bool) -> bool: ...
def _set_pool(on: bool) -> bool: ...
def _pool_threads() -> int: ...

class LinearKernel:
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray | None
    link: int
    n_features: int
    n_decisions: int
    n_link_columns: int
    out64: bool
    value_1d: bool
    baseline: np.ndarray
    def __init__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        link: int,
        out64: bool = True,
        value_1d: bool = False,
        classes: np.ndarray | None = None,
        baseline: np.ndarray | None = None,
    ) -> None: ...
    def try_predict(self, X: object, plan: Plan, n_threads: int) -> dict[str, np.ndarray] | None: ...
    def predict(self, X: np.ndarray, plan: Plan, n_threads: int) -> dict[str, np.ndarray]: ...
    def score(
        self,
        X: np.ndarray,
        z: np.ndarray | None,
        out: np.ndarray | None,
        labels: np.ndarray | None,
        n_threads: int,
    ) -> None: ...

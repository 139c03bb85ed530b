# cython: language_level=3
"""Batch scoring of linear and logistic models: ``scorewire._kernel``.

Layering, bottom to top (as scikit-learn's ``_loss.pyx``):

1. Scalar and per-row helpers, ``cdef inline ... noexcept nogil``: a dot product
   with four independent accumulators (instruction-level parallelism without
   reassociating a single sum), a numerically stable sigmoid, a softmax over one row.
2. Block loops over raw memory: for a block of rows, the decision ``z = X @ W.T + b``
   (row-major X: a dot product per row; column-major X: an axpy per column, so an
   F-ordered input is never copied), then the link (identity, sigmoid, softmax, …)
   and the labels, while the block is still in cache. ``prange`` spreads blocks over
   threads when there are at least ``PARALLEL_MIN_ROWS`` rows.
3. ``LinearKernel``: holds one model's weights and its link; ``score`` is the one
   Python entry point. It validates nothing: ``scorewire._native`` checks dtypes,
   shapes and strides once, in Python, and allocates the outputs. Arrays are read
   through NumPy's C API (raw data pointers) because acquiring typed memoryviews
   costs more than the whole batch-1 computation.

All arithmetic is float64 (float32 inputs are widened as they are read), so float32
and float64 inputs give the same decision up to the rounding of the input itself.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport exp
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int sw_openmp_enabled(void) { return 1; }
    static int sw_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int sw_openmp_enabled(void) { return 0; }
    static int sw_max_threads(void) { return 1; }
    #endif
    """
    int sw_openmp_enabled() noexcept nogil
    int sw_max_threads() noexcept nogil


ctypedef fused in_t:
    float
    double

ctypedef fused out_t:
    float
    double

# Links: how the decision z (n, k) becomes the probability-like output.
LINK_IDENTITY = 0   # out = z                                   (regression, raw scores)
LINK_LOGISTIC = 1   # k == 1: out (n, 2) = [sigma(-z), sigma(z)]  (binary logistic)
LINK_SOFTMAX = 2    # out = softmax(z) per row                  (multinomial)
LINK_SIGMOID = 3    # out = sigma(z) per column, not normalised (ONNX LOGISTIC, k > 1)
LINK_OVR = 4        # out = sigma(z) / sum(sigma(z)) per row    (one-vs-rest log loss)

cdef enum:
    # Rows per block: large enough to amortise the per-block work, small enough that
    # a block of decisions stays in L1.
    BLOCK_ROWS = 256
    # Below this many rows a batch is scored on the calling thread: entering an
    # OpenMP parallel region costs microseconds, which only pays off above it.
    # Measured with bench/bench_kernel.py on 2 cores (30 features).
    _PARALLEL_MIN_ROWS = 4096

PARALLEL_MIN_ROWS = _PARALLEL_MIN_ROWS


def openmp_enabled():
    """True when the kernel was compiled with OpenMP."""
    return bool(sw_openmp_enabled())


def max_threads():
    """OpenMP's default thread count (1 without OpenMP)."""
    return sw_max_threads()


# ---------------------------------------------------------------------------
# 1. scalar and per-row helpers
# ---------------------------------------------------------------------------

cdef inline double _dot(const in_t* x, const double* w, Py_ssize_t d) noexcept nogil:
    """sum(x[j] * w[j] for j < d), x contiguous, in four interleaved accumulators."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t j = 0
    while j + 4 <= d:
        s0 += <double>x[j] * w[j]
        s1 += <double>x[j + 1] * w[j + 1]
        s2 += <double>x[j + 2] * w[j + 2]
        s3 += <double>x[j + 3] * w[j + 3]
        j += 4
    while j < d:
        s0 += <double>x[j] * w[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _dot_strided(const in_t* x, Py_ssize_t sx, const double* w,
                                Py_ssize_t d) noexcept nogil:
    """sum(x[j * sx] * w[j] for j < d): rows of a non-contiguous X."""
    cdef double s = 0.0
    cdef Py_ssize_t j
    for j in range(d):
        s += <double>x[j * sx] * w[j]
    return s


cdef inline double _sigmoid(double z) noexcept nogil:
    """1 / (1 + exp(-z)) without overflow: exp is only taken of a non-positive number.

    For z >= 0, exp(-z) is in (0, 1]; for z < 0 the algebraically equal form
    exp(z) / (1 + exp(z)) is used. No overflow for any finite z (exp(-745) underflows
    to 0 quietly), and sigma(-z) keeps its full relative precision when sigma(z) is
    within 1e-16 of 1, unlike 1 - sigma(z).
    """
    cdef double e
    if z >= 0.0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef inline void _link_row(const double* z, Py_ssize_t k, int link,
                           out_t* out) noexcept nogil:
    """Apply the link to one row of decisions z[0:k], writing out[0:k] (or [0:2])."""
    cdef Py_ssize_t c
    cdef double m, s
    if link == 1:
        # out = [sigma(-z), sigma(z)]
        out[0] = <out_t>_sigmoid(-z[0])
        out[1] = <out_t>_sigmoid(z[0])
    elif link == 2:
        # out = exp(z - max(z)) / sum(exp(z - max(z)))
        m = z[0]
        for c in range(1, k):
            if z[c] > m:
                m = z[c]
        s = 0.0
        for c in range(k):
            s += exp(z[c] - m)
        for c in range(k):
            out[c] = <out_t>(exp(z[c] - m) / s)
    elif link == 3 or link == 4:
        # out = sigma(z); for OvR also out /= sum(out)
        s = 0.0
        for c in range(k):
            m = _sigmoid(z[c])
            out[c] = <out_t>m
            s += m
        if link == 4 and s > 0.0:
            for c in range(k):
                out[c] = <out_t>(_sigmoid(z[c]) / s)
    else:
        for c in range(k):
            out[c] = <out_t>z[c]


cdef inline long long _label_row(const double* z, Py_ssize_t k) noexcept nogil:
    """Index of the predicted class: z > 0 for one decision column, else argmax
    (the first maximum, as numpy.argmax and scikit-learn)."""
    cdef Py_ssize_t c, best = 0
    if k == 1:
        return 1 if z[0] > 0.0 else 0
    for c in range(1, k):
        if z[c] > z[best]:
            best = c
    return best


# ---------------------------------------------------------------------------
# 2. block loops
# ---------------------------------------------------------------------------

cdef void _decision_block(const in_t* X, Py_ssize_t sr, Py_ssize_t sc,
                          const double* W, const double* b, Py_ssize_t d, Py_ssize_t k,
                          Py_ssize_t r0, Py_ssize_t r1, double* z) noexcept nogil:
    """z[i, c] = X[i, :] @ W[c, :] + b[c] for rows r0 <= i < r1.

    X is addressed as X[i * sr + j * sc] (strides in elements); z is C-ordered (n, k).
    """
    cdef Py_ssize_t i, j, c
    cdef const in_t* col
    cdef double w
    if sc == 1:
        # row-major: one contiguous dot product per row and output
        for i in range(r0, r1):
            for c in range(k):
                z[i * k + c] = _dot(X + i * sr, W + c * d, d) + b[c]
    elif sr == 1:
        # column-major: z[r0:r1, c] = b[c]; z[r0:r1, c] += X[r0:r1, j] * W[c, j] for j
        for i in range(r0, r1):
            for c in range(k):
                z[i * k + c] = b[c]
        for c in range(k):
            for j in range(d):
                col = X + j * sc
                w = W[c * d + j]
                for i in range(r0, r1):
                    z[i * k + c] += <double>col[i] * w
    else:
        for i in range(r0, r1):
            for c in range(k):
                z[i * k + c] = _dot_strided(X + i * sr, sc, W + c * d, d) + b[c]


cdef void _score_block(const in_t* X, Py_ssize_t sr, Py_ssize_t sc,
                       const double* W, const double* b, Py_ssize_t d, Py_ssize_t k,
                       int link, Py_ssize_t r0, Py_ssize_t r1, double* z,
                       out_t* out, Py_ssize_t k_out, long long* labels) noexcept nogil:
    """Decision, link and labels for rows r0 <= i < r1 (out and labels may be NULL)."""
    cdef Py_ssize_t i
    _decision_block(X, sr, sc, W, b, d, k, r0, r1, z)
    if out != NULL:
        for i in range(r0, r1):
            _link_row(z + i * k, k, link, out + i * k_out)
    if labels != NULL:
        for i in range(r0, r1):
            labels[i] = _label_row(z + i * k, k)


cdef void _score(const in_t* X, Py_ssize_t sr, Py_ssize_t sc, Py_ssize_t n,
                 const double* W, const double* b, Py_ssize_t d, Py_ssize_t k,
                 int link, double* z, out_t* out, Py_ssize_t k_out,
                 long long* labels, int n_threads) noexcept nogil:
    """Score n rows, in blocks of BLOCK_ROWS, in parallel when n is large."""
    cdef Py_ssize_t n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    cdef Py_ssize_t blk, r1
    if n_threads <= 1 or n < _PARALLEL_MIN_ROWS:
        _score_block(X, sr, sc, W, b, d, k, link, 0, n, z, out, k_out, labels)
        return
    for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
        r1 = (blk + 1) * BLOCK_ROWS
        if r1 > n:
            r1 = n
        _score_block(X, sr, sc, W, b, d, k, link, blk * BLOCK_ROWS, r1, z, out,
                     k_out, labels)


cdef bint _all_finite(const in_t* X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t sr,
                      Py_ssize_t sc) noexcept nogil:
    """True when no element is NaN or infinite: x - x is 0 for finite x, NaN else."""
    cdef Py_ssize_t i, j
    cdef double acc = 0.0
    for i in range(n):
        for j in range(d):
            acc += X[i * sr + j * sc] - X[i * sr + j * sc]
        if acc != 0.0:  # NaN compares unequal to everything, 0.0 included
            return False
    return True


def all_finite(cnp.ndarray X):
    """True when the 2-D float32/float64 array X has no NaN or infinite value.

    One pass, no temporary arrays, the GIL released: the input check the server
    runs on every request (``np.isfinite(X).all()`` allocates and costs ~1 µs at
    batch 1).
    """
    cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0), d = cnp.PyArray_DIM(X, 1)
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
    cdef Py_ssize_t sr = cnp.PyArray_STRIDE(X, 0) // isz, sc = cnp.PyArray_STRIDE(X, 1) // isz
    cdef bint ok
    cdef void* data = cnp.PyArray_DATA(X)
    if cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT64:
        with nogil:
            ok = _all_finite(<const double*>data, n, d, sr, sc)
    else:
        with nogil:
            ok = _all_finite(<const float*>data, n, d, sr, sc)
    return ok


# ---------------------------------------------------------------------------
# 3. the Python entry point
# ---------------------------------------------------------------------------

cdef class LinearKernel:
    """One linear model's weights and link, ready to score batches.

    Parameters
    ----------
    coef : ndarray of shape (k, d), float64, C-contiguous
        One row of weights per decision column.
    intercept : ndarray of shape (k,), float64, contiguous
    link : int
        One of the ``LINK_*`` constants.
    """

    cdef readonly object coef
    cdef readonly object intercept
    cdef readonly int link
    cdef readonly Py_ssize_t n_features
    cdef readonly Py_ssize_t n_decisions
    cdef const double* _w
    cdef const double* _b

    def __cinit__(self, cnp.ndarray coef, cnp.ndarray intercept, int link):
        self.coef = coef
        self.intercept = intercept
        self.link = link
        self.n_decisions = cnp.PyArray_DIM(coef, 0)
        self.n_features = cnp.PyArray_DIM(coef, 1)
        self._w = <const double*>cnp.PyArray_DATA(coef)
        self._b = <const double*>cnp.PyArray_DATA(intercept)

    def predict(self, cnp.ndarray X, bint want_proba, bint want_labels, bint out64,
                int n_threads):
        """Allocate the outputs, score X into them, return ``(z, out, labels)``.

        ``out`` (float64 when ``out64``, else float32) and ``labels`` are None unless
        asked for. Allocating here, through NumPy's C API, is what keeps a batch-1
        call well under a microsecond; see :meth:`score` for the arguments.
        """
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray z, out = None, labels = None
        dims[0] = cnp.PyArray_DIM(X, 0)
        dims[1] = self.n_decisions
        z = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
        if want_proba:
            dims[1] = 2 if self.link == 1 else self.n_decisions
            out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64 if out64 else cnp.NPY_FLOAT32, 0)
        if want_labels:
            labels = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        self.score(X, z, out, labels, n_threads)
        return z, out, labels

    cpdef score(self, cnp.ndarray X, cnp.ndarray z, cnp.ndarray out, cnp.ndarray labels,
                int n_threads):
        """Score X into the caller's buffers.

        Parameters
        ----------
        X : ndarray of shape (n, d), float32 or float64            # IN
            Any strides that are whole multiples of the item size; read-only is fine.
        z : ndarray of shape (n, k), float64, C-contiguous         # OUT
            The decision ``X @ coef.T + intercept``.
        out : ndarray of shape (n, k_out), float32 or float64, C-contiguous, or None
            The link applied to z (k_out = 2 for LINK_LOGISTIC, else k).   # OUT
        labels : ndarray of shape (n,), int64, or None             # OUT
            The predicted class index per row.
        n_threads : int
            Threads for large batches (1 = the calling thread only).

        The GIL is released for the whole computation.
        """
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0)
        cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
        cdef Py_ssize_t sr = cnp.PyArray_STRIDE(X, 0) // isz
        cdef Py_ssize_t sc = cnp.PyArray_STRIDE(X, 1) // isz
        cdef Py_ssize_t k_out = 0
        cdef double* zp = <double*>cnp.PyArray_DATA(z)
        cdef long long* lp = NULL
        cdef int x64 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT64
        cdef int o64 = 1
        cdef void* op = NULL
        if out is not None:
            op = cnp.PyArray_DATA(out)
            k_out = cnp.PyArray_DIM(out, 1)
            o64 = cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT64
        if labels is not None:
            lp = <long long*>cnp.PyArray_DATA(labels)
        if n == 0:
            return
        with nogil:
            if x64 and o64:
                _score(<const double*>cnp.PyArray_DATA(X), sr, sc, n, self._w, self._b,
                       self.n_features, self.n_decisions, self.link, zp,
                       <double*>op, k_out, lp, n_threads)
            elif x64:
                _score(<const double*>cnp.PyArray_DATA(X), sr, sc, n, self._w, self._b,
                       self.n_features, self.n_decisions, self.link, zp,
                       <float*>op, k_out, lp, n_threads)
            elif o64:
                _score(<const float*>cnp.PyArray_DATA(X), sr, sc, n, self._w, self._b,
                       self.n_features, self.n_decisions, self.link, zp,
                       <double*>op, k_out, lp, n_threads)
            else:
                _score(<const float*>cnp.PyArray_DATA(X), sr, sc, n, self._w, self._b,
                       self.n_features, self.n_decisions, self.link, zp,
                       <float*>op, k_out, lp, n_threads)

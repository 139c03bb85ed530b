# cython: language_level=3
"""Batch scoring of linear and logistic models: ``scorewire.backends._kernel``.

Layering, bottom to top (as scikit-learn's ``_loss.pyx``):

1. Scalar and per-row helpers, ``cdef inline ... noexcept nogil``: a dot product
   with four independent accumulators (instruction-level parallelism without
   reassociating a single sum), a numerically stable sigmoid, a softmax over one row.
   Beside them, in ``_simd.h``, their AVX2+FMA counterparts for row-major X (a dot
   product over two rows at a time, the binary logistic link with one vector
   ``exp`` per four rows), chosen at run time when the CPU has AVX2 and FMA; the
   scalar helpers are the portable path for every other build. Either way a row's
   result does not depend on the batch around it: every row is summed in one fixed
   order, which the dynamic batcher needs (a merged request gets its lone answer).
2. Block loops over raw memory: for a block of ``BLOCK_ROWS`` rows, the decision
   ``z = X @ W.T + b`` (row-major X: a dot product per row; column-major X: an axpy
   per column, so an F-ordered input is never copied) into a scratch buffer that
   stays in L1, then the link (identity, sigmoid, softmax, …), the labels and, when
   asked for, each feature's contribution to the decision. Large
   batches are split into blocks that helper threads claim (``_pool.h``: the caller
   never waits for a helper that has not started); builds without that pool use
   OpenMP's ``prange``.
3. ``LinearKernel``: holds one model's weights, link and output dtype. ``predict``
   allocates the outputs (through NumPy's C API: acquiring typed memoryviews costs
   more than a whole batch-1 computation) and returns them by name. It validates
   nothing: ``scorewire.backends.native.NativeLinearModel`` checks dtypes, shapes and strides
   once, in Python. The exception is ``try_predict``, the batch-1 fast path: it
   accepts only an input that needs no conversion (a plain, aligned, native-order
   float32/float64 ndarray of shape (n, d)) and returns None for anything else, so
   that every error is still raised, with its message, by the Python checks.

All arithmetic is float64 (float32 inputs are widened as they are read), so float32
and float64 inputs give the same decision up to the rounding of the input itself.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport exp, fabs
from libc.stddef cimport ptrdiff_t

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

cdef extern from "numpy/arrayobject.h":
    # classes.take(indices), no output array (NumPy's pxd types that NULL as ndarray)
    object _take_from "PyArray_TakeFrom" (cnp.ndarray a, object indices, int axis,
                                          void* out, cnp.NPY_CLIPMODE mode)

cdef extern from "_simd.h":
    int sw_simd_available() noexcept nogil
    int sw_simd_enabled() noexcept nogil
    int sw_set_simd(int on) noexcept nogil
    int sw_dot_rows_f32(const float* X, Py_ssize_t sr, Py_ssize_t n, const double* w,
                        Py_ssize_t d, double b, double* z, Py_ssize_t zs,
                        int stream) noexcept nogil
    int sw_dot_rows_f64(const double* X, Py_ssize_t sr, Py_ssize_t n, const double* w,
                        Py_ssize_t d, double b, double* z, Py_ssize_t zs,
                        int stream) noexcept nogil
    int sw_logistic_f32(const double* z, Py_ssize_t n, float* out) noexcept nogil
    int sw_logistic_f64(const double* z, Py_ssize_t n, double* out) noexcept nogil
    int sw_all_finite_f32(const float* X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t sr,
                          Py_ssize_t sc) noexcept nogil
    int sw_all_finite_f64(const double* X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t sr,
                          Py_ssize_t sc) noexcept nogil

cdef extern from "_pool.h":
    ctypedef void (*sw_block_fn)(void* ctx, ptrdiff_t block) noexcept nogil
    int sw_pool_enabled() noexcept nogil
    int sw_pool_run(sw_block_fn fn, void* ctx, ptrdiff_t n_blocks,
                    int n_helpers) noexcept nogil
    int sw_pool_set_use(int on) noexcept nogil
    int sw_pool_started() noexcept nogil


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

cdef enum Role:
    # Output roles, as a plan names them: LinearKernel.predict(X, ((name, role), ...), n)
    _VALUE = 0          # the decision; (n,) instead of (n, 1) when value_1d
    _DECISION = 1       # the decision z, (n, k)
    _PROBABILITIES = 2  # the link applied to z, (n, k_out)
    _LABEL = 3          # classes[predicted class index], (n,)
    _CONTRIBUTIONS = 4  # W[c, j] * (X[i, j] - baseline[j]), (n, d) or (n, k, d), X's dtype
    _BASE_VALUE = 5     # W @ baseline + b, (k,), X's dtype: the same for every row

ROLE_VALUE = _VALUE
ROLE_DECISION = _DECISION
ROLE_PROBABILITIES = _PROBABILITIES
ROLE_LABEL = _LABEL
ROLE_CONTRIBUTIONS = _CONTRIBUTIONS
ROLE_BASE_VALUE = _BASE_VALUE

cdef enum:
    # Rows per block: large enough to amortise the per-block work, small enough that
    # a block of decisions stays in L1 (256 rows x SCRATCH_K columns = 16 KiB).
    BLOCK_ROWS = 256
    # Decision columns a block's on-stack scratch holds; wider models get a scratch
    # array of n rows (LinearKernel._score allocates it).
    SCRATCH_K = 8
    # A batch is split over threads when it has at least this many rows (two
    # blocks) and ...
    _PARALLEL_MIN_ROWS = 512
    # ... at least this many multiply-adds (n x d x k), ~15 µs on one thread. Measured
    # on 2 cores: an awake helper pays from ~15 000 (512 x 30 features: 2.8 -> 2.3 µs);
    # a sleeping one costs the caller a wake-up (futex) of a few µs first.
    _PARALLEL_MIN_WORK = 65536
    # Below this many multiply-adds (~0.5 µs) the GIL is kept: releasing and
    # re-acquiring it costs as much as the arithmetic.
    _NOGIL_MIN_WORK = 2048
    # An X this large (L2 size of a server core) is read from memory, not cache: the
    # dot product of long rows then reads one row at a time (see _simd.h).
    _STREAM_MIN_BYTES = 2 << 20

PARALLEL_MIN_ROWS = _PARALLEL_MIN_ROWS
PARALLEL_MIN_WORK = _PARALLEL_MIN_WORK


def openmp_enabled():
    """True when the kernel was compiled with OpenMP (its parallel build)."""
    return bool(sw_openmp_enabled())


def max_threads():
    """OpenMP's default thread count (1 without OpenMP)."""
    return sw_max_threads()


def simd_available():
    """True when this CPU runs the kernel's AVX2+FMA paths (x86-64 builds only)."""
    return bool(sw_simd_available())


def simd_enabled():
    """True while the AVX2+FMA paths are in use (see :func:`_set_simd`)."""
    return bool(sw_simd_enabled())


sw_set_simd(1)  # chosen once, at import: the CPU's answer does not change


def _set_simd(bint on):
    """For tests: use the AVX2+FMA paths (when the CPU has them) or force the portable
    scalar loops. Returns whether they were in use. Not for use while other threads
    are scoring."""
    previous = bool(sw_simd_enabled())
    sw_set_simd(on)
    return previous


def _set_pool(bint on):
    """For tests: run large batches on the kernel's helper threads (the default, where
    built) or on OpenMP's prange. Returns the previous setting."""
    return bool(sw_pool_set_use(on))


def _pool_threads():
    """Helper threads started so far (0 until the first parallel batch)."""
    return sw_pool_started()


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


cdef inline void _logistic_row(double z, out_t* out) noexcept nogil:
    """out[0:2] = [sigma(-z), sigma(z)] from one exp: e = exp(-|z|) in (0, 1],
    m = 1 / (1 + e) = sigma(|z|), e * m = sigma(-|z|) (full relative precision,
    never 1 - m). No overflow for any z; NaN gives NaN."""
    cdef double e = exp(-fabs(z))
    cdef double m = 1.0 / (1.0 + e)
    if z >= 0.0:
        out[0] = <out_t>(e * m)
        out[1] = <out_t>m
    else:
        out[0] = <out_t>m
        out[1] = <out_t>(e * m)


cdef inline void _link_row(const double* z, Py_ssize_t k, int link,
                           out_t* out) noexcept nogil:
    """Apply the link to one row of decisions z[0:k], writing out[0:k] (or [0:2])."""
    cdef Py_ssize_t c
    cdef double m, s
    if link == 1:
        _logistic_row(z[0], out)
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
    """Index of the predicted class of one row of decisions z[0:k].

    This is scorewire's label rule, stated here once (the other places that pick a
    class refer to it):

    - one decision column: class 1 only when z > 0; z == 0 is class 0;
    - k columns: the first maximum, so a tie goes to the tied class that comes
      first in ``classes`` (numpy.argmax does the same).

    Both are scikit-learn's ``LinearClassifierMixin.predict`` (``scores > 0``, else
    ``scores.argmax(axis=1)``) and onnxruntime's LinearClassifier. The rule reads
    the float64 decision, never the rounded output or the probabilities (a link can
    round different decisions to equal probabilities).
    """
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

cdef struct Job:
    # one scoring call: what the block loops read (IN) and write (OUT)
    const void* X          # IN  (n, d) float32 or float64, X[i * sr + j * sc]
    Py_ssize_t sr, sc, n
    bint x64               #     X is float64
    bint stream            #     X is read from memory, not cache
    const double* W        # IN  (k, d) C-contiguous
    const double* b        # IN  (k,)
    Py_ssize_t d, k
    int link
    double* z              # OUT (n, k) float64 decisions, or NULL: per-block scratch
    void* zo               # OUT (n, k) decisions in the output dtype when that is
                           #     float32 (a rounded copy of z), else NULL
    void* out              # OUT (n, k_out) link output, or NULL
    Py_ssize_t k_out
    bint o64               #     zo and out are float64 (else float32)
    long long* labels      # OUT (n,) class indices, or NULL
    bint decide            #     the decision is needed (z, zo, out or labels is set)
    const double* mu       # IN  (d,) the explanation baseline
    void* contrib          # OUT (n, k, d) contributions in X's dtype, or NULL
    Py_ssize_t block_rows  # rows per parallel block (a multiple of BLOCK_ROWS)


cdef void _decision_block(const in_t* X, Py_ssize_t sr, Py_ssize_t sc,
                          const double* W, const double* b, Py_ssize_t d, Py_ssize_t k,
                          Py_ssize_t m, double* z, bint stream) noexcept nogil:
    """z[i, c] = X[i, :] @ W[c, :] + b[c] for the m rows i < m starting at X.

    X is addressed as X[i * sr + j * sc] (strides in elements); z is C-ordered (m, k).
    """
    cdef Py_ssize_t i, j, c
    cdef const in_t* col
    cdef double w
    cdef int done
    if sc == 1:
        # row-major: one contiguous dot product per row and decision column,
        # z[:, c] = X @ W[c] + b[c] (AVX2+FMA over four rows at a time when available)
        for c in range(k):
            if in_t is float:
                done = sw_dot_rows_f32(X, sr, m, W + c * d, d, b[c], z + c, k, stream)
            else:
                done = sw_dot_rows_f64(X, sr, m, W + c * d, d, b[c], z + c, k, stream)
            if not done:
                for i in range(m):
                    z[i * k + c] = _dot(X + i * sr, W + c * d, d) + b[c]
    elif sr == 1:
        # column-major: z[:, c] = b[c]; z[:, c] += X[:, j] * W[c, j] for each j
        for i in range(m):
            for c in range(k):
                z[i * k + c] = b[c]
        for c in range(k):
            for j in range(d):
                col = X + j * sc
                w = W[c * d + j]
                for i in range(m):
                    z[i * k + c] += <double>col[i] * w
    else:
        for i in range(m):
            for c in range(k):
                z[i * k + c] = _dot_strided(X + i * sr, sc, W + c * d, d) + b[c]


cdef void _link_block(const double* z, Py_ssize_t m, Py_ssize_t k, int link,
                      out_t* out, Py_ssize_t k_out) noexcept nogil:
    """out[i] = link(z[i]) for m rows (out C-ordered (m, k_out))."""
    cdef Py_ssize_t i
    cdef int done = 0
    if link == 1:
        # out = [sigma(-z), sigma(z)] (AVX2 exp over four rows at a time when available)
        if out_t is float:
            done = sw_logistic_f32(z, m, out)
        else:
            done = sw_logistic_f64(z, m, out)
    if not done:
        for i in range(m):
            _link_row(z + i * k, k, link, out + i * k_out)


cdef void _contrib_block(const in_t* X, Py_ssize_t sr, Py_ssize_t sc,
                         const double* W, const double* mu, Py_ssize_t d, Py_ssize_t k,
                         Py_ssize_t m, in_t* out) noexcept nogil:
    """out[i, c, j] = W[c, j] * (X[i, j] - mu[j]) for the m rows i < m starting at X
    (out C-ordered (m, k, d), X addressed as in _decision_block).

    Each element is one subtraction and one multiplication in float64, then rounded
    to X's dtype: no sum, so no order to fix, and the same bits whichever path the
    decision takes (the compiler vectorises the contiguous loop by itself; there is
    no separate AVX2 version to keep in step).
    """
    cdef Py_ssize_t i, j, c
    cdef const in_t* x
    cdef const double* w
    cdef in_t* o
    for i in range(m):
        x = X + i * sr
        o = out + i * k * d
        for c in range(k):
            w = W + c * d
            if sc == 1:
                for j in range(d):
                    o[j] = <in_t>(w[j] * (<double>x[j] - mu[j]))
            else:
                for j in range(d):
                    o[j] = <in_t>(w[j] * (<double>x[j * sc] - mu[j]))
            o += d


cdef void _score_rows(const Job* jb, const in_t* X, out_t* zo, out_t* out,
                      in_t* contrib, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Decision, link, labels and contributions for rows r0 <= i < r1, BLOCK_ROWS
    at a time.

    The decision (when jb.decide) goes to jb.z when the caller gave one, else to an
    on-stack scratch block (k <= SCRATCH_K is guaranteed then); zo, out, jb.labels
    and contrib may be NULL.
    """
    cdef double scratch[BLOCK_ROWS * SCRATCH_K]
    cdef double* z
    cdef Py_ssize_t k = jb.k, i0, i1, m, t
    i0 = r0
    while i0 < r1:
        i1 = i0 + BLOCK_ROWS if i0 + BLOCK_ROWS < r1 else r1
        m = i1 - i0
        if contrib != NULL:
            # contributions = W[None, :, :] * (X[:, None, :] - mu)
            _contrib_block(X + i0 * jb.sr, jb.sr, jb.sc, jb.W, jb.mu, jb.d, k, m,
                           contrib + i0 * k * jb.d)
        if not jb.decide:
            i0 = i1
            continue
        z = jb.z + i0 * k if jb.z != NULL else scratch
        _decision_block(X + i0 * jb.sr, jb.sr, jb.sc, jb.W, jb.b, jb.d, k, m, z,
                        jb.stream)
        if zo != NULL:
            for t in range(m * k):
                zo[i0 * k + t] = <out_t>z[t]
        if out != NULL:
            _link_block(z, m, k, jb.link, out + i0 * jb.k_out, jb.k_out)
        if jb.labels != NULL:
            for t in range(m):
                jb.labels[i0 + t] = _label_row(z + t * k, k)
        i0 = i1


cdef void _run_rows(const Job* jb, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """_score_rows for this job's input and output dtypes."""
    if jb.x64:
        if jb.o64:
            _score_rows(jb, <const double*>jb.X, <double*>jb.zo, <double*>jb.out,
                        <double*>jb.contrib, r0, r1)
        else:
            _score_rows(jb, <const double*>jb.X, <float*>jb.zo, <float*>jb.out,
                        <double*>jb.contrib, r0, r1)
    else:
        if jb.o64:
            _score_rows(jb, <const float*>jb.X, <double*>jb.zo, <double*>jb.out,
                        <float*>jb.contrib, r0, r1)
        else:
            _score_rows(jb, <const float*>jb.X, <float*>jb.zo, <float*>jb.out,
                        <float*>jb.contrib, r0, r1)


cdef void _run_block(void* ctx, ptrdiff_t blk) noexcept nogil:
    """One parallel block: rows [blk * block_rows, (blk + 1) * block_rows)."""
    cdef const Job* jb = <const Job*>ctx
    cdef Py_ssize_t r0 = blk * jb.block_rows
    cdef Py_ssize_t r1 = r0 + jb.block_rows
    _run_rows(jb, r0, r1 if r1 < jb.n else jb.n)


cdef void _run(Job* jb, int n_threads) noexcept nogil:
    """Score all jb.n rows: on this thread, or split over n_threads when large."""
    cdef Py_ssize_t n = jb.n, n_blocks, blk
    if (n_threads <= 1 or n < _PARALLEL_MIN_ROWS
            or n * jb.d * jb.k < _PARALLEL_MIN_WORK):
        _run_rows(jb, 0, n)
        return
    jb.block_rows = BLOCK_ROWS
    while (n + jb.block_rows - 1) // jb.block_rows > (1 << 20):
        jb.block_rows *= 2
    n_blocks = (n + jb.block_rows - 1) // jb.block_rows
    if sw_pool_enabled():
        if not sw_pool_run(_run_block, jb, n_blocks, n_threads - 1):
            _run_rows(jb, 0, n)  # another call owns the helpers: do not wait for them
        return
    for blk in prange(n_blocks, schedule="dynamic", num_threads=n_threads):
        _run_block(jb, blk)


cdef bint _all_finite(const in_t* X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t sr,
                      Py_ssize_t sc) noexcept nogil:
    """True when no element is NaN or infinite (see sw_all_finite in _simd.h)."""
    if in_t is float:
        return sw_all_finite_f32(X, n, d, sr, sc)
    else:
        return sw_all_finite_f64(X, n, d, sr, sc)


def all_finite(cnp.ndarray X):
    """True when the 2-D float32/float64 array X has no NaN or infinite value.

    One pass, no temporary arrays, the GIL released for large inputs: the input check
    the server runs on every request (``np.isfinite(X).all()`` allocates and costs
    ~1 µs at batch 1). The sum of ``x - x`` over blocks of elements, kept in vector
    lanes and tested once per block, is 0 exactly when every element is finite.
    Other dtypes, byte orders and odd strides fall back to NumPy.
    """
    cdef Py_ssize_t n, d, isz, sr, sc
    cdef bint ok
    cdef void* data = cnp.PyArray_DATA(X)
    cdef int t = cnp.PyArray_TYPE(X)
    if (cnp.PyArray_NDIM(X) != 2 or (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64)
            or not cnp.PyArray_ISNOTSWAPPED(X) or not cnp.PyArray_ISALIGNED(X)):
        import numpy
        return bool(numpy.isfinite(X).all())
    n = cnp.PyArray_DIM(X, 0)
    d = cnp.PyArray_DIM(X, 1)
    isz = cnp.PyArray_ITEMSIZE(X)
    sr = cnp.PyArray_STRIDE(X, 0) // isz
    sc = cnp.PyArray_STRIDE(X, 1) // isz
    if n * d < 4 * _NOGIL_MIN_WORK:
        if t == cnp.NPY_FLOAT64:
            return _all_finite(<const double*>data, n, d, sr, sc)
        return _all_finite(<const float*>data, n, d, sr, sc)
    with nogil:
        if t == cnp.NPY_FLOAT64:
            ok = _all_finite(<const double*>data, n, d, sr, sc)
        else:
            ok = _all_finite(<const float*>data, n, d, sr, sc)
    return ok


# ---------------------------------------------------------------------------
# 3. the Python entry point
# ---------------------------------------------------------------------------

cdef class LinearKernel:
    """One linear model's weights, link and outputs, ready to score batches.

    Parameters
    ----------
    coef : ndarray of shape (k, d), float64, C-contiguous
        One row of weights per decision column.
    intercept : ndarray of shape (k,), float64, contiguous
    link : int
        One of the ``LINK_*`` constants.
    out64 : bool, default True
        Float outputs (decision, value, probabilities) are float64, else float32.
    value_1d : bool, default False
        ``ROLE_VALUE`` has shape (n,) instead of (n, 1) (a single regression target).
    classes : ndarray of shape (n_classes,), optional
        ``ROLE_LABEL`` gives ``classes[index]`` (the class indices when None).
    baseline : ndarray of shape (d,), float64, contiguous, optional
        The feature values explanations are measured from (zeros when None):
        ``ROLE_CONTRIBUTIONS`` gives ``coef[c, j] * (X[i, j] - baseline[j])`` and
        ``ROLE_BASE_VALUE`` ``coef @ baseline + intercept``, so that for every row
        ``contributions.sum(-1) + base_value`` is the decision.
    """

    cdef readonly object coef
    cdef readonly object intercept
    cdef readonly object classes
    cdef readonly int link
    cdef readonly Py_ssize_t n_features
    cdef readonly Py_ssize_t n_decisions
    cdef readonly Py_ssize_t n_link_columns
    cdef readonly bint out64
    cdef readonly bint value_1d
    cdef readonly object baseline
    cdef const double* _w
    cdef const double* _b
    cdef const double* _mu
    cdef object _base64   # base value, read-only float64 (k,)
    cdef object _base32   # ... rounded to float32

    def __cinit__(self, cnp.ndarray coef, cnp.ndarray intercept, int link,
                  bint out64=True, bint value_1d=False, object classes=None,
                  object baseline=None):
        import numpy
        self.coef = coef
        self.intercept = intercept
        self.link = link
        self.out64 = out64
        self.value_1d = value_1d
        self.classes = classes
        self.n_decisions = cnp.PyArray_DIM(coef, 0)
        self.n_features = cnp.PyArray_DIM(coef, 1)
        self.n_link_columns = 2 if link == 1 else self.n_decisions
        self._w = <const double*>cnp.PyArray_DATA(coef)
        self._b = <const double*>cnp.PyArray_DATA(intercept)
        if baseline is None:
            baseline = numpy.zeros(self.n_features)
        self.baseline = baseline
        self._mu = <const double*>cnp.PyArray_DATA(<cnp.ndarray>baseline)
        # base_value = coef @ baseline + intercept: the decision at the baseline
        self._base64 = coef @ baseline + intercept
        self._base32 = self._base64.astype(numpy.float32)
        self._base64.flags.writeable = False
        self._base32.flags.writeable = False

    def try_predict(self, object X, tuple plan, int n_threads):
        """:meth:`predict` when X can be scored as it is, else None.

        This is the batch-1 fast path, so it checks in C what
        ``NativeLinearModel.check_input`` checks in Python: X is exactly an ndarray,
        2-D with ``n_features`` columns, float32 or float64, in native byte order,
        aligned, with strides that are whole items. For anything else, wrong inputs
        included, it returns None: the caller then runs its Python checks, which
        raise the errors (or convert X) and call :meth:`predict`.
        """
        cdef cnp.ndarray A
        cdef int t
        cdef Py_ssize_t isz
        if not cnp.PyArray_CheckExact(X):
            return None
        A = <cnp.ndarray>X
        if cnp.PyArray_NDIM(A) != 2 or cnp.PyArray_DIM(A, 1) != self.n_features:
            return None
        t = cnp.PyArray_TYPE(A)
        if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
            return None
        isz = cnp.PyArray_ITEMSIZE(A)
        if (not cnp.PyArray_ISNOTSWAPPED(A) or not cnp.PyArray_ISALIGNED(A)
                or cnp.PyArray_STRIDE(A, 0) % isz or cnp.PyArray_STRIDE(A, 1) % isz):
            return None
        return self._predict(A, plan, n_threads)

    def predict(self, cnp.ndarray X, tuple plan, int n_threads):
        """Allocate the outputs a plan asks for, score X into them, return them by name.

        Parameters
        ----------
        X : ndarray of shape (n, n_features), float32 or float64          # IN
            Native byte order, strides whole multiples of the item size, any order;
            read-only is fine. Not checked here (see :meth:`try_predict`).
        plan : tuple of (name, role) pairs
            The outputs wanted: ``ROLE_VALUE`` / ``ROLE_DECISION`` (the decision
            ``X @ coef.T + intercept``), ``ROLE_PROBABILITIES`` (its link),
            ``ROLE_LABEL`` (``classes[index]``), ``ROLE_CONTRIBUTIONS`` (each
            feature's part of the decision: (n, d) for one decision column, else
            (n, k, d)), ``ROLE_BASE_VALUE`` (the decision at the baseline, (k,)).
        n_threads : int
            Threads for large batches (1 = the calling thread only).

        Returns
        -------
        dict
            name -> new array. Float outputs are float64 when ``out64``, else float32,
            but for the explanations, which have X's dtype (the base value is one
            shared read-only array); outputs of the same role are the same array.
        """
        return self._predict(X, plan, n_threads)

    cdef object _predict(self, cnp.ndarray X, tuple plan, int n_threads):
        cdef cnp.npy_intp dims[3]
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0), k = self.n_decisions
        cdef int role, ftype = cnp.NPY_FLOAT64 if self.out64 else cnp.NPY_FLOAT32
        cdef int xtype = cnp.PyArray_TYPE(X)
        cdef bint want_dec = False
        cdef object dec = None, proba = None, labels = None, lab = None, val = None
        cdef object contrib = None
        cdef dict result
        for pair in plan:
            if (<tuple>pair)[1] == _DECISION:
                want_dec = True
        dims[0] = n
        dims[1] = k
        # allocate the outputs
        for pair in plan:
            role = (<tuple>pair)[1]
            if (role == _VALUE or role == _DECISION) and dec is None:
                if self.value_1d and not want_dec:
                    dec = cnp.PyArray_EMPTY(1, dims, ftype, 0)
                else:
                    dec = cnp.PyArray_EMPTY(2, dims, ftype, 0)
            elif role == _PROBABILITIES and proba is None:
                dims[1] = self.n_link_columns
                proba = cnp.PyArray_EMPTY(2, dims, ftype, 0)
                dims[1] = k
            elif role == _LABEL and labels is None:
                labels = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
            elif role == _CONTRIBUTIONS and contrib is None:
                # (n, d) for one decision column, else (n, k, d)
                dims[2] = self.n_features
                if k == 1:
                    dims[1] = self.n_features
                    contrib = cnp.PyArray_EMPTY(2, dims, xtype, 0)
                    dims[1] = k
                else:
                    contrib = cnp.PyArray_EMPTY(3, dims, xtype, 0)
        # float64 decisions go straight to the output, float32 ones are rounded from
        # the float64 scratch
        if self.out64:
            self._score(X, dec, None, proba, labels, contrib, n_threads)
        else:
            self._score(X, None, dec, proba, labels, contrib, n_threads)
        # name them
        result = {}
        for pair in plan:
            name = (<tuple>pair)[0]
            role = (<tuple>pair)[1]
            if role == _PROBABILITIES:
                result[name] = proba
            elif role == _LABEL:
                if lab is None:
                    lab = labels if self.classes is None else _take_from(
                        <cnp.ndarray>self.classes, labels, 0, NULL, cnp.NPY_RAISE)
                result[name] = lab
            elif role == _VALUE and self.value_1d and want_dec:
                if val is None:
                    val = dec.reshape(n)  # a view: (n,) beside the decision's (n, 1)
                result[name] = val
            elif role == _CONTRIBUTIONS:
                result[name] = contrib
            elif role == _BASE_VALUE:
                result[name] = self._base64 if xtype == cnp.NPY_FLOAT64 else self._base32
            else:
                result[name] = dec
        return result

    def score(self, cnp.ndarray X, cnp.ndarray z, cnp.ndarray out, cnp.ndarray labels,
              int n_threads):
        """Score X into the caller's buffers (any of which may be None).

        Parameters
        ----------
        X : ndarray of shape (n, d), float32 or float64            # IN
            Any strides that are whole multiples of the item size; read-only is fine.
        z : ndarray of shape (n, k), float64, C-contiguous, or None   # OUT
            The decision ``X @ coef.T + intercept``.
        out : ndarray of shape (n, k_out), float32 or float64, C-contiguous, or None
            The link applied to z (k_out = 2 for LINK_LOGISTIC, else k).   # OUT
        labels : ndarray of shape (n,), int64, or None             # OUT
            The predicted class index per row.
        n_threads : int
            Threads for large batches (1 = the calling thread only).

        Nothing is checked. The GIL is released unless the batch is tiny.
        """
        self._score(X, z, None, out, labels, None, n_threads)

    cdef _score(self, cnp.ndarray X, object z, object zo, object out, object labels,
                object contrib, int n_threads):
        """Fill a Job from arrays (z: float64 decisions or None; zo: float32 decisions
        or None; out: link output of zo's dtype, or None; contrib: contributions of X's
        dtype, C-contiguous, or None) and run it."""
        cdef Job jb
        cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(X)
        cdef cnp.npy_intp dims[2]
        jb.n = cnp.PyArray_DIM(X, 0)
        if jb.n == 0:
            return
        jb.decide = not (z is None and zo is None and out is None and labels is None)
        if jb.decide and z is None and self.n_decisions > SCRATCH_K:
            # too wide for the blocks' on-stack scratch: one of n rows
            dims[0] = jb.n
            dims[1] = self.n_decisions
            z = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
        jb.X = cnp.PyArray_DATA(X)
        jb.sr = cnp.PyArray_STRIDE(X, 0) // isz
        jb.sc = cnp.PyArray_STRIDE(X, 1) // isz
        jb.x64 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT64
        jb.stream = jb.n * self.n_features * isz >= _STREAM_MIN_BYTES
        jb.W = self._w
        jb.b = self._b
        jb.d = self.n_features
        jb.k = self.n_decisions
        jb.link = self.link
        jb.z = NULL if z is None else <double*>cnp.PyArray_DATA(<cnp.ndarray>z)
        jb.zo = NULL if zo is None else cnp.PyArray_DATA(<cnp.ndarray>zo)
        jb.out = NULL
        jb.k_out = 0
        jb.o64 = True
        if out is not None:
            jb.out = cnp.PyArray_DATA(<cnp.ndarray>out)
            jb.k_out = cnp.PyArray_DIM(<cnp.ndarray>out, 1)
            jb.o64 = cnp.PyArray_TYPE(<cnp.ndarray>out) == cnp.NPY_FLOAT64
        elif zo is not None:
            jb.o64 = cnp.PyArray_TYPE(<cnp.ndarray>zo) == cnp.NPY_FLOAT64
        jb.labels = NULL if labels is None else <long long*>cnp.PyArray_DATA(
            <cnp.ndarray>labels)
        jb.mu = self._mu
        jb.contrib = NULL if contrib is None else cnp.PyArray_DATA(<cnp.ndarray>contrib)
        jb.block_rows = BLOCK_ROWS
        if jb.n * jb.d * jb.k < _NOGIL_MIN_WORK:
            _run(&jb, 1)
        else:
            with nogil:
                _run(&jb, n_threads)

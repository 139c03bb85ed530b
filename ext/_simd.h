/* Vector code for scorewire.backends._kernel (ext/_kernel.pyx), chosen at run time.
 *
 * The build targets baseline x86-64 (SSE2): no -march flag. The AVX2+FMA functions
 * below are compiled for that instruction set alone with
 * __attribute__((target("avx2,fma"))) and called only when the CPU (and the OS, for
 * the AVX registers) supports it: the module calls sw_set_simd(1) once, at import,
 * which asks __builtin_cpu_supports. On other architectures or compilers (or with
 * -DSCOREWIRE_NO_SIMD) this file defines the same entry points, which return 0 ("not
 * done"), and the kernel runs its portable scalar loops.
 *
 * The arithmetic is the kernel's: float64 products and sums (float32 inputs are
 * widened as they are loaded), so a float32 and a float64 copy of the same data give
 * the same decision. Every entry point that may be declined returns 1 when it did the
 * work and 0 when the caller must do it with the scalar code.
 */
#ifndef SCOREWIRE_SIMD_H
#define SCOREWIRE_SIMD_H

#include <math.h>
#include <stddef.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(SCOREWIRE_NO_SIMD)
#define SW_X86_SIMD 1
#include <immintrin.h>
#else
#define SW_X86_SIMD 0
#endif

/* 1 while the AVX2+FMA paths are used: the CPU has them and _set_simd allows them */
static int sw_simd_on = 0;

static int sw_simd_available(void) {
#if SW_X86_SIMD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int sw_simd_enabled(void) { return sw_simd_on; }

/* Use the vector paths when on and available; returns whether they are now used. */
static int sw_set_simd(int on) {
    sw_simd_on = on && sw_simd_available();
    return sw_simd_on;
}

/* ------------------------------------------------------------------------------
 * all_finite: the server's per-request NaN/Inf check
 *
 * x - x is 0 for a finite x and NaN for +-inf and NaN. Summed over a span, that sum
 * is 0 exactly when every element is finite (a sum of zeros is 0, NaN + anything is
 * NaN), so the order of the sum does not matter: it is kept in SW_FINITE_LANES(T)
 * independent partial sums, which the compiler holds in four vector registers (an
 * add's latency is hidden), and tested once per SW_FINITE_SPAN elements, not per
 * element, so the loop has no compare-and-branch. Baseline (SSE2) and AVX2 builds
 * of the same loop. NumPy: np.isfinite(X).all(), without its temporary array.
 * ---------------------------------------------------------------------------- */

enum { SW_FINITE_SPAN = 2048 };
#define SW_FINITE_LANES(T) ((int)(4 * 32 / sizeof(T)))  /* four 256-bit registers */

#define SW_DEFINE_FINITE_SPAN(T, NAME, ATTR)                                           \
    ATTR static T NAME(const T* x, ptrdiff_t n) {                                      \
        T acc[SW_FINITE_LANES(T)] = {0};                                               \
        ptrdiff_t i = 0;                                                               \
        int l, w;                                                                      \
        for (; i + SW_FINITE_LANES(T) <= n; i += SW_FINITE_LANES(T))                   \
            for (l = 0; l < SW_FINITE_LANES(T); l++) acc[l] += x[i + l] - x[i + l];    \
        for (l = 0; i + l < n; l++) acc[l] += x[i + l] - x[i + l];                     \
        /* the lanes summed pairwise (levels of independent adds, no long chain) */   \
        for (w = SW_FINITE_LANES(T) / 2; w > 0; w /= 2)                                \
            for (l = 0; l < w; l++) acc[l] += acc[l + w];                              \
        return acc[0];                                                                 \
    }

#if SW_X86_SIMD
SW_DEFINE_FINITE_SPAN(float, sw_finite_span_f32_avx2, __attribute__((target("avx2"))))
SW_DEFINE_FINITE_SPAN(double, sw_finite_span_f64_avx2, __attribute__((target("avx2"))))
#define SW_FINITE_SPAN_CALL(SFX, p, m) \
    (sw_simd_on ? sw_finite_span_##SFX##_avx2(p, m) : sw_finite_span_##SFX(p, m))
#else
#define SW_FINITE_SPAN_CALL(SFX, p, m) sw_finite_span_##SFX(p, m)
#endif
SW_DEFINE_FINITE_SPAN(float, sw_finite_span_f32, )
SW_DEFINE_FINITE_SPAN(double, sw_finite_span_f64, )

/* 1 when no element X[i * sr + j * sc] (i < n, j < d) is NaN or infinite */
#define SW_DEFINE_ALL_FINITE(T, SFX)                                                   \
    static int sw_all_finite_##SFX(const T* X, ptrdiff_t n, ptrdiff_t d, ptrdiff_t sr, \
                                   ptrdiff_t sc) {                                     \
        ptrdiff_t outer = n, inner = d, so = sr, si = sc, o, i, since = 0;             \
        T acc = 0;                                                                     \
        if (sc != 1 && sr == 1) { /* column-major: run along the columns */            \
            outer = d; inner = n; so = sc; si = sr;                                    \
        }                                                                              \
        if (si == 1 && so == inner) { /* one contiguous span */                       \
            inner *= outer; outer = 1;                                                 \
        }                                                                              \
        for (o = 0; o < outer; o++) {                                                  \
            const T* p = X + o * so;                                                   \
            if (si == 1) {                                                             \
                for (i = 0; i < inner; i += SW_FINITE_SPAN) {                          \
                    ptrdiff_t m = inner - i < SW_FINITE_SPAN ? inner - i : SW_FINITE_SPAN; \
                    acc += SW_FINITE_SPAN_CALL(SFX, p + i, m);                         \
                    if (acc != 0) return 0;                                            \
                }                                                                      \
            } else {                                                                   \
                for (i = 0; i < inner; i++) acc += p[i * si] - p[i * si];              \
                since += inner;                                                        \
                if (since >= SW_FINITE_SPAN) {                                         \
                    if (acc != 0) return 0;                                            \
                    since = 0;                                                         \
                }                                                                      \
            }                                                                          \
        }                                                                              \
        return acc == 0;                                                               \
    }

SW_DEFINE_ALL_FINITE(float, f32)
SW_DEFINE_ALL_FINITE(double, f64)

#if SW_X86_SIMD
/* ------------------------------------------------------------------------------
 * AVX2+FMA
 * ---------------------------------------------------------------------------- */
#define SW_AVX2 __attribute__((target("avx2,fma")))

/* load 4 elements as 4 doubles: float32 widened exactly, float64 as is */
#define SW_LOAD4_f32(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
#define SW_LOAD4_f64(p) _mm256_loadu_pd(p)
/* the first r (0..3) of 4 elements, the others 0, without reading past p + r */
#define SW_MASKLOAD4_f32(p, m) _mm256_cvtps_pd(_mm_maskload_ps((p), _mm256_castsi256_si128(m)))
#define SW_MASKLOAD4_f64(p, m) _mm256_maskload_pd((p), (m))

SW_AVX2 static inline __m256i sw_mask4(ptrdiff_t r, int f32) {
    /* lane l active when l < r: as 64-bit lanes (float64), or as 32-bit lanes in the
       low half (float32, for _mm_maskload_ps) */
    if (f32) {
        return _mm256_setr_epi32(r > 0 ? -1 : 0, r > 1 ? -1 : 0, r > 2 ? -1 : 0, 0,
                                 0, 0, 0, 0);
    }
    return _mm256_setr_epi64x(r > 0 ? -1 : 0, r > 1 ? -1 : 0, r > 2 ? -1 : 0, 0);
}

/* The decision of n rows for one weight column:
 *     z[i * zs] = X[i, :] @ w + b       for i < n
 * X row-major: row i at X + i * sr, its d elements contiguous.
 *
 * One summation order per row, whatever path computes it, so that a row's decision
 * does not depend on the batch it arrives in (the dynamic batcher merges requests and
 * must give each the answer it would get alone):
 *   - the row is cut into 4-element vectors v = 0, 1, ... (the last one zero-padded,
 *     read with a masked load: nothing past the row is touched);
 *   - vector v goes into accumulator q[v % 4] with an FMA (x widened to float64);
 *   - s = (q0 + q1) + (q2 + q3) lane-wise, then z = ((s0 + s1) + (s2 + s3)) + b.
 * Four accumulators are four FMA chains; with the float32 -> float64 conversion that
 * keeps the FMA ports busy for a long row. Two rows at a time (eight chains, the
 * weights loaded once for both; short rows are latency-bound alone) is the default;
 * `stream` (X larger than the caches, read once from memory) with
 * d >= SW_ONE_ROW_MIN_D reads one row at a time instead, front to back: interleaved
 * long rows are several streams inside one page, which the hardware prefetcher
 * follows worse (d = 256, 16384 rows: 40 ns/row against 46), and prefetches
 * SW_PREFETCH_BYTES ahead (d = 256, 131072 rows: ~10 % faster; in cache, prefetching
 * cost ~15 %, so only there). An odd last row goes alone. (Bit for bit the same sums:
 * sw_dot1 is sw_dot2 without the second row's chains; tests/test_kernel.py checks it.)
 */
#ifndef SW_ONE_ROW_MIN_D
#define SW_ONE_ROW_MIN_D 64
#endif
#ifndef SW_PREFETCH_BYTES
#define SW_PREFETCH_BYTES 1024
#endif

/* ((s0 + s1) + (s2 + s3)) of each of two vectors: [sum a, sum b] */
SW_AVX2 static inline __m128d sw_hsum2(__m256d a, __m256d b) {
    __m256d h = _mm256_hadd_pd(a, b); /* [a0+a1, b0+b1, a2+a3, b2+b3] */
    return _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
}

/* q += x[0:4] * w[0:4] (x widened to float64), for one row or for two */
#define SW_FMA1(SFX, a, x0, wv) a = _mm256_fmadd_pd(SW_LOAD4_##SFX(x0), wv, a)
#define SW_FMA2(SFX, a, c, x0, x1, wp)                                                 \
    do {                                                                               \
        __m256d wv_ = _mm256_loadu_pd(wp);                                             \
        SW_FMA1(SFX, a, x0, wv_);                                                      \
        SW_FMA1(SFX, c, x1, wv_);                                                      \
    } while (0)

/* The padded last vector (d % 4 elements, at offset j) of a row into accumulator
   q[((d % 16) / 4)]: its index % 4, as the order above says. */
#define SW_TAIL(SFX, a0, a1, a2, a3, x, j, wv, xtail)                                  \
    do {                                                                               \
        __m256d xv_ = SW_MASKLOAD4_##SFX(x + j, xtail);                                \
        switch ((d % 16) / 4) {                                                        \
        case 0: a0 = _mm256_fmadd_pd(xv_, wv, a0); break;                              \
        case 1: a1 = _mm256_fmadd_pd(xv_, wv, a1); break;                              \
        case 2: a2 = _mm256_fmadd_pd(xv_, wv, a2); break;                              \
        default: a3 = _mm256_fmadd_pd(xv_, wv, a3); break;                             \
        }                                                                              \
    } while (0)

#define SW_DEFINE_DOT(T, SFX)                                                          \
    /* the sums of rows x0 and x1, in the order described above */                    \
    SW_AVX2 static inline __m128d sw_dot2_##SFX(const T* x0, const T* x1,              \
                                                const double* w, ptrdiff_t d,          \
                                                __m256i xtail, __m256i wtail) {        \
        __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;                   \
        __m256d c0 = a0, c1 = a0, c2 = a0, c3 = a0;                                    \
        ptrdiff_t j = 0;                                                               \
        for (; j + 16 <= d; j += 16) {                                                 \
            SW_FMA2(SFX, a0, c0, x0 + j, x1 + j, w + j);                               \
            SW_FMA2(SFX, a1, c1, x0 + j + 4, x1 + j + 4, w + j + 4);                   \
            SW_FMA2(SFX, a2, c2, x0 + j + 8, x1 + j + 8, w + j + 8);                   \
            SW_FMA2(SFX, a3, c3, x0 + j + 12, x1 + j + 12, w + j + 12);                \
        }                                                                              \
        /* the last d % 16 elements: up to three full vectors, then the padded one */  \
        if (j + 4 <= d) { SW_FMA2(SFX, a0, c0, x0 + j, x1 + j, w + j); j += 4; }       \
        if (j + 4 <= d) { SW_FMA2(SFX, a1, c1, x0 + j, x1 + j, w + j); j += 4; }       \
        if (j + 4 <= d) { SW_FMA2(SFX, a2, c2, x0 + j, x1 + j, w + j); j += 4; }       \
        if (j < d) {                                                                   \
            __m256d wv = _mm256_maskload_pd(w + j, wtail);                             \
            SW_TAIL(SFX, a0, a1, a2, a3, x0, j, wv, xtail);                            \
            SW_TAIL(SFX, c0, c1, c2, c3, x1, j, wv, xtail);                            \
        }                                                                              \
        return sw_hsum2(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)),   \
                        _mm256_add_pd(_mm256_add_pd(c0, c1), _mm256_add_pd(c2, c3)));  \
    }                                                                                  \
                                                                                       \
    /* the sum of row x0 alone: sw_dot2 with the c chains dropped */                 \
    SW_AVX2 static inline double sw_dot1_##SFX(const T* x0, const double* w,           \
                                               ptrdiff_t d, __m256i xtail,             \
                                               __m256i wtail) {                        \
        __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;                   \
        ptrdiff_t j = 0;                                                               \
        for (; j + 16 <= d; j += 16) {                                                 \
            SW_FMA1(SFX, a0, x0 + j, _mm256_loadu_pd(w + j));                          \
            SW_FMA1(SFX, a1, x0 + j + 4, _mm256_loadu_pd(w + j + 4));                  \
            SW_FMA1(SFX, a2, x0 + j + 8, _mm256_loadu_pd(w + j + 8));                  \
            SW_FMA1(SFX, a3, x0 + j + 12, _mm256_loadu_pd(w + j + 12));                \
        }                                                                              \
        if (j + 4 <= d) { SW_FMA1(SFX, a0, x0 + j, _mm256_loadu_pd(w + j)); j += 4; }  \
        if (j + 4 <= d) { SW_FMA1(SFX, a1, x0 + j, _mm256_loadu_pd(w + j)); j += 4; }  \
        if (j + 4 <= d) { SW_FMA1(SFX, a2, x0 + j, _mm256_loadu_pd(w + j)); j += 4; }  \
        if (j < d) {                                                                   \
            __m256d wv = _mm256_maskload_pd(w + j, wtail);                             \
            SW_TAIL(SFX, a0, a1, a2, a3, x0, j, wv, xtail);                            \
        }                                                                              \
        a0 = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));              \
        return _mm_cvtsd_f64(sw_hsum2(a0, a0));                                        \
    }                                                                                  \
                                                                                       \
    SW_AVX2 static void sw_dot_rows_##SFX##_avx2(                                      \
            const T* X, ptrdiff_t sr, ptrdiff_t n, const double* w, ptrdiff_t d,       \
            double b, double* z, ptrdiff_t zs, int stream) {                           \
        const __m256i xtail = sw_mask4(d % 4, sizeof(T) == 4);                         \
        const __m256i wtail = sw_mask4(d % 4, 0);                                      \
        const __m128d bv = _mm_set1_pd(b);                                             \
        double t[2];                                                                   \
        ptrdiff_t i = 0;                                                               \
        if (!stream || d < SW_ONE_ROW_MIN_D) {                                         \
            for (; i + 2 <= n; i += 2) {                                               \
                _mm_storeu_pd(t, _mm_add_pd(sw_dot2_##SFX(X + i * sr, X + (i + 1) * sr, \
                                                          w, d, xtail, wtail), bv));   \
                z[i * zs] = t[0];                                                      \
                z[(i + 1) * zs] = t[1];                                                \
            }                                                                          \
        }                                                                              \
        for (; i < n; i++) {                                                           \
            if (stream) { /* a hint only: the lines SW_PREFETCH_BYTES ahead of this row */ \
                const char* p = (const char*)(X + i * sr) + SW_PREFETCH_BYTES;         \
                for (ptrdiff_t q = 0; q < d * (ptrdiff_t)sizeof(T); q += 64)           \
                    _mm_prefetch(p + q, _MM_HINT_T0);                                  \
            }                                                                          \
            z[i * zs] = sw_dot1_##SFX(X + i * sr, w, d, xtail, wtail) + b;             \
        }                                                                              \
    }

SW_DEFINE_DOT(float, f32)
SW_DEFINE_DOT(double, f64)

/* exp(x) for -708 <= x <= 0, four at a time (callers send anything else to libm).
 * x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2; ln2 in two parts (Cephes'
 * split: n * C1 is exact), so r is accurate to an ulp. exp(r) by its degree-13
 * Taylor polynomial: the first omitted term, r^14 / 14!, is below 5e-18 for
 * |r| <= 0.35, under float64's rounding. 2^n is built in the exponent bits: n >= -1021
 * for x >= -708, so 2^n is a normal number. Accuracy ~2 ulp (libm: < 1 ulp).
 */
SW_AVX2 static inline __m256d sw_exp_avx2(__m256d x) {
    __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93145751953125e-1), x);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.42860682030941723212e-6), r);
    __m256d p = _mm256_set1_pd(1.0 / 6227020800.0); /* 1/13! */
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 479001600.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 39916800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3628800.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362880.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40320.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5040.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    __m256i e = _mm256_slli_epi64(
        _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023)),
        52);
    return _mm256_mul_pd(p, _mm256_castsi256_pd(e));
}

/* lo = sigma(-z), hi = sigma(z) for four z, from one e = exp(-|z|) in (0, 1]:
 * m = 1 / (1 + e), s = e * m; sigma(|z|) = m and sigma(-|z|) = s. Both keep their
 * full relative precision (s is not computed as 1 - m). Lanes with -|z| < -708
 * (sigma(-|z|) < 3e-308, subnormal or 0) or NaN take libm's exp.
 * NumPy: e = np.exp(-abs(z)); np.where(z >= 0, [e/(1+e), 1/(1+e)], [1/(1+e), e/(1+e)])
 */
SW_AVX2 static inline void sw_sigmoid_pair_avx2(__m256d zv, __m256d* lo, __m256d* hi) {
    __m256d x = _mm256_or_pd(zv, _mm256_set1_pd(-0.0)); /* -|z| */
    __m256d e;
    if (_mm256_movemask_pd(_mm256_cmp_pd(x, _mm256_set1_pd(-708.0), _CMP_NGE_UQ))) {
        double t[4];
        _mm256_storeu_pd(t, x);
        for (int l = 0; l < 4; l++) t[l] = exp(t[l]);
        e = _mm256_loadu_pd(t);
    } else {
        e = sw_exp_avx2(x);
    }
    __m256d m = _mm256_div_pd(_mm256_set1_pd(1.0), _mm256_add_pd(_mm256_set1_pd(1.0), e));
    __m256d s = _mm256_mul_pd(e, m);
    __m256d pos = _mm256_cmp_pd(zv, _mm256_setzero_pd(), _CMP_GE_OQ);
    *hi = _mm256_blendv_pd(s, m, pos);
    *lo = _mm256_blendv_pd(m, s, pos);
}

/* out[i] = [sigma(-z[i]), sigma(z[i])] for i < n; out C-ordered (n, 2). The last
   n % 4 rows go through the same vector code (padded), so that a row's probabilities
   do not depend on its position in the batch. */
SW_AVX2 static void sw_logistic_f32_avx2(const double* z, ptrdiff_t n, float* out) {
    ptrdiff_t i = 0, l;
    __m256d lo, hi;
    float t[8];
    double zt[4] = {0.0, 0.0, 0.0, 0.0};
    for (; i + 4 <= n; i += 4) {
        sw_sigmoid_pair_avx2(_mm256_loadu_pd(z + i), &lo, &hi);
        __m128 lf = _mm256_cvtpd_ps(lo), hf = _mm256_cvtpd_ps(hi);
        _mm_storeu_ps(out + 2 * i, _mm_unpacklo_ps(lf, hf));
        _mm_storeu_ps(out + 2 * i + 4, _mm_unpackhi_ps(lf, hf));
    }
    if (i < n) {
        for (l = 0; i + l < n; l++) zt[l] = z[i + l];
        sw_sigmoid_pair_avx2(_mm256_loadu_pd(zt), &lo, &hi);
        __m128 lf = _mm256_cvtpd_ps(lo), hf = _mm256_cvtpd_ps(hi);
        _mm_storeu_ps(t, _mm_unpacklo_ps(lf, hf));
        _mm_storeu_ps(t + 4, _mm_unpackhi_ps(lf, hf));
        for (l = 0; l < 2 * (n - i); l++) out[2 * i + l] = t[l];
    }
}

SW_AVX2 static void sw_logistic_f64_avx2(const double* z, ptrdiff_t n, double* out) {
    ptrdiff_t i = 0, l;
    __m256d lo, hi, t0, t1;
    double t[8], zt[4] = {0.0, 0.0, 0.0, 0.0};
    for (; i + 4 <= n; i += 4) {
        sw_sigmoid_pair_avx2(_mm256_loadu_pd(z + i), &lo, &hi);
        t0 = _mm256_unpacklo_pd(lo, hi);
        t1 = _mm256_unpackhi_pd(lo, hi);
        _mm256_storeu_pd(out + 2 * i, _mm256_permute2f128_pd(t0, t1, 0x20));
        _mm256_storeu_pd(out + 2 * i + 4, _mm256_permute2f128_pd(t0, t1, 0x31));
    }
    if (i < n) {
        for (l = 0; i + l < n; l++) zt[l] = z[i + l];
        sw_sigmoid_pair_avx2(_mm256_loadu_pd(zt), &lo, &hi);
        t0 = _mm256_unpacklo_pd(lo, hi);
        t1 = _mm256_unpackhi_pd(lo, hi);
        _mm256_storeu_pd(t, _mm256_permute2f128_pd(t0, t1, 0x20));
        _mm256_storeu_pd(t + 4, _mm256_permute2f128_pd(t0, t1, 0x31));
        for (l = 0; l < 2 * (n - i); l++) out[2 * i + l] = t[l];
    }
}
#endif /* SW_X86_SIMD */

/* ------------------------------------------------------------------------------
 * Entry points for the .pyx: 1 = done here, 0 = the caller runs its scalar loop.
 * ---------------------------------------------------------------------------- */

/* z[i * zs] = X[i, :] @ w + b for i < n (rows at stride sr, columns contiguous);
   stream: X is read from memory, not from cache */
static inline int sw_dot_rows_f32(const float* X, ptrdiff_t sr, ptrdiff_t n,
                                  const double* w, ptrdiff_t d, double b, double* z,
                                  ptrdiff_t zs, int stream) {
#if SW_X86_SIMD
    if (sw_simd_on) {
        sw_dot_rows_f32_avx2(X, sr, n, w, d, b, z, zs, stream);
        return 1;
    }
#endif
    (void)X; (void)sr; (void)n; (void)w; (void)d; (void)b; (void)z; (void)zs; (void)stream;
    return 0;
}

static inline int sw_dot_rows_f64(const double* X, ptrdiff_t sr, ptrdiff_t n,
                                  const double* w, ptrdiff_t d, double b, double* z,
                                  ptrdiff_t zs, int stream) {
#if SW_X86_SIMD
    if (sw_simd_on) {
        sw_dot_rows_f64_avx2(X, sr, n, w, d, b, z, zs, stream);
        return 1;
    }
#endif
    (void)X; (void)sr; (void)n; (void)w; (void)d; (void)b; (void)z; (void)zs; (void)stream;
    return 0;
}

/* out[i] = [sigma(-z[i]), sigma(z[i])] for i < n */
static inline int sw_logistic_f32(const double* z, ptrdiff_t n, float* out) {
#if SW_X86_SIMD
    if (sw_simd_on) {
        sw_logistic_f32_avx2(z, n, out);
        return 1;
    }
#endif
    (void)z; (void)n; (void)out;
    return 0;
}

static inline int sw_logistic_f64(const double* z, ptrdiff_t n, double* out) {
#if SW_X86_SIMD
    if (sw_simd_on) {
        sw_logistic_f64_avx2(z, n, out);
        return 1;
    }
#endif
    (void)z; (void)n; (void)out;
    return 0;
}

#endif /* SCOREWIRE_SIMD_H */

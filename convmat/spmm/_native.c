/* The exact one-vector kernels of convmat.spmm, compiled ahead of time (when convmat is installed).
 *
 * fwd_vec, tr_vec, tr_vec4 and reduce of convmat/spmm/_kernels.py, operation for operation: the
 * same sums in the same order, each product and sum rounded once (no fused multiply-add: built
 * with -ffp-contract=off, and the build fails rather than contract), complex products written
 * (ac - bd) + (ad + bc)i.  And fwd_mat and tr_mat of convmat/spmm/_mat_kernels.py, whose result
 * entries are chains of fused multiply-adds (fma(): one rounding, however it is computed) in the
 * order of those kernels, four rows by a block of columns in AVX registers where the processor has
 * FMA, every dtype (their column blocks do not change the bits); with row_keys and transpose, the
 * helpers of a product of several columns.  So they give the Numba kernels' bits, which
 * tests/test_spmm_native.py checks, and need neither Numba nor its import: the first product in a
 * process runs here.  And fwd_vec4, which has no Numba twin: fwd_vec's bits for four rows at a time,
 * x gathered once for them (AVX2), faster than Numba's fwd_vec, so it serves also after Numba loads;
 * likewise tr_vec4v, tr_vec4 in one pass (AVX2), with tr_vec4's bits.
 *
 * Plain C functions on raw pointers, called through ctypes (which releases the GIL) by
 * convmat/spmm/_native.py.  setup.py builds it as the extension convmat.spmm._native_lib, which is
 * never imported (it has no module: no Python headers are needed), only found and loaded by ctypes.
 * One function per kernel, data dtype and index dtype: <kernel>_<data>_<index>, data f4, f8, c8,
 * c16 and index i4, i8.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Compilers say nothing about -ffp-contract to the source: setup.py passes -DCONVMAT_CONTRACT_OFF with it. */
/* -DCONVMAT_GENERIC builds the plain C only (no clones, no intrinsics): what a processor without AVX2 and
   FMA runs, which tests/test_spmm_native.py builds and checks. */
#ifndef CONVMAT_CONTRACT_OFF
#error "build with -ffp-contract=off -DCONVMAT_CONTRACT_OFF (see setup.py): the kernels' bits need unfused products"
#endif

typedef struct { float re, im; } c8;
typedef struct { double re, im; } c16;

static inline float mul_f4(float a, float b) { return a * b; }
static inline double mul_f8(double a, double b) { return a * b; }
static inline float add_f4(float a, float b) { return a + b; }
static inline double add_f8(double a, double b) { return a + b; }
static inline float zero_f4(void) { return 0.0f; }
static inline double zero_f8(void) { return 0.0; }

static inline c8 mul_c8(c8 a, c8 b) { c8 r; r.re = a.re * b.re - a.im * b.im; r.im = a.re * b.im + a.im * b.re; return r; }
static inline c16 mul_c16(c16 a, c16 b) { c16 r; r.re = a.re * b.re - a.im * b.im; r.im = a.re * b.im + a.im * b.re; return r; }
static inline c8 add_c8(c8 a, c8 b) { c8 r; r.re = a.re + b.re; r.im = a.im + b.im; return r; }
static inline c16 add_c16(c16 a, c16 b) { c16 r; r.re = a.re + b.re; r.im = a.im + b.im; return r; }
static inline c8 zero_c8(void) { c8 r = {0.0f, 0.0f}; return r; }
static inline c16 zero_c16(void) { c16 r = {0.0, 0.0}; return r; }

/* c + a b in one rounding (fwd_mat and tr_mat; a the matrix's entry); complex: the four fused
   multiply-adds of convmat.spmm._mat_kernels.register. */
static inline float madd_f4(float c, float a, float b) { return fmaf(a, b, c); }
static inline double madd_f8(double c, double a, double b) { return fma(a, b, c); }
static inline c8 madd_c8(c8 c, c8 a, c8 b)
{
    c8 r; r.re = fmaf(a.re, b.re, fmaf(-a.im, b.im, c.re)); r.im = fmaf(a.re, b.im, fmaf(a.im, b.re, c.im)); return r;
}
static inline c16 madd_c16(c16 c, c16 a, c16 b)
{
    c16 r; r.re = fma(a.re, b.re, fma(-a.im, b.im, c.re)); r.im = fma(a.re, b.im, fma(a.im, b.re, c.im)); return r;
}

/* Every kernel in two versions, for AVX2 and for any x86-64, chosen when the library loads (the same
   operations: vectors change how many run at once, not what they compute). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(CONVMAT_GENERIC)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif
/* The kernels of several columns with fused multiply-adds in vectors (AVX and FMA), and
   for any x86-64 (fma() from the C library: slower, the same roundings). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(CONVMAT_GENERIC)
#define CLONES_FMA __attribute__((target_clones("fma", "default")))
#else
#define CLONES_FMA
#endif
/* fwd_vec at -O2: -O3's loop vectorizer interleaves the eight lanes across iterations (twice as slow). */
#if defined(__GNUC__) && !defined(__clang__)
#define FWD_OPT __attribute__((optimize("O2")))
#else
#define FWD_OPT
#endif

/* Lane a of fwd_vec adds the product at p + l. */
#define LANE(S, a, l) a = add_##S(a, mul_##S(data[p + l], x[(uint64_t)indices[p + l]]));

/* Slot s of a matrix of 4P rows: its rows a[k] = s + kP, their first entries q[k], the first row's
   length *n; whether the four rows have that length. */
#define SLOT(IS, I)                                                                                      \
static inline int slot_##IS(const I *restrict indptr, int64_t s, int64_t P, int64_t a[4], int64_t q[4], int64_t *n) \
{                                                                                                        \
    int same = 1;                                                                                        \
    for (int k = 0; k < 4; k++) {                                                                        \
        a[k] = s + k * P;                                                                                \
        q[k] = (int64_t)indptr[a[k]];                                                                    \
    }                                                                                                    \
    *n = (int64_t)indptr[a[0] + 1] - q[0];                                                               \
    for (int k = 1; k < 4; k++) same &= (int64_t)indptr[a[k] + 1] - q[k] == *n;                          \
    return same;                                                                                         \
}
SLOT(i4, int32_t)
SLOT(i8, int64_t)

#define KERNELS(S, T, IS, I)                                                                             \
/* y[i] = sum of data[p] * x[indices[p]] over row i, in 8 lanes (lane l: products l, l + 8, ... of the   \
   row, in order, from zero), then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). */                 \
CLONES FWD_OPT void fwd_vec_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data,      \
                        const T *restrict x, T *restrict y, int64_t r0, int64_t r1)                      \
{                                                                                                        \
    for (int64_t i = r0; i < r1; i++) {                                                                  \
        T a0 = zero_##S(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;                \
        int64_t p = (int64_t)indptr[i], e = (int64_t)indptr[i + 1];                                      \
        for (; p + 8 <= e; p += 8) {                                                                     \
            LANE(S, a0, 0) LANE(S, a1, 1) LANE(S, a2, 2) LANE(S, a3, 3)                                  \
            LANE(S, a4, 4) LANE(S, a5, 5) LANE(S, a6, 6) LANE(S, a7, 7)                                  \
        }                                                                                                \
        int64_t n = e - p; /* 0 to 7 products left, into lanes 0 to n - 1 */                             \
        if (n > 0) LANE(S, a0, 0)                                                                        \
        if (n > 1) LANE(S, a1, 1)                                                                        \
        if (n > 2) LANE(S, a2, 2)                                                                        \
        if (n > 3) LANE(S, a3, 3)                                                                        \
        if (n > 4) LANE(S, a4, 4)                                                                        \
        if (n > 5) LANE(S, a5, 5)                                                                        \
        if (n > 6) LANE(S, a6, 6)                                                                        \
        y[i] = add_##S(add_##S(add_##S(a0, a1), add_##S(a2, a3)), add_##S(add_##S(a4, a5), add_##S(a6, a7))); \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
/* acc[indices[p]] += data[p] * y[i] for the rows r0 <= i < r1, entry after entry (acc zeroed first      \
   if clear). */                                                                                         \
CLONES void tr_vec_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data, const T *restrict y, T *restrict acc,            \
                       int64_t ncols, int64_t r0, int64_t r1, int clear)                                 \
{                                                                                                        \
    if (clear)                                                                                           \
        for (int64_t j = 0; j < ncols; j++) acc[j] = zero_##S();                                         \
    for (int64_t i = r0; i < r1; i++) {                                                                  \
        T v = y[i];                                                                                      \
        for (int64_t p = (int64_t)indptr[i], e = (int64_t)indptr[i + 1]; p < e; p++) {                   \
            uint64_t j = (uint64_t)indices[p];                                                           \
            acc[j] = add_##S(acc[j], mul_##S(data[p], v));                                               \
        }                                                                                                \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
/* acc[indices[p]] += data[p] * y[i] for the four rows a[0..3], row after row, entry after entry. */     \
static inline void tr_rows_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data, \
                                      const T *restrict y, T *restrict acc, const int64_t a[4])          \
{                                                                                                        \
    for (int k = 0; k < 4; k++) {                                                                        \
        T v = y[a[k]];                                                                                   \
        for (int64_t p = (int64_t)indptr[a[k]], e = (int64_t)indptr[a[k] + 1]; p < e; p++) {             \
            uint64_t j = (uint64_t)indices[p];                                                           \
            acc[j] = add_##S(acc[j], mul_##S(data[p], v));                                               \
        }                                                                                                \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
/* acc += A.T @ y for the slots s0 <= s < s1 of a matrix of 4P rows, slot s the rows s + kP: four rows   \
   with the same columns add ((d0 y0 + d1 y1) + d2 y2) + d3 y3 per entry, others row after row. */       \
CLONES void tr_vec4_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data, const T *restrict y, T *restrict acc,           \
                        int64_t ncols, int64_t P, int64_t s0, int64_t s1, int clear)                     \
{                                                                                                        \
    if (clear)                                                                                           \
        for (int64_t j = 0; j < ncols; j++) acc[j] = zero_##S();                                         \
    for (int64_t s = s0; s < s1; s++) {                                                                  \
        int64_t a[4], q[4], n;                                                                           \
        int same = slot_##IS(indptr, s, P, a, q, &n);                                                    \
        if (same) { /* no early exit: a vectorised comparison */                                         \
            int64_t bad = 0;                                                                             \
            for (int64_t t = 0; t < n; t++) {                                                            \
                I c = indices[q[0] + t];                                                                 \
                bad += (indices[q[1] + t] != c) + (indices[q[2] + t] != c) + (indices[q[3] + t] != c);   \
            }                                                                                            \
            same = bad == 0;                                                                             \
        }                                                                                                \
        if (same) {                                                                                      \
            T v0 = y[a[0]], v1 = y[a[1]], v2 = y[a[2]], v3 = y[a[3]];                                    \
            for (int64_t t = 0; t < n; t++) {                                                            \
                T w = add_##S(add_##S(mul_##S(data[q[0] + t], v0), mul_##S(data[q[1] + t], v1)),         \
                              mul_##S(data[q[2] + t], v2));                                              \
                uint64_t j = (uint64_t)indices[q[0] + t];                                                \
                acc[j] = add_##S(acc[j], add_##S(w, mul_##S(data[q[3] + t], v3)));                       \
            }                                                                                            \
        } else {                                                                                         \
            tr_rows_##S##_##IS(indptr, indices, data, y, acc, a);                                        \
        }                                                                                                \
    }                                                                                                    \
}

/* The run of rows starting at order[r] (convmat.spmm._mat_kernels._run): its first entry *q0 and
   length *L, and the number *n >= 1 of rows order[r:r+n] (at most run_rows, r + n <= rend) with
   its column indices (n = 1 for an empty first row). */
#define RUN(IS, I)                                                                                       \
static inline void run_##IS(const I *restrict indptr, const I *restrict indices, const int64_t *restrict order, \
                            int64_t r, int64_t rend, int64_t run_rows, int64_t *q0, int64_t *L, int64_t *n) \
{                                                                                                        \
    int64_t i0 = order[r];                                                                               \
    *q0 = (int64_t)indptr[i0];                                                                           \
    *L = (int64_t)indptr[i0 + 1] > *q0 ? (int64_t)indptr[i0 + 1] - *q0 : 0;                              \
    *n = 1;                                                                                              \
    if (*L == 0) return;                                                                                 \
    while (r + *n < rend && *n < run_rows) {                                                             \
        int64_t i = order[r + *n], q = (int64_t)indptr[i];                                               \
        if ((int64_t)indptr[i + 1] != q + *L) break;                                                     \
        int64_t bad = 0;                                                                                 \
        for (int64_t p = 0; p < *L; p++) bad += indices[q + p] != indices[*q0 + p];                      \
        if (bad) break;                                                                                  \
        *n += 1;                                                                                         \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
/* key[i] = first column * scale + last column of row i (-1 if empty), r0 <= i < r1. */                  \
void row_keys_##IS(const I *restrict indptr, const I *restrict indices, int64_t scale, int64_t *restrict key, \
                   int64_t r0, int64_t r1)                                                               \
{                                                                                                        \
    for (int64_t i = r0; i < r1; i++) {                                                                  \
        int64_t p0 = (int64_t)indptr[i], p1 = (int64_t)indptr[i + 1];                                    \
        key[i] = p1 > p0 ? (int64_t)indices[p0] * scale + (int64_t)indices[p1 - 1] : -1;                 \
    }                                                                                                    \
}
RUN(i4, int32_t)
RUN(i8, int64_t)

/* fwd4's and tr_mat's column blocks with AVX and FMA intrinsics (GCC does not vectorise the plain
   loops below: it cannot tell the four rows apart), every dtype: _mm256_fmadd is fma() on each
   element.  Return the first column left for the plain loops. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(CONVMAT_GENERIC)
#include <immintrin.h>
#define HAVE_FMA4 1
#define VEC_ATTR static inline __attribute__((always_inline, target("avx,fma")))
/* Per dtype S, in AVX vectors V of W values of T (complex: W numbers, re and im interleaved): load,
   store, prep(b) (what c + a b needs of b besides b, once per b) and madd(c, a, b, prep(b)) = c + a b
   for the matrix entry a at a pointer, in madd_S's roundings and order.  Complex: madd_c8's
   fma(-a.im, b.im, c.re) and fma(a.im, b.re, c.im) are one fma of a.im (broadcast) with prep(b) = b
   with its pairs swapped and its real parts negated (-a.im b.im = a.im (-b.im), exactly), then
   fma(a.re, b.re, .) and fma(a.re, b.im, .) one fma of a.re with b. */
#define VOPS(S, T, V, SUF, B, NW)                                                                        \
enum { W_##S = NW };                                                                                     \
VEC_ATTR V vld_##S(const T *p) { return _mm256_loadu_##SUF((const B *)p); }                              \
VEC_ATTR void vst_##S(T *p, V v) { _mm256_storeu_##SUF((B *)p, v); }
VOPS(f4, float, __m256, ps, float, 8)
VOPS(f8, double, __m256d, pd, double, 4)
VOPS(c8, c8, __m256, ps, float, 4)
VOPS(c16, c16, __m256d, pd, double, 2)
VEC_ATTR __m256 vprep_f4(__m256 b) { return b; }
VEC_ATTR __m256d vprep_f8(__m256d b) { return b; }
VEC_ATTR __m256 vprep_c8(__m256 b)
{
    const __m256 re = _mm256_setr_ps(-0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f);
    return _mm256_xor_ps(_mm256_permute_ps(b, 0xB1), re);
}
VEC_ATTR __m256d vprep_c16(__m256d b)
{
    return _mm256_xor_pd(_mm256_permute_pd(b, 0x5), _mm256_setr_pd(-0.0, 0.0, -0.0, 0.0));
}
VEC_ATTR __m256 vmadd_f4(__m256 c, const float *a, __m256 b, __m256 bp)
{
    (void)bp;
    return _mm256_fmadd_ps(_mm256_broadcast_ss(a), b, c);
}
VEC_ATTR __m256d vmadd_f8(__m256d c, const double *a, __m256d b, __m256d bp)
{
    (void)bp;
    return _mm256_fmadd_pd(_mm256_broadcast_sd(a), b, c);
}
VEC_ATTR __m256 vmadd_c8(__m256 c, const c8 *a, __m256 b, __m256 bp)
{
    return _mm256_fmadd_ps(_mm256_broadcast_ss(&a->re), b, _mm256_fmadd_ps(_mm256_broadcast_ss(&a->im), bp, c));
}
VEC_ATTR __m256d vmadd_c16(__m256d c, const c16 *a, __m256d b, __m256d bp)
{
    return _mm256_fmadd_pd(_mm256_broadcast_sd(&a->re), b, _mm256_fmadd_pd(_mm256_broadcast_sd(&a->im), bp, c));
}

/* fwd4: blocks of 2W columns (two vectors per row), then of W; X's vectors prepared once per entry. */
#define FMA4(S, T, V, IS, I)                                                                             \
__attribute__((target("avx,fma"))) static int64_t fma4_##S##_##IS(                                       \
    const I *restrict indices, const T *restrict data, const T *restrict X, T *y0, T *y1, T *y2, T *y3,  \
    int64_t qi, int64_t q0, int64_t q1, int64_t q2, int64_t q3, int64_t s0, int64_t s1, int64_t k)       \
{                                                                                                        \
    const int64_t W = W_##S;                                                                             \
    int64_t t = 0;                                                                                       \
    for (; t + 2 * W <= k; t += 2 * W) {                                                                 \
        V c0 = vld_##S(y0 + t), d0 = vld_##S(y0 + t + W), c1 = vld_##S(y1 + t), d1 = vld_##S(y1 + t + W); \
        V c2 = vld_##S(y2 + t), d2 = vld_##S(y2 + t + W), c3 = vld_##S(y3 + t), d3 = vld_##S(y3 + t + W); \
        for (int64_t p = s0; p < s1; p++) {                                                              \
            const T *x = X + (int64_t)indices[qi + p] * k + t;                                           \
            V u = vld_##S(x), v = vld_##S(x + W), up = vprep_##S(u), vp = vprep_##S(v);                  \
            c0 = vmadd_##S(c0, data + q0 + p, u, up); d0 = vmadd_##S(d0, data + q0 + p, v, vp);          \
            c1 = vmadd_##S(c1, data + q1 + p, u, up); d1 = vmadd_##S(d1, data + q1 + p, v, vp);          \
            c2 = vmadd_##S(c2, data + q2 + p, u, up); d2 = vmadd_##S(d2, data + q2 + p, v, vp);          \
            c3 = vmadd_##S(c3, data + q3 + p, u, up); d3 = vmadd_##S(d3, data + q3 + p, v, vp);          \
        }                                                                                                \
        vst_##S(y0 + t, c0); vst_##S(y0 + t + W, d0); vst_##S(y1 + t, c1); vst_##S(y1 + t + W, d1);      \
        vst_##S(y2 + t, c2); vst_##S(y2 + t + W, d2); vst_##S(y3 + t, c3); vst_##S(y3 + t + W, d3);      \
    }                                                                                                    \
    for (; t + W <= k; t += W) {                                                                         \
        V c0 = vld_##S(y0 + t), c1 = vld_##S(y1 + t), c2 = vld_##S(y2 + t), c3 = vld_##S(y3 + t);        \
        for (int64_t p = s0; p < s1; p++) {                                                              \
            V u = vld_##S(X + (int64_t)indices[qi + p] * k + t), up = vprep_##S(u);                      \
            c0 = vmadd_##S(c0, data + q0 + p, u, up); c1 = vmadd_##S(c1, data + q1 + p, u, up);          \
            c2 = vmadd_##S(c2, data + q2 + p, u, up); c3 = vmadd_##S(c3, data + q3 + p, u, up);          \
        }                                                                                                \
        vst_##S(y0 + t, c0); vst_##S(y1 + t, c1); vst_##S(y2 + t, c2); vst_##S(y3 + t, c3);              \
    }                                                                                                    \
    return t;                                                                                            \
}
/* tr_mat's four rows: the rows' blocks of Y (and their preps) in registers, each entry's block of acc
   read, given the four products in row order, written back.  Blocks of 2W columns where PAIR (the real
   dtypes), then of W (a complex pair would hold sixteen vectors). */
#define TRA4(S, T, V, PAIR, IS, I)                                                                       \
__attribute__((target("avx,fma"))) static int64_t tra4_##S##_##IS(                                       \
    const I *restrict indices, const T *restrict data, T *acc, const T *y0, const T *y1, const T *y2,    \
    const T *y3, int64_t qi, int64_t q0, int64_t q1, int64_t q2, int64_t q3, int64_t s0, int64_t s1, int64_t k) \
{                                                                                                        \
    const int64_t W = W_##S;                                                                             \
    int64_t t = 0;                                                                                       \
    for (; PAIR && t + 2 * W <= k; t += 2 * W) {                                                         \
        V u0 = vld_##S(y0 + t), v0 = vld_##S(y0 + t + W), u1 = vld_##S(y1 + t), v1 = vld_##S(y1 + t + W); \
        V u2 = vld_##S(y2 + t), v2 = vld_##S(y2 + t + W), u3 = vld_##S(y3 + t), v3 = vld_##S(y3 + t + W); \
        V e0 = vprep_##S(u0), f0 = vprep_##S(v0), e1 = vprep_##S(u1), f1 = vprep_##S(v1);                \
        V e2 = vprep_##S(u2), f2 = vprep_##S(v2), e3 = vprep_##S(u3), f3 = vprep_##S(v3);                \
        for (int64_t p = s0; p < s1; p++) {                                                              \
            T *z = acc + (int64_t)indices[qi + p] * k + t;                                               \
            V c = vld_##S(z), d = vld_##S(z + W);                                                        \
            c = vmadd_##S(c, data + q0 + p, u0, e0); d = vmadd_##S(d, data + q0 + p, v0, f0);            \
            c = vmadd_##S(c, data + q1 + p, u1, e1); d = vmadd_##S(d, data + q1 + p, v1, f1);            \
            c = vmadd_##S(c, data + q2 + p, u2, e2); d = vmadd_##S(d, data + q2 + p, v2, f2);            \
            c = vmadd_##S(c, data + q3 + p, u3, e3); d = vmadd_##S(d, data + q3 + p, v3, f3);            \
            vst_##S(z, c); vst_##S(z + W, d);                                                            \
        }                                                                                                \
    }                                                                                                    \
    for (; t + W <= k; t += W) {                                                                         \
        V u0 = vld_##S(y0 + t), u1 = vld_##S(y1 + t), u2 = vld_##S(y2 + t), u3 = vld_##S(y3 + t);        \
        V e0 = vprep_##S(u0), e1 = vprep_##S(u1), e2 = vprep_##S(u2), e3 = vprep_##S(u3);                \
        for (int64_t p = s0; p < s1; p++) {                                                              \
            T *z = acc + (int64_t)indices[qi + p] * k + t;                                               \
            V c = vld_##S(z);                                                                            \
            c = vmadd_##S(c, data + q0 + p, u0, e0); c = vmadd_##S(c, data + q1 + p, u1, e1);            \
            c = vmadd_##S(c, data + q2 + p, u2, e2); c = vmadd_##S(c, data + q3 + p, u3, e3);            \
            vst_##S(z, c);                                                                               \
        }                                                                                                \
    }                                                                                                    \
    return t;                                                                                            \
}
#define VEC_BLOCKS(S, T, V, PAIR)                                                                        \
FMA4(S, T, V, i4, int32_t) FMA4(S, T, V, i8, int64_t) TRA4(S, T, V, PAIR, i4, int32_t) TRA4(S, T, V, PAIR, i8, int64_t)
VEC_BLOCKS(f4, float, __m256, 1)
VEC_BLOCKS(f8, double, __m256d, 1)
VEC_BLOCKS(c8, c8, __m256, 0)
VEC_BLOCKS(c16, c16, __m256d, 0)
#endif
/* The first column the plain loops of fwd4 and tr_mat start from: after the intrinsics' blocks when the
   processor has FMA. */
#ifdef HAVE_FMA4
#define FMA4_START(S, IS, args) (__builtin_cpu_supports("fma") ? fma4_##S##_##IS args : 0)
#define TRA4_START(S, IS, args) (__builtin_cpu_supports("fma") ? tra4_##S##_##IS args : 0)
#else
#define FMA4_START(S, IS, args) 0
#define TRA4_START(S, IS, args) 0
#endif

/* Columns of four rows of a run that fwd4's plain loop keeps in local arrays (processors without FMA;
   where there is FMA the intrinsics' blocks above, and the plain loops take the columns they leave). */
#define BLOCK_f4 16
#define BLOCK_f8 8
#define BLOCK_c8 8
#define BLOCK_c16 4

#define MAT_KERNELS(S, T, IS, I)                                                                         \
/* y_g[t] += data[q_g + p] * X[indices[qi + p], t] for s0 <= p < s1 in order, for four rows g: BLOCK_S   \
   columns of the four rows in registers while the entries stream by, then the other columns. */         \
static inline __attribute__((always_inline)) void fwd4_##S##_##IS(const I *restrict indices, const T *restrict data, const T *restrict X, \
                                   T *restrict y0, T *restrict y1, T *restrict y2, T *restrict y3,       \
                                   int64_t qi, int64_t q0, int64_t q1, int64_t q2, int64_t q3,           \
                                   int64_t s0, int64_t s1, int64_t k)                                    \
{                                                                                                        \
    int64_t t = FMA4_START(S, IS, (indices, data, X, y0, y1, y2, y3, qi, q0, q1, q2, q3, s0, s1, k));    \
    for (; t + BLOCK_##S <= k; t += BLOCK_##S) {                                                         \
        T c0[BLOCK_##S], c1[BLOCK_##S], c2[BLOCK_##S], c3[BLOCK_##S];                                    \
        memcpy(c0, y0 + t, sizeof c0); memcpy(c1, y1 + t, sizeof c1);                                    \
        memcpy(c2, y2 + t, sizeof c2); memcpy(c3, y3 + t, sizeof c3);                                    \
        for (int64_t p = s0; p < s1; p++) {                                                              \
            const T *restrict x = X + (int64_t)indices[qi + p] * k + t;                                  \
            T a0 = data[q0 + p], a1 = data[q1 + p], a2 = data[q2 + p], a3 = data[q3 + p];                \
            for (int u = 0; u < BLOCK_##S; u++) {                                                        \
                c0[u] = madd_##S(c0[u], a0, x[u]); c1[u] = madd_##S(c1[u], a1, x[u]);                    \
                c2[u] = madd_##S(c2[u], a2, x[u]); c3[u] = madd_##S(c3[u], a3, x[u]);                    \
            }                                                                                            \
        }                                                                                                \
        memcpy(y0 + t, c0, sizeof c0); memcpy(y1 + t, c1, sizeof c1);                                    \
        memcpy(y2 + t, c2, sizeof c2); memcpy(y3 + t, c3, sizeof c3);                                    \
    }                                                                                                    \
    if (t < k)                                                                                           \
        for (int64_t p = s0; p < s1; p++) {                                                              \
            const T *restrict x = X + (int64_t)indices[qi + p] * k;                                      \
            T a0 = data[q0 + p], a1 = data[q1 + p], a2 = data[q2 + p], a3 = data[q3 + p];                \
            for (int64_t u = t; u < k; u++) {                                                            \
                y0[u] = madd_##S(y0[u], a0, x[u]); y1[u] = madd_##S(y1[u], a1, x[u]);                    \
                y2[u] = madd_##S(y2[u], a2, x[u]); y3[u] = madd_##S(y3[u], a3, x[u]);                    \
            }                                                                                            \
        }                                                                                                \
}                                                                                                        \
                                                                                                         \
/* Y[i] = sum over the row of data[p] * X[indices[p]] for the rows i = order[r], r0 <= r < r1 (X: rows   \
   of k values): each entry a chain of fused multiply-adds in the row's order from zero.  Runs of rows   \
   with the same columns, a segment of entries at a time, four rows at a time (fwd4), as fwd_mat of      \
   _mat_kernels (which does not change the bits: each entry's chain is its row's alone). */              \
CLONES_FMA void fwd_mat_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data, \
                                   const T *restrict X, T *restrict Y, const int64_t *restrict order,    \
                                   int64_t k, int64_t r0, int64_t r1, int64_t seg_bytes, int64_t run_rows) \
{                                                                                                        \
    int64_t kb = k * (int64_t)sizeof(T), seg = seg_bytes / (kb > 1 ? kb : 1);                            \
    if (seg < 8) seg = 8;                                                                                \
    for (int64_t r = r0; r < r1;) {                                                                      \
        int64_t qi, L, n;                                                                                \
        run_##IS(indptr, indices, order, r, r1, run_rows, &qi, &L, &n);                                  \
        for (int64_t g = 0; g < n; g++)                                                                  \
            for (int64_t t = 0; t < k; t++) Y[order[r + g] * k + t] = zero_##S();                        \
        for (int64_t s0 = 0; s0 < L; s0 += seg) {                                                        \
            int64_t s1 = s0 + seg < L ? s0 + seg : L, g = 0;                                             \
            for (; g + 4 <= n; g += 4) {                                                                 \
                int64_t i0 = order[r + g], i1 = order[r + g + 1], i2 = order[r + g + 2], i3 = order[r + g + 3]; \
                fwd4_##S##_##IS(indices, data, X, Y + i0 * k, Y + i1 * k, Y + i2 * k, Y + i3 * k, qi,    \
                                (int64_t)indptr[i0], (int64_t)indptr[i1], (int64_t)indptr[i2], (int64_t)indptr[i3], \
                                s0, s1, k);                                                              \
            }                                                                                            \
            for (; g < n; g++) { /* one row, four entries at a time (as _mat_kernels._fwd1) */           \
                int64_t i = order[r + g], q = (int64_t)indptr[i], p = s0;                                \
                T *restrict y = Y + i * k;                                                               \
                for (; p + 4 <= s1; p += 4) {                                                            \
                    const T *restrict x0 = X + (int64_t)indices[qi + p] * k;                             \
                    const T *restrict x1 = X + (int64_t)indices[qi + p + 1] * k;                         \
                    const T *restrict x2 = X + (int64_t)indices[qi + p + 2] * k;                         \
                    const T *restrict x3 = X + (int64_t)indices[qi + p + 3] * k;                         \
                    T a0 = data[q + p], a1 = data[q + p + 1], a2 = data[q + p + 2], a3 = data[q + p + 3]; \
                    for (int64_t t = 0; t < k; t++)                                                      \
                        y[t] = madd_##S(madd_##S(madd_##S(madd_##S(y[t], a0, x0[t]), a1, x1[t]), a2, x2[t]), a3, x3[t]); \
                }                                                                                        \
                for (; p < s1; p++) {                                                                    \
                    const T *restrict x = X + (int64_t)indices[qi + p] * k;                              \
                    T a = data[q + p];                                                                   \
                    for (int64_t t = 0; t < k; t++) y[t] = madd_##S(y[t], a, x[t]);                      \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        r += n;                                                                                          \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
/* acc[indices[p]] += data[p] * Y[i] for the rows i = order[r], r0 <= r < r1 (acc: ncols rows of k,      \
   zeroed first if clear), in the order of _mat_kernels._b_tr_mat: runs of rows, segments of seg         \
   entries, four rows per entry (then the others one by one), so that an entry of acc that a row meets   \
   twice gets the same sums in the same order. */                                                        \
CLONES_FMA void tr_mat_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data, \
                                  const T *restrict Y, T *restrict acc, const int64_t *restrict order,   \
                                  int64_t ncols, int64_t k, int64_t r0, int64_t r1, int clear,           \
                                  int64_t seg_bytes, int64_t run_rows)                                   \
{                                                                                                        \
    if (clear)                                                                                           \
        for (int64_t j = 0; j < ncols * k; j++) acc[j] = zero_##S();                                     \
    int64_t kb = k * (int64_t)sizeof(T), seg = seg_bytes / (kb > 1 ? kb : 1);                            \
    if (seg < 8) seg = 8;                                                                                \
    for (int64_t r = r0; r < r1;) {                                                                      \
        int64_t qi, L, n;                                                                                \
        run_##IS(indptr, indices, order, r, r1, run_rows, &qi, &L, &n);                                  \
        for (int64_t s0 = 0; s0 < L; s0 += seg) {                                                        \
            int64_t s1 = s0 + seg < L ? s0 + seg : L, g = 0;                                             \
            for (; g + 4 <= n; g += 4) {                                                                 \
                int64_t i0 = order[r + g], i1 = order[r + g + 1], i2 = order[r + g + 2], i3 = order[r + g + 3]; \
                const T *y0 = Y + i0 * k, *y1 = Y + i1 * k, *y2 = Y + i2 * k, *y3 = Y + i3 * k;          \
                int64_t q0 = (int64_t)indptr[i0], q1 = (int64_t)indptr[i1], q2 = (int64_t)indptr[i2], q3 = (int64_t)indptr[i3]; \
                int64_t t0 = TRA4_START(S, IS, (indices, data, acc, y0, y1, y2, y3, qi, q0, q1, q2, q3, s0, s1, k));  \
                for (int64_t p = s0; t0 < k && p < s1; p++) { /* the columns the intrinsics left */      \
                    T *restrict z = acc + (int64_t)indices[qi + p] * k;                                  \
                    T a0 = data[q0 + p], a1 = data[q1 + p], a2 = data[q2 + p], a3 = data[q3 + p];        \
                    for (int64_t t = t0; t < k; t++)                                                     \
                        z[t] = madd_##S(madd_##S(madd_##S(madd_##S(z[t], a0, y0[t]), a1, y1[t]), a2, y2[t]), a3, y3[t]); \
                }                                                                                        \
            }                                                                                            \
            for (; g < n; g++) {                                                                         \
                int64_t i = order[r + g], q = (int64_t)indptr[i];                                        \
                const T *yr = Y + i * k;                                                                 \
                for (int64_t p = s0; p < s1; p++) {                                                      \
                    T *restrict z = acc + (int64_t)indices[qi + p] * k;                                  \
                    T a = data[q + p];                                                                   \
                    for (int64_t t = 0; t < k; t++) z[t] = madd_##S(z[t], a, yr[t]);                     \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        r += n;                                                                                          \
    }                                                                                                    \
}

/* dst[i, j] = src[j, i] for i0 <= i < i1 (src: a rows of b, dst: b rows of a), in tiles of 64 rows of dst
   by 8 columns (as _kernels._b_transpose_into); by item size. */
#define TRANSPOSE(B, T)                                                                                  \
CLONES void transpose_##B(const T *restrict src, T *restrict dst, int64_t a, int64_t b, int64_t i0, int64_t i1) \
{                                                                                                        \
    for (int64_t b0 = i0; b0 < i1; b0 += 64) {                                                           \
        int64_t b1 = b0 + 64 < i1 ? b0 + 64 : i1;                                                        \
        for (int64_t j0 = 0; j0 < a; j0 += 8) {                                                          \
            int64_t j1 = j0 + 8 < a ? j0 + 8 : a;                                                        \
            for (int64_t i = b0; i < b1; i++)                                                            \
                for (int64_t j = j0; j < j1; j++) dst[i * a + j] = src[j * b + i];                       \
        }                                                                                                \
    }                                                                                                    \
}
typedef struct { uint64_t lo, hi; } item16;
TRANSPOSE(4, uint32_t)
TRANSPOSE(8, uint64_t)
TRANSPOSE(16, item16)

/* out[j] = ((out[j] + part[0, j]) + part[1, j]) + ... for j0 <= j < j1 (part: nparts rows of n). */
#define REDUCE(S, T)                                                                                     \
CLONES void reduce_##S(T *out, const T *part, int64_t nparts, int64_t n, int64_t j0, int64_t j1)         \
{                                                                                                        \
    for (int64_t t0 = j0; t0 < j1; t0 += 512) {                                                          \
        int64_t t1 = t0 + 512 < j1 ? t0 + 512 : j1;                                                      \
        for (int64_t b = 0; b < nparts; b++)                                                             \
            for (int64_t j = t0; j < t1; j++) out[j] = add_##S(out[j], part[b * n + j]);                 \
    }                                                                                                    \
}

KERNELS(f4, float, i4, int32_t)
KERNELS(f4, float, i8, int64_t)
KERNELS(f8, double, i4, int32_t)
KERNELS(f8, double, i8, int64_t)
KERNELS(c8, c8, i4, int32_t)
KERNELS(c8, c8, i8, int64_t)
KERNELS(c16, c16, i4, int32_t)
KERNELS(c16, c16, i8, int64_t)

/* fwd_vec4: y = A @ x for the slots s0 <= s < s1 of a matrix of 4P rows, slot s the rows s + kP (the
   output channels of a convolution a quarter apart, as tr_vec4).  Where the four rows have the same
   columns, x is gathered once for them, eight entries at a time (AVX2), into the eight lanes of each
   row: lane l adds the products l, l + 8, ... of its row in order, from zero, as fwd_vec does, and the
   lanes are summed as fwd_vec sums them, so each row gets fwd_vec's bits.  Rows are compared eight
   entries at a time as they are read; slots whose rows differ are computed again by fwd_vec.  For the
   real dtypes (float32 and float64, int32 and int64 indices); fwd_vec on processors without AVX2. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(CONVMAT_GENERIC)
#define V4_ATTR static inline __attribute__((always_inline, target("avx2")))
/* Eight indices: load, and their difference from eight others (zero where equal). */
typedef struct { __m256i a; } ix8_i4;
typedef struct { __m256i lo, hi; } ix8_i8;
V4_ATTR ix8_i4 ix8_load_i4(const int32_t *p) { ix8_i4 r = {_mm256_loadu_si256((const __m256i *)p)}; return r; }
V4_ATTR ix8_i8 ix8_load_i8(const int64_t *p)
{
    ix8_i8 r = {_mm256_loadu_si256((const __m256i *)p), _mm256_loadu_si256((const __m256i *)(p + 4))};
    return r;
}
V4_ATTR __m256i ix8_diff_i4(ix8_i4 a, ix8_i4 b) { return _mm256_xor_si256(a.a, b.a); }
V4_ATTR __m256i ix8_diff_i8(ix8_i8 a, ix8_i8 b)
{
    return _mm256_or_si256(_mm256_xor_si256(a.lo, b.lo), _mm256_xor_si256(a.hi, b.hi));
}
/* Eight lanes of a dtype: zero, x gathered at eight indices, lane += data * x (rounded twice), stored. */
typedef struct { __m256 a; } v8_f4;
typedef struct { __m256d lo, hi; } v8_f8;
V4_ATTR v8_f4 v8_zero_f4(void) { v8_f4 r = {_mm256_setzero_ps()}; return r; }
V4_ATTR v8_f8 v8_zero_f8(void) { v8_f8 r = {_mm256_setzero_pd(), _mm256_setzero_pd()}; return r; }
V4_ATTR v8_f4 v8_gather_f4_i4(const float *x, ix8_i4 j) { v8_f4 r = {_mm256_i32gather_ps(x, j.a, 4)}; return r; }
V4_ATTR v8_f4 v8_gather_f4_i8(const float *x, ix8_i8 j)
{
    v8_f4 r = {_mm256_set_m128(_mm256_i64gather_ps(x, j.hi, 4), _mm256_i64gather_ps(x, j.lo, 4))};
    return r;
}
V4_ATTR v8_f8 v8_gather_f8_i4(const double *x, ix8_i4 j)
{
    v8_f8 r = {_mm256_i32gather_pd(x, _mm256_castsi256_si128(j.a), 8),
               _mm256_i32gather_pd(x, _mm256_extracti128_si256(j.a, 1), 8)};
    return r;
}
V4_ATTR v8_f8 v8_gather_f8_i8(const double *x, ix8_i8 j)
{
    v8_f8 r = {_mm256_i64gather_pd(x, j.lo, 8), _mm256_i64gather_pd(x, j.hi, 8)};
    return r;
}
V4_ATTR v8_f4 v8_load_f4(const float *p) { v8_f4 r = {_mm256_loadu_ps(p)}; return r; }
V4_ATTR v8_f8 v8_load_f8(const double *p) { v8_f8 r = {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)}; return r; }
V4_ATTR v8_f4 v8_set1_f4(float v) { v8_f4 r = {_mm256_set1_ps(v)}; return r; }
V4_ATTR v8_f8 v8_set1_f8(double v) { v8_f8 r = {_mm256_set1_pd(v), _mm256_set1_pd(v)}; return r; }
V4_ATTR v8_f4 v8_mul_f4(v8_f4 a, v8_f4 b) { v8_f4 r = {_mm256_mul_ps(a.a, b.a)}; return r; }
V4_ATTR v8_f8 v8_mul_f8(v8_f8 a, v8_f8 b) { v8_f8 r = {_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)}; return r; }
V4_ATTR v8_f4 v8_add_f4(v8_f4 a, v8_f4 b) { v8_f4 r = {_mm256_add_ps(a.a, b.a)}; return r; }
V4_ATTR v8_f8 v8_add_f8(v8_f8 a, v8_f8 b) { v8_f8 r = {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; return r; }
/* c + d[0:8] * x, each lane rounded twice (fwd_vec's lanes) */
#define v8_madd(S, c, d, x) v8_add_##S(c, v8_mul_##S(v8_load_##S(d), x))
/* The eight lanes of w, each given to F(u, value) in order (shuffles, not a store and reloads). */
#define V8_LANES_f4(w, F)                                                                                \
    { __m128 lo_ = _mm256_castps256_ps128((w).a), hi_ = _mm256_extractf128_ps((w).a, 1);                 \
      F(0, _mm_cvtss_f32(lo_)) F(1, _mm_cvtss_f32(_mm_shuffle_ps(lo_, lo_, 1)))                          \
      F(2, _mm_cvtss_f32(_mm_shuffle_ps(lo_, lo_, 2))) F(3, _mm_cvtss_f32(_mm_shuffle_ps(lo_, lo_, 3)))  \
      F(4, _mm_cvtss_f32(hi_)) F(5, _mm_cvtss_f32(_mm_shuffle_ps(hi_, hi_, 1)))                          \
      F(6, _mm_cvtss_f32(_mm_shuffle_ps(hi_, hi_, 2))) F(7, _mm_cvtss_f32(_mm_shuffle_ps(hi_, hi_, 3))) }
#define V8_LANES_f8(w, F)                                                                                \
    { __m128d a_ = _mm256_castpd256_pd128((w).lo), b_ = _mm256_extractf128_pd((w).lo, 1);                \
      __m128d c_ = _mm256_castpd256_pd128((w).hi), d_ = _mm256_extractf128_pd((w).hi, 1);                \
      F(0, _mm_cvtsd_f64(a_)) F(1, _mm_cvtsd_f64(_mm_unpackhi_pd(a_, a_)))                               \
      F(2, _mm_cvtsd_f64(b_)) F(3, _mm_cvtsd_f64(_mm_unpackhi_pd(b_, b_)))                               \
      F(4, _mm_cvtsd_f64(c_)) F(5, _mm_cvtsd_f64(_mm_unpackhi_pd(c_, c_)))                               \
      F(6, _mm_cvtsd_f64(d_)) F(7, _mm_cvtsd_f64(_mm_unpackhi_pd(d_, d_))) }
V4_ATTR void v8_store_f4(float *o, v8_f4 c) { _mm256_storeu_ps(o, c.a); }
V4_ATTR void v8_store_f8(double *o, v8_f8 c) { _mm256_storeu_pd(o, c.lo); _mm256_storeu_pd(o + 4, c.hi); }

#define FWD4V(S, T, IS, I)                                                                               \
__attribute__((target("avx2"))) static void fwd4v_##S##_##IS(const I *restrict indptr, const I *restrict indices, \
    const T *restrict data, const T *restrict x, T *restrict y, int64_t P, int64_t s0, int64_t s1)       \
{                                                                                                        \
    for (int64_t s = s0; s < s1; s++) {                                                                  \
        int64_t a[4], q[4], n;                                                                           \
        int same = slot_##IS(indptr, s, P, a, q, &n);                                                    \
        if (same) {                                                                                      \
            v8_##S c0 = v8_zero_##S(), c1 = c0, c2 = c0, c3 = c0;                                        \
            __m256i bad = _mm256_setzero_si256();                                                        \
            int64_t t = 0;                                                                               \
            for (; t + 8 <= n; t += 8) {                                                                 \
                ix8_##IS j = ix8_load_##IS(indices + q[0] + t);                                          \
                bad = _mm256_or_si256(bad, _mm256_or_si256(ix8_diff_##IS(j, ix8_load_##IS(indices + q[1] + t)), \
                      _mm256_or_si256(ix8_diff_##IS(j, ix8_load_##IS(indices + q[2] + t)),               \
                                      ix8_diff_##IS(j, ix8_load_##IS(indices + q[3] + t)))));            \
                v8_##S v = v8_gather_##S##_##IS(x, j);                                                   \
                c0 = v8_madd(S, c0, data + q[0] + t, v); c1 = v8_madd(S, c1, data + q[1] + t, v);        \
                c2 = v8_madd(S, c2, data + q[2] + t, v); c3 = v8_madd(S, c3, data + q[3] + t, v);        \
            }                                                                                            \
            T l[4][8];                                                                                   \
            v8_store_##S(l[0], c0); v8_store_##S(l[1], c1); v8_store_##S(l[2], c2); v8_store_##S(l[3], c3); \
            int differ = 0;                                                                              \
            for (int64_t u = 0; t + u < n; u++) { /* 0 to 7 products left, into lanes 0 to n - t - 1 */  \
                I c = indices[q[0] + t + u];                                                             \
                differ |= (indices[q[1] + t + u] != c) | (indices[q[2] + t + u] != c) | (indices[q[3] + t + u] != c); \
                T v = x[(uint64_t)c];                                                                    \
                for (int k = 0; k < 4; k++) l[k][u] = add_##S(l[k][u], mul_##S(data[q[k] + t + u], v));  \
            }                                                                                            \
            if (!differ && _mm256_testz_si256(bad, bad)) {                                               \
                for (int k = 0; k < 4; k++)                                                              \
                    y[a[k]] = add_##S(add_##S(add_##S(l[k][0], l[k][1]), add_##S(l[k][2], l[k][3])),     \
                                      add_##S(add_##S(l[k][4], l[k][5]), add_##S(l[k][6], l[k][7])));    \
                continue;                                                                                \
            }                                                                                            \
        }                                                                                                \
        for (int k = 0; k < 4; k++) fwd_vec_##S##_##IS(indptr, indices, data, x, y, a[k], a[k] + 1);     \
    }                                                                                                    \
}
#define FWD4V_CALL(S, IS, args) if (__builtin_cpu_supports("avx2")) { fwd4v_##S##_##IS args; return; }

/* tr_vec4 in one pass (tr4v): the four rows' indices are compared eight at a time as the entries are
   added, w = ((d0 y0 + d1 y1) + d2 y2) + d3 y3 for eight entries in a vector, and acc[j] += w entry
   after entry, in order, each previous value kept; if the rows differ after all, the kept values are
   put back (last first: duplicates too) and the slot is added row after row, as tr_vec4 does.  So
   tr_vec4's bits, without its separate pass over the four rows' indices.  Slots of more than
   TR4V_KEEP entries go to tr_vec4. */
#define TR4V_KEEP 4096
#define TR4V_ADD_f4(u, value) { uint64_t j_ = (uint64_t)ix[t + u]; float o_ = acc[j_]; kept[t + u] = o_; acc[j_] = o_ + (value); }
#define TR4V_ADD_f8(u, value) { uint64_t j_ = (uint64_t)ix[t + u]; double o_ = acc[j_]; kept[t + u] = o_; acc[j_] = o_ + (value); }
#define TR4V(S, T, IS, I)                                                                                \
__attribute__((target("avx2"))) static void tr4v_##S##_##IS(const I *restrict indptr, const I *restrict indices, \
    const T *restrict data, const T *restrict y, T *restrict acc, int64_t ncols, int64_t P, int64_t s0,  \
    int64_t s1, int clear)                                                                               \
{                                                                                                        \
    if (clear)                                                                                           \
        for (int64_t j = 0; j < ncols; j++) acc[j] = zero_##S();                                         \
    T kept[TR4V_KEEP];                                                                                   \
    for (int64_t s = s0; s < s1; s++) {                                                                  \
        int64_t a[4], q[4], n;                                                                           \
        int same = slot_##IS(indptr, s, P, a, q, &n);                                                    \
        if (same && n > TR4V_KEEP) {                                                                     \
            tr_vec4_##S##_##IS(indptr, indices, data, y, acc, ncols, P, s, s + 1, 0);                    \
            continue;                                                                                    \
        }                                                                                                \
        if (same) {                                                                                      \
            T v0 = y[a[0]], v1 = y[a[1]], v2 = y[a[2]], v3 = y[a[3]];                                    \
            v8_##S w0 = v8_set1_##S(v0), w1 = v8_set1_##S(v1), w2 = v8_set1_##S(v2), w3 = v8_set1_##S(v3); \
            const I *ix = indices + q[0];                                                                \
            int64_t t = 0;                                                                               \
            for (; t + 8 <= n; t += 8) {                                                                 \
                ix8_##IS j = ix8_load_##IS(ix + t);                                                      \
                __m256i bad = _mm256_or_si256(ix8_diff_##IS(j, ix8_load_##IS(indices + q[1] + t)),       \
                              _mm256_or_si256(ix8_diff_##IS(j, ix8_load_##IS(indices + q[2] + t)),       \
                                              ix8_diff_##IS(j, ix8_load_##IS(indices + q[3] + t))));     \
                if (!_mm256_testz_si256(bad, bad)) { same = 0; break; }                                  \
                v8_##S w = v8_add_##S(v8_mul_##S(v8_load_##S(data + q[0] + t), w0),                      \
                                      v8_mul_##S(v8_load_##S(data + q[1] + t), w1));                     \
                w = v8_add_##S(w, v8_mul_##S(v8_load_##S(data + q[2] + t), w2));                         \
                w = v8_add_##S(w, v8_mul_##S(v8_load_##S(data + q[3] + t), w3));                         \
                V8_LANES_##S(w, TR4V_ADD_##S)                                                            \
            }                                                                                            \
            for (; same && t < n; t++) { /* the entries left, one at a time */                           \
                I c = ix[t];                                                                             \
                if (indices[q[1] + t] != c || indices[q[2] + t] != c || indices[q[3] + t] != c) { same = 0; break; } \
                T w = add_##S(add_##S(mul_##S(data[q[0] + t], v0), mul_##S(data[q[1] + t], v1)),         \
                              mul_##S(data[q[2] + t], v2));                                              \
                uint64_t j = (uint64_t)c;                                                                \
                kept[t] = acc[j];                                                                        \
                acc[j] = add_##S(acc[j], add_##S(w, mul_##S(data[q[3] + t], v3)));                       \
            }                                                                                            \
            if (same)                                                                                    \
                continue;                                                                                \
            for (int64_t u = t - 1; u >= 0; u--) acc[(uint64_t)ix[u]] = kept[u]; /* the bits before */   \
        }                                                                                                \
        tr_rows_##S##_##IS(indptr, indices, data, y, acc, a);                                            \
    }                                                                                                    \
}
#define TR4V_CALL(S, IS, args) if (__builtin_cpu_supports("avx2")) { tr4v_##S##_##IS args; return; }
#else
#define FWD4V(S, T, IS, I)
#define FWD4V_CALL(S, IS, args)
#define TR4V(S, T, IS, I)
#define TR4V_CALL(S, IS, args)
#endif

#define VEC4_KERNELS(S, T, IS, I)                                                                        \
FWD4V(S, T, IS, I)                                                                                       \
TR4V(S, T, IS, I)                                                                                        \
/* tr_vec4 in one pass where there is AVX2 (the same bits), tr_vec4 elsewhere */                         \
void tr_vec4v_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data,    \
                         const T *restrict y, T *restrict acc, int64_t ncols, int64_t P, int64_t s0, int64_t s1, \
                         int clear)                                                                      \
{                                                                                                        \
    TR4V_CALL(S, IS, (indptr, indices, data, y, acc, ncols, P, s0, s1, clear))                           \
    tr_vec4_##S##_##IS(indptr, indices, data, y, acc, ncols, P, s0, s1, clear);                          \
}                                                                                                        \
void fwd_vec4_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data,    \
                         const T *restrict x, T *restrict y, int64_t P, int64_t s0, int64_t s1)          \
{                                                                                                        \
    FWD4V_CALL(S, IS, (indptr, indices, data, x, y, P, s0, s1))                                          \
    for (int k = 0; k < 4; k++) fwd_vec_##S##_##IS(indptr, indices, data, x, y, s0 + k * P, s1 + k * P); \
}

VEC4_KERNELS(f4, float, i4, int32_t)
VEC4_KERNELS(f4, float, i8, int64_t)
VEC4_KERNELS(f8, double, i4, int32_t)
VEC4_KERNELS(f8, double, i8, int64_t)
MAT_KERNELS(f4, float, i4, int32_t)
MAT_KERNELS(f4, float, i8, int64_t)
MAT_KERNELS(f8, double, i4, int32_t)
MAT_KERNELS(f8, double, i8, int64_t)
MAT_KERNELS(c8, c8, i4, int32_t)
MAT_KERNELS(c8, c8, i8, int64_t)
MAT_KERNELS(c16, c16, i4, int32_t)
MAT_KERNELS(c16, c16, i8, int64_t)
REDUCE(f4, float)
REDUCE(f8, double)
REDUCE(c8, c8)
REDUCE(c16, c16)

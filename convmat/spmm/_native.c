/* The exact one-vector kernels of convmat.spmm, compiled ahead of time (when convmat is installed).
 *
 * fwd_vec, tr_vec, tr_vec4 and reduce of convmat/spmm/_kernels.py, operation for operation: the
 * same sums in the same order, each product and sum rounded once (no fused multiply-add: built
 * with -ffp-contract=off, and the build fails rather than contract), complex products written
 * (ac - bd) + (ad + bc)i.  So they give the Numba kernels' bits, which tests/test_spmm_native.py
 * checks, and need neither Numba nor its import: the first product in a process runs here.
 *
 * Plain C functions on raw pointers, called through ctypes (which releases the GIL) by
 * convmat/spmm/_native.py.  setup.py builds it as the extension convmat.spmm._native_lib, which is
 * never imported (it has no module: no Python headers are needed), only found and loaded by ctypes.
 * One function per kernel, data dtype and index dtype: <kernel>_<data>_<index>, data f4, f8, c8,
 * c16 and index i4, i8.
 */
#include <stdint.h>

/* Compilers say nothing about -ffp-contract to the source: setup.py passes -DCONVMAT_CONTRACT_OFF with it. */
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

/* Every kernel in two versions, for AVX2 and for any x86-64, chosen when the library loads (the same
   operations: vectors change how many run at once, not what they compute). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif
/* fwd_vec at -O2: -O3's loop vectorizer interleaves the eight lanes across iterations (twice as slow). */
#if defined(__GNUC__) && !defined(__clang__)
#define FWD_OPT __attribute__((optimize("O2")))
#else
#define FWD_OPT
#endif

/* Lane a of fwd_vec adds the product at p + l. */
#define LANE(S, a, l) a = add_##S(a, mul_##S(data[p + l], x[(uint64_t)indices[p + l]]));

#define KERNELS(S, T, IS, I)                                                                          \
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
/* acc += A.T @ y for the slots s0 <= s < s1 of a matrix of 4P rows, slot s the rows s + kP: four rows   \
   with the same columns add ((d0 y0 + d1 y1) + d2 y2) + d3 y3 per entry, others row after row. */       \
CLONES void tr_vec4_##S##_##IS(const I *restrict indptr, const I *restrict indices, const T *restrict data, const T *restrict y, T *restrict acc,           \
                        int64_t ncols, int64_t P, int64_t s0, int64_t s1, int clear)                     \
{                                                                                                        \
    if (clear)                                                                                           \
        for (int64_t j = 0; j < ncols; j++) acc[j] = zero_##S();                                         \
    for (int64_t s = s0; s < s1; s++) {                                                                  \
        int64_t a[4] = {s, s + P, s + 2 * P, s + 3 * P}, q[4];                                           \
        for (int k = 0; k < 4; k++) q[k] = (int64_t)indptr[a[k]];                                       \
        int64_t n = (int64_t)indptr[a[0] + 1] - q[0];                                                    \
        int same = 1;                                                                                    \
        for (int k = 1; k < 4; k++) same &= (int64_t)indptr[a[k] + 1] - q[k] == n;                       \
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
            for (int k = 0; k < 4; k++) {                                                                \
                T v = y[a[k]];                                                                           \
                for (int64_t p = q[k], e = (int64_t)indptr[a[k] + 1]; p < e; p++) {                      \
                    uint64_t j = (uint64_t)indices[p];                                                   \
                    acc[j] = add_##S(acc[j], mul_##S(data[p], v));                                       \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
}

/* out[j] = ((out[j] + part[0, j]) + part[1, j]) + ... for j0 <= j < j1 (part: nparts rows of n). */
#define REDUCE(S, T)                                                                                     \
CLONES void reduce_##S(T *out, const T *part, int64_t nparts, int64_t n, int64_t j0, int64_t j1)              \
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
REDUCE(f4, float)
REDUCE(f8, double)
REDUCE(c8, c8)
REDUCE(c16, c16)

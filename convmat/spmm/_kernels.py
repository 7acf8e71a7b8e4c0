"""The Numba kernels of :mod:`convmat.spmm`: plain Python source, compiled by :func:`compile_kernels`.

Each kernel is a serial function over a block of rows ``[r0, r1)`` of a CSR
matrix (or a range of a result), run on one thread; :mod:`convmat.spmm._products`
splits a product into blocks and runs them on the thread pool of
:mod:`convmat.spmm._threads`.  :data:`KERNELS` is the explicit table of the
kernels by name.  Nothing here imports Numba: the functions below run (slowly)
as plain Python too, which the tests use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KERNELS", "FASTMATH", "EXACT", "LANES", "jit", "compile_kernels", "register"]

#: Partial sums per row of the one-vector product ``fwd_vec`` (written out in the kernel).
LANES = 8

U = np.uint64  # unsigned indices: Numba skips negative-index wraparound for them (and vectorises)


def _mul(a, b):
    """``a * b`` (plain Python); compiled, a complex product is written out in the kernel (:func:`register`).

    Numba compiles its own complex multiplication once per process and signature, with the
    ``fastmath`` flags of the first function that needs it, and links that copy into every
    later one: an exact kernel compiled after a ``fastmath`` function of the same complex dtype
    (``fwd_mat``, or any user function) inherited its fused multiply-adds, and the on-disk cache
    kept them.  Written out in each kernel, ``(ac - bd) + (ad + bc)i`` carries the kernel's own
    flags: its bits depend on the kernel and its inputs only.
    """
    return a * b


def _b_fwd_vec(indptr, indices, data, x, y, r0, r1, zero):
    # y[i] = sum of data[p] * x[indices[p]] over the row, in LANES = 8 lanes: lane l adds the
    # products at positions l, l + 8, l + 16, ... of the row, in that order, starting from zero;
    # then y[i] = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).  An exact kernel (no
    # reassociation, no fused multiply-add): convmat.spmm._twins.fwd_vec gives the same bits.
    for i in range(U(r0), U(r1)):
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        a4 = zero
        a5 = zero
        a6 = zero
        a7 = zero
        p = U(indptr[i])
        e = U(indptr[i + U(1)])
        while p + U(8) <= e:
            a0 += _mul(data[p], x[U(indices[p])])
            a1 += _mul(data[p + U(1)], x[U(indices[p + U(1)])])
            a2 += _mul(data[p + U(2)], x[U(indices[p + U(2)])])
            a3 += _mul(data[p + U(3)], x[U(indices[p + U(3)])])
            a4 += _mul(data[p + U(4)], x[U(indices[p + U(4)])])
            a5 += _mul(data[p + U(5)], x[U(indices[p + U(5)])])
            a6 += _mul(data[p + U(6)], x[U(indices[p + U(6)])])
            a7 += _mul(data[p + U(7)], x[U(indices[p + U(7)])])
            p += U(8)
        n = e - p if e > p else U(0)  # 0 to 7 products left, into lanes 0 to n - 1
        if n > U(0):
            a0 += _mul(data[p], x[U(indices[p])])
        if n > U(1):
            a1 += _mul(data[p + U(1)], x[U(indices[p + U(1)])])
        if n > U(2):
            a2 += _mul(data[p + U(2)], x[U(indices[p + U(2)])])
        if n > U(3):
            a3 += _mul(data[p + U(3)], x[U(indices[p + U(3)])])
        if n > U(4):
            a4 += _mul(data[p + U(4)], x[U(indices[p + U(4)])])
        if n > U(5):
            a5 += _mul(data[p + U(5)], x[U(indices[p + U(5)])])
        if n > U(6):
            a6 += _mul(data[p + U(6)], x[U(indices[p + U(6)])])
        y[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


def _b_tr_vec(indptr, indices, data, y, acc, r0, r1, zero, clear):
    # acc[indices[p]] += data[p] * y[i] for the rows r0 <= i < r1, one entry after the other
    # (acc zeroed first if clear).  An exact kernel: convmat.spmm._twins.tr_vec gives the same bits.
    if clear:
        for j in range(U(acc.shape[0])):
            acc[j] = zero
    for i in range(U(r0), U(r1)):
        v = y[i]
        p = U(indptr[i])
        e = U(indptr[i + U(1)])
        while p + U(4) <= e:
            j0 = U(indices[p])
            j1 = U(indices[p + U(1)])
            j2 = U(indices[p + U(2)])
            j3 = U(indices[p + U(3)])
            d0 = _mul(data[p], v)
            d1 = _mul(data[p + U(1)], v)
            d2 = _mul(data[p + U(2)], v)
            d3 = _mul(data[p + U(3)], v)
            acc[j0] += d0
            acc[j1] += d1
            acc[j2] += d2
            acc[j3] += d3
            p += U(4)
        while p < e:
            acc[U(indices[p])] += _mul(data[p], v)
            p += U(1)


def _b_tr_vec4(indptr, indices, data, y, acc, P, s0, s1, zero, clear):
    # acc += A.T @ y for the rows of slots s0 <= s < s1, where slot s holds the rows s, s + P, s + 2P,
    # s + 3P of a matrix of 4P rows (the output channels of a convolution, a quarter apart).  When
    # the four rows have the same column indices, entry t adds
    # ((d0 * y0 + d1 * y1) + d2 * y2) + d3 * y3 to acc[indices[q0 + t]] (one read-modify-write for
    # four non-zeros); otherwise the four rows add one entry after the other, row after row.
    # An exact kernel: convmat.spmm._twins.tr_vec4 gives the same bits.
    if clear:
        for j in range(U(acc.shape[0])):
            acc[j] = zero
    p = U(P)
    for s in range(U(s0), U(s1)):
        a0 = s
        a1 = s + p
        a2 = a1 + p
        a3 = a2 + p
        q0 = U(indptr[a0])
        q1 = U(indptr[a1])
        q2 = U(indptr[a2])
        q3 = U(indptr[a3])
        n = U(indptr[a0 + U(1)]) - q0
        same = U(indptr[a1 + U(1)]) - q1 == n and U(indptr[a2 + U(1)]) - q2 == n and U(indptr[a3 + U(1)]) - q3 == n
        if same:
            bad = 0
            for t in range(n):  # no early exit: a vectorised comparison
                c = indices[q0 + t]
                bad += (indices[q1 + t] != c) + (indices[q2 + t] != c) + (indices[q3 + t] != c)
            same = bad == 0
        if same:
            v0 = y[a0]
            v1 = y[a1]
            v2 = y[a2]
            v3 = y[a3]
            for t in range(n):
                w = (_mul(data[q0 + t], v0) + _mul(data[q1 + t], v1)) + _mul(data[q2 + t], v2)
                acc[U(indices[q0 + t])] += w + _mul(data[q3 + t], v3)
        else:
            for a in (a0, a1, a2, a3):
                v = y[a]
                for q in range(U(indptr[a]), U(indptr[a + U(1)])):
                    acc[U(indices[q])] += _mul(data[q], v)


def _b_reduce(out, part, j0, j1):
    # out[j] = (((out[j] + part[0, j]) + part[1, j]) + ...): an exact kernel.  In tiles of 512
    # entries, one partial result after the other (each entry's additions in the same order; the
    # loop over a tile vectorises, and the tile of out stays in L1).
    for t0 in range(U(j0), U(j1), U(512)):
        t1 = min(t0 + U(512), U(j1))
        for b in range(part.shape[0]):
            for j in range(t0, t1):
                out[j] += part[b, j]


def _b_row_keys(indptr, indices, scale, key, r0, r1):
    for i in range(r0, r1):
        p0 = indptr[i]
        p1 = indptr[i + 1]
        if p1 > p0:
            key[i] = np.int64(indices[p0]) * scale + np.int64(indices[p1 - 1])
        else:
            key[i] = -1


def _b_transpose_into(src, dst, i0, i1):
    c = U(dst.shape[1])
    for j0 in range(U(0), c, U(32)):
        j1 = min(j0 + U(32), c)
        for i in range(U(i0), U(i1)):
            for j in range(j0, j1):
                dst[i, j] = src[j, i]


def _b_group4(indptr, indices, order, r, rend, i0, q0, L):
    # Whether rows order[r:r+4] (the first is i0, its entries [q0, q0 + L)) all have the same
    # L > 0 column indices; with their row numbers and first entries.  Inlined into the kernels.
    i1 = i0
    i2 = i0
    i3 = i0
    q1 = q0
    q2 = q0
    q3 = q0
    same = False
    if r + U(4) <= rend and L > U(0):
        i1 = U(order[r + U(1)])
        i2 = U(order[r + U(2)])
        i3 = U(order[r + U(3)])
        q1 = U(indptr[i1])
        q2 = U(indptr[i2])
        q3 = U(indptr[i3])
        same = (
            U(indptr[i1 + U(1)]) - q1 == L
            and U(indptr[i2 + U(1)]) - q2 == L
            and U(indptr[i3 + U(1)]) - q3 == L
            and U(indptr[i1 + U(1)]) > q1
            and U(indptr[i2 + U(1)]) > q2
            and U(indptr[i3 + U(1)]) > q3
        )
        if same:
            for p in range(L):
                j = indices[q0 + p]
                if indices[q1 + p] != j or indices[q2 + p] != j or indices[q3 + p] != j:
                    same = False
                    break
    return same, i1, i2, i3, q1, q2, q3


def _b_fwd_mat(indptr, indices, data, X, Y, order, r0, r1, zero):
    # Y[i] = sum_p data[p] * X[indices[p]] for the rows i = order[r], r0 <= r < r1.
    k = U(X.shape[1])
    # A group of four rows is summed in acc, then copied to Y: the stores of the inner loop go to one
    # array of this call's own (LLVM checks it against the rows of X only, not four rows of Y against
    # each other and X), 12-20 % faster; the same operations, the same bits.
    acc = np.empty((4, X.shape[1]), dtype=Y.dtype)
    r = U(r0)
    rend = U(r1)
    while r < rend:
        i0 = U(order[r])
        q0 = U(indptr[i0])
        e0 = U(indptr[i0 + U(1)])
        L = e0 - q0 if e0 > q0 else U(0)
        same, i1, i2, i3, q1, q2, q3 = _b_group4(indptr, indices, order, r, rend, i0, q0, L)
        if same:
            # Four rows with the same columns: each row of X is loaded once for the four.
            for t in range(k):
                acc[0, t] = zero
                acc[1, t] = zero
                acc[2, t] = zero
                acc[3, t] = zero
            p = U(0)
            while p + U(4) <= L:
                x0 = X[U(indices[q0 + p])]
                x1 = X[U(indices[q0 + p + U(1)])]
                x2 = X[U(indices[q0 + p + U(2)])]
                x3 = X[U(indices[q0 + p + U(3)])]
                a00 = data[q0 + p]
                a01 = data[q0 + p + U(1)]
                a02 = data[q0 + p + U(2)]
                a03 = data[q0 + p + U(3)]
                a10 = data[q1 + p]
                a11 = data[q1 + p + U(1)]
                a12 = data[q1 + p + U(2)]
                a13 = data[q1 + p + U(3)]
                a20 = data[q2 + p]
                a21 = data[q2 + p + U(1)]
                a22 = data[q2 + p + U(2)]
                a23 = data[q2 + p + U(3)]
                a30 = data[q3 + p]
                a31 = data[q3 + p + U(1)]
                a32 = data[q3 + p + U(2)]
                a33 = data[q3 + p + U(3)]
                for t in range(k):
                    u0 = x0[t]
                    u1 = x1[t]
                    u2 = x2[t]
                    u3 = x3[t]
                    acc[0, t] += _mul(a00, u0) + _mul(a01, u1) + _mul(a02, u2) + _mul(a03, u3)
                    acc[1, t] += _mul(a10, u0) + _mul(a11, u1) + _mul(a12, u2) + _mul(a13, u3)
                    acc[2, t] += _mul(a20, u0) + _mul(a21, u1) + _mul(a22, u2) + _mul(a23, u3)
                    acc[3, t] += _mul(a30, u0) + _mul(a31, u1) + _mul(a32, u2) + _mul(a33, u3)
                p += U(4)
            while p < L:
                x0 = X[U(indices[q0 + p])]
                a00 = data[q0 + p]
                a10 = data[q1 + p]
                a20 = data[q2 + p]
                a30 = data[q3 + p]
                for t in range(k):
                    u0 = x0[t]
                    acc[0, t] += _mul(a00, u0)
                    acc[1, t] += _mul(a10, u0)
                    acc[2, t] += _mul(a20, u0)
                    acc[3, t] += _mul(a30, u0)
                p += U(1)
            Y[i0] = acc[0]
            Y[i1] = acc[1]
            Y[i2] = acc[2]
            Y[i3] = acc[3]
            r += U(4)
        else:
            yr = Y[i0]
            for t in range(k):
                yr[t] = zero
            p1 = q0 + L
            p = q0
            while p + U(4) <= p1:
                a0 = data[p]
                a1 = data[p + U(1)]
                a2 = data[p + U(2)]
                a3 = data[p + U(3)]
                x0 = X[U(indices[p])]
                x1 = X[U(indices[p + U(1)])]
                x2 = X[U(indices[p + U(2)])]
                x3 = X[U(indices[p + U(3)])]
                for t in range(k):
                    yr[t] += _mul(a0, x0[t]) + _mul(a1, x1[t]) + _mul(a2, x2[t]) + _mul(a3, x3[t])
                p += U(4)
            while p < p1:
                a0 = data[p]
                x0 = X[U(indices[p])]
                for t in range(k):
                    yr[t] += _mul(a0, x0[t])
                p += U(1)
            r += U(1)


def _b_tr_mat(indptr, indices, data, Y, acc, order, r0, r1, zero, clear):
    # acc[indices[p]] += data[p] * Y[i] for the rows i = order[r], r0 <= r < r1 (acc zeroed first if clear).
    k = U(Y.shape[1])
    if clear:
        for j in range(U(acc.shape[0])):
            ar = acc[j]
            for t in range(k):
                ar[t] = zero
    r = U(r0)
    rend = U(r1)
    while r < rend:
        i0 = U(order[r])
        q0 = U(indptr[i0])
        e0 = U(indptr[i0 + U(1)])
        L = e0 - q0 if e0 > q0 else U(0)
        same, i1, i2, i3, q1, q2, q3 = _b_group4(indptr, indices, order, r, rend, i0, q0, L)
        if same:
            # Four rows with the same columns: one read-modify-write of a result row for four.
            y0 = Y[i0]
            y1 = Y[i1]
            y2 = Y[i2]
            y3 = Y[i3]
            p = U(0)
            while p + U(2) <= L:
                z0 = acc[U(indices[q0 + p])]
                z1 = acc[U(indices[q0 + p + U(1)])]
                a00 = data[q0 + p]
                a10 = data[q1 + p]
                a20 = data[q2 + p]
                a30 = data[q3 + p]
                a01 = data[q0 + p + U(1)]
                a11 = data[q1 + p + U(1)]
                a21 = data[q2 + p + U(1)]
                a31 = data[q3 + p + U(1)]
                for t in range(k):
                    v0 = y0[t]
                    v1 = y1[t]
                    v2 = y2[t]
                    v3 = y3[t]
                    z0[t] += _mul(a00, v0) + _mul(a10, v1) + _mul(a20, v2) + _mul(a30, v3)
                    z1[t] += _mul(a01, v0) + _mul(a11, v1) + _mul(a21, v2) + _mul(a31, v3)
                p += U(2)
            if p < L:
                z0 = acc[U(indices[q0 + p])]
                a00 = data[q0 + p]
                a10 = data[q1 + p]
                a20 = data[q2 + p]
                a30 = data[q3 + p]
                for t in range(k):
                    z0[t] += _mul(a00, y0[t]) + _mul(a10, y1[t]) + _mul(a20, y2[t]) + _mul(a30, y3[t])
            r += U(4)
        else:
            yr = Y[i0]
            for p in range(q0, q0 + L):
                a0 = data[p]
                zr = acc[U(indices[p])]
                for t in range(k):
                    zr[t] += _mul(a0, yr[t])
            r += U(1)


# Reassociation and contraction (FMA) let LLVM vectorise the sums of the block kernels.  No
# nnan/ninf: NaN and infinities propagate as in IEEE arithmetic.  Compiled code is deterministic:
# the same inputs give the same bits on every call (the order of a reassociated sum is fixed at
# compile time).
FASTMATH = frozenset({"reassoc", "contract"})

#: Kernels compiled without FASTMATH: their order of operations is the one written, and
#: :mod:`convmat.spmm._twins` computes the same in NumPy, bit for bit (before Numba is loaded).
EXACT = frozenset({"fwd_vec", "tr_vec", "tr_vec4", "reduce"})

#: The kernels by name: what :func:`compile_kernels` compiles and the products call.
KERNELS = {
    "fwd_vec": _b_fwd_vec,
    "tr_vec": _b_tr_vec,
    "tr_vec4": _b_tr_vec4,
    "reduce": _b_reduce,
    "row_keys": _b_row_keys,
    "transpose_into": _b_transpose_into,
    "fwd_mat": _b_fwd_mat,
    "tr_mat": _b_tr_mat,
}

#: Helpers the kernels call: compiled into them (inline), callable from Python as they are.
INLINED = (_b_group4,)

_REGISTERED = []


def register(numba):
    """Make the kernels' helpers known to Numba (once per process): :func:`_mul` and :data:`INLINED`.

    Called before anything that compiles a kernel's source (:func:`compile_kernels`, and
    :mod:`convmat.fill`, which inlines ``fwd_vec``).  ``_mul`` of a complex operand is an
    intrinsic that writes ``(ac - bd) + (ad + bc)i`` (operands first converted to the result
    dtype, as Numba and NumPy do) into the calling kernel, where the kernel's ``fastmath``
    flags apply; of real operands it is ``a * b``.
    """
    from numba.core import types
    from numba.core.compiler_lock import global_compiler_lock
    from numba.extending import intrinsic, overload, register_jitable
    from numba.np.numpy_support import as_dtype, from_dtype

    with global_compiler_lock:
        if _REGISTERED:
            return

        @intrinsic
        def cmul(typingctx, a, b):
            rt = from_dtype(np.result_type(as_dtype(a), as_dtype(b)))

            def codegen(context, builder, sig, args):
                z, w = (context.make_complex(builder, rt, value=context.cast(builder, v, t, rt))
                        for v, t in zip(args, sig.args))
                r = context.make_complex(builder, rt)
                r.real = builder.fsub(builder.fmul(z.real, w.real), builder.fmul(z.imag, w.imag))
                r.imag = builder.fadd(builder.fmul(z.real, w.imag), builder.fmul(z.imag, w.real))
                return r._getvalue()

            return rt(a, b), codegen

        @overload(_mul, inline="always")
        def _mul_impl(a, b):
            if isinstance(a, types.Complex) or isinstance(b, types.Complex):
                return lambda a, b: cmul(a, b)
            return lambda a, b: a * b

        for fn in INLINED:
            register_jitable(inline="always")(fn)
        _REGISTERED.append(True)


def jit(numba, fn, cache, fastmath=FASTMATH):
    """``numba.njit`` of one kernel (cached on disk where a cache location is writable).

    An exact kernel (no ``fastmath``) is compiled with LLVM's SLP vectorizer (:func:`_with_slp`).
    """
    opts = dict(nogil=True, fastmath=set(fastmath), error_model="numpy", boundscheck=False, no_cfunc_wrapper=True)
    disp = None
    if cache:
        try:
            disp = numba.njit(cache=True, **opts)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available" (read-only everywhere)
            pass
    if disp is None:
        disp = numba.njit(**opts)(fn)
    if not fastmath:
        disp.compile = _with_slp(disp.compile)
    return disp


def _with_slp(compile_):
    """A dispatcher's ``compile`` with LLVM's SLP vectorizer on (Numba's default is off).

    Without reassociation LLVM's loop vectorizer cannot vectorise a sum; the SLP vectorizer
    packs the eight independent lanes of ``fwd_vec`` into one vector instead (each lane's
    operations unchanged: the same bits, about 15 % faster).  Numba reads the setting when it
    compiles, so it is switched on only while this dispatcher compiles, under Numba's global
    compiler lock (no other compilation runs meanwhile), and restored after.
    """
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock

    def compile(sig):
        with global_compiler_lock:
            before = config.SLP_VECTORIZE
            config.SLP_VECTORIZE = 1
            try:
                return compile_(sig)
            finally:
                config.SLP_VECTORIZE = before

    return compile


def compile_kernels(numba, cache=True):
    """Numba dispatchers of :data:`KERNELS` (each compiled on its first call, per signature)."""
    register(numba)
    return {name: jit(numba, fn, cache, () if name in EXACT else FASTMATH) for name, fn in KERNELS.items()}

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

from ._mat_kernels import _b_fwd_mat, _b_tr_mat
from ._mat_kernels import register as _register_mat

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
    # dst[i, j] = src[j, i] for i0 <= i < i1, in tiles of 64 rows of dst by 8 columns: the tile's 8
    # rows of src (often a multiple of 4 KiB apart, so in the same cache sets) are read 256 bytes
    # each, the tile of dst stays in L1 (1.7x faster than whole rows of dst by 32 columns).
    c = U(dst.shape[1])
    for b0 in range(U(i0), U(i1), U(64)):
        b1 = min(b0 + U(64), U(i1))
        for j0 in range(U(0), c, U(8)):
            j1 = min(j0 + U(8), c)
            for i in range(b0, b1):
                for j in range(j0, j1):
                    dst[i, j] = src[j, i]


# Reassociation and contraction for the kernels that have no order of operations to keep (indices,
# copies).  No nnan/ninf: NaN and infinities propagate as in IEEE arithmetic.
FASTMATH = frozenset({"reassoc", "contract"})

#: Kernels compiled without FASTMATH: their order of operations is the one written.
#: :mod:`convmat.spmm._twins` computes the same as the one-vector ones in NumPy, bit for bit
#: (before Numba is loaded); ``fwd_mat`` and ``tr_mat`` write their fused multiply-adds out
#: (:mod:`convmat.spmm._mat_kernels`).
EXACT = frozenset({"fwd_vec", "tr_vec", "tr_vec4", "reduce", "fwd_mat", "tr_mat"})

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

_REGISTERED = []


def register(numba):
    """Make the kernels' helpers known to Numba (once per process): :func:`_mul` and those of ``fwd_mat``, ``tr_mat``.

    Called before anything that compiles a kernel's source (:func:`compile_kernels`, and
    :mod:`convmat.fill`, which inlines ``fwd_vec``).  ``_mul`` of a complex operand is an
    intrinsic that writes ``(ac - bd) + (ad + bc)i`` (operands first converted to the result
    dtype, as Numba and NumPy do) into the calling kernel, where the kernel's ``fastmath``
    flags apply; of real operands it is ``a * b``.
    """
    from numba.core import types
    from numba.core.compiler_lock import global_compiler_lock
    from numba.extending import intrinsic, overload
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

        _register_mat(numba)
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

"""The kernels of several columns, ``A @ X`` and ``A.T @ X``: plain Python source, compiled by :mod:`._kernels`.

Every entry of a result is a chain of fused multiply-adds (:func:`_madd`, ``llvm.fma`` when
compiled), one per product, in a fixed order: ``fwd_mat`` adds a row's products in the row's
order, starting from zero; ``tr_mat`` adds, to each entry of ``acc``, the products of the rows
in the order they are visited.  The order does not depend on which rows are computed together,
how the columns are blocked, or what LLVM vectorises, so the streamed products (which call
these kernels on rows they build a few at a time) give the stored product's bits.

Speed comes from register blocking.  Consecutive rows with the same column indices (the
output channels of one position of a convolution) form a *run*, computed a segment of entries
at a time (:data:`SEGMENT_BYTES` of ``X`` rows, or of result rows, meant to stay in L1 while the
run's rows use them; on the layers of ``benchmarks/spmm.py`` segments measured neither faster
nor slower than whole rows), four rows at a time: for 16 columns (4-byte values) or 8 (8-byte values),
the four rows' partial sums (``fwd_mat``) or the four rows of ``Y`` (``tr_mat``) stay in
registers while the segment's entries stream by, written out as tuples of 8 that LLVM's SLP
vectoriser packs into vector registers.  Other columns, other rows and 16-byte values run the
plain loops, with the same operations in the same order.
"""

from __future__ import annotations

import numpy as np

U = np.uint64  # unsigned indices: Numba skips negative-index wraparound for them (and vectorises)

#: Bytes of the rows of ``X`` (``fwd_mat``) or of the result (``tr_mat``) one segment of a run's
#: entries reads: about half of an L1 data cache, so that they stay there for all the run's rows.
SEGMENT_BYTES = 16384

#: Rows of a run at most (rows visited one after the other with the same column indices).
RUN_ROWS = 64


def _madd(c, a, b):
    """``c + a * b``; compiled, one fused multiply-add (:func:`register`)."""
    return c + a * b


def _run(indptr, indices, order, r, rend):
    # The run starting at order[r]: its first entry q0 and length L (its rows' column indices are
    # indices[q0:q0+L]), and the number n >= 1 of rows order[r:r+n] (at most RUN_ROWS, r + n <= rend)
    # that have them (n = 1 for an empty first row).
    i0 = U(order[r])
    q0 = U(indptr[i0])
    L = U(indptr[i0 + U(1)]) - q0 if U(indptr[i0 + U(1)]) > q0 else U(0)
    n = U(1)
    if L == U(0):
        return q0, L, n
    while r + n < rend and n < U(RUN_ROWS):
        i = U(order[r + n])
        q = U(indptr[i])
        if U(indptr[i + U(1)]) != q + L:
            break
        bad = 0
        for p in range(L):  # no early exit: a vectorised comparison
            bad += indices[q + p] != indices[q0 + p]
        if bad:
            break
        n += U(1)
    return q0, L, n


def _four(indptr, order, r):
    # Rows order[r:r+4] and their first entries.
    i0, i1, i2, i3 = U(order[r]), U(order[r + U(1)]), U(order[r + U(2)]), U(order[r + U(3)])
    return i0, i1, i2, i3, U(indptr[i0]), U(indptr[i1]), U(indptr[i2]), U(indptr[i3])


def _ld8(y, t):
    return (y[t], y[t + U(1)], y[t + U(2)], y[t + U(3)], y[t + U(4)], y[t + U(5)], y[t + U(6)], y[t + U(7)])


def _st8(y, t, c):
    y[t] = c[0]
    y[t + U(1)] = c[1]
    y[t + U(2)] = c[2]
    y[t + U(3)] = c[3]
    y[t + U(4)] = c[4]
    y[t + U(5)] = c[5]
    y[t + U(6)] = c[6]
    y[t + U(7)] = c[7]


def _ax8(c, a, x, t):
    # c[u] + a * x[t + u] for u < 8
    return (_madd(c[0], a, x[t]), _madd(c[1], a, x[t + U(1)]), _madd(c[2], a, x[t + U(2)]),
            _madd(c[3], a, x[t + U(3)]), _madd(c[4], a, x[t + U(4)]), _madd(c[5], a, x[t + U(5)]),
            _madd(c[6], a, x[t + U(6)]), _madd(c[7], a, x[t + U(7)]))


def _ma4(z, a0, v0, a1, v1, a2, v2, a3, v3):
    # (((z + a0 v0) + a1 v1) + a2 v2) + a3 v3
    return _madd(_madd(_madd(_madd(z, a0, v0), a1, v1), a2, v2), a3, v3)


def _sc8(z, t, a0, v0, a1, v1, a2, v2, a3, v3):
    # z[t + u] += a0 v0[u], then a1 v1[u], a2 v2[u], a3 v3[u], for u < 8
    for u in range(8):
        z[t + U(u)] = _ma4(z[t + U(u)], a0, v0[u], a1, v1[u], a2, v2[u], a3, v3[u])


def _fwd4(indices, data, X, y0, y1, y2, y3, qi, q0, q1, q2, q3, s0, s1, k):
    # y_g[t] += data[q_g + p] * X[indices[qi + p], t] for s0 <= p < s1 in order, for four rows g.
    t = U(0)
    if X.itemsize <= 4:  # 16 columns: 8 vector registers of partial sums
        while t + U(16) <= k:
            t8 = t + U(8)
            c0, c1, c2, c3 = _ld8(y0, t), _ld8(y1, t), _ld8(y2, t), _ld8(y3, t)
            d0, d1, d2, d3 = _ld8(y0, t8), _ld8(y1, t8), _ld8(y2, t8), _ld8(y3, t8)
            for p in range(s0, s1):
                x = X[U(indices[qi + p])]
                a0, a1, a2, a3 = data[q0 + p], data[q1 + p], data[q2 + p], data[q3 + p]
                c0, d0 = _ax8(c0, a0, x, t), _ax8(d0, a0, x, t8)
                c1, d1 = _ax8(c1, a1, x, t), _ax8(d1, a1, x, t8)
                c2, d2 = _ax8(c2, a2, x, t), _ax8(d2, a2, x, t8)
                c3, d3 = _ax8(c3, a3, x, t), _ax8(d3, a3, x, t8)
            _st8(y0, t, c0)
            _st8(y1, t, c1)
            _st8(y2, t, c2)
            _st8(y3, t, c3)
            _st8(y0, t8, d0)
            _st8(y1, t8, d1)
            _st8(y2, t8, d2)
            _st8(y3, t8, d3)
            t += U(16)
    if X.itemsize <= 8:
        while t + U(8) <= k:
            c0, c1, c2, c3 = _ld8(y0, t), _ld8(y1, t), _ld8(y2, t), _ld8(y3, t)
            for p in range(s0, s1):
                x = X[U(indices[qi + p])]
                c0 = _ax8(c0, data[q0 + p], x, t)
                c1 = _ax8(c1, data[q1 + p], x, t)
                c2 = _ax8(c2, data[q2 + p], x, t)
                c3 = _ax8(c3, data[q3 + p], x, t)
            _st8(y0, t, c0)
            _st8(y1, t, c1)
            _st8(y2, t, c2)
            _st8(y3, t, c3)
            t += U(8)
    if t < k:
        for p in range(s0, s1):
            x = X[U(indices[qi + p])]
            a0, a1, a2, a3 = data[q0 + p], data[q1 + p], data[q2 + p], data[q3 + p]
            for u in range(t, k):
                y0[u] = _madd(y0[u], a0, x[u])
                y1[u] = _madd(y1[u], a1, x[u])
                y2[u] = _madd(y2[u], a2, x[u])
                y3[u] = _madd(y3[u], a3, x[u])


def _fwd1(indices, data, X, y, qi, q, s0, s1, k):
    # y[t] += data[q + p] * X[indices[qi + p], t] for s0 <= p < s1 in order: one row.
    p = s0
    while p + U(4) <= s1:
        x0, x1 = X[U(indices[qi + p])], X[U(indices[qi + p + U(1)])]
        x2, x3 = X[U(indices[qi + p + U(2)])], X[U(indices[qi + p + U(3)])]
        a0, a1, a2, a3 = data[q + p], data[q + p + U(1)], data[q + p + U(2)], data[q + p + U(3)]
        for t in range(k):
            y[t] = _ma4(y[t], a0, x0[t], a1, x1[t], a2, x2[t], a3, x3[t])
        p += U(4)
    while p < s1:
        x0 = X[U(indices[qi + p])]
        a0 = data[q + p]
        for t in range(k):
            y[t] = _madd(y[t], a0, x0[t])
        p += U(1)


def _b_fwd_mat(indptr, indices, data, X, Y, order, r0, r1, zero):
    # Y[i] = sum_p data[p] * X[indices[p]] for the rows i = order[r], r0 <= r < r1.
    k = U(X.shape[1])
    seg = max(U(8), U(SEGMENT_BYTES) // max(U(1), k * U(X.itemsize)))
    r = U(r0)
    rend = U(r1)
    while r < rend:
        qi, L, n = _run(indptr, indices, order, r, rend)
        for g in range(n):
            yr = Y[U(order[r + g])]
            for t in range(k):
                yr[t] = zero
        for s0 in range(U(0), L, seg):
            s1 = min(s0 + seg, L)
            g = U(0)
            while g + U(4) <= n:
                i0, i1, i2, i3, q0, q1, q2, q3 = _four(indptr, order, r + g)
                _fwd4(indices, data, X, Y[i0], Y[i1], Y[i2], Y[i3], qi, q0, q1, q2, q3, s0, s1, k)
                g += U(4)
            while g < n:
                i0 = U(order[r + g])
                _fwd1(indices, data, X, Y[i0], qi, U(indptr[i0]), s0, s1, k)
                g += U(1)
        r += n


def _tr4(indices, data, acc, y0, y1, y2, y3, qi, q0, q1, q2, q3, s0, s1, k):
    # acc[indices[qi + p], t] += data[q_g + p] * y_g[t] for s0 <= p < s1 in order, rows g = 0..3 in order.
    t = U(0)
    if acc.itemsize <= 4:  # 16 columns of the four rows of Y in 8 vector registers
        while t + U(16) <= k:
            t8 = t + U(8)
            v0, v1, v2, v3 = _ld8(y0, t), _ld8(y1, t), _ld8(y2, t), _ld8(y3, t)
            w0, w1, w2, w3 = _ld8(y0, t8), _ld8(y1, t8), _ld8(y2, t8), _ld8(y3, t8)
            for p in range(s0, s1):
                z = acc[U(indices[qi + p])]
                a0, a1, a2, a3 = data[q0 + p], data[q1 + p], data[q2 + p], data[q3 + p]
                _sc8(z, t, a0, v0, a1, v1, a2, v2, a3, v3)
                _sc8(z, t8, a0, w0, a1, w1, a2, w2, a3, w3)
            t += U(16)
    if acc.itemsize <= 8:
        while t + U(8) <= k:
            v0, v1, v2, v3 = _ld8(y0, t), _ld8(y1, t), _ld8(y2, t), _ld8(y3, t)
            for p in range(s0, s1):
                _sc8(acc[U(indices[qi + p])], t, data[q0 + p], v0, data[q1 + p], v1, data[q2 + p], v2, data[q3 + p], v3)
            t += U(8)
    if t < k:
        for p in range(s0, s1):
            z = acc[U(indices[qi + p])]
            a0, a1, a2, a3 = data[q0 + p], data[q1 + p], data[q2 + p], data[q3 + p]
            for u in range(t, k):
                z[u] = _ma4(z[u], a0, y0[u], a1, y1[u], a2, y2[u], a3, y3[u])


def _b_tr_mat(indptr, indices, data, Y, acc, order, r0, r1, zero, clear):
    # acc[indices[p]] += data[p] * Y[i] for the rows i = order[r], r0 <= r < r1 (acc zeroed first if clear).
    k = U(Y.shape[1])
    if clear:
        for j in range(U(acc.shape[0])):
            ar = acc[j]
            for t in range(k):
                ar[t] = zero
    seg = max(U(8), U(SEGMENT_BYTES) // max(U(1), k * U(acc.itemsize)))
    r = U(r0)
    rend = U(r1)
    while r < rend:
        qi, L, n = _run(indptr, indices, order, r, rend)
        for s0 in range(U(0), L, seg):
            s1 = min(s0 + seg, L)
            g = U(0)
            while g + U(4) <= n:
                i0, i1, i2, i3, q0, q1, q2, q3 = _four(indptr, order, r + g)
                _tr4(indices, data, acc, Y[i0], Y[i1], Y[i2], Y[i3], qi, q0, q1, q2, q3, s0, s1, k)
                g += U(4)
            while g < n:
                i0 = U(order[r + g])
                yr = Y[i0]
                q = U(indptr[i0])
                for p in range(s0, s1):
                    a0 = data[q + p]
                    zr = acc[U(indices[qi + p])]
                    for t in range(k):
                        zr[t] = _madd(zr[t], a0, yr[t])
                g += U(1)
        r += n


#: Helpers the kernels call, callable from Python as they are.  Registered as plain jitted functions,
#: which LLVM inlines: inlined by Numba (``inline="always"``) the first compilation of ``fwd_mat`` took
#: about 50 s instead of 3.6 s, for the same machine code speed and the same bits.
INLINED = (_run, _four, _ld8, _st8, _ax8, _ma4, _sc8, _fwd4, _fwd1, _tr4)


def register(numba):
    """Make :func:`_madd` (one ``llvm.fma``; complex: four) and :data:`INLINED` known to Numba.

    Called once per process, under Numba's compiler lock, by :func:`convmat.spmm._kernels.register`.
    A complex ``c + a b`` is ``(fma(a.re, b.re, fma(-a.im, b.im, c.re)),
    fma(a.re, b.im, fma(a.im, b.re, c.im)))``, operands first converted to the result dtype.
    """
    from numba.core import types
    from numba.extending import intrinsic, overload, register_jitable
    from numba.np.numpy_support import as_dtype, from_dtype

    @intrinsic
    def fma(typingctx, c, a, b):
        rt = from_dtype(np.result_type(as_dtype(c), as_dtype(a), as_dtype(b)))

        def codegen(context, builder, sig, args):
            c, a, b = (context.cast(builder, v, t, rt) for v, t in zip(args, sig.args))
            if not isinstance(rt, types.Complex):
                return builder.fma(a, b, c)
            c, a, b = (context.make_complex(builder, rt, value=v) for v in (c, a, b))
            out = context.make_complex(builder, rt)
            out.real = builder.fma(a.real, b.real, builder.fma(builder.fneg(a.imag), b.imag, c.real))
            out.imag = builder.fma(a.real, b.imag, builder.fma(a.imag, b.real, c.imag))
            return out._getvalue()

        return rt(c, a, b), codegen

    overload(_madd, inline="always")(lambda c, a, b: lambda c, a, b: fma(c, a, b))

    for fn in INLINED:
        register_jitable(fn)

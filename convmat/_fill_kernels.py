"""The source of the compiled fill: Numba kernels written as plain Python, and the tables they read.

:mod:`convmat.fill` compiles :func:`fill_rows`, :func:`mul_rows` and :func:`scatter_rows` (when
Numba imports; this module never imports it) and drives them; the functions
here also run, slowly, as plain Python, which the tests use.  Kept apart from
the driver so that Numba's on-disk cache, keyed by this file, survives edits
of the driver.
"""

from __future__ import annotations

import numpy as np

from .pattern import axis_table
from .sizes import interior_rows
from .spmm._kernels import _b_fwd_vec, _b_tr_vec, _b_tr_vec4

__all__ = ["fill_rows", "forward_table", "mul_rows", "scatter_rows", "period_key", "table_arrays", "NO_SHIFT", "TRIVIAL"]


U = np.uint64  # unsigned indices: Numba skips negative-index wraparound for them


def _row(ptr, first, count, delta, l):
    """``(stored start, length, column shift)`` of local row ``l`` of a table (see :func:`table_arrays`)."""
    i = l
    shift = 0
    if count > 0 and l >= first:
        if l < first + count:
            i = first
            shift = (l - first) * delta
        else:
            i = l - count + 1
    p = ptr[U(i)]
    return p, ptr[U(i + 1)] - p, shift


def fill_rows(W, pieces, a, b, g1, g2, N, Cg, KP,
              r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
              r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
              r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
              P, key, indptr, indices, data):
    """Spatial rows ``[a, b)`` of each output channel of ``pieces`` (rows ``(c, coff, dst, row)``, see
    :func:`_fill_piece`), one after the other.

    The channels share the rows' structure: the first piece writes it, the others copy its column
    indices (shifted to their group's columns) and row pointers, and write only their values.
    """
    n = 0
    for q in range(pieces.shape[0]):
        c, coff, dst, row = pieces[q, 0], pieces[q, 1], pieces[q, 2], pieces[q, 3]
        if q > 0:
            d0, r0, shift = pieces[0, 2], pieces[0, 3], coff - pieces[0, 1]
            for i in range(U(n)):
                indices[U(dst) + i] = indices[U(d0) + i] + shift
            for i in range(U(b - a)):
                indptr[U(row + 1) + i] = indptr[U(r0 + 1) + i] - d0 + dst
        _fill_piece(W, c, coff, a, b, dst, row, g1, g2, N, Cg, KP,
                    r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
                    r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
                    r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
                    P, key, indptr, indices, data, q == 0)
        if q == 0:
            n = indptr[U(row + b - a)] - dst  # entries of the piece (its last row pointer, less its first entry)


def mul_rows(W, pieces, a, b, g1, g2, N, Cg, KP,
             r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
             r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
             r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
             P, key, x, y, zero, sptr, sidx, sdat, block):
    """``y[row + r - a] = (row r of channel c) @ x`` for the pieces' rows ``[a, b)``, nothing stored.

    ``block`` rows at a time are written into the scratch CSR arrays ``(sptr, sidx, sdat)`` (a
    few hundred kB: they stay in the caches) by :func:`_fill_piece` and multiplied by the
    one-vector row kernel of :mod:`convmat.spmm` (``fwd_vec``): each ``y`` entry has the bits of
    the same row of the stored matrix's product.
    """
    for q in range(pieces.shape[0]):
        c, coff, row = pieces[q, 0], pieces[q, 1], pieces[q, 3]
        r = a
        while r < b:
            e = min(b, r + block)
            sptr[0] = 0
            _fill_piece(W, c, coff, r, e, 0, 0, g1, g2, N, Cg, KP,
                        r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
                        r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
                        r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
                        P, key, sptr, sidx, sdat, True)
            _b_fwd_vec(sptr, sidx, sdat, x, y[row + r - a : row + e - a], 0, e - r, zero)
            r = e


def scatter_rows(W, pieces, a, b, g1, g2, N, Cg, KP,
                 r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
                 r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
                 r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
                 P, key, y, acc, zero, sptr, sidx, sdat, ys, block):
    """``acc += (rows [a, b) of the pieces' channels)^T y``, nothing stored: the transposed one-vector
    kernels of :mod:`convmat.spmm` on rows written ``block`` at a time into a scratch.

    One piece ``(c, coff, _, row)``: its rows one after the other (``tr_vec``).  Four pieces (the
    rows of four channels a quarter of the matrix apart, at the same positions): slot by slot, the
    four rows of a slot together (``tr_vec4``).  ``y[row + r - a]`` multiplies row ``r`` of a piece.
    Each entry of ``acc`` receives the same terms in the same order as from the stored matrix's
    rows, visited in the same order: the same bits.
    """
    nq = pieces.shape[0]
    r = a
    while r < b:
        e = min(b, r + block)
        L = e - r
        sptr[0] = 0
        for q in range(nq):
            c, coff, row = pieces[q, 0], pieces[q, 1], pieces[q, 3]
            _fill_piece(W, c, coff, r, e, sptr[q * L], q * L, g1, g2, N, Cg, KP,
                        r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
                        r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
                        r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
                        P, key, sptr, sidx, sdat, True)
            for t in range(L):
                ys[q * L + t] = y[row + r - a + t]
        if nq == 4:
            _b_tr_vec4(sptr, sidx, sdat, ys, acc, L, 0, L, zero, False)
        else:
            _b_tr_vec(sptr, sidx, sdat, ys, acc, 0, L, zero, False)
        r = e


def _fill_piece(W, c, coff, a, b, dst, row, g1, g2, N, Cg, KP,
                r00, ptr0, cols0, taps0, first0, count0, delta0, cs0, ts0,
                r01, ptr1, cols1, taps1, first1, count1, delta1, cs1, ts1,
                r02, ptr2, cols2, taps2, first2, count2, delta2, cs2, ts2,
                P, key, indptr, indices, data, structure):
    """Rows ``[a, b)`` of output channel ``c``: entries from ``dst``, row pointers from ``indptr[row + 1]``;
    the columns of input channel ``ci`` start at ``coff + ci * N``.  With ``structure`` False only the
    values are written (the column indices and row pointers are there already).

    Spatial row ``r`` is ``(j0, j1, j2)`` in a grid ``(*, g1, g2)``; axis
    ``x`` of it is local row ``jx - r0x`` of that axis's table
    (:func:`table_arrays`).  ``W[c]`` is the packed weight of the output
    channel (``ci * KP + sum tap_x * ts_x``).  Rows whose last-axis table
    rows are consecutive copies are written as the row before them with its
    columns shifted; so are rows whose last-axis row ``l`` is row ``l - P``
    shifted by ``key[l - P]`` (``NO_SHIFT`` where it is not), as the rows of
    a transposed axis with stride ``P`` are.
    """
    m0 = taps0.shape[1]
    m1 = taps1.shape[1]
    m2 = taps2.shape[1]
    single = m0 == 1 and m1 == 1 and m2 == 1
    w = W[c]
    pos = U(dst)
    prev = pos
    g12 = g1 * g2
    j0 = a // g12
    j1 = (a - j0 * g12) // g2
    j2 = a - j0 * g12 - j1 * g2
    r = a
    while r < b:
        l0 = j0 - r00
        l1 = j1 - r01
        l2 = j2 - r02
        if r > a and j2 > 0 and first2 < l2 and l2 < first2 + count2:
            # rows r, ..., r + R - 1: each the row before it, columns shifted by delta2
            R = min(first2 + count2 - l2, g2 - j2, b - r)
            n = pos - prev
            shift = delta2 * cs2
            for i in range(n):  # the first row of the run, then the rows so far doubled (long loops)
                if structure:
                    indices[pos + i] = indices[prev + i] + shift
                data[pos + i] = data[prev + i]
            done = 1
            while done < R:
                m = min(done, R - done)
                at = pos + U(done) * n
                step = done * shift
                for i in range(U(m) * n):
                    if structure:
                        indices[at + i] = indices[pos + i] + step
                    data[at + i] = data[pos + i]
                done += m
            for i in range(R):
                indptr[U(row + 1 + r - a + i)] = pos + U(i + 1) * n
            prev = pos + U(R - 1) * n
            pos += U(R) * n
            r += R
            j2 += R
        elif P > 0 and j2 >= P and r - P >= a and l2 >= P and key[U(l2 - P)] != NO_SHIFT:
            # rows r, ..., r + R - 1: each the row P before it, columns shifted by the same step
            step = key[U(l2 - P)]
            R = 1
            while r + R < b and j2 + R < g2 and key[U(l2 + R - P)] == step:
                R += 1
            shift = step * cs2
            q = row + r - P - a  # row r - P starts where the row before it ends
            s0 = U(dst) if r - P == a else U(indptr[U(q)])
            L0 = pos - s0  # the entries of P consecutive rows
            for k in range(R):
                indptr[U(q + P + 1 + k)] = U(indptr[U(q + 1 + k)]) + L0
            E = U(indptr[U(q + P + R)]) - pos
            done = U(0)  # entries [s0, pos + done) doubled at each pass, shifted by whole periods
            while done < E:  # (E > 0 means L0 > 0: the rows are those P before, shifted)
                m = min(done + L0, E - done)
                ks = np.int64((done + L0) // L0) * shift
                at = pos + done
                for i in range(m):
                    if structure:
                        indices[at + i] = indices[s0 + i] + ks
                    data[at + i] = data[s0 + i]
                done += m
            prev = U(indptr[U(q + P + R - 1)]) if R > 1 else pos
            pos += E
            r += R
            j2 += R
        else:
            prev = pos
            s0, n0, d0 = _row(ptr0, first0, count0, delta0, l0)
            s1, n1, d1 = _row(ptr1, first1, count1, delta1, l1)
            s2, n2, d2 = _row(ptr2, first2, count2, delta2, l2)
            for ci in range(Cg):
                cbase = coff + ci * N
                tbase = ci * KP
                for e0 in range(U(s0), U(s0 + n0)):
                    col0 = cbase + (cols0[e0] + d0) * cs0
                    for e1 in range(U(s1), U(s1 + n1)):
                        col1 = col0 + (cols1[e1] + d1) * cs1 + d2 * cs2
                        if single:
                            t01 = tbase + taps0[e0, U(0)] * ts0 + taps1[e1, U(0)] * ts1
                            for e2 in range(U(s2), U(s2 + n2)):
                                if structure:
                                    indices[pos] = col1 + cols2[e2] * cs2
                                data[pos] = w[U(t01 + taps2[e2, U(0)] * ts2)]
                                pos += U(1)
                        else:
                            for e2 in range(U(s2), U(s2 + n2)):
                                if structure:
                                    indices[pos] = col1 + cols2[e2] * cs2
                                v = w[U(tbase + taps0[e0, U(0)] * ts0 + taps1[e1, U(0)] * ts1 + taps2[e2, U(0)] * ts2)]
                                first = True
                                for q0 in range(U(m0)):
                                    for q1 in range(U(m1)):
                                        for q2 in range(U(m2)):
                                            if first:
                                                first = False
                                            else:
                                                v += w[U(tbase + taps0[e0, q0] * ts0 + taps1[e1, q1] * ts1
                                                         + taps2[e2, q2] * ts2)]
                                data[pos] = v
                                pos += U(1)
            indptr[U(row + 1 + r - a)] = pos
            r += 1
            j2 += 1
        if j2 == g2:
            j2 = 0
            j1 += 1
            if j1 == g1:
                j1 = 0
                j0 += 1


#: ``key`` where a row is not a shifted copy of the row ``P`` before it.
NO_SHIFT = np.iinfo(np.int64).min


def period_key(p, P):
    """``key[i]``: the column shift from local row ``i`` to row ``i + P`` of table ``p`` where the latter is a
    shifted copy of the former (same length and taps), else :data:`NO_SHIFT`."""
    from .structure import _row_steps

    return np.ascontiguousarray(_row_steps(p, 0, p.n_rows, P), dtype=np.int64)


def table_arrays(p):
    """``(row0, ptr, cols, taps, first, count, delta)``: an :class:`~convmat.pattern.AxisPattern` as the kernel reads it.

    The rows ``first <= l < first + count`` (its ``copies``, at most one
    run) are row ``first`` with columns shifted by ``(l - first) * delta``
    and have no row pointers: ``ptr`` lists rows ``[0, first]`` and then
    ``[first + count, n_rows)``, and row ``l`` past the run is ``ptr`` entry
    ``l - count + 1``.  ``ptr`` points straight into ``cols`` and ``taps``.
    """
    if len(p.copies) > 1:
        raise ValueError(f"a table with one run of copies at most, got {p.copies!r}")
    first, count, delta = p.copies[0] if p.copies else (0, 0, 0)
    e0, n = p.skip
    ptr = p.ptr
    if count:  # drop the run's rows but its first; the entries after it are stored ``n`` earlier
        ptr = np.concatenate((ptr[: first + 1], ptr[first + count :] - n))
    return (int(p.row0), np.ascontiguousarray(ptr, dtype=np.int64), np.ascontiguousarray(p.cols, dtype=np.int64),
            np.ascontiguousarray(p.taps, dtype=np.int64), int(first), int(count), int(delta))


def forward_table(ax, r0, r1):
    """:func:`table_arrays` of forward rows ``[r0, r1)`` of axis ``ax``, in time independent of the interior rows.

    The rows whose taps all land inside (:func:`convmat.sizes.interior_rows`)
    are shifted copies of the first of them, by the stride: only the rows
    before and after them are made (:func:`convmat.pattern.axis_table`).
    """
    i0, i1 = interior_rows(ax)
    i0, i1 = min(max(i0, r0), r1), max(min(i1, r1), r0)
    if i1 - i0 < 2:
        return table_arrays(axis_table(ax, r0, r1, compact=True))
    head, tail = axis_table(ax, r0, i0 + 1), axis_table(ax, i1, r1)  # head's last row: the run's first
    m = max(head.slots, tail.slots)
    taps = np.full((head.taps.shape[0] + tail.taps.shape[0], m), ax.k, dtype=np.int64)
    taps[: head.taps.shape[0], : head.slots] = head.taps
    taps[head.taps.shape[0] :, : tail.slots] = tail.taps
    ptr = np.concatenate((head.ptr, tail.ptr[1:] + head.ptr[-1]))
    return (r0, ptr, np.concatenate((head.cols, tail.cols)), taps, i0 - r0, i1 - i0, ax.s)


#: The padding axis: one row, one entry at column 0 with tap 0.
TRIVIAL = (0, np.array([0, 1], dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros((1, 1), dtype=np.int64), 0, 0, 0)

"""NumPy twins of the exact kernels ``fwd_vec``, ``tr_vec`` and ``reduce``: the same bits, without Numba.

:func:`convmat.spmm.csr_matmul` computes one-vector products here while Numba
is not loaded yet (the first products in a process, while
:mod:`convmat.spmm._threads` loads Numba in the background) and when Numba
does not import.  The compiled kernels (:data:`convmat.spmm._kernels.EXACT`)
run without reassociation or fused multiply-adds, in the order their source
spells out; here every step is an elementwise NumPy ufunc (each result
rounded once) or ``np.add.at``, which adds its values one after the other in
the order given.  So every sum is added in the kernel's order and the results
are the same bits (NaN payloads aside: which of two NaN operands an addition
returns is not specified).

* ``A @ x``: the products ``data[p] * x[indices[p]]`` of row ``i`` go to
  lane ``8 * i + (p - indptr[i]) % 8``, in order (``np.add.at`` on zeros);
  the eight lanes of a row are then added as the kernel adds them,
  ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``.
* ``A.T @ y``: block ``b`` of rows (the kernel's blocks) adds
  ``data[p] * y[i]`` into its partial result at ``indices[p]``, entry after
  entry (``np.add.at`` on zeros); the result is
  ``((part[0] + part[1]) + part[2]) + ...``, as the kernel ``reduce`` adds them.
  With four quarters of rows sharing their columns (``tr_vec4``: the blocks
  are of slots ``s``, rows ``s + kP``), a slot whose four rows have the same
  columns adds ``((d0 y0 + d1 y1) + d2 y2) + d3 y3`` per entry, the others
  add their rows' entries row after row.
* Complex products are ``(ac - bd) + (ad + bc)i`` from real ufuncs, as Numba
  computes them (no fused multiply-add in either).

Entries are processed in chunks of :data:`CHUNK` non-zeros, in order, so the
temporaries stay bounded whatever the size of the matrix.
"""

from __future__ import annotations

import numpy as np

from ._kernels import LANES
from ._threads import parallel

__all__ = ["fwd_vec", "tr_vec", "tr_vec4", "CHUNK"]

#: Non-zeros per chunk: temporaries of a few times CHUNK values and indices, small enough to stay
#: in cache and be reused chunk after chunk (in a fresh process, large temporaries cost a page
#: fault per 4 KiB: the first product of a 28.6 M-entry matrix took 0.75 s with chunks of 4 M
#: entries, 0.16-0.19 s with 128-256 K).
CHUNK = 1 << 17


def _mul(a, b):
    """``a * b`` elementwise, both of the result dtype, in the kernels' arithmetic."""
    if a.dtype.kind != "c":
        return a * b
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
    np.subtract(a.real * b.real, a.imag * b.imag, out=out.real)
    np.add(a.real * b.imag, a.imag * b.real, out=out.imag)
    return out


def _chunks(indptr, r0, r1, pieces=1):
    """Row boundaries within ``[r0, r1)``: consecutive runs of at most about CHUNK non-zeros, at least ``pieces``."""
    p0, p1 = int(indptr[r0]), int(indptr[r1])
    size = max(1, min(CHUNK, -(-(p1 - p0) // pieces)))
    if p1 - p0 <= size:
        return [r0, r1]
    cuts = np.searchsorted(indptr[r0 : r1 + 1], np.arange(p0 + size, p1, size), side="right") - 1 + r0
    return [r0, *sorted({int(c) for c in cuts} - {r0, r1}), r1]


def _products(indptr, indices, data, v, r0, r1, rows_operand):
    """The products of the entries of rows ``[r0, r1)``: ``data[p] * v[indices[p]]``, or ``data[p] * v[i]``."""
    p0, p1 = int(indptr[r0]), int(indptr[r1])
    if rows_operand:
        w = np.repeat(v[r0:r1], np.diff(indptr[r0 : r1 + 1]))
    else:
        w = v[indices[p0:p1]]
    a = data[p0:p1]
    if a.dtype.kind != "c" and w.dtype.kind != "c":
        return np.multiply(a, w, out=w)  # the result dtype (w's), as the kernels' mixed products
    return _mul(a.astype(w.dtype, copy=False), w)


def fwd_vec(indptr, indices, data, x, y, threads=1):
    """``y = A @ x`` (the kernel ``fwd_vec`` on every row), ``x`` and ``y`` of the result dtype.

    Chunks of rows run on ``threads`` threads (NumPy releases the GIL); every row is computed
    the same way whichever thread takes it.
    """
    rows = _chunks(indptr, 0, y.size, threads)
    parallel(lambda w, c: _fwd_rows(indptr, indices, data, x, y, rows[c], rows[c + 1]), len(rows) - 1, threads)


def _fwd_rows(indptr, indices, data, x, y, r0, r1):
    with np.errstate(all="ignore"):  # NaN and inf propagate silently, as in the kernels
        m = r1 - r0
        lens = np.diff(indptr[r0 : r1 + 1])
        nnz = int(indptr[r1]) - int(indptr[r0])
        itype = np.int32 if max(nnz, LANES * m) < 2**31 else np.int64
        lane = np.arange(nnz, dtype=itype)
        lane -= np.repeat((indptr[r0:r1] - indptr[r0]).astype(itype), lens)  # the position in the row
        lane &= LANES - 1
        lane += np.repeat(np.arange(0, LANES * m, LANES, dtype=itype), lens)
        acc = np.zeros((m, LANES), dtype=y.dtype)
        np.add.at(acc.reshape(-1), lane, _products(indptr, indices, data, x, r0, r1, False))
        pairs = acc[:, 0::2] + acc[:, 1::2]
        quads = pairs[:, 0::2] + pairs[:, 1::2]
        np.add(quads[:, 0], quads[:, 1], out=y[r0:r1])


def tr_vec(indptr, indices, data, y, out, bounds, threads=1):
    """``out = A.T @ y`` summed as the kernels ``tr_vec`` (block ``b`` = rows ``bounds[b]:bounds[b+1]``) and ``reduce``.

    Blocks run on ``threads`` threads, each into its own partial result; the partial results
    are added in block order.
    """
    parts = [out] + [np.empty_like(out) for _ in range(len(bounds) - 2)]
    parallel(lambda w, b: _tr_block(indptr, indices, data, y, parts[b], bounds[b], bounds[b + 1]), len(parts), threads)
    with np.errstate(all="ignore"):
        for part in parts[1:]:
            out += part


def _tr_block(indptr, indices, data, y, acc, r0, r1):
    acc.fill(0)
    with np.errstate(all="ignore"):
        rows = _chunks(indptr, r0, r1)
        for c0, c1 in zip(rows[:-1], rows[1:]):
            p0, p1 = int(indptr[c0]), int(indptr[c1])
            np.add.at(acc, indices[p0:p1], _products(indptr, indices, data, y, c0, c1, True))


def tr_vec4(indptr, indices, data, y, out, P, bounds, threads=1):
    """``out = A.T @ y`` summed as the kernels ``tr_vec4`` (block ``b``: slots ``bounds[b]:bounds[b+1]``) and
    ``reduce``."""
    parts = [out] + [np.empty_like(out) for _ in range(len(bounds) - 2)]
    parallel(lambda w, b: _tr4_block(indptr, indices, data, y, parts[b], P, bounds[b], bounds[b + 1]), len(parts),
             threads)
    with np.errstate(all="ignore"):
        for part in parts[1:]:
            out += part


def _tr4_block(indptr, indices, data, y, acc, P, s0, s1):
    acc.fill(0)
    with np.errstate(all="ignore"):
        slots = _chunks(indptr, s0, s1)
        for c0, c1 in zip(slots[:-1], slots[1:]):
            _tr4_slots(indptr, indices, data, y, acc, P, c0, c1)


def _runs(flags):
    """``[(start, stop, value)]`` of the maximal runs of equal values of a boolean array."""
    cuts = [0, *(np.flatnonzero(np.diff(flags)) + 1).tolist(), flags.size]
    return [(r0, r1, bool(flags[r0])) for r0, r1 in zip(cuts[:-1], cuts[1:])]


def _tr4_slots(indptr, indices, data, y, acc, P, c0, c1):
    """Slots ``[c0, c1)`` in order: runs of slots whose four rows share their columns, one vectorised
    step each (the rows of a run are consecutive: their entries are four aligned slices); the
    other slots row after row."""
    if c1 <= c0:
        return
    ptr = [indptr[c0 + k * P : c1 + k * P + 1].astype(np.int64) for k in range(4)]
    lens = np.diff(ptr[0])
    ok = (np.diff(ptr[1]) == lens) & (np.diff(ptr[2]) == lens) & (np.diff(ptr[3]) == lens)
    for r0, r1, same in _runs(ok):  # same lengths: compare the columns, slice against slice
        if same:
            cols = indices[ptr[0][r0] : ptr[0][r1]]
            bad = np.zeros(cols.size, dtype=bool)
            for k in (1, 2, 3):
                bad |= cols != indices[ptr[k][r0] : ptr[k][r1]]
            if bad.any():
                slot = np.repeat(np.arange(r0, r1), lens[r0:r1])
                ok[np.unique(slot[bad])] = False
    for r0, r1, same in _runs(ok):
        if same:
            n = lens[r0:r1]
            val = None
            for k in range(4):
                d = data[ptr[k][r0] : ptr[k][r1]].astype(y.dtype, copy=False)
                term = _mul(d, np.repeat(y[c0 + r0 + k * P : c0 + r1 + k * P], n))
                if val is None:
                    val = term
                else:
                    val += term
            np.add.at(acc, indices[ptr[0][r0] : ptr[0][r1]], val)
        else:
            for s in range(c0 + r0, c0 + r1):
                for k in range(4):
                    a = s + k * P
                    p0, p1 = int(indptr[a]), int(indptr[a + 1])
                    np.add.at(acc, indices[p0:p1], _products(indptr, indices, data, y, a, a + 1, True))

"""The compiled fill: a chunk's rows written in one pass by a Numba kernel (host arrays only).

:mod:`convmat.assemble` builds a chunk of spatial rows either with array
operations, which every backend runs (NumPy, CuPy, torch), or -- for host
arrays when Numba imports -- with :func:`fill_rows`, which writes each entry's
column index and value once, in row order, straight from the per-axis tables
of the chunk.  Both give the same bits: the entries of a row are ``(ci, p_1,
..., p_D)`` in that order (the in-group input channel, then one entry of each
axis table), the column is ``col_offset + ci * N + sum_a col_a * N_a``, and
the value sums the gathered weights of the slot combinations in
``itertools.product`` order, first one assigned, the others added (the array
path's ``take`` then ``+=``), without fast-math.

A table row is described by three numbers (:func:`table_arrays`): where its
entries are stored, how many it has, and the shift of its columns -- the
interior rows of a table (``AxisPattern.copies``) are its first interior row,
shifted, and forward tables make no other interior row at all
(:func:`forward_table`).  Tables of fewer than three axes are padded in front
with a trivial axis (one row, one entry, column 0, tap 0).  Interior rows are
written as copies of the row before them (of the row a stride before, for a
transposed axis), doubled in long loops; the output channels of a chunk
share one structure, written once and copied.

Nothing here imports Numba until a kernel is asked for.  A build never waits
for it (:func:`for_build`): large builds run the array path and
the third one starts loading the kernel of its dtypes on a daemon thread
(:func:`after_build`, :func:`kernel`; a build or two followed by products
never load it); a build that comes while it loads waits
up to ``FILL_KERNEL_PATIENCE`` for it; a fork waits for the loader.  The
kernel source runs (slowly) as plain Python too, which the tests use.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .pattern import axis_table
from .spmm._kernels import _b_fwd_vec
from .sizes import interior_rows

__all__ = [
    "after_build", "fill_rows", "for_build", "forward_table", "kernel", "load", "loaded", "loading", "mul_rows",
    "multiplier", "multiply", "period_key", "ready", "run", "settle", "table_arrays", "NO_SHIFT", "TRIVIAL",
]



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

#: Whether host builds may run the compiled fill (tests turn it off to run the array path).
USE_FILL_KERNEL = True
#: Host builds run the compiled fill once Numba is loaded, and load it for builds of this many non-zeros.
FILL_KERNEL_NNZ = 1 << 20
#: Whether a build waits for the compiled fill to load (tests do) rather than run the array path meanwhile.
FILL_KERNEL_WAIT = False
#: Seconds a build waits for a background load of the compiled fill before it runs the array path.
FILL_KERNEL_PATIENCE = 1.0


#: Tables of at most this many rows are kept (:func:`_kernel_table`'s cache) for the next chunk or build.
_CACHED_TABLE_ROWS = 4096


@functools.lru_cache(maxsize=64)
def _kernel_table(ax, r0, r1, T, last):
    """:func:`table_arrays` of rows ``[r0, r1)`` of an axis, and for the last axis
    ``(P, key)``: a transposed axis's rows are shifted copies of the row a stride ``P`` before."""
    if not T:
        out = forward_table(ax, r0, r1)
        return out + (0, np.zeros(0, dtype=np.int64)) if last else out
    p = axis_table(ax, r0, r1, transposed=True)
    out = table_arrays(p)
    if last:
        P = ax.s if ax.s < p.n_rows else 0
        out += (P, period_key(p, P) if P else np.zeros(0, dtype=np.int64))
    return out


def for_build(be, nnz, vdtype, idt):
    """The compiled fill for this build, or None for the array path (same bits either way).

    Until the kernel of its dtypes is loaded a build runs the array path; the third large build
    starts loading it when it is done (:func:`after_build`), so the load overlaps whatever the
    caller does next; a build that
    comes while it is loading waits for it (up to FILL_KERNEL_PATIENCE) rather than run beside it
    (the import holds the GIL: both would crawl).  FILL_KERNEL_WAIT: always load first.
    """
    if not (USE_FILL_KERNEL and be.host_arrays) or (nnz < FILL_KERNEL_NNZ and loaded() is None
                                                    and not loading()):
        return None
    found = ready(vdtype, idt)
    if found is None and FILL_KERNEL_WAIT:
        found = kernel(vdtype, idt, wait=True)
    elif found is None and loading():  # loading from Numba's cache takes well under a second;
        settle(timeout=FILL_KERNEL_PATIENCE)  # compiling (an empty cache) takes seconds: then go on
        found = ready(vdtype, idt)
    return found


#: The large host builds (of FILL_KERNEL_NNZ entries or more) in a process before one starts loading the
#: compiled fill.
FILL_KERNEL_AFTER = 3


def after_build(be, nnz, vdtype, idt):
    """After an array-path build: the FILL_KERNEL_AFTER-th large host build starts loading the compiled fill.

    Not the first ones: a process that builds a matrix or two and then multiplies (a solver) would
    only have the loader compete with its first products for the GIL (first product 0.32 s instead
    of 0.07 s, ``benchmarks/cold_start.py``); a process that keeps building gets the kernel.
    """
    if USE_FILL_KERNEL and be.host_arrays and nnz >= FILL_KERNEL_NNZ:
        _STATE["large_builds"] += 1
        if _STATE["large_builds"] >= FILL_KERNEL_AFTER:
            kernel(vdtype, idt)


def run(plan, chunks, by_range, compiled, W, threads, threaded, out, cols):
    """The pieces of :func:`convmat.assemble._assemble` written by the compiled fill ``compiled``: same bits.

    ``by_range`` maps chunks ``(aligned start, a, b)`` to their pieces ``(channel, entry, row)``;
    ``out`` is ``(indptr, indices, data)``; ``cols`` is ``(N, f0)``, the column numbering.
    """
    axes, grid, T = plan.geometry.axes, plan.grid, plan.transposed
    pad = 3 - len(axes)
    g = (1,) * pad + tuple(grid)
    N, f0 = cols
    Cg, Rg = plan.cols_per_group, plan.row_channels // plan.groups
    n_cols = (1,) * pad + tuple(ax.o if T else ax.n for ax in axes)
    kp = (1,) * pad + tuple(ax.k + 1 for ax in axes)
    cs = [math.prod(n_cols[i + 1 :]) for i in range(3)]
    ts = [math.prod(kp[i + 1 :]) for i in range(3)]
    KP = math.prod(kp)

    def tables(ca):
        per_axis = [TRIVIAL] * pad
        for i, (ax, rng) in enumerate(zip(axes, chunks.ranges(ca))):
            last = i == len(axes) - 1
            small = rng[1] - rng[0] <= _CACHED_TABLE_ROWS
            per_axis.append((_kernel_table if small else _kernel_table.__wrapped__)(ax, *rng, T, last))
        return [x for i, t in enumerate(per_axis) for x in t[:7] + (cs[i], ts[i])] + list(per_axis[-1][7:])

    def one(key, group, tabs):
        _, a, b = key
        pieces = np.array([(c, (c // Rg) * Cg * N - f0, dst, row) for c, dst, row in group], dtype=np.int64)
        compiled(W, pieces, a, b, g[1], g[2], N, Cg, KP, *tabs, *out)

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and threaded else None
    try:
        if pool is not None and chunks.parallel(threads):  # chunks on the threads, each its own tables
            list(pool.map(lambda item: one(item[0], item[1], tables(item[0][0])), by_range.items()))
        else:  # the output channels of a chunk on the threads, a contiguous share each
            for key, group in by_range.items():
                tabs = tables(key[0])
                shares = [group[i * len(group) // threads : (i + 1) * len(group) // threads] for i in range(threads)]
                if pool is not None and len(group) > 1:
                    list(pool.map(lambda share: one(key, share, tabs), [sh for sh in shares if sh]))
                else:
                    one(key, group, tabs)
    finally:
        if pool is not None:
            pool.shutdown()


#: Rows a fused product writes into its scratch at a time (fewer if ``block_bytes`` asks).
MUL_BLOCK_ROWS = 64


def multiply(plan, chunks, by_range, compiled_mul, W, threads, x, y, row_bound, block_rows):
    """``y = C @ x`` for the rows of ``by_range`` (as :func:`run`), never storing more than a scratch
    of ``block_rows`` rows per thread (``row_bound`` entries a row at most): :func:`mul_rows`."""
    axes, grid, T = plan.geometry.axes, plan.grid, plan.transposed
    pad = 3 - len(axes)
    g = (1,) * pad + tuple(grid)
    N = plan.shape[1] // plan.col_channels
    Cg, Rg = plan.cols_per_group, plan.row_channels // plan.groups
    n_cols = (1,) * pad + tuple(ax.o if T else ax.n for ax in axes)
    kp = (1,) * pad + tuple(ax.k + 1 for ax in axes)
    cs = [math.prod(n_cols[i + 1 :]) for i in range(3)]
    ts = [math.prod(kp[i + 1 :]) for i in range(3)]
    KP = math.prod(kp)
    zero = y.dtype.type(0)
    idt = np.int32 if max(block_rows * row_bound, plan.shape[1]) <= np.iinfo(np.int32).max else np.int64

    def tables(ca):
        per_axis = [TRIVIAL] * pad
        for i, (ax, rng) in enumerate(zip(axes, chunks.ranges(ca))):
            small = rng[1] - rng[0] <= _CACHED_TABLE_ROWS
            per_axis.append((_kernel_table if small else _kernel_table.__wrapped__)(ax, *rng, T, i == len(axes) - 1))
        return [v for i, t in enumerate(per_axis) for v in t[:7] + (cs[i], ts[i])] + list(per_axis[-1][7:])

    def one(key, group, tabs):
        _, a, b = key
        pieces = np.array([(c, (c // Rg) * Cg * N, dst, row) for c, dst, row in group], dtype=np.int64)
        scratch = (np.zeros(block_rows + 1, dtype=idt), np.empty(block_rows * row_bound, dtype=idt),
                   np.empty(block_rows * row_bound, dtype=W.dtype))
        compiled_mul(W, pieces, a, b, g[1], g[2], N, Cg, KP, *tabs, x, y, zero, *scratch, block_rows)

    tasks = []
    for key, group in by_range.items():
        share = max(1, -(-len(group) // threads))
        tasks += [(key, group[i : i + share]) for i in range(0, len(group), share)]
    if threads > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda t: one(t[0], t[1], tables(t[0][0])), tasks))
    else:
        for key, group in tasks:
            one(key, group, tables(key[0]))


def multiplier(vdtype, xdtype, idt):
    """The compiled :func:`mul_rows` once its kernel for these dtypes is loaded, else None (never waits)."""
    if _STATE["mul"] is None or (np.dtype(vdtype), np.dtype(idt)) not in _STATE["ready"]:
        return None
    return _STATE["mul"]


_LOCK = threading.Lock()
_STATE = {"kernel": None, "mul": None, "error": None, "ready": set(), "pending": set(), "threads": [],
          "large_builds": 0}


def loaded():
    """The compiled :func:`fill_rows` if :func:`load` has made it, else None (never loads)."""
    return _STATE["kernel"]


def load():
    """The compiled :func:`fill_rows` (cached on disk), or None when Numba cannot be imported; waits."""
    if _STATE["kernel"] is None and _STATE["error"] is None:
        with _LOCK:
            if _STATE["kernel"] is None and _STATE["error"] is None:
                try:
                    import numba
                except ImportError as exc:
                    _STATE["error"] = exc
                    return None
                from numba.extending import register_jitable

                register_jitable(_row)
                register_jitable(_fill_piece)
                register_jitable(_b_fwd_vec)
                opts = dict(nogil=True, error_model="numpy", boundscheck=False)
                try:
                    _STATE["kernel"] = numba.njit(cache=True, **opts)(fill_rows)
                    _STATE["mul"] = numba.njit(cache=True, **opts)(mul_rows)
                except RuntimeError:  # no writable cache location
                    _STATE["kernel"] = numba.njit(**opts)(fill_rows)
                    _STATE["mul"] = numba.njit(**opts)(mul_rows)
    return _STATE["kernel"]


def _prepare(key):
    """Load Numba and the kernel's machine code for ``(value dtype, index dtype)`` (compiled or from the cache)."""
    kernel = load()
    if kernel is None:
        return None
    if key not in _STATE["ready"]:
        vdtype, idt = key
        idx = np.zeros(1, dtype=idt)
        args = (np.zeros((1, 1), dtype=vdtype), np.zeros((1, 4), dtype=np.int64), 0, 0, 1, 1, 1, 1, 1,  # no rows
                *TRIVIAL, 0, 0, *TRIVIAL, 0, 0, *TRIVIAL, 0, 0, 0, np.zeros(0, dtype=np.int64))
        kernel(*args, idx, idx, np.zeros(1, dtype=vdtype))
        vec = np.zeros(1, dtype=vdtype)  # the fused product of a vector of the same dtype (streamed operators)
        _STATE["mul"](*args, vec, vec, vdtype.type(0), idx, idx, vec, 1)
        _STATE["ready"].add(key)
    return kernel


def _background(key):
    try:
        _prepare(key)
    except Exception as exc:  # a broken Numba: builds keep the array path
        _STATE["error"] = exc
    finally:
        _STATE["pending"].discard(key)


def ready(vdtype, idt):
    """The compiled fill if its kernel for values ``vdtype`` and indices ``idt`` is loaded, else None."""
    return _STATE["kernel"] if (np.dtype(vdtype), np.dtype(idt)) in _STATE["ready"] else None


def kernel(vdtype, idt, *, wait=False):
    """The compiled fill for values ``vdtype`` and indices ``idt``, or None while it is not ready.

    With ``wait=False`` a build does not wait for Numba: the first call
    starts loading it (and the kernel of this signature) on a daemon thread
    and returns None, so that build runs the array path (the same bits);
    later builds get the kernel once it is ready.  ``wait=True`` loads it
    now.  None when Numba does not import (or failed to load).
    """
    key = (np.dtype(vdtype), np.dtype(idt))
    if key in _STATE["ready"]:
        return _STATE["kernel"]
    if _STATE["error"] is not None:
        return None
    if wait:
        return _prepare(key)
    with _LOCK:
        if key not in _STATE["pending"]:
            _STATE["pending"].add(key)
            thread = threading.Thread(target=_background, args=(key,), name="convmat-fill-loader", daemon=True)
            _STATE["threads"] = [t for t in _STATE["threads"] if t.is_alive()] + [thread]
            thread.start()
    return None


def loading() -> bool:
    """Whether a background loader started by :func:`kernel` is still running."""
    return any(t.is_alive() for t in _STATE["threads"])


def _before_fork():
    # A child forked while a loader imports Numba or compiles would inherit import and compiler
    # locks held by a thread it does not have: let the loaders finish first.
    for thread in list(_STATE["threads"]):
        if thread is not threading.current_thread():
            thread.join()


def _after_fork_in_child():
    global _LOCK
    _LOCK = threading.Lock()
    _STATE.update(pending=set(), threads=[])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def settle(timeout=None):
    """Wait for the background loaders :func:`kernel` started (at most ``timeout`` seconds in all)."""
    end = None if timeout is None else time.monotonic() + timeout
    for thread in list(_STATE["threads"]):
        thread.join(None if end is None else max(0.0, end - time.monotonic()))

"""The streamed adjoint ``C^H @ Y`` with the bits of the stored SciPy operator's, never holding ``C``.

The stored operator computes ``csr_matmul(C, Y, transpose=True, conjugate=True)``
(:mod:`convmat.spmm._products`): it cuts ``C``'s rows into blocks of about equal
cost, visits the rows of block ``b`` in a fixed order with one kernel
(``tr_vec`` row by row; ``tr_vec4`` four rows a quarter of the matrix apart at
a time; ``tr_mat`` in the row order of ``row_order``, four rows with the same
columns at a time), adding into partial result ``b``, and adds the partial
results in a fixed order.  :class:`AdjointStream` does the same with the same
kernels, blocks, orders and reduction, but builds the rows a few at a time
(at most ``block_bytes`` of them, over all threads) from the plan: the
partition, the quarter period and the row order are computed from the plan
and a profile of one output channel (the entries, first and last column of
each output position), never from the matrix.  A kernel visits the rows of a
block one after the other, so building them in pieces gives the same sums, if
a piece of ``tr_mat``'s rows never splits four rows it adds together: pieces
end only where a row's columns differ from the next row's.
"""

from __future__ import annotations

import math
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import fill
from .assemble import _Chunks, build_ranges_csr, row_ranges
from .weights import matrix_weight
from .spmm import _products as SP
from .spmm import KERNEL_DTYPES, _load


class AdjointStream:
    """``C^H @ Y`` for the matrix ``C`` of ``plan`` filled with ``weight`` (a host array of its value dtype)."""

    def __init__(self, plan, weight, block_bytes, threads):
        self.plan, self.w, self.block_bytes, self.threads = plan, weight, int(block_bytes), threads
        self.m, self.n = plan.shape
        self.O = math.prod(plan.grid)
        self.shift = plan.cols_per_group * (self.n // plan.col_channels)  # column offset of each group
        self.Rg = plan.row_channels // plan.groups
        big = np.iinfo(np.int32).max  # pieces hold column numbers and at most block_bytes of entries
        self.idt = np.dtype(np.int32 if max(self.n, self.block_bytes // 5) <= big else np.int64)
        self.unit = np.dtype(weight.dtype).itemsize + self.idt.itemsize  # bytes per entry
        self._profile = None
        self._P = None
        self._chunks = _Chunks(plan, plan.nnz)
        self._W = matrix_weight(weight, weight.dtype, False, plan.groups, plan.transposed)

    # ---------------------------------------------------------------- the plan's answers
    def _cap(self, workers):
        """``(workers, entries)``: at most ``workers`` threads building at most ``entries`` each at a time,
        within ``block_bytes`` together (fewer threads when a share would not hold one output position)."""
        one_position = (self.plan.row_channels * (self.plan.max_row_nnz() + 1) + 1) * self.unit
        workers = max(1, min(workers, self.block_bytes // max(1, one_position)))
        return workers, max(self.block_bytes // workers, one_position) // self.unit

    def profile(self):
        """Per output position of channel 0: ``(cumulative entries (O + 1), first column, last column)``."""
        if self._profile is None:
            O, cap = self.O, self._cap(1)[1]
            nnz = np.zeros(O + 1, dtype=np.int64)
            first, last = np.full(O, -1, dtype=np.int64), np.full(O, -1, dtype=np.int64)
            a = 0
            while a < O:
                b = _advance(lambda e: self.plan.row_nnz(a, e) + e - a, a, O, cap - 1)
                data, indices, indptr = _buffers(self.plan.row_nnz(a, b), b - a, self.w.dtype, self.idt)
                build_ranges_csr(self.plan, self.w, [(0, a, b)], (data, indices, indptr))
                counts = np.diff(indptr)
                nnz[a + 1 : b + 1] = counts
                full = counts > 0
                first[a:b][full] = indices[indptr[:-1][full]]
                last[a:b][full] = indices[indptr[1:][full] - 1]
                a = b
            self._profile = (np.cumsum(nnz), first, last)
        return self._profile

    def nnz_before(self, i):
        """``plan.nnz_before(i)`` from the profile (a lookup, not the closed form)."""
        c, p = divmod(int(i), self.O)
        return c * self.plan.channel_nnz + int(self.profile()[0][p])

    def rows_nnz(self, start, stop):
        return self.nnz_before(stop) - self.nnz_before(start)

    def row_nnz(self, rows):
        cum = self.profile()[0]
        p = rows % self.O
        return cum[p + 1] - cum[p]

    def keys(self, rows):
        """The rows' sort keys, as :func:`convmat.spmm._products.row_order` makes them from the matrix."""
        _, first, last = self.profile()
        p = rows % self.O
        off = (rows // self.O // self.Rg) * self.shift
        scale = SP.key_scale(self.n)
        return np.where(first[p] < 0, -1, (first[p] + off) * scale + (last[p] + off))

    def quarter_period(self):
        if self._P is None:
            def row(i):
                data, indices, indptr = _buffers(self.plan.row_nnz(i, i + 1), 1, self.w.dtype, self.idt)
                c, p = divmod(i, self.O)
                build_ranges_csr(self.plan, self.w, [(c, p, p + 1)], (data, indices, indptr))
                return indices
            self._P = SP.quarter_period(self.m, row)
        return self._P

    def _cost_bounds(self, rows, nchunks):
        """:func:`convmat.spmm._products._cost_bounds` of rows ``[0, rows)`` in the natural order, asked of
        the row pointers the profile gives (it reads ``size``, ``[-1]`` and ``item(i)`` only)."""
        return SP._cost_bounds(_RowPointers(self.nnz_before, rows), nchunks)

    # ---------------------------------------------------------------- the product
    def product(self, Y):
        """``C^H @ Y`` (``Y`` ``(m,)`` or ``(m, k)``), the bits of ``csr_matmul(C, Y, transpose=True,
        conjugate=True)``; None when that product would not run on the Numba kernels."""
        dtype = np.result_type(self.w.dtype, Y.dtype)
        K = _load() if dtype in KERNEL_DTYPES else None
        if K is None:
            return None
        conj = dtype.kind == "c" and self.w.dtype.kind == "c"
        conj_in = conj and Y.dtype.kind == "c"
        k = 1 if Y.ndim == 1 else Y.shape[1]
        nnz = self.plan.nnz
        threads = 1 if nnz * k < SP.PARALLEL_MIN_WORK else self.threads
        out = np.empty((self.n,) + Y.shape[1:], dtype=dtype)
        if nnz == 0 or out.size == 0:
            out.fill(0)
            return out
        zero = dtype.type(0)
        if k == 1:  # one column, (m,) or (m, 1): the one-vector kernels, as csr_matmul
            fill.kernel(self.w.dtype, np.int32)  # start loading the compiled fill (the fused path, once ready)
            y = Y.reshape(-1)
            x = np.conjugate(y).astype(dtype, copy=False) if conj_in else np.ascontiguousarray(y, dtype=dtype)
            self._vec(K, x, out.reshape(-1), threads, zero)
        else:
            X = SP._rowmajor(K, Y, dtype, conj_in, threads)
            self._mat(K, X, out, threads, zero)
        if conj:
            np.conjugate(out, out=out)
        return out

    def _run(self, K, out, part, bounds, threads, block):
        """``block(b, acc, buffer)`` for every block ``b`` into ``[out, *part][b]`` (each worker with its
        :class:`_Buffer`), then the fixed reduction."""
        accs = [out, *part]
        workers, cap = self._cap(max(1, min(threads, len(accs))))
        free = queue.SimpleQueue()  # each worker builds into one buffer of ``cap`` entries
        for _ in range(workers):
            free.put(_Buffer(cap, self.w.dtype, self.idt))

        def task(b):
            buf = free.get()
            try:
                block(b, accs[b], buf)
            finally:
                free.put(buf)

        if workers == 1:
            for b in range(len(accs)):
                task(b)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(task, range(len(accs))))
        if len(part):
            SP._reduce(K, out.reshape(-1), part.reshape(len(part), -1), threads)

    def _vec(self, K, x, y, threads, zero):
        nblocks = SP._split(SP.TRANSPOSE_BLOCKS_PER_THREAD, self.plan.nnz)
        P = self.quarter_period()
        R = self.plan.row_channels
        fused = fill.scatterer(self.w.dtype, np.int32)
        row_bound = self._chunks.row_bound
        small = max(self.n, 4 * fill.MUL_BLOCK_ROWS * row_bound) <= np.iinfo(np.int32).max  # int32 scratch
        if fused is not None and small and (not P or P == (R // 4) * self.O):
            # rows built a few dozen at a time into a scratch in the caches and added up there
            bounds = self._cost_bounds(P or self.m, nblocks)

            def block(b, acc, buf):
                acc.fill(zero)
                pieces = 4 if P else 1  # rows of each piece written at a time, within the worker's share
                rows = fill.scratch_rows(buf.cap * self.unit, pieces * (row_bound * (self.w.dtype.itemsize + 4) + 20))
                buffers = (*fill.scratch(4 * rows, row_bound, np.int32, self.w.dtype), np.empty(4 * rows, x.dtype),
                           rows)
                fill.scatter(self.plan, self._chunks, row_ranges(self.plan, bounds[b], bounds[b + 1]), fused, self._W,
                             x, acc, buffers, R // 4 if P else 0)
        else:  # rows built into buffers: slots of the rows s, s + P, s + 2P, s + 3P (tr_vec4), or row by row
            Q = 4 if P else 1
            bounds = self._cost_bounds(P or self.m, nblocks)  # with P: over slots, by the first quarter's cost
            fn = K["tr_vec4" if P else "tr_vec"]

            def block(b, acc, buf):
                s, stop, clear = bounds[b], bounds[b + 1], True
                if s == stop:
                    acc.fill(zero)
                while s < stop:
                    e = _advance(lambda e: sum(self.rows_nnz(s + q * P, e + q * P) for q in range(Q)) + Q * (e - s),
                                 s, stop, buf.cap - 1)
                    ranges = [r for q in range(Q) for r in row_ranges(self.plan, s + q * P, e + q * P)]
                    arrays = self._build(ranges, buf)
                    xs = np.concatenate([x[s + q * P : e + q * P] for q in range(Q)]) if P else x[s:e]
                    period = (e - s,) if P else ()  # tr_vec4's argument
                    fn(arrays[2], arrays[1], arrays[0], xs, acc, *period, 0, e - s, zero, clear)
                    s, clear = e, False

        part = np.empty((len(bounds) - 2, self.n), dtype=y.dtype)
        self._run(K, y, part, bounds, threads, block)

    def _mat(self, K, X, Y, threads, zero):
        k = X.shape[1]
        m, nnz = self.m, self.plan.nnz
        order = SP.row_order(lambda: self.keys(np.arange(m, dtype=np.int64)), m, nnz, k)
        natural = bool(order.size) and order[0] == 0 and np.array_equal(order, np.arange(m))
        nblocks = SP._split(SP.TRANSPOSE_BLOCKS_PER_THREAD, nnz * k)
        if natural:
            bounds = self._cost_bounds(m, nblocks)
        else:
            indptr = np.zeros(m + 1, dtype=np.int64)
            np.cumsum(self.row_nnz(np.arange(m, dtype=np.int64)), out=indptr[1:])
            bounds = SP._cost_bounds(indptr, nblocks, order)
            del indptr
        nparts = len(bounds) - 2
        isz = Y.dtype.itemsize
        slab = k
        if nparts > 0 and nparts * self.n * k * isz > SP.TRANSPOSE_MEMORY:
            slab = max(8, SP.TRANSPOSE_MEMORY // (nparts * self.n * isz))
        fn = K["tr_mat"]
        for c0 in range(0, k, slab):
            c1 = min(c0 + slab, k)
            xs = X if slab >= k else np.ascontiguousarray(X[:, c0:c1])
            ys = Y if slab >= k else np.empty((self.n, c1 - c0), dtype=Y.dtype)

            def block(b, acc, buf, xs=xs):
                u, stop, clear = bounds[b], bounds[b + 1], True
                if u == stop:
                    acc.fill(zero)
                while u < stop:
                    rows, e, ranges, local = self._piece(order, natural, u, stop, buf.cap)
                    arrays = self._build(ranges, buf)
                    xl = np.empty((int(arrays[2].size) - 1, xs.shape[1]), dtype=xs.dtype)
                    xl[local] = xs[rows]
                    fn(arrays[2], arrays[1], arrays[0], xl, acc, local, 0, local.size, zero, clear)
                    u, clear = e, False

            part = np.empty((nparts, self.n, c1 - c0), dtype=Y.dtype)
            self._run(K, ys, part, bounds, threads, block)
            if ys is not Y:
                Y[:, c0:c1] = ys

    # ---------------------------------------------------------------- rows
    def _build(self, ranges, buf):
        """``(data, indices, indptr)`` of the rows of ``ranges``, one after the other, in ``buf`` (or in new
        arrays if they do not fit)."""
        cum = self.profile()[0]
        nnz, rows = sum(int(cum[b] - cum[a]) for _, a, b in ranges), sum(b - a for _, a, b in ranges)
        if nnz + rows < buf.cap:
            out = buf.views(nnz, rows)
        else:  # a piece of tr_mat's rows that cannot end sooner (see _piece)
            out = _buffers(nnz, rows, self.w.dtype, self.idt)
        build_ranges_csr(self.plan, self.w, ranges, out)
        return out

    def _piece(self, order, natural, u, stop, cap):
        """``(rows, e, ranges, local)``: the rows ``seq[u:e]`` of the visiting order ``seq`` (``order``)
        built next, the ranges covering them (:meth:`_cover`) and their indices there.

        A piece ends where a row's columns differ from the next row's (``tr_mat`` adds four rows
        with the same columns together) and, when it can, its cover holds at most ``cap`` entries
        and row pointers.
        """
        window = max(1, min(stop - u, cap // max(1, self.plan.max_row_nnz() // 2 or 1)))
        while True:
            end = min(stop, u + window)
            seq = np.arange(u, min(stop, end + 1), dtype=np.int64) if natural else order[u : min(stop, end + 1)]
            cum = np.cumsum(self.row_nnz(seq) + 1)  # entries and row pointers
            e = min(end, u + max(1, int(np.searchsorted(cum, cap - 1, side="right"))))
            keys, counts = self.keys(seq), self.row_nnz(seq)
            # a cut before row t of seq is safe when row t's columns differ from row t - 1's
            cuts = np.flatnonzero((keys[1:] != keys[:-1]) | (counts[1:] == 0) | (counts[:-1] == 0)) + 1
            cuts = np.append(cuts[cuts < e - u], [e - u] if e == stop else [])
            if cuts.size or end == stop:
                break
            window *= 2  # no safe cut yet: rows with the same columns run on; build more of them
        t = int(cuts[-1]) if cuts.size else stop - u
        cum_rows = self.profile()[0]
        while True:
            ranges, local = self._cover(seq[:t])
            need = sum(int(cum_rows[b] - cum_rows[a]) + b - a for _, a, b in ranges)
            smaller = cuts[cuts <= t // 2] if cuts.size else cuts
            if need <= cap - 1 or not smaller.size:
                return seq[:t], u + t, ranges, local
            t = int(smaller[-1])  # a cover too large (rows far apart in the order): a shorter piece

    def _cover(self, rows):
        """Ranges covering ``rows`` (one per channel, from its first to its last position) and each row's
        index among the ranges' rows."""
        c, p = np.divmod(rows, self.O)
        ranges, local = [], np.empty(rows.size, dtype=np.int64)
        start = 0
        for ch in np.unique(c):
            sel = c == ch
            a, b = int(p[sel].min()), int(p[sel].max()) + 1
            ranges.append((int(ch), a, b))
            local[sel] = start + p[sel] - a
            start += b - a
        return ranges, local


def _advance(nnz_to, start, stop, cap):
    """The largest ``e`` in ``(start, stop]`` with ``nnz_to(e) <= cap`` (at least ``start + 1``); ``nnz_to``
    is nondecreasing."""
    lo, hi = start + 1, stop
    if nnz_to(hi) <= cap:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if nnz_to(mid) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _RowPointers:
    """The row pointers ``indptr[: rows + 1]`` of ``C``, computed on demand from ``nnz_before``."""

    def __init__(self, nnz_before, rows):
        self.size, self.item = rows + 1, nnz_before

    def __getitem__(self, i):
        return self.item(range(self.size)[i])


class _Buffer:
    """The bytes a worker builds rows into: ``nnz`` entries and ``rows`` row pointers with ``nnz + rows < cap``."""

    def __init__(self, cap, vdtype, idt):
        self.cap, self.vdtype, self.idt = cap, np.dtype(vdtype), np.dtype(idt)
        self.raw = None

    def views(self, nnz, rows):
        """``(data, indices, indptr)`` on the buffer (16-byte aligned each), allocated at the first call."""
        if self.raw is None:
            self.raw = np.empty(self.cap * (self.vdtype.itemsize + self.idt.itemsize) + 32, dtype=np.uint8)
        out, at = [], 0
        for n, dt in ((nnz, self.vdtype), (nnz, self.idt), (rows + 1, self.idt)):
            out.append(self.raw[at : at + n * dt.itemsize].view(dt))
            at += -(-n * dt.itemsize // 16) * 16
        return tuple(out)


def _buffers(nnz, rows, vdtype, idt):
    return np.empty(nnz, dtype=vdtype), np.empty(nnz, dtype=idt), np.empty(rows + 1, dtype=idt)

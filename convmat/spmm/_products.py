"""How :func:`convmat.spmm.csr_matmul` splits a product into blocks of rows and runs them.

The tunables below are read at every product (tests change them).
"""

from __future__ import annotations

import numpy as np

from . import _twins
from ._threads import default_threads, parallel, parallel_blocks

#: Extra bytes the transposed product may allocate for per-thread partial
#: results (``(blocks - 1) * n * k * itemsize``); beyond it the columns of
#: ``X`` are processed in slabs, each pass reading the matrix again.
TRANSPOSE_MEMORY = 1 << 30

#: Products with fewer non-zeros times columns are one block of rows (the transposed product's
#: partial sums, and so its bits, depend on it) and run on the calling thread only.
PARALLEL_MIN_WORK = 1 << 16

#: One-vector products of fewer non-zeros, and products of several columns of fewer non-zeros times
#: columns, run on the calling thread only (in the same blocks: the bits do not depend on it).
#: Handing work to a pool thread and waiting for it costs about 0.1 ms per parallel step on this
#: project's 2-core machine (a virtual machine), and a product of several columns takes three such
#: steps (operand to row-major, row order, product); below these sizes two threads were slower than
#: one (``benchmarks/spmm.py --threads-crossover``).
THREADS_MIN_NNZ = 1 << 20
THREADS_MIN_WORK = 1 << 24

#: Forward one-vector products of at least this many non-zeros look for slots of four rows with the
#: same columns (``fwd_vec4``; looking costs about 15 microseconds, the kernel saves a quarter to a
#: half of the product's time on one thread).  The bits do not depend on it.
VEC4_MIN_NNZ = 1 << 16

#: One-vector products of at least this many non-zeros wait for Numba instead of running on the
#: NumPy twins before it is loaded: the twins take about 8 ns per non-zero on two cores (0.9 s at
#: 115 M), loading Numba and a kernel from its cache about 0.3-0.6 s.
TWIN_MAX_NNZ = 1 << 26

#: Chunks of rows of ``A @ X`` per usable core; threads take the next chunk when free (dynamic load
#: balance).  Per core of the machine (:func:`default_threads`), not per thread asked for: the blocks,
#: hence the result, do not depend on ``threads``.
CHUNKS_PER_THREAD = 4

#: Blocks of rows of ``A.T @ X`` per usable core (not per thread asked for: the result does not
#: depend on ``threads``).  Each block adds into its own partial result (so the result does not
#: depend on which thread ran it), and threads take the next block when free.
#: More blocks balance the load better (a thread slowed down by another process holds the others
#: up less) and cost one result-sized partial sum each.
TRANSPOSE_BLOCKS_PER_THREAD = 2

#: ``A @ X`` and ``A.T @ X`` with at least ORDER_MIN_WORK non-zeros times columns, and at least
#: ORDER_MIN_ROW_NNZ non-zeros per row on average, visit the rows in column order when at least
#: a fraction ORDER_MIN_SHARED of them share their first and last column with another row
#: (as the output channels of a convolution do).
ORDER_MIN_WORK = 1 << 20
ORDER_MIN_ROW_NNZ = 32
ORDER_MIN_SHARED = 0.5


def _nchunks(threads):
    """Chunks per product: a few per thread (dynamic balance), one without threads."""
    return 1 if threads == 1 else CHUNKS_PER_THREAD * threads


def _even_bounds(size, nchunks):
    """``nchunks + 1`` boundaries of equal chunks of ``range(size)``."""
    return [size * c // nchunks for c in range(nchunks + 1)]


def _cost_bounds(indptr, nchunks, order=None):
    """Boundaries of ``nchunks`` chunks of rows (in ``order``) of about equal non-zeros + rows.

    Boundary ``c`` is the first row ``i`` whose cost ``indptr[i] + i`` (entries and rows before it)
    reaches ``c / nchunks`` of the total: ``np.searchsorted(indptr + arange(m + 1), targets)`` with
    ``targets = np.linspace(0, total, nchunks + 1)``.  In the natural order it is found by bisection
    on ``indptr``, in plain Python: a product calls this right after streaming a matrix through the
    caches, where each NumPy call costs tens of microseconds (0.25-0.35 ms for the search on
    temporaries, 0.08-0.1 ms for the bisection, on the 65 k rows of the 16 -> 16 64^2 layer).
    """
    m = indptr.size - 1
    if nchunks == 1:
        return [0, m]
    if order is not None:
        cost = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.diff(indptr)[order] + 1, out=cost[1:])
        bounds = np.searchsorted(cost, np.linspace(0, float(cost[-1]), nchunks + 1)).tolist()
        bounds[0], bounds[-1] = 0, m
        return bounds
    step = (int(indptr[-1]) + m) / nchunks  # np.linspace's targets: c * step (the exact float products)
    item = indptr.item
    bounds = [0]
    for c in range(1, nchunks):
        t = c * step
        lo, hi = 0, m + 1  # the first i in [0, m] with item(i) + i >= t (cost grows strictly)
        while lo < hi:
            mid = (lo + hi) >> 1
            if item(mid) + mid >= t:
                hi = mid
            else:
                lo = mid + 1
        bounds.append(lo)
    bounds.append(m)
    return bounds


def _transpose(K, src, dst, threads):
    """``dst[...] = src.T`` for C-contiguous ``src`` (a, b) and ``dst`` (b, a), in parallel."""
    nc = min(_nchunks(threads), max(1, dst.shape[0] // 32))
    b = _even_bounds(dst.shape[0], nc)
    fn = K["transpose_into"]
    parallel(lambda w, c: fn(src, dst, b[c], b[c + 1]), nc, threads)


def rowmajor_is_copy(X, dtype, conj):
    """Whether :func:`_rowmajor` copies ``X`` (else it returns ``X`` itself)."""
    return not (X.flags.c_contiguous and X.dtype == dtype and not conj)


def _rowmajor(K, X, dtype, conj, threads):
    """``X`` (n, k) as a C-contiguous array of ``dtype`` (conjugated if asked), copied only if needed."""
    if not rowmajor_is_copy(X, dtype, conj):
        return X
    Xc = np.empty(X.shape, dtype=dtype)
    if X.flags.f_contiguous and X.dtype == dtype:
        _transpose(K, X.T, Xc, threads)
        if conj:
            np.conjugate(Xc, out=Xc)
    elif conj:
        np.conjugate(X, out=Xc)
    else:
        np.copyto(Xc, X, casting="unsafe")
    return Xc


def _split(per_core, work):
    """Blocks of rows of a product of ``work`` non-zeros times columns: ``per_core`` per usable core,
    one below PARALLEL_MIN_WORK -- a function of the product and the machine, never of ``threads``,
    so that every thread count gives the same bits."""
    return 1 if work < PARALLEL_MIN_WORK else per_core * default_threads()


def _scatter(K, name, args, out, part, bounds, threads, zero, extra=(), pieces=False):
    """Run a transposed kernel: block ``b`` of rows (``bounds[b]:bounds[b+1]``) into ``[out, *part][b]``.

    A fixed assignment of rows to partial results (block ``b`` always adds into partial ``b``,
    whichever thread runs it) and a sum of the partial results in a fixed order: the result
    is the same bits on every run.  With ``pieces`` (kernels that treat rows one after the
    other, ``tr_vec`` and ``tr_vec4``; not ``tr_mat``, whose groups of four rows start where its
    range starts) a block runs as a few consecutive pieces in order (:func:`parallel_blocks`):
    the same bits, and workers that end together.
    """
    fn = K[name]
    accs = [out, *part]
    if pieces:
        parallel_blocks(lambda b, r0, r1, first: fn(*args, accs[b], *extra, r0, r1, zero, first), bounds, threads)
    else:
        parallel(lambda w, b: fn(*args, accs[b], *extra, bounds[b], bounds[b + 1], zero, True), len(accs), threads)
    if len(part):
        _reduce(K, out.reshape(-1), part.reshape(len(part), -1), threads)


#: Values read by the sum of partial results below which it runs on the calling thread alone (waking
#: another thread costs more than it saves).  Each entry is added in the same order however the sum
#: is split: the bits do not depend on it.
REDUCE_PARALLEL_MIN = 1 << 20


def _reduce(K, out, parts, threads):
    """``out += parts.sum(axis=0)`` for flat ``out`` and 2-D ``parts``, in parallel when it is large."""
    if (parts.shape[0] + 1) * out.size < REDUCE_PARALLEL_MIN:
        threads = 1
    nc = min(_nchunks(threads), max(1, out.size // 4096))
    b = _even_bounds(out.size, nc)
    fn = K["reduce"]
    parallel(lambda w, c: fn(out, parts, b[c], b[c + 1]), nc, threads)


def _product_vec(K, indptr, indices, data, x, y, ncols, transpose, threads, zero):
    """``y = A @ x`` or ``A.T @ x`` on the CSR arrays (``y`` contiguous, written entirely).

    ``K`` None: the NumPy twins of the kernels (the same blocks, the same bits).
    """
    if transpose:
        nblocks = _split(TRANSPOSE_BLOCKS_PER_THREAD, int(indptr[-1]))
        P = _quarter_period(indptr, indices)
        if P:  # slots of four rows with the same columns: bounds over slots, by the first quarter's cost
            b = _cost_bounds(indptr[: P + 1], nblocks)
            if K is None:
                _twins.tr_vec4(indptr, indices, data, x, y, P, b, threads)
            else:
                part = np.empty((len(b) - 2, ncols), dtype=y.dtype)
                _scatter(K, "tr_vec4", (indptr, indices, data, x), y, part, b, threads, zero, extra=(P,), pieces=True)
            return
    if K is None:
        if transpose:
            _twins.tr_vec(indptr, indices, data, x, y, _cost_bounds(indptr, nblocks), threads)
        else:
            _twins.fwd_vec(indptr, indices, data, x, y, threads)
        return
    if not transpose:
        nchunks = _split(CHUNKS_PER_THREAD, int(indptr[-1]))
        P = _quarter_period(indptr, indices) if "fwd_vec4" in K and int(indptr[-1]) >= VEC4_MIN_NNZ else 0
        if P:  # slots of four rows with the same columns (the compiled library's fwd_vec4: fwd_vec's bits)
            b = _cost_bounds(indptr[: P + 1], nchunks)
            fn = K["fwd_vec4"]
            parallel(lambda w, c: fn(indptr, indices, data, x, y, P, b[c], b[c + 1], zero), len(b) - 1, threads)
            return
        b = _cost_bounds(indptr, nchunks)
        fn = K["fwd_vec"]
        parallel(lambda w, c: fn(indptr, indices, data, x, y, b[c], b[c + 1], zero), len(b) - 1, threads)
        return
    b = _cost_bounds(indptr, _split(TRANSPOSE_BLOCKS_PER_THREAD, int(indptr[-1])))  # block b adds into partial b
    part = np.empty((len(b) - 2, ncols), dtype=y.dtype)
    _scatter(K, "tr_vec", (indptr, indices, data, x), y, part, b, threads, zero, pieces=True)


def _quarter_period(indptr, indices):
    """``P = m // 4`` when rows ``s, s + P, s + 2P, s + 3P`` have the same columns in a few sampled slots, else 0.

    The output channels of a convolution (a multiple of four of them, one group) do: the
    transposed one-vector product then adds four rows' entries with one read-modify-write
    (kernel ``tr_vec4``, which checks every slot).  A function of the matrix only.
    """
    item = indptr.item  # Python ints, without NumPy scalars
    return quarter_period(indptr.size - 1, lambda i: indices[item(i) : item(i + 1)])


def quarter_period(m, row):
    """:func:`_quarter_period` of a matrix of ``m`` rows whose row ``i`` has the column indices ``row(i)``
    (the streamed operator asks it without holding the matrix)."""
    if m < 4 or m % 4:
        return 0
    P = m // 4
    for s in sorted({0, P // 2, P - 1}):
        first, *others = (row(s + k * P) for k in range(4))
        if first.size == 0 or not all(_same_values(first, other) for other in others):
            return 0
    return P


def _same_values(a, b):
    """``np.array_equal`` for 1-D index arrays, in a microsecond or two where their dtypes agree (every
    one-vector product on a matrix of 4P rows asks it up to nine times)."""
    if a.dtype != b.dtype:
        return np.array_equal(a, b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _row_order(K, indptr, indices, ncols, k, threads):
    """Rows sorted by (first column, last column) when that groups rows with the same columns.

    The natural order otherwise: for short rows, or rows that rarely share their first and
    last column, the reordering costs more (a sort, scattered reads of the rows) than it saves.
    """
    m = indptr.size - 1

    def keys():
        key = np.empty(m, dtype=np.int64)
        nc = _nchunks(threads)
        rb = _even_bounds(m, nc)
        fn = K["row_keys"]
        scale = key_scale(ncols)
        parallel(lambda w, c: fn(indptr, indices, scale, key, rb[c], rb[c + 1]), nc, threads)
        return key

    return row_order(keys, m, int(indptr[-1]), k)


def key_scale(ncols):
    """The factor of a row's first column in its sort key ``first * scale + last`` (-1 for an empty row)."""
    return np.int64(ncols if ncols <= np.iinfo(np.int32).max else 0)


def row_order(keys, m, nnz, k):
    """:func:`_row_order` of a matrix of ``m`` rows and ``nnz`` entries times ``k`` columns, whose row
    keys (see :func:`key_scale`) ``keys()`` returns when they are needed."""
    if nnz * k >= ORDER_MIN_WORK and nnz >= ORDER_MIN_ROW_NNZ * m:
        key = keys()
        # Stable: rows of equal keys in their natural order.  The keys of a convolution's rows are a
        # few increasing sequences (one per output channel), which the stable sort (timsort) merges:
        # 0.4 ms for the 65 k rows of 16 -> 16 64^2, against 2.0 ms for the default quicksort.
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        if np.count_nonzero(sorted_key[1:] == sorted_key[:-1]) >= ORDER_MIN_SHARED * m:
            return order
    return np.arange(m, dtype=np.int64)


def _product_mat(K, indptr, indices, data, X, Y, ncols, transpose, threads, zero):
    """``Y = A @ X`` or ``A.T @ X`` on the CSR arrays (``X``, ``Y`` C-contiguous, ``Y`` written entirely)."""
    k = X.shape[1]
    order = _row_order(K, indptr, indices, ncols, k, threads)
    if not transpose:
        b = _cost_bounds(indptr, _split(CHUNKS_PER_THREAD, int(indptr[-1]) * k), order)
        fn = K["fwd_mat"]
        parallel(lambda w, c: fn(indptr, indices, data, X, Y, order, b[c], b[c + 1], zero), len(b) - 1, threads)
        return
    # Block b of rows adds into partial result b; column slabs of X keep the partial results
    # within TRANSPOSE_MEMORY.
    b = _cost_bounds(indptr, _split(TRANSPOSE_BLOCKS_PER_THREAD, int(indptr[-1]) * k), order)
    nparts = len(b) - 2
    isz = Y.dtype.itemsize
    slab = k
    if nparts > 0 and nparts * ncols * k * isz > TRANSPOSE_MEMORY:
        slab = max(8, TRANSPOSE_MEMORY // (nparts * ncols * isz))
    for c0 in range(0, k, slab):
        c1 = min(c0 + slab, k)
        if slab >= k:
            xs, ys = X, Y
        else:
            xs, ys = np.ascontiguousarray(X[:, c0:c1]), np.empty((ncols, c1 - c0), dtype=Y.dtype)
        part = np.empty((nparts, ncols, c1 - c0), dtype=Y.dtype)
        _scatter(K, "tr_mat", (indptr, indices, data, xs), ys, part, b, threads, zero, extra=(order,))
        if ys is not Y:
            Y[:, c0:c1] = ys

"""Multi-threaded CPU products with a CSR matrix: ``A @ X``, ``A.T @ X``, ``A.conj().T @ X``.

SciPy's CSR product runs on one thread.  :func:`csr_matmul` computes the
same products with Numba kernels on all usable cores, reading the CSR arrays
in place: no copy of the matrix, and no transposed copy for ``A.T @ X``.

Numba is imported by the first product, not by ``import convmat.spmm``.
Without Numba, :func:`csr_matmul` returns SciPy's own product (same result,
one thread); :func:`available` says which one runs.

How the kernels work
--------------------
* Rows are split into blocks of about equal cost (non-zeros plus one per
  row), :data:`CHUNKS_PER_THREAD` per thread; each thread takes the next
  block when it is free.
* ``A @ x`` (one vector): one dot product per row, vectorised over the
  non-zeros (gathers).  It streams ``data`` and ``indices`` once: its cost is
  the memory bandwidth.
* ``A @ X`` (``k`` columns): ``X`` and the result are row-major, so a row of
  ``X`` is ``k`` contiguous values and the loop over them vectorises.  Runs
  of four rows with identical column indices (in a convolution matrix, the
  output channels of one output position) are computed together, each row
  of ``X`` loaded once for the four: a small dense product, as in im2col +
  GEMM.  To bring such rows together, rows are visited in the order of their
  (first, last) column when most rows share theirs with another row and
  rows are long (:data:`ORDER_MIN_SHARED`, :data:`ORDER_MIN_ROW_NNZ`); the
  reordering also keeps the rows of ``X`` in use in cache.
* ``A.T @ X`` scatters ``A[i, j] * X[i]`` into row ``j`` of the result.
  Each thread accumulates its blocks of rows into a private result (the
  calling thread into the output itself), and the partial results are
  summed in parallel.  The extra memory is ``threads - 1`` result-sized arrays, at
  most :data:`TRANSPOSE_MEMORY` bytes (beyond it the columns of ``X`` are
  processed in slabs).  The row order and the four-row groups apply too
  (one read-modify-write of a result row per four non-zeros).
* ``conjugate=True`` uses ``conj(A) @ X = conj(A @ conj(X))``: one pass over
  ``X`` and one over the result, no copy of ``A``.
* The kernels may reassociate sums and fuse multiply-adds (LLVM's
  ``reassoc`` and ``contract`` flags; NaN and infinities propagate as in
  IEEE arithmetic), so results agree with SciPy's to rounding, not bit for
  bit.

Threads and processes
---------------------
The kernels are serial Numba functions compiled with ``nogil=True``; a
product runs its blocks of rows on the calling thread and on a
small :class:`~concurrent.futures.ThreadPoolExecutor`.  No Numba threading
layer is involved (no OpenMP, no ``workqueue``), so there is nothing to
clash with PyTorch's OpenMP runtime in the same process, concurrent calls
from several Python threads are safe, and so is ``fork`` (a child process
makes its own pool).

Compiled kernels are cached on disk (Numba's ``cache=True``) next to this
file or, when that directory is read-only, in Numba's user cache directory;
when no cache location is writable they are compiled in memory on each run.
The first product of a dtype compiles its kernels (a few seconds); later
runs load them from the cache.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as _sp

__all__ = ["csr_matmul", "available", "default_threads", "KERNEL_DTYPES", "TRANSPOSE_MEMORY"]

#: Result dtypes the Numba kernels compute; other numeric results are SciPy's product.
KERNEL_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

#: Extra bytes the transposed product may allocate for per-thread partial
#: results (``(threads - 1) * n * k * itemsize``); beyond it the columns of
#: ``X`` are processed in slabs, each pass reading the matrix again.
TRANSPOSE_MEMORY = 1 << 30

#: Products with fewer non-zeros times columns run on the calling thread only.
PARALLEL_MIN_WORK = 1 << 16

#: Chunks of rows per thread; threads take the next chunk when free (dynamic load balance).
CHUNKS_PER_THREAD = 4

#: ``A @ X`` and ``A.T @ X`` with at least ORDER_MIN_WORK non-zeros times columns, and at least
#: ORDER_MIN_ROW_NNZ non-zeros per row on average, visit the rows in column order when at least
#: a fraction ORDER_MIN_SHARED of them share their first and last column with another row
#: (as the output channels of a convolution do).
ORDER_MIN_WORK = 1 << 20
ORDER_MIN_ROW_NNZ = 32
ORDER_MIN_SHARED = 0.5

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
U = np.uint64  # unsigned indices: Numba skips negative-index wraparound for them (and vectorises)

_LOCK = threading.Lock()
_STATE = {"kernels": None, "error": None, "pool": None, "pool_pid": None, "pool_size": 0}


# --------------------------------------------------------------------------- #
# kernels: serial functions over a block of rows, compiled by _load()
# --------------------------------------------------------------------------- #
def _b_fwd_vec(indptr, indices, data, x, y, r0, r1, zero):
    for i in range(U(r0), U(r1)):
        s = zero
        for p in range(U(indptr[i]), U(indptr[i + U(1)])):
            s += data[p] * x[U(indices[p])]
        y[i] = s


def _b_tr_vec(indptr, indices, data, y, acc, r0, r1, zero, clear):
    # acc[indices[p]] += data[p] * y[i] for the rows r0 <= i < r1 (acc zeroed first if clear).
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
            d0 = data[p] * v
            d1 = data[p + U(1)] * v
            d2 = data[p + U(2)] * v
            d3 = data[p + U(3)] * v
            acc[j0] += d0
            acc[j1] += d1
            acc[j2] += d2
            acc[j3] += d3
            p += U(4)
        while p < e:
            acc[U(indices[p])] += data[p] * v
            p += U(1)


def _b_reduce(out, part, j0, j1):
    for j in range(U(j0), U(j1)):
        s = out[j]
        for b in range(part.shape[0]):
            s += part[b, j]
        out[j] = s


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
            y0 = Y[i0]
            y1 = Y[i1]
            y2 = Y[i2]
            y3 = Y[i3]
            for t in range(k):
                y0[t] = zero
                y1[t] = zero
                y2[t] = zero
                y3[t] = zero
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
                    y0[t] += a00 * u0 + a01 * u1 + a02 * u2 + a03 * u3
                    y1[t] += a10 * u0 + a11 * u1 + a12 * u2 + a13 * u3
                    y2[t] += a20 * u0 + a21 * u1 + a22 * u2 + a23 * u3
                    y3[t] += a30 * u0 + a31 * u1 + a32 * u2 + a33 * u3
                p += U(4)
            while p < L:
                x0 = X[U(indices[q0 + p])]
                a00 = data[q0 + p]
                a10 = data[q1 + p]
                a20 = data[q2 + p]
                a30 = data[q3 + p]
                for t in range(k):
                    u0 = x0[t]
                    y0[t] += a00 * u0
                    y1[t] += a10 * u0
                    y2[t] += a20 * u0
                    y3[t] += a30 * u0
                p += U(1)
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
                    yr[t] += a0 * x0[t] + a1 * x1[t] + a2 * x2[t] + a3 * x3[t]
                p += U(4)
            while p < p1:
                a0 = data[p]
                x0 = X[U(indices[p])]
                for t in range(k):
                    yr[t] += a0 * x0[t]
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
                    z0[t] += a00 * v0 + a10 * v1 + a20 * v2 + a30 * v3
                    z1[t] += a01 * v0 + a11 * v1 + a21 * v2 + a31 * v3
                p += U(2)
            if p < L:
                z0 = acc[U(indices[q0 + p])]
                a00 = data[q0 + p]
                a10 = data[q1 + p]
                a20 = data[q2 + p]
                a30 = data[q3 + p]
                for t in range(k):
                    z0[t] += a00 * y0[t] + a10 * y1[t] + a20 * y2[t] + a30 * y3[t]
            r += U(4)
        else:
            yr = Y[i0]
            for p in range(q0, q0 + L):
                a0 = data[p]
                zr = acc[U(indices[p])]
                for t in range(k):
                    zr[t] += a0 * yr[t]
            r += U(1)


# Reassociation and contraction (FMA) let LLVM vectorise the sums.  No nnan/ninf: NaN and
# infinities propagate as in IEEE arithmetic.
_FASTMATH = frozenset({"reassoc", "contract"})
_KERNEL_NAMES = ("fwd_vec", "tr_vec", "reduce", "row_keys", "transpose_into", "fwd_mat", "tr_mat")


# --------------------------------------------------------------------------- #
# loading numba, the thread pool
# --------------------------------------------------------------------------- #
def _jit(numba, fn, cache):
    opts = dict(nogil=True, fastmath=set(_FASTMATH), error_model="numpy", boundscheck=False, no_cfunc_wrapper=True)
    if cache:
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available" (read-only everywhere)
            pass
    return numba.njit(**opts)(fn)


def _build_kernels(numba, cache=True):
    """Numba dispatchers of the kernels (each compiled on its first call, per signature)."""
    g = globals()
    # Helpers the kernels call: compiled into them (inline), callable from Python as they are.
    from numba.extending import register_jitable

    register_jitable(inline="always")(_b_group4)
    return {name: _jit(numba, g["_b_" + name], cache) for name in _KERNEL_NAMES}


def _load():
    """The kernels, or None when Numba cannot be imported (then SciPy computes)."""
    if _STATE["kernels"] is None and _STATE["error"] is None:
        with _LOCK:
            if _STATE["kernels"] is None and _STATE["error"] is None:
                try:
                    import numba
                except ImportError as exc:
                    _STATE["error"] = exc
                    return None
                _STATE["kernels"] = _build_kernels(numba)
    return _STATE["kernels"]


def available() -> bool:
    """Whether Numba imports, so that :func:`csr_matmul` runs its multi-threaded kernels.

    Returns
    -------
    bool
        False means :func:`csr_matmul` computes SciPy's single-threaded product.

    Examples
    --------
    >>> from convmat.spmm import available
    >>> isinstance(available(), bool)
    True
    """
    return _load() is not None


def default_threads() -> int:
    """The number of usable cores, ``len(os.sched_getaffinity(0))``.

    Examples
    --------
    >>> from convmat.spmm import default_threads
    >>> default_threads() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _pool(workers):
    """The worker threads (one process-wide pool, grown on demand, remade after fork)."""
    with _LOCK:
        pid = os.getpid()
        if _STATE["pool_pid"] != pid or _STATE["pool_size"] < workers:
            old = _STATE["pool"] if _STATE["pool_pid"] == pid else None
            _STATE["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convmat-spmm")
            _STATE["pool_pid"], _STATE["pool_size"] = pid, workers
            if old is not None:
                old.shutdown(wait=False)
        return _STATE["pool"]


def _after_fork_in_child():
    # The parent's pool threads do not exist here, and another thread may have held the lock.
    global _LOCK
    _LOCK = threading.Lock()
    _STATE.update(pool=None, pool_pid=None, pool_size=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _parallel(task, nchunks, threads):
    """``task(worker, chunk)`` for every chunk, on ``threads`` workers (worker 0 is the calling thread).

    Workers take the next chunk as they become free, so a thread slowed down by another
    process does not hold the others up.
    """
    threads = max(1, min(threads, nchunks))
    chunks = iter(range(nchunks))  # next() on it is atomic under the GIL

    def work(w):
        for c in chunks:
            task(w, c)

    if threads == 1:
        work(0)
        return
    futures = [_pool(threads - 1).submit(work, w) for w in range(1, threads)]
    try:
        work(0)
    finally:
        for f in futures:  # wait for every worker (they write into our arrays) before returning or raising
            f.result()


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _check_matrix(A):
    if not _sp.issparse(A):
        raise TypeError(f"A must be a scipy.sparse CSR array or matrix, got {type(A).__name__}")
    if A.format not in ("csr", "csc"):
        raise TypeError(
            f"A must be a scipy.sparse CSR array or matrix, got {type(A).__name__} (format {A.format!r}); "
            "convert it with A.tocsr()"
        )
    if A.ndim != 2:
        raise ValueError(f"A must be 2-D, got a {A.ndim}-D {type(A).__name__} of shape {A.shape}")
    m, n = A.shape
    major = m if A.format == "csr" else n
    for name in ("indptr", "indices"):
        arr = getattr(A, name)
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(f"A.{name} must be a 1-D integer numpy array, got {getattr(arr, 'dtype', type(arr))}")
    if not isinstance(A.data, np.ndarray) or A.data.dtype.kind not in "biufc":
        raise TypeError(f"A must hold numbers, got data of dtype {getattr(A.data, 'dtype', type(A.data))}")
    indptr = A.indptr
    if indptr.size != major + 1:
        raise ValueError(f"A.indptr must have {major + 1} entries for shape {A.shape}, got {indptr.size}")
    nnz = int(indptr[-1])
    if int(indptr[0]) != 0 or nnz > A.indices.size or nnz > A.data.size:
        raise ValueError(
            f"A is not a valid {A.format.upper()} matrix: indptr[0] = {int(indptr[0])}, indptr[-1] = {nnz}, "
            f"len(indices) = {A.indices.size}, len(data) = {A.data.size}"
        )


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_threads(threads):
    if threads is None:
        return default_threads()
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be a positive int or None, got {threads!r} ({type(threads).__name__})")
    if threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for all usable cores), got {int(threads)}")
    return int(threads)


def _check_operand(X, rows, A, transpose):
    if _sp.issparse(X):
        raise TypeError(f"X must be a dense numpy array, got a sparse {type(X).__name__}")
    X = np.asarray(X)  # also a plain ndarray for subclasses (np.matrix)
    if X.dtype.kind not in "biufc":
        raise TypeError(f"X must hold numbers (bool, integer, float or complex), got dtype {X.dtype}")
    if X.ndim not in (1, 2):
        raise ValueError(f"X must have shape (n,) or (n, k), got shape {X.shape}")
    if X.shape[0] != rows:
        op, shape = ("A.T", A.shape[::-1]) if transpose else ("A", A.shape)
        raise ValueError(
            f"X must have {rows} rows to multiply {op} of shape {shape}, got X of shape {X.shape}"
        )
    return X


def _check_out(out, shape, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"out must have the result dtype {dtype}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")


# --------------------------------------------------------------------------- #
# the product
# --------------------------------------------------------------------------- #
def csr_matmul(A, X, *, transpose=False, conjugate=False, threads=None, out=None):
    """Multi-threaded ``Y = op(A) @ X`` for a CSR matrix ``A`` and a dense ``X``.

    ``op(A)`` is ``A``, ``A.T`` (``transpose=True``), ``A.conj()``
    (``conjugate=True``) or ``A.conj().T`` (both).  The transposed products
    read ``A``'s arrays directly; no transposed copy is made.

    Parameters
    ----------
    A : scipy.sparse.csr_array or csr_matrix, shape (m, n)
        Canonical or not (duplicate entries add up, indices may be
        unsorted), ``int32`` or ``int64`` indices.  A CSC array or matrix is
        accepted too: it is the transpose of the CSR matrix on the same
        arrays, so ``csr_matmul(A.T, Y)`` runs the transposed kernel on
        ``A``.  As in SciPy, column indices are not bounds-checked (check a
        matrix of unknown origin with ``A.check_format(full_check=True)``).
    X : numpy.ndarray, shape (n,) or (n, k)
        Any memory layout: a C-contiguous ``X`` of the result dtype is used
        in place, anything else is copied once to that layout (by a parallel
        transposition for an F-contiguous ``X`` such as
        ``images.reshape(N, -1).T``).  With ``transpose=True`` it has ``m``
        rows.
    transpose : bool
        Multiply by ``A.T`` (``A.conj().T`` with ``conjugate``).
    conjugate : bool
        Conjugate ``A`` (nothing to do for a real ``A``).
    threads : int, optional
        Number of threads (default: the usable cores,
        ``len(os.sched_getaffinity(0))``).  Products of fewer than
        :data:`PARALLEL_MIN_WORK` non-zeros times columns use one.
    out : numpy.ndarray, optional
        Where to write the result: exactly the result's shape and dtype, any
        layout (a C-contiguous ``out`` is written directly, any other through
        a temporary).

    Returns
    -------
    numpy.ndarray, shape (m,) or (m, k)
        (``(n,)`` or ``(n, k)`` with ``transpose=True``) of dtype
        ``numpy.result_type(A.dtype, X.dtype)``, as SciPy's.  A new result
        is C-contiguous; with ``out``, it is ``out``.

    Raises
    ------
    TypeError
        ``A`` is not a scipy.sparse CSR (or CSC) matrix, ``X`` or ``out`` is
        not a numeric numpy array, ``threads`` is not an int, ``transpose``
        or ``conjugate`` is not a bool.
    ValueError
        ``X`` does not have ``op(A).shape[1]`` rows or is not 1-D or 2-D,
        ``threads < 1``, ``out`` has the wrong shape or dtype.

    Notes
    -----
    Results of dtype float32, float64, complex64 or complex128 come from the
    Numba kernels, mixed precisions (a float32 ``A`` with a float64 ``X``)
    included, computed in the result dtype without copying ``A``.  Other
    numeric results (integers), and every product when Numba does not import
    (:func:`available`), are SciPy's ``A @ X``, on one thread.

    Extra memory: ``A.T @ X`` on several threads allocates ``threads - 1``
    partial results of the result's size (at most :data:`TRANSPOSE_MEMORY`
    bytes); with ``k > 1``, a row order (8 bytes per row of ``A``) and, for an
    ``X`` not C-contiguous or not of the result dtype, a copy of ``X``.

    Right after a PyTorch operation, PyTorch's idle OpenMP threads keep
    spinning for a while and slow a product down; ``OMP_WAIT_POLICY=passive``
    in the environment avoids that.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from convmat.spmm import csr_matmul
    >>> A = sp.csr_array(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    >>> csr_matmul(A, np.array([1.0, 1.0, 1.0]))
    array([3., 3.])
    >>> csr_matmul(A, np.array([1.0, 2.0]), transpose=True)
    array([1., 6., 2.])
    >>> X = np.arange(6.0).reshape(3, 2)
    >>> np.array_equal(csr_matmul(A, X), A @ X)
    True
    """
    _check_matrix(A)
    transpose = _check_flag(transpose, "transpose")
    conjugate = _check_flag(conjugate, "conjugate") and A.dtype.kind == "c"
    threads = _check_threads(threads)
    m, n = A.shape
    X = _check_operand(X, m if transpose else n, A, transpose)
    rows = n if transpose else m
    shape = (rows,) if X.ndim == 1 else (rows, X.shape[1])
    dtype = np.result_type(A.dtype, X.dtype)
    if out is not None:
        _check_out(out, shape, dtype)

    K = _load() if dtype in KERNEL_DTYPES else None
    if K is None:
        op = A.conj() if conjugate else A
        Y = np.asarray((op.T if transpose else op) @ X).astype(dtype, copy=False).reshape(shape)
        if out is None:
            return Y
        out[...] = Y
        return out

    # The CSR arrays: a CSC matrix is the transpose of the CSR matrix on its arrays.
    kernel_transpose = transpose != (A.format == "csc")
    indptr, indices, data = A.indptr, A.indices, A.data
    if indptr.dtype not in _INDEX_DTYPES:
        indptr = indptr.astype(np.int64)
    if indices.dtype not in _INDEX_DTYPES:
        indices = indices.astype(np.int64)
    if data.dtype not in KERNEL_DTYPES:
        data = data.astype(dtype)
    ncols = n if A.format == "csr" else m
    k = 1 if X.ndim == 1 else X.shape[1]
    nnz = int(indptr[-1])
    if nnz * max(k, 1) < PARALLEL_MIN_WORK:
        threads = 1

    # The kernels write a C-contiguous result: out itself when it is C-contiguous and independent.
    direct = (
        out is not None
        and out.flags.c_contiguous
        and not any(np.may_share_memory(out, a) for a in (X, indptr, indices, data))
    )
    Y = out if direct else np.empty(shape, dtype=dtype)
    if Y.size:
        if nnz == 0:
            Y.fill(0)
        else:
            conj_in = conjugate and X.dtype.kind == "c"  # conj(A) @ X = conj(A @ conj(X))
            zero = dtype.type(0)
            if k == 1:
                x = X.reshape(-1)
                if conj_in:
                    x = np.conjugate(x).astype(dtype, copy=False)
                elif not (x.flags.c_contiguous and x.dtype == dtype):
                    x = np.ascontiguousarray(x, dtype=dtype)
                _product_vec(K, indptr, indices, data, x, Y.reshape(-1), ncols, kernel_transpose, threads, zero)
            else:
                Xc = _rowmajor(K, X, dtype, conj_in, threads)
                _product_mat(K, indptr, indices, data, Xc, Y, ncols, kernel_transpose, threads, zero)
            if conjugate:
                np.conjugate(Y, out=Y)
    if out is None or direct:
        return Y
    if Y.ndim == 2 and out.flags.f_contiguous and Y.shape[1] > 1:
        _transpose(K, Y, out.T, threads)  # out.T is C-contiguous
    else:
        out[...] = Y
    return out


def _nchunks(threads):
    """Chunks per product: a few per thread (dynamic balance), one without threads."""
    return 1 if threads == 1 else CHUNKS_PER_THREAD * threads


def _even_bounds(size, nchunks):
    """``nchunks + 1`` boundaries of equal chunks of ``range(size)``."""
    return [size * c // nchunks for c in range(nchunks + 1)]


def _cost_bounds(indptr, nchunks, order=None):
    """Boundaries of ``nchunks`` chunks of rows (in ``order``) of about equal non-zeros + rows."""
    m = indptr.size - 1
    if nchunks == 1:
        return [0, m]
    if order is None:
        cost = indptr.astype(np.int64) + np.arange(m + 1, dtype=np.int64)
    else:
        cost = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.diff(indptr)[order] + 1, out=cost[1:])
    bounds = np.searchsorted(cost, np.linspace(0, float(cost[-1]), nchunks + 1)).tolist()
    bounds[0], bounds[-1] = 0, m
    return bounds


def _transpose(K, src, dst, threads):
    """``dst[...] = src.T`` for C-contiguous ``src`` (a, b) and ``dst`` (b, a), in parallel."""
    nc = min(_nchunks(threads), max(1, dst.shape[0] // 32))
    b = _even_bounds(dst.shape[0], nc)
    fn = K["transpose_into"]
    _parallel(lambda w, c: fn(src, dst, b[c], b[c + 1]), nc, threads)


def _rowmajor(K, X, dtype, conj, threads):
    """``X`` (n, k) as a C-contiguous array of ``dtype`` (conjugated if asked), copied only if needed."""
    if X.flags.c_contiguous and X.dtype == dtype and not conj:
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


def _scatter(K, name, args, out, part, bounds, threads, zero, extra=()):
    """Run a transposed kernel: worker ``w`` accumulates its chunks into ``[out, *part][w]``, then sum."""
    fn = K[name]
    accs = [out, *part]
    cleared = [False] * len(accs)

    def task(w, c):
        clear = not cleared[w]  # each worker zeroes its accumulator before its first chunk
        cleared[w] = True
        fn(*args, accs[w], *extra, bounds[c], bounds[c + 1], zero, clear)

    _parallel(task, len(bounds) - 1, len(accs))
    for acc, done in zip(accs, cleared):
        if not done:  # a worker that got no chunk
            acc.fill(0)
    if len(part):
        _reduce(K, out.reshape(-1), part.reshape(len(part), -1), threads)


def _reduce(K, out, parts, threads):
    """``out += parts.sum(axis=0)`` for flat ``out`` and 2-D ``parts``, in parallel."""
    nc = min(_nchunks(threads), max(1, out.size // 4096))
    b = _even_bounds(out.size, nc)
    fn = K["reduce"]
    _parallel(lambda w, c: fn(out, parts, b[c], b[c + 1]), nc, threads)


def _product_vec(K, indptr, indices, data, x, y, ncols, transpose, threads, zero):
    """``y = A @ x`` or ``A.T @ x`` on the CSR arrays (``y`` contiguous, written entirely)."""
    b = _cost_bounds(indptr, _nchunks(threads))
    if not transpose:
        fn = K["fwd_vec"]
        _parallel(lambda w, c: fn(indptr, indices, data, x, y, b[c], b[c + 1], zero), len(b) - 1, threads)
        return
    threads = min(threads, len(b) - 1)
    part = np.empty((threads - 1, ncols), dtype=y.dtype)
    _scatter(K, "tr_vec", (indptr, indices, data, x), y, part, b, threads, zero)


def _row_order(K, indptr, indices, ncols, k, threads):
    """Rows sorted by (first column, last column) when that groups rows with the same columns.

    The natural order otherwise: for short rows, or rows that rarely share their first and
    last column, the reordering costs more (a sort, scattered reads of the rows) than it saves.
    """
    m = indptr.size - 1
    nnz = int(indptr[-1])
    if nnz * k >= ORDER_MIN_WORK and nnz >= ORDER_MIN_ROW_NNZ * m:
        key = np.empty(m, dtype=np.int64)
        scale = np.int64(ncols if ncols <= np.iinfo(np.int32).max else 0)
        nc = _nchunks(threads)
        rb = _even_bounds(m, nc)
        fn = K["row_keys"]
        _parallel(lambda w, c: fn(indptr, indices, scale, key, rb[c], rb[c + 1]), nc, threads)
        order = np.argsort(key)  # the order among equal keys does not matter
        sorted_key = key[order]
        if np.count_nonzero(sorted_key[1:] == sorted_key[:-1]) >= ORDER_MIN_SHARED * m:
            return order
    return np.arange(m, dtype=np.int64)


def _product_mat(K, indptr, indices, data, X, Y, ncols, transpose, threads, zero):
    """``Y = A @ X`` or ``A.T @ X`` on the CSR arrays (``X``, ``Y`` C-contiguous, ``Y`` written entirely)."""
    k = X.shape[1]
    nc = _nchunks(threads)
    order = _row_order(K, indptr, indices, ncols, k, threads)
    b = _cost_bounds(indptr, nc, order)
    if not transpose:
        fn = K["fwd_mat"]
        _parallel(lambda w, c: fn(indptr, indices, data, X, Y, order, b[c], b[c + 1], zero), len(b) - 1, threads)
        return
    # Column slabs of X keep the private partial results within TRANSPOSE_MEMORY.
    threads = min(threads, len(b) - 1)
    isz = Y.dtype.itemsize
    slab = k
    if threads > 1 and (threads - 1) * ncols * k * isz > TRANSPOSE_MEMORY:
        slab = max(8, TRANSPOSE_MEMORY // ((threads - 1) * ncols * isz))
    for c0 in range(0, k, slab):
        c1 = min(c0 + slab, k)
        if slab >= k:
            xs, ys = X, Y
        else:
            xs, ys = np.ascontiguousarray(X[:, c0:c1]), np.empty((ncols, c1 - c0), dtype=Y.dtype)
        part = np.empty((threads - 1, ncols, c1 - c0), dtype=Y.dtype)
        _scatter(K, "tr_mat", (indptr, indices, data, xs), ys, part, b, threads, zero, extra=(order,))
        if ys is not Y:
            Y[:, c0:c1] = ys

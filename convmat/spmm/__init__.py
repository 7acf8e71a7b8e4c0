"""Multi-threaded CPU products with a CSR matrix: ``A @ X``, ``A.T @ X``, ``A.conj().T @ X``.

SciPy's CSR product runs on one thread.  :func:`csr_matmul` computes the
same products with Numba kernels on all usable cores, reading the CSR arrays
in place: no copy of the matrix, and no transposed copy for ``A.T @ X``.

Numba is loaded on a background thread, started by :func:`prefetch` or
after the first product, never by ``import convmat.spmm``.  Until the
kernels are loaded, products are computed by the same kernels compiled
ahead of time in C (``_native.c``, built when convmat is installed), or,
for one vector where there was no C compiler, by their NumPy twins
(``_twins.py``); they perform the same operations in the same order, so
they give the same bits.  The first product in a process does not wait for
Numba's import (about 0.3 s); products of several columns stay on the
compiled kernels (as fast as Numba's, every dtype); without the library,
products of several columns wait for Numba.  Without Numba,
products stay on the compiled kernels or the twins, or are SciPy's own
product (one thread); :func:`available` says whether Numba loads.

How the kernels work
--------------------
* Rows are split into blocks of about equal cost (non-zeros plus one per
  row), :data:`CHUNKS_PER_THREAD` per usable core (:func:`default_threads`,
  whatever ``threads`` asks for); each thread takes the next block when it
  is free.
* ``A @ x`` (one vector): one dot product per row in eight partial sums
  (lane ``l`` adds the row's products ``l, l + 8, l + 16, ...`` in order,
  then ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``), written out
  without reassociation or fused multiply-adds, so that NumPy can reproduce
  it.  It streams ``data`` and ``indices`` once.  When the four quarters of
  the rows share their columns (the output channels of a convolution, as
  for ``A.T @ y`` below; from :data:`VEC4_MIN_NNZ` non-zeros), the compiled
  library's ``fwd_vec4`` reads the four rows of a slot together, gathers
  ``x`` once for them eight entries at a time (AVX2) and keeps each row's
  eight lanes in a vector register: the same lanes, so the same bits, in
  0.5-0.75 times the time on one thread and 0.75-1.1 times on two (where
  the product reads at the memory's speed).  It serves float32 and float64
  products beside Numba's kernels; slots whose rows differ are computed row
  by row.
* ``A @ X`` (``k`` columns): ``X`` and the result are row-major, so a row of
  ``X`` is ``k`` contiguous values and the loop over them vectorises.  Runs
  of rows with identical column indices (in a convolution matrix, the
  output channels of one output position) are computed four rows at a time,
  each row of ``X`` loaded once for the four, their partial sums for 16
  columns (8 for 8-byte values) held in vector registers: a small dense
  product, as in im2col + GEMM (:mod:`convmat.spmm._mat_kernels`).  To
  bring such rows together, rows are visited in the order of their
  (first, last) column when most rows share theirs with another row and
  rows are long (:data:`ORDER_MIN_SHARED`, :data:`ORDER_MIN_ROW_NNZ`); the
  reordering also keeps the rows of ``X`` in use in cache.
* ``A.T @ X`` scatters ``A[i, j] * X[i]`` into row ``j`` of the result.
  The rows are split into :data:`TRANSPOSE_BLOCKS_PER_THREAD` blocks per
  usable core, of about equal cost; block ``b`` accumulates into its own partial
  result (block 0 into the output itself), whichever thread runs it, and the
  partial results are summed in parallel, each entry in the fixed order
  ``out + part[0] + part[1] + ...``.  Rows are assigned to partial sums by
  their position only, so the result is the same bits on every run, while
  threads still take the next block when free.  For one vector a block runs
  as a few consecutive pieces, in order and one at a time, so that a free
  thread can take over part of another block (the same bits, and threads
  that end together).  The extra memory is
  ``TRANSPOSE_BLOCKS_PER_THREAD * default_threads() - 1`` result-sized arrays, at
  most :data:`TRANSPOSE_MEMORY` bytes (beyond it the columns of ``X`` are
  processed in slabs).  The row order and the four-row groups apply too
  (one read-modify-write of a result row per four non-zeros).  For one
  vector, when the four quarters of the rows share their columns (rows ``s``,
  ``s + m/4``, ``s + m/2``, ``s + 3m/4``: the output channels of a
  convolution, checked on a few rows and then slot by slot), blocks are of
  such slots and an entry adds ``((d0 y0 + d1 y1) + d2 y2) + d3 y3`` with one
  read-modify-write; without reading the rows in another order.  For float32
  and float64 the compiled library's ``tr_vec4`` does it in one pass (the
  rows compared as their entries are added, the previous values kept and
  put back if the rows differ after all: the same bits), 0.74-0.95 times
  Numba's time, beside Numba's kernels too.
* ``conjugate=True`` uses ``conj(A) @ X = conj(A @ conj(X))``: one pass over
  ``X`` and one over the result, no copy of ``A``.
* The one-vector kernels (``A @ x``, ``A.T @ y`` and the sum of its
  partial results) compute in the order written; in the kernels of several
  columns every entry of the result is a chain of fused multiply-adds, one
  per product, in the order of the row (``A @ X``) or of the rows
  (``A.T @ X``), whichever rows or columns are computed beside it.  NaN
  and infinities propagate as in IEEE arithmetic; results agree with SciPy's to rounding, not bit for bit.

Determinism
-----------
Every product is a deterministic function of ``(A, X)`` and the machine's
number of usable cores: the same bits on every call, for every ``threads``,
in every process (forked or spawned children included), and before as after
Numba is loaded (the compiled or NumPy twins of the one-vector kernels; without Numba,
products of several columns are SciPy's, whose bits differ).
``A @ X`` computes each row on one thread in an order fixed by the block
boundaries; ``A.T @ X`` uses the fixed assignment of rows to partial sums
above.  (Before, each thread summed whichever blocks it took into its own
partial result: 20 runs of one product gave up to 9 different results.)  The
blocks are counted per usable core (:func:`default_threads`), not per thread
used, so ``threads=1`` and ``threads=2`` give the same bits; a machine (or CPU
affinity) with another number of cores splits the sums differently, and its
results agree to rounding.

Threads and processes
---------------------
The kernels are serial Numba functions compiled with ``nogil=True``; a
product runs its blocks of rows on the calling thread and on a
small :class:`~concurrent.futures.ThreadPoolExecutor`.  No Numba threading
layer is involved (no OpenMP, no ``workqueue``), so there is nothing to
clash with PyTorch's OpenMP runtime in the same process, concurrent calls
from several Python threads are safe, and so is ``fork`` (a child process
makes its own pool; a fork during the first moments of a process waits for
the background loader, whose import and compiler locks a child could not
release).

First products
--------------
Importing Numba takes about 0.3 s, loading a kernel from its cache a few
tens of ms more, compiling it (empty cache) seconds.  A product whose
kernels are not loaded yet is computed by the kernels of ``_native.c``
(:mod:`convmat.spmm._native`: C functions for the four dtypes and both index
dtypes, loaded in about a millisecond; one vector at 1.05-1.2 times the
Numba kernels' time, several columns at 0.44-1.1 times), and then starts
the loader, a daemon thread, for the next products; :func:`prefetch` starts
it earlier.  Products of several columns stay on the compiled kernels
and never load Numba (its import, and a compilation of seconds when its
cache is empty, would take a core from the products that follow).  Where
the library was not built (no C compiler at install time) or for
signatures it has no function for (mixed dtypes), a one-vector product is
computed by the NumPy twins instead (about ten times slower than the
kernels: some 0.1 s for a 9-million-entry matrix on two cores), and from
:data:`TWIN_MAX_NNZ` non-zeros up, where the twins would take longer than
loading Numba from its cache, waits for the kernels; a product of several
columns waits for them.
The loader holds the GIL most of the time, so a NumPy twin computed next to
it waits for the interpreter at each NumPy call: the first product starts it
after itself.

The package: :mod:`convmat.spmm._kernels` (the kernel source and its
table), :mod:`convmat.spmm._native` (the kernels compiled ahead of time),
:mod:`convmat.spmm._twins` (NumPy twins of the one-vector kernels),
:mod:`convmat.spmm._threads` (the pool, loading Numba),
:mod:`convmat.spmm._products` (blocks and drivers) and this module (the
public :func:`csr_matmul`, input checks).

Compiled kernels are cached on disk (Numba's ``cache=True``) next to the kernels'
file or, when that directory is read-only, in Numba's user cache directory;
when no cache location is writable they are compiled in memory on each run.
The first product of a dtype compiles its kernels (a few seconds, in the
background for one-vector products); later runs load them from the cache.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as _sp

from . import _products
from ._products import (  # noqa: F401 - the tunables, documented here
    CHUNKS_PER_THREAD,
    TRANSPOSE_BLOCKS_PER_THREAD,
    ORDER_MIN_ROW_NNZ,
    ORDER_MIN_SHARED,
    ORDER_MIN_WORK,
    PARALLEL_MIN_WORK,
    THREADS_MIN_NNZ,
    THREADS_MIN_WORK,
    TRANSPOSE_MEMORY,
    TWIN_MAX_NNZ,
    VEC4_MIN_NNZ,
)
from . import _native, _threads
from ._threads import default_threads, load

__all__ = ["csr_matmul", "available", "prefetch", "default_threads", "KERNEL_DTYPES", "TRANSPOSE_MEMORY"]

#: Result dtypes the Numba kernels compute; other numeric results are SciPy's product.
KERNEL_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def _load():
    """The kernels, or None when Numba cannot be imported (then SciPy computes)."""
    return load()


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


def prefetch(dtype=np.float64, index_dtype=np.int32, *, batch=False):
    """Start loading Numba and the one-vector kernels (and with ``batch`` those of several columns) in the background.

    Returns at once.

    Call it when a product will follow and the process has other work to do
    meanwhile that does not hold the GIL (reading data, say): the import of
    Numba and the loading of the kernels then overlap with it instead of
    running next to the first products.  The builders do not call it: a
    loader running beside a build slows both (build and first product of
    16 -> 16 3x3 64^2 in a fresh process: 0.13-0.18 s without it, 0.5-0.7 s
    with it called before the build).

    Parameters
    ----------
    dtype : numpy dtype
        The dtype of the products to prepare (of the matrix, the vector and
        the result): one of :data:`KERNEL_DTYPES`.
    index_dtype : numpy dtype
        ``int32`` or ``int64``, the matrix's index dtype.
    batch : bool
        Also load the kernels of products of several columns (compiled in
        a few seconds when Numba's cache is empty).  Only where the
        compiled library is not there: products of several columns run on
        its kernels otherwise, and never on Numba's.

    Raises
    ------
    ValueError
        ``dtype`` is not one of :data:`KERNEL_DTYPES`, ``index_dtype`` is not
        ``int32`` or ``int64``.
    TypeError
        ``dtype`` or ``index_dtype`` is not a dtype, ``batch`` not a bool.

    Notes
    -----
    Numba's import alone takes about 0.3 s.  Until the kernels of a
    product's signature (direction, dtypes, layouts) are loaded,
    :func:`csr_matmul` computes products with the kernels compiled ahead
    of time (``convmat/spmm/_native.c``), or one-vector products with the
    kernels' NumPy twins (the same operations in the same order: the same
    bits, see ``convmat/spmm/_twins.py``), and starts the background loader
    itself; other products wait for it.  Without Numba the loader stops and
    products run without it.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat.spmm import prefetch
    >>> prefetch(np.float32)
    """
    dt = _as_dtype(dtype, "dtype")
    it = _as_dtype(index_dtype, "index_dtype")
    if dt not in KERNEL_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, KERNEL_DTYPES))}, got {dtype!r}")
    if it not in _INDEX_DTYPES:
        raise ValueError(f"index_dtype must be int32 or int64, got {index_dtype!r}")
    batch = _check_flag(batch, "batch")
    a, i = np.empty(1, dt), np.empty(1, it)
    _threads.prefetch(_threads.signature(False, i, i, a, a, a))
    _threads.prefetch(_threads.signature(True, i, i, a, a, a))
    if batch:  # the signatures of products of columns copied to row-major (as ConvOperator's)
        for transpose in (False, True):
            _threads.prefetch(_batch_signature(transpose, i, i, a, dt))


def _as_dtype(value, name):
    try:
        return np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be a numpy dtype, got {value!r}") from None


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
def _batch_signature(transpose, indptr, indices, data, dtype, X=None):
    """The Numba signature of a product of several columns: operand and result row-major arrays of
    ``dtype`` (``X`` itself where the product uses it as it is, else a copy)."""
    like = np.empty((1, 1), dtype=dtype)
    return _threads.signature(transpose, indptr, indices, data, like if X is None else X[:1, :1], like)


def _batch_kernels(indptr, indices, data, X, dtype, conj, transpose):
    """The kernels of a product of several columns: the compiled library's where it has them (0.44-1.1
    times the Numba kernels' time, every dtype: Numba is not loaded for them), else Numba's, waited
    for; None without either (SciPy computes)."""
    compiled = _native.kernels(indptr, indices, data, dtype=dtype)
    if compiled is not None:
        return compiled
    key = _batch_signature(transpose, indptr, indices, data, dtype,
                           None if _products.rowmajor_is_copy(X, dtype, conj) else X)
    K = _threads.ready(key)
    return K if K is not None else _threads.wait(key)


def _vec_kernels(key, indptr, indices, data, x, y):
    """The kernels of a one-vector product, and whether Numba's are still to be loaded (then None: the
    NumPy twins, or the compiled library's).

    Numba's once loaded, the library's before.  Products of
    :data:`convmat.spmm._native.VEC4_DTYPES` also take the library's ``fwd_vec4`` and ``tr_vec4``
    beside Numba's kernels, where it has them: faster than Numba's ``fwd_vec`` and ``tr_vec4`` on
    four rows with the same columns, with their bits.
    """
    K = _threads.ready(key)
    if K is None:
        return _native.kernels(indptr, indices, data, x, y), True
    if data.dtype in _native.VEC4_DTYPES:
        both = _WITH_VEC4.get(key)
        if both is None:
            compiled = _native.kernels(indptr, indices, data, x, y)
            both = _WITH_VEC4[key] = K if compiled is None else {
                **K, "fwd_vec4": compiled["fwd_vec4"], "tr_vec4": compiled["tr_vec4"]}
        K = both
    return K, False


#: Numba's one-vector kernels with the library's fwd_vec4 and tr_vec4, by signature (built once each).
_WITH_VEC4 = {}


def _scipy_product(A, X, transpose, conjugate, dtype, shape, out):
    """SciPy's product ``op(A) @ X`` (dtypes without kernels, or without Numba and the compiled library)."""
    op = A.conj() if conjugate else A
    Y = np.asarray((op.T if transpose else op) @ X).astype(dtype, copy=False).reshape(shape)
    if out is None:
        return Y
    out[...] = Y
    return out


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
        ``len(os.sched_getaffinity(0))``).  One-vector products of fewer
        than :data:`THREADS_MIN_NNZ` non-zeros, and products of several
        columns of fewer than :data:`THREADS_MIN_WORK` non-zeros times
        columns, use one (the bits do not depend on it).
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
    included, computed in the result dtype without copying ``A``.  While Numba
    is loading (the first products in a process, see :func:`prefetch`) and
    when it does not import (:func:`available`), products come from the
    same kernels compiled in C (products of several columns always do), or
    for one vector from their NumPy twins, the same bits; without the
    library, products of several columns wait for Numba, or without it are
    SciPy's ``A @ X`` on one thread, as are other numeric results (integers).

    Extra memory: ``A.T @ X`` on several threads allocates
    ``TRANSPOSE_BLOCKS_PER_THREAD * default_threads() - 1`` partial results of the
    result's size (at most :data:`TRANSPOSE_MEMORY`
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

    k = 1 if X.ndim == 1 else X.shape[1]
    if dtype not in KERNEL_DTYPES:  # SciPy's product
        return _scipy_product(A, X, transpose, conjugate, dtype, shape, out)

    # The CSR arrays: a CSC matrix is the transpose of the CSR matrix on its arrays.
    kernel_transpose = transpose != (A.format == "csc")
    indptr, indices, data = A.indptr, A.indices, A.data
    if indptr.dtype not in _INDEX_DTYPES:
        indptr = indptr.astype(np.int64)
    if indices.dtype not in _INDEX_DTYPES:
        indices = indices.astype(np.int64)
    if data.dtype not in KERNEL_DTYPES:
        data = data.astype(dtype)
    conj_in = conjugate and X.dtype.kind == "c"  # conj(A) @ X = conj(A @ conj(X))

    # The compiled kernels, Numba's and (for one vector) the NumPy twins give the same bits: which serves is
    # a matter of speed and of what is loaded (_batch_kernels for several columns, below for one vector).
    K = None
    if k != 1:
        K = _batch_kernels(indptr, indices, data, X, dtype, conj_in, kernel_transpose)
        if K is None:
            return _scipy_product(A, X, transpose, conjugate, dtype, shape, out)
    ncols = n if A.format == "csr" else m
    nnz = int(indptr[-1])
    if nnz * max(k, 1) < (_products.THREADS_MIN_NNZ if k == 1 else _products.THREADS_MIN_WORK):
        threads = 1  # a pool thread would cost more than it saves

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
            zero = dtype.type(0)
            if k == 1:
                x = X.reshape(-1)
                if conj_in:
                    x = np.conjugate(x).astype(dtype, copy=False)
                elif not (x.flags.c_contiguous and x.dtype == dtype):
                    x = np.ascontiguousarray(x, dtype=dtype)
                y = Y.reshape(-1)
                key = _threads.signature(kernel_transpose, indptr, indices, data, x, y)
                # cold: Numba's kernels not loaded (the compiled library's, or the NumPy twins)
                K, cold = _vec_kernels(key, indptr, indices, data, x, y)
                if K is None and nnz >= _products.TWIN_MAX_NNZ:  # Numba loads faster than the twins compute
                    K = _threads.wait(key)
                _products._product_vec(K, indptr, indices, data, x, y, ncols, kernel_transpose, threads, zero)
                if cold:  # load Numba's kernels for the next products, now that this one is done
                    _threads.prefetch(key)
            else:
                Xc = _products._rowmajor(K, X, dtype, conj_in, threads)
                _products._product_mat(K, indptr, indices, data, Xc, Y, ncols, kernel_transpose, threads, zero)
            if conjugate:
                np.conjugate(Y, out=Y)
    if out is None or direct:
        return Y
    if Y.ndim == 2 and out.flags.f_contiguous and Y.shape[1] > 1:
        _products._transpose(K, Y, out.T, threads)  # out.T is C-contiguous
    else:
        out[...] = Y
    return out

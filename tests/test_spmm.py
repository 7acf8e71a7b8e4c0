"""convmat.spmm.csr_matmul against SciPy's own products and against PyTorch's convolutions.

* Random CSR matrices (empty rows, duplicates, unsorted indices, int32 and
  int64 indices, four dtypes and mixed precisions) times vectors and blocks
  of every layout, for ``A``, ``A.T``, ``A.conj()`` and ``A.conj().T``, on
  one and two threads, with and without ``out``, compared with ``A @ X``.
* Convolution matrices from ``conv_matrix`` against ``torch.nn.functional``
  ``conv2d`` / ``conv_transpose2d``.
* Bad inputs raise before computing; lazy Numba import; SciPy fallback;
  on-disk cache fallback; fork and concurrent callers.

The size thresholds that keep small products on one thread and skip the row
ordering are set to zero here, so that these small matrices take the
multi-threaded, reordered paths.  Tests never assert timings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from convmat import spmm
from convmat.spmm import _kernels, _products, csr_matmul

SEED = 20240229
DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


@pytest.fixture(autouse=True, params=["ordered", "natural"])
def small_products_in_parallel(request, monkeypatch):
    """Run small products on the pool, with (``ordered``) and without the row ordering."""
    monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_products, "THREADS_MIN_NNZ", 0)  # and on the pool
    monkeypatch.setattr(_products, "THREADS_MIN_WORK", 0)
    ordered = request.param == "ordered"
    monkeypatch.setattr(_products, "ORDER_MIN_WORK", 0 if ordered else 1 << 62)
    monkeypatch.setattr(_products, "ORDER_MIN_ROW_NNZ", 0)
    monkeypatch.setattr(_products, "ORDER_MIN_SHARED", 0)


def random_csr(rng, m, n, *, density=0.2, dtype=np.float64, index_dtype=np.int32, canonical=False, groups=True):
    """A CSR array with empty rows and, unless canonical, duplicates and unsorted indices.

    Rows 3, 11, 19, ... are empty.  With ``groups``, rows 4-7 repeat the column indices of row 1
    (same order, same duplicates; values differ), as the output channels of a convolution do,
    so that the four-row kernels run, in the natural order and in the sorted one.
    """
    per_row = []
    for r in range(m):
        cols = rng.integers(0, n, rng.binomial(n, density)) if r % 8 != 3 else np.zeros(0, np.int64)
        if canonical:
            cols = np.unique(cols)
        elif cols.size:
            cols = np.concatenate([cols, cols[: max(1, cols.size // 4)]])  # duplicates
            rng.shuffle(cols)
        per_row.append(cols)
    if groups and m >= 8:
        for r in (4, 5, 6, 7):
            per_row[r] = per_row[1].copy()
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum([c.size for c in per_row], out=indptr[1:])
    indices = np.concatenate(per_row) if m else np.zeros(0, np.int64)
    vals = rng.standard_normal(indices.size)
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal(indices.size)
    A = sp.csr_array((vals.astype(dtype), indices, indptr), shape=(m, n))
    A.indices = A.indices.astype(index_dtype)
    A.indptr = A.indptr.astype(index_dtype)
    if canonical:
        A.has_canonical_format = True
    else:
        assert not A.has_canonical_format
    return A


def operand(rng, rows, k, dtype, layout="C"):
    """X of shape (rows,) (k None) or (rows, k) of the given layout."""
    shape = (rows,) if k is None else (rows, k)
    X = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        X = X + 1j * rng.standard_normal(shape)
    X = X.astype(dtype)
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":  # a view with gaps in both axes
        big = np.zeros((2 * rows,) + ((3 * k,) if k is not None else ()), dtype=dtype)
        view = big[::2] if k is None else big[::2, ::3]
        view[...] = X
        X = view
        assert not X.flags.c_contiguous and not X.flags.f_contiguous or X.size <= 1
    return X


def scipy_op(A, transpose, conjugate):
    op = A.conj() if conjugate else A
    return op.T if transpose else op


def assert_close(got, A, X, ref):
    """Within a summation-error bound: c * eps * (|A| @ |X|), elementwise."""
    assert got.shape == ref.shape
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    eps = np.finfo(got.dtype).eps
    bound = abs(A) @ np.abs(X)
    np.testing.assert_allclose(got, ref, rtol=0, atol=64 * eps * (np.max(bound, initial=0) + 1))


# --------------------------------------------------------------------------- #
# against scipy
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("transpose", [False, True], ids=["A", "AT"])
@pytest.mark.parametrize("k", [None, 1, 5, 24], ids=lambda k: "vector" if k is None else f"k{k}")
def test_matches_scipy(rng, dtype, transpose, k):
    A = random_csr(rng, 37, 29, dtype=dtype)
    X = operand(rng, A.shape[0] if transpose else A.shape[1], k, dtype)
    conjugate = np.dtype(dtype).kind == "c"
    for c in {False, conjugate}:
        ref = scipy_op(A, transpose, c) @ X
        assert_close(csr_matmul(A, X, transpose=transpose, conjugate=c), scipy_op(A, transpose, c), X, ref)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("canonical", [True, False], ids=["canonical", "duplicates"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_index_dtypes_duplicates_threads(rng, index_dtype, canonical, threads):
    A = random_csr(rng, 64, 50, index_dtype=index_dtype, canonical=canonical)
    assert A.indices.dtype == index_dtype and A.indptr.dtype == index_dtype
    for transpose in (False, True):
        rows = A.shape[0] if transpose else A.shape[1]
        for k in (None, 8):
            X = operand(rng, rows, k, np.float64)
            ref = scipy_op(A, transpose, False) @ X
            got = csr_matmul(A, X, transpose=transpose, threads=threads)
            assert_close(got, scipy_op(A, transpose, False), X, ref)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("k", [None, 1, 6])
def test_operand_layouts(rng, layout, k):
    A = random_csr(rng, 30, 40)
    for transpose in (False, True):
        X = operand(rng, 30 if transpose else 40, k, np.float64, layout)
        op = scipy_op(A, transpose, False)
        got = csr_matmul(A, X, transpose=transpose)
        assert got.flags.c_contiguous
        assert_close(got, op, X, op @ np.ascontiguousarray(X))


def test_f_ordered_images_as_the_operator_passes_them(rng):
    A = random_csr(rng, 48, 3 * 16)
    images = rng.standard_normal((5, 3, 4, 4))
    X = images.reshape(5, -1).T  # F-contiguous (48, 5), a view
    assert X.flags.f_contiguous and np.shares_memory(X, images)
    assert_close(csr_matmul(A, X), A, X, A @ X)
    assert_close(csr_matmul(A, X, transpose=True), A.T, X, A.T @ X)


@pytest.mark.parametrize(
    ("a_dtype", "x_dtype"),
    [(np.float32, np.float64), (np.float64, np.float32), (np.float32, np.complex128), (np.complex64, np.float64),
     (np.float64, np.int64), (np.int64, np.float32), (np.bool_, np.float32)],
    ids=lambda d: np.dtype(d).name,
)
def test_mixed_dtypes_follow_scipy(rng, a_dtype, x_dtype):
    A = random_csr(rng, 25, 20, dtype=np.float64)
    A = A.astype(a_dtype) if a_dtype is not np.bool_ else (A != 0).astype(np.bool_)
    # Only float32 x float64 (the common mix) runs the block kernels too: each mix compiles its own.
    ks = (None, 3) if (a_dtype, x_dtype) == (np.float32, np.float64) else (None,)
    for transpose in (False, True):
        for k in ks:
            raw = operand(rng, 25 if transpose else 20, k, np.float64) * 4
            X = raw.astype(x_dtype) if np.dtype(x_dtype).kind != "c" else raw + 1j * raw[::-1]
            X = X.astype(x_dtype)
            ref = scipy_op(A, transpose, False) @ X
            got = csr_matmul(A, X, transpose=transpose)
            assert got.dtype == np.result_type(A.dtype, X.dtype) == ref.dtype
            assert_close(got, scipy_op(A, transpose, False).astype(got.dtype), X, ref)


def test_integer_results_are_scipys(rng):
    A = sp.csr_array(rng.integers(-3, 4, (6, 5)) * (rng.random((6, 5)) < 0.5))
    X = rng.integers(-5, 5, (5, 2))
    got = csr_matmul(A, X)
    assert got.dtype == (A @ X).dtype and np.array_equal(got, A @ X)
    assert np.array_equal(csr_matmul(A, X[:, 0]), A @ X[:, 0])
    Y = rng.integers(-5, 5, 6)
    assert np.array_equal(csr_matmul(A, Y, transpose=True), A.T @ Y)


def test_csr_matrix_and_csc_input(rng):
    A = random_csr(rng, 20, 30, canonical=True)
    M = sp.csr_matrix(A)
    x = rng.standard_normal(30)
    assert_close(csr_matmul(M, x), A, x, A @ x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
        xm = np.asmatrix(x).T
    got = csr_matmul(M, xm)  # a np.matrix operand gives a plain (20, 1) array
    assert type(got) is np.ndarray and got.shape == (20, 1)
    assert_close(got[:, 0], A, x, A @ x)
    X = rng.standard_normal((20, 4))
    # A CSC array is the transpose of the CSR arrays it holds: A.T runs the transposed kernel.
    assert A.T.format == "csc"
    assert_close(csr_matmul(A.T, X), A.T, X, A.T @ X)
    assert_close(csr_matmul(A.T, x, transpose=True), A, x, A @ x)
    assert_close(csr_matmul(A.tocsc(), x), A, x, A @ x)


def test_empty_and_degenerate_shapes(rng):
    for m, n in ((0, 5), (5, 0), (0, 0)):
        A = sp.csr_array((m, n))
        for transpose in (False, True):
            rows, cols = (m, n) if transpose else (n, m)
            for k in (None, 0, 3):
                X = np.ones((rows,) if k is None else (rows, k))
                got = csr_matmul(A, X, transpose=transpose)
                assert got.shape == ((cols,) if k is None else (cols, k))
                assert not got.any()
    A = sp.csr_array((4, 3))  # no entries at all
    X = np.full((3, 2), np.nan)
    assert np.array_equal(csr_matmul(A, X), np.zeros((4, 2)))
    A = random_csr(rng, 10, 10)
    assert csr_matmul(A, np.ones((10, 0))).shape == (10, 0)


def test_out_any_layout_and_aliasing(rng):
    A = random_csr(rng, 40, 40)
    X = rng.standard_normal((40, 6))
    ref = A @ X
    for out in (np.empty((40, 6)), np.empty((40, 6), order="F"), np.empty((40, 12))[:, ::2]):
        res = csr_matmul(A, X, out=out)
        assert res is out
        assert_close(out, A, X, ref)
    out = np.empty(40)
    assert csr_matmul(A, X[:, 0], out=out) is out
    assert_close(out, A, X[:, 0], A @ X[:, 0])
    # out may be X itself (square A): the product goes through a temporary
    Z = X.copy()
    assert csr_matmul(A, Z, transpose=True, out=Z) is Z
    assert_close(Z, A.T, X, A.T @ X)


def test_nan_and_inf_propagate_like_scipy(rng):
    A = random_csr(rng, 30, 20, canonical=True)
    X = rng.standard_normal((20, 3))
    X[5, 0] = np.nan
    X[7, 1] = np.inf
    ref = A @ X
    got = csr_matmul(A, X)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(np.isinf(got), np.isinf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], atol=1e-12)


def test_transpose_in_column_slabs(rng, monkeypatch):
    A = random_csr(rng, 50, 40)
    Y = rng.standard_normal((50, 20))
    # (2 * threads - 1) * 40 rows * 20 columns * 8 bytes = 19200 > 2560: slabs of 8 columns
    monkeypatch.setattr(_products, "TRANSPOSE_MEMORY", 2560)
    got = csr_matmul(A, Y, transpose=True, threads=2)
    assert_close(got, A.T, Y, A.T @ Y)


# --------------------------------------------------------------------------- #
# convolution matrices against torch
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_matrix_against_torch(rng, dtype, stride):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from convmat import conv_matrix

    weight = rng.standard_normal((8, 4, 3, 3))
    C = conv_matrix(weight, (12, 12), padding=1, stride=stride, dtype=dtype)
    N = 6
    x = rng.standard_normal((N, 4, 12, 12))
    y_ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=stride, padding=1).numpy()
    X = x.astype(dtype).reshape(N, -1).T  # F-contiguous, as ConvOperator passes it
    Y = csr_matmul(C, X)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(Y.T.reshape(y_ref.shape), y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(csr_matmul(C, X[:, 0]).reshape(y_ref.shape[1:]), y_ref[0], rtol=tol, atol=tol)

    g = rng.standard_normal(y_ref.shape)
    x_ref = F.conv_transpose2d(torch.from_numpy(g), torch.from_numpy(weight), stride=stride, padding=1,
                               output_padding=stride - 1).numpy()
    G = g.astype(dtype).reshape(N, -1).T
    Z = csr_matmul(C, G, transpose=True)
    np.testing.assert_allclose(Z.T.reshape(x_ref.shape), x_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(csr_matmul(C, G[:, 1], transpose=True).reshape(x_ref.shape[1:]), x_ref[1],
                               rtol=tol, atol=tol)


# --------------------------------------------------------------------------- #
# bad inputs
# --------------------------------------------------------------------------- #
def test_bad_inputs_raise_clear_errors(rng):
    A = random_csr(rng, 6, 4, canonical=True)
    x = np.ones(4)
    with pytest.raises(TypeError, match="A must be a scipy.sparse CSR.*got ndarray"):
        csr_matmul(A.toarray(), x)
    with pytest.raises(TypeError, match=r"format 'coo'.*A\.tocsr\(\)"):
        csr_matmul(A.tocoo(), x)
    with pytest.raises(ValueError, match=r"X must have 4 rows to multiply A of shape \(6, 4\), got X of shape \(5,\)"):
        csr_matmul(A, np.ones(5))
    with pytest.raises(ValueError, match=r"X must have 6 rows to multiply A\.T of shape \(4, 6\)"):
        csr_matmul(A, np.ones((4, 2)), transpose=True)
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, k\), got shape \(4, 1, 1\)"):
        csr_matmul(A, np.ones((4, 1, 1)))
    with pytest.raises(TypeError, match="X must hold numbers.*dtype object"):
        csr_matmul(A, np.array([None] * 4))
    with pytest.raises(TypeError, match="X must be a dense numpy array, got a sparse"):
        csr_matmul(A, sp.csr_array(np.ones((4, 1))))
    with pytest.raises(ValueError, match=r"threads must be >= 1 .*got 0"):
        csr_matmul(A, x, threads=0)
    with pytest.raises(TypeError, match=r"threads must be a positive int or None, got 1\.5"):
        csr_matmul(A, x, threads=1.5)
    with pytest.raises(TypeError, match="threads must be a positive int or None, got True"):
        csr_matmul(A, x, threads=True)
    with pytest.raises(TypeError, match="transpose must be True or False, got 'yes'"):
        csr_matmul(A, x, transpose="yes")
    with pytest.raises(TypeError, match="conjugate must be True or False, got 1"):
        csr_matmul(A, x, conjugate=1)
    with pytest.raises(ValueError, match=r"out must have shape \(6,\), got \(4,\)"):
        csr_matmul(A, x, out=np.empty(4))
    with pytest.raises(ValueError, match="out must have the result dtype float64, got float32"):
        csr_matmul(A, x, out=np.empty(6, np.float32))
    with pytest.raises(TypeError, match="out must be a numpy array, got list"):
        csr_matmul(A, x, out=[0.0] * 6)
    ro = np.empty(6)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        csr_matmul(A, x, out=ro)
    broken = sp.csr_array((A.data, A.indices, A.indptr), shape=A.shape)
    broken.indptr = broken.indptr[:-1]
    with pytest.raises(ValueError, match="A.indptr must have 7 entries for shape"):
        csr_matmul(broken, x)


# --------------------------------------------------------------------------- #
# loading, fallback, threads and processes
# --------------------------------------------------------------------------- #
def test_import_does_not_load_numba():
    code = "import sys, convmat, convmat.spmm; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_scipy_fallback_without_numba(rng, monkeypatch):
    monkeypatch.setattr(spmm, "_load", lambda: None)
    A = random_csr(rng, 12, 9, dtype=np.complex128)
    X = operand(rng, 12, 3, np.complex128, "F")
    out = np.empty((9, 3), np.complex128)
    got = csr_matmul(A, X, transpose=True, conjugate=True, threads=2, out=out)
    assert got is out
    np.testing.assert_allclose(out, A.conj().T @ X, atol=1e-12)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        csr_matmul(A, X, transpose=True, threads=-1)


def test_available_and_compiled_kernels():
    if not spmm.available():
        pytest.skip("numba does not import")
    K = spmm._load()
    assert set(K) == set(_kernels.KERNELS)


def test_no_writable_cache_location_compiles_in_memory(monkeypatch):
    numba = pytest.importorskip("numba")
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    monkeypatch.setattr(impl, "_locator_classes", [])
    fn = _kernels.jit(numba, _kernels.KERNELS["reduce"], cache=True)
    assert fn._cache.__class__.__name__ == "NullCache"
    out = np.ones(5)
    fn(out, np.full((2, 5), 2.0), 0, 5)
    assert np.array_equal(out, np.full(5, 5.0))


def test_concurrent_callers(rng):
    A = random_csr(rng, 300, 200, density=0.1)
    Xs = [rng.standard_normal((200, 4)) for _ in range(6)]
    results = [None] * len(Xs)

    def call(i):
        results[i] = csr_matmul(A, Xs[i], threads=2)

    workers = [threading.Thread(target=call, args=(i,)) for i in range(len(Xs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for X, got in zip(Xs, results):
        assert_close(got, A, X, A @ X)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_computes(rng):
    A = random_csr(rng, 200, 100, density=0.1)
    x = rng.standard_normal(100)
    ref = A @ x
    assert_close(csr_matmul(A, x, threads=2), A, x, ref)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # child: a fresh pool, same result
        ok = False
        try:
            got = csr_matmul(A, x, threads=2)
            ok = np.allclose(got, ref, atol=1e-10)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# --------------------------------------------------------------------------- #
# determinism: the same bits on every run, in forked and spawned children
# --------------------------------------------------------------------------- #
_DETERMINISM_SCRIPT = """
import hashlib, sys
import numpy as np
from convmat import conv_matrix
from convmat.spmm import csr_matmul
from convmat.spmm import _products
for name, value in {TUNABLES!r}.items():
    setattr(_products, name, value)
rng = np.random.default_rng(7)
C = conv_matrix(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), (24, 24), padding=1)
y = rng.standard_normal(C.shape[0]).astype(np.float32)
Y = rng.standard_normal((C.shape[0], 5)).astype(np.float32)
x = rng.standard_normal(C.shape[1]).astype(np.float32)
h = hashlib.sha256()
for threads in (1, 2, 3):
    for got in (csr_matmul(C, x, threads=threads), csr_matmul(C, y, transpose=True, threads=threads),
                csr_matmul(C, Y, transpose=True, threads=threads), csr_matmul(C, Y.T.copy().T, transpose=True, threads=threads)):
        h.update(got.tobytes())
print(h.hexdigest())
"""
# Small products on the pool, rows in column order: the paths whose sums could depend on timing.
_TUNABLES = {"PARALLEL_MIN_WORK": 0, "THREADS_MIN_NNZ": 0, "THREADS_MIN_WORK": 0, "ORDER_MIN_WORK": 0, "ORDER_MIN_ROW_NNZ": 0, "ORDER_MIN_SHARED": 0}
_DETERMINISM_SCRIPT = _DETERMINISM_SCRIPT.replace("{TUNABLES!r}", repr(_TUNABLES))


def _determinism_digest():
    ns = {}
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(_DETERMINISM_SCRIPT, ns)  # the tunables it sets are restored by the test's monkeypatch
    return buf.getvalue().strip()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_products_are_bitwise_reproducible(threads):
    """20 runs of every product (forward, adjoint, batched) give one result, bit for bit."""
    rng = np.random.default_rng(SEED)
    from convmat import conv_matrix

    C = conv_matrix(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), (32, 32), padding=1)
    x = rng.standard_normal(C.shape[1]).astype(np.float32)
    y = rng.standard_normal(C.shape[0]).astype(np.float32)
    Y = rng.standard_normal((C.shape[0], 6)).astype(np.float32)
    X = rng.standard_normal((C.shape[1], 6)).astype(np.float32)
    cases = {
        "A @ x": lambda: csr_matmul(C, x, threads=threads),
        "A.T @ y": lambda: csr_matmul(C, y, transpose=True, threads=threads),
        "A @ X": lambda: csr_matmul(C, X, threads=threads),
        "A.T @ Y": lambda: csr_matmul(C, Y, transpose=True, threads=threads),
    }
    for name, run in cases.items():
        digests = {run().tobytes() for _ in range(20)}
        assert len(digests) == 1, f"{name} on {threads} threads gave {len(digests)} different results in 20 runs"


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_same_bits_for_every_thread_count(monkeypatch, cores):
    """The blocks depend on the machine's cores, not on ``threads``: 1 to 4 threads give one result."""
    monkeypatch.setattr(_products, "default_threads", lambda: cores)
    rng = np.random.default_rng(SEED + cores)
    from convmat import conv_matrix

    C = conv_matrix(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), (24, 24), padding=1)
    operands = {
        "A @ x": (rng.standard_normal(C.shape[1]).astype(np.float32), False),
        "A.T @ y": (rng.standard_normal(C.shape[0]).astype(np.float32), True),
        "A @ X": (rng.standard_normal((C.shape[1], 5)).astype(np.float32), False),
        "A.T @ Y": (rng.standard_normal((C.shape[0], 5)).astype(np.float32), True),
    }
    for name, (V, transpose) in operands.items():
        results = {csr_matmul(C, V, transpose=transpose, threads=t).tobytes() for t in (1, 2, 3, 4)}
        assert len(results) == 1, f"{name}: {len(results)} different results for 1 to 4 threads ({cores} cores)"
        ref = (C.T if transpose else C) @ V
        np.testing.assert_allclose(csr_matmul(C, V, transpose=transpose, threads=2), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_same_bits_in_forked_and_spawned_children(monkeypatch):
    for name, value in _TUNABLES.items():
        monkeypatch.setattr(_products, name, value)
    parent = _determinism_digest()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # forked child: the same products, the digest through the pipe
        code = 1
        try:
            os.write(w, _determinism_digest().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    forked = os.read(r, 1000).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    spawned = subprocess.run(
        [sys.executable, "-c", _DETERMINISM_SCRIPT], capture_output=True, text=True, check=True, timeout=600
    ).stdout.strip()
    assert forked == parent
    assert spawned == parent


def test_cost_bounds_are_the_first_rows_reaching_each_target():
    """The bisection gives ``np.searchsorted(indptr + arange(m + 1), np.linspace(0, total, n + 1))``."""
    rng = np.random.default_rng(SEED)
    for trial in range(400):
        m = int(rng.integers(0, 700))
        lens = rng.integers(0, (2, 40, 900, 3)[trial % 4], m)
        if trial % 4 == 3:
            lens[rng.random(m) < 0.9] = 0  # mostly empty rows
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype((np.int32, np.int64)[trial % 2])
        cost = indptr.astype(np.int64) + np.arange(m + 1)
        for n in (1, 2, 3, 8, 17):
            want = np.searchsorted(cost, np.linspace(0, float(cost[-1]), n + 1)).tolist()
            want[0], want[-1] = 0, m
            assert _products._cost_bounds(indptr, n) == want, (trial, n)


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_blocks_run_each_blocks_pieces_in_order_and_one_at_a_time(threads):
    from convmat.spmm._threads import parallel_blocks

    bounds = [0, 0, 37, 40, 41, 200, 1000]  # an empty block, small ones, a large one
    seen = {b: [] for b in range(len(bounds) - 1)}
    active = set()
    lock = threading.Lock()

    def task(b, r0, r1, first):
        with lock:
            assert b not in active, f"two pieces of block {b} at once"
            active.add(b)
        assert np.isfinite(np.random.default_rng(r0).standard_normal(2000 * (r1 - r0 + 1)).sum())  # some work
        seen[b].append((r0, r1, first))
        with lock:
            active.remove(b)

    parallel_blocks(task, bounds, threads)
    for b, pieces in seen.items():
        if bounds[b + 1] == bounds[b]:
            assert pieces == [(bounds[b], bounds[b], True)]  # run once: it may have a result to clear
            continue
        assert [p[0] for p in pieces] == [bounds[b]] + [p[1] for p in pieces[:-1]]  # consecutive, in order
        assert pieces[-1][1] == bounds[b + 1] and all(p[1] > p[0] for p in pieces)
        assert [p[2] for p in pieces] == [True] + [False] * (len(pieces) - 1)
    assert len(seen[5]) > 1  # the large block ran in pieces


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_of_partial_results_in_its_fixed_order(monkeypatch, dtype):
    """``reduce`` adds ``out + part[0] + part[1] + ...`` entry by entry, however it is split."""
    K = spmm._load()
    if K is None:
        pytest.skip("numba does not import")
    rng = np.random.default_rng(SEED)
    n = 5000
    out0 = rng.standard_normal(n).astype(dtype) * 1e8
    parts = (rng.standard_normal((3, n)) * 10.0 ** rng.integers(-8, 8, (3, n))).astype(dtype)
    want = out0.copy()
    for p in parts:
        want = want + p
    got = []
    for least in (1 << 30, 0):  # on the calling thread, then split between threads
        monkeypatch.setattr(_products, "REDUCE_PARALLEL_MIN", least)
        out = out0.copy()
        _products._reduce(K, out, parts, 3)
        got.append(out)
    assert np.array_equal(got[0], want) and np.array_equal(got[1], want)


@pytest.mark.parametrize("k", [1, 8])
def test_small_products_stay_on_the_calling_thread(monkeypatch, k):
    """Below THREADS_MIN_NNZ (one vector) and THREADS_MIN_WORK (several columns) a product asks the pool
    for nothing, whatever ``threads`` says; from them on it does; the bits are the same."""
    from convmat import conv_matrix
    from convmat.spmm import _threads

    spmm.csr_matmul(sp.csr_array(np.eye(2)), np.ones(2))  # start the loader before counting
    _threads.LOADER.settle()
    rng = np.random.default_rng(SEED)
    C = conv_matrix(rng.standard_normal((8, 8, 3, 3)), (16, 16), padding=1, dtype=np.float32)
    X = rng.standard_normal((C.shape[1], k)).astype(np.float32).reshape(-1) if k == 1 else \
        np.asfortranarray(rng.standard_normal((C.shape[1], k)).astype(np.float32))
    Y = rng.standard_normal(C.shape[0] * k).astype(np.float32).reshape(C.shape[0], k)[:, 0 if k == 1 else slice(None)]
    submitted = []
    pool = _threads._pool

    def counting(n):
        executor = pool(n)
        submitted.append(n)
        return executor

    monkeypatch.setattr(_threads, "_pool", counting)
    results = []
    for least in (C.nnz * k + 1, C.nnz * k):  # just too small for the pool, then just large enough
        monkeypatch.setattr(_products, "THREADS_MIN_NNZ" if k == 1 else "THREADS_MIN_WORK", least)
        submitted.clear()
        results.append([spmm.csr_matmul(C, X, threads=2), spmm.csr_matmul(C, Y, transpose=True, threads=2)])
        assert bool(submitted) == (least == C.nnz * k)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_transposed_vector_product_with_empty_blocks(monkeypatch):
    """A row heavier than a block leaves blocks without rows: their partial results are cleared all the same."""
    empty = np.empty

    def garbage(*args, **kwargs):  # np.empty promises no values: NaN where the product's buffers start
        out = empty(*args, **kwargs)
        if out.dtype.kind in "fc":
            out.fill(np.nan)
        return out

    K = spmm._load()
    if K is None:
        pytest.skip("numba does not import")
    from convmat.spmm import _threads

    monkeypatch.setattr(_threads, "ready", lambda key: K)  # the kernels, not the twins
    monkeypatch.setattr(np, "empty", garbage)
    rng = np.random.default_rng(SEED)
    m, n = 50, 3000
    dense = np.zeros((m, n))
    dense[7] = rng.standard_normal(n)  # one row holds most of the matrix's entries
    dense[rng.random((m, n)) < 0.01] = 1.0
    A = sp.csr_array(dense)
    nblocks = _products._split(_products.TRANSPOSE_BLOCKS_PER_THREAD, A.nnz)
    bounds = _products._cost_bounds(A.indptr, nblocks)
    assert nblocks > 2 and len(set(bounds)) < len(bounds)  # empty blocks
    y = rng.standard_normal(m)
    for threads in (1, 2, 3):
        got = csr_matmul(A, y, transpose=True, threads=threads)
        np.testing.assert_allclose(got, A.T @ y, rtol=1e-12, atol=1e-12)
        assert np.array_equal(got, csr_matmul(A, y, transpose=True, threads=1))

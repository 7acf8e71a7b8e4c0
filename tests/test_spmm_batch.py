"""The kernels of several columns (``fwd_mat``, ``tr_mat``): each entry of a result is one chain of
fused multiply-adds in a fixed order, whichever rows run together and however the columns are blocked.

The streamed operator relies on it (it calls the kernels on rows it builds a few at a time and
must give the stored product's bits).  Checked on convolution matrices (runs of rows with the
same columns) with column counts that take every path (16- and 8-column register blocks, the
column-by-column rest, tiny ``k``), compiled and as plain Python, for the four dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest

from convmat import conv_matrix
from convmat.spmm import _kernels, _mat_kernels, _products
from convmat.spmm._threads import load

SEED = 20261130
DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
#: Compiled: every dtype, k taking the 16- and 8-column blocks and the rest; plain Python (slow): two.
CASES = [(True, d, k) for d in DTYPES for k in (1, 3, 19, 40)] + [(False, d, 19) for d in (np.float32, np.complex128)]
IDS = [f"{'compiled' if c else 'python'}-{np.dtype(d).name}-k{k}" for c, d, k in CASES]


def kernels(compiled):
    if not compiled:
        return dict(_kernels.KERNELS)
    K = load()
    if K is None:
        pytest.skip("Numba is not installed")
    return K


def setup(dtype, k, transpose=False):
    rng = np.random.default_rng(SEED)
    weight = rng.standard_normal((10, 3, 3, 3))  # 10 output channels: runs of 10 rows (8 + 2 single)
    C = conv_matrix(weight, (5, 6), padding=1, dtype=dtype)
    rows = C.shape[0] if transpose else C.shape[1]
    X = rng.standard_normal((rows, k))
    if np.dtype(dtype).kind == "c":
        X = X + 1j * rng.standard_normal((rows, k))
    key = np.array([C.indices[C.indptr[i]] * C.shape[1] + C.indices[C.indptr[i + 1] - 1] for i in range(C.shape[0])])
    return C, X.astype(dtype), np.argsort(key, kind="stable")


def fwd(K, C, X, order, rows=None):
    Y = np.full((C.shape[0], X.shape[1]), np.nan, dtype=X.dtype)
    rows = order if rows is None else rows
    K["fwd_mat"](C.indptr, C.indices, C.data, np.ascontiguousarray(X), Y, rows, 0, rows.size, X.dtype.type(0))
    return Y


def tr(K, C, Y, order, pieces):
    Z = np.full((C.shape[1], Y.shape[1]), np.nan, dtype=Y.dtype)
    bounds = np.linspace(0, order.size, pieces + 1).astype(int)
    for b in range(pieces):  # consecutive pieces of the order, into the same result
        K["tr_mat"](C.indptr, C.indices, C.data, np.ascontiguousarray(Y), Z, order, bounds[b], bounds[b + 1],
                    Y.dtype.type(0), b == 0)
    return Z


@pytest.mark.parametrize(("compiled", "dtype", "k"), CASES, ids=IDS)
def test_forward_rows_and_columns_are_independent(compiled, dtype, k):
    K = kernels(compiled)
    C, X, order = setup(dtype, k)
    Y = fwd(K, C, X, order)
    np.testing.assert_allclose(Y, C @ X, rtol=1e-4 if np.dtype(dtype).itemsize <= 8 else 1e-10, atol=1e-5)
    for i in range(0, C.shape[0], 37):  # a row computed alone
        assert fwd(K, C, X, order, np.array([i]))[i].tobytes() == Y[i].tobytes()
    for t in (0, k // 2, k - 1):  # a column computed alone
        assert fwd(K, C, X[:, t : t + 1], order)[:, 0].tobytes() == Y[:, t].tobytes()
    natural = fwd(K, C, X, order, np.arange(C.shape[0]))  # runs of one row (channels apart)
    assert natural.tobytes() == Y.tobytes()


@pytest.mark.parametrize(("compiled", "dtype", "k"), CASES, ids=IDS)
def test_transposed_bits_do_not_depend_on_how_rows_are_grouped(compiled, dtype, k):
    K = kernels(compiled)
    C, Y, order = setup(dtype, k, transpose=True)
    Z = tr(K, C, Y, order, 1)
    np.testing.assert_allclose(Z, C.T @ Y, rtol=1e-4 if np.dtype(dtype).itemsize <= 8 else 1e-10, atol=1e-5)
    assert tr(K, C, Y, order, order.size).tobytes() == Z.tobytes()  # one row at a time
    assert tr(K, C, Y, order, 7).tobytes() == Z.tobytes()  # pieces that split runs
    for t in (0, k - 1):
        assert tr(K, C, Y[:, t : t + 1], order, 3)[:, 0].tobytes() == Z[:, t].tobytes()


def test_segments_and_runs_do_not_change_the_bits(monkeypatch):
    """Short segments (many per row) and short runs: the same bits as the defaults (plain Python)."""
    K = kernels(False)
    C, X, order = setup(np.float32, 19)
    _, Yt, _ = setup(np.float32, 19, transpose=True)
    Y, Z = fwd(K, C, X, order), tr(K, C, Yt, order, 1)
    monkeypatch.setattr(_mat_kernels, "SEGMENT_BYTES", 1)  # 8 entries a segment
    monkeypatch.setattr(_mat_kernels, "RUN_ROWS", 5)
    assert fwd(K, C, X, order).tobytes() == Y.tobytes()
    assert tr(K, C, Yt, order, 1).tobytes() == Z.tobytes()


def test_stored_product_has_the_kernels_bits_for_every_thread_count(monkeypatch):
    """csr_matmul's blocks (any thread count) give the bits of one call over all rows."""
    K = kernels(True)
    monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_products, "THREADS_MIN_NNZ", 0)  # and on the pool
    monkeypatch.setattr(_products, "THREADS_MIN_WORK", 0)
    C, X, _ = setup(np.float32, 24)
    from convmat.spmm import csr_matmul

    Y = csr_matmul(C, X, threads=2)
    assert fwd(K, C, X, np.arange(C.shape[0])).tobytes() == Y.tobytes()
    assert csr_matmul(C, X, threads=1).tobytes() == Y.tobytes()

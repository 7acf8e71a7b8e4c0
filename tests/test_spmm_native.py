"""The compiled kernels (``convmat/spmm/_native.c``): the Numba kernels' bits, before Numba loads.

* One vector: against the Numba kernels, bit for bit, in the blocks
  :func:`convmat.spmm._products._product_vec` runs (hypothesis: shapes, empty rows, duplicates, four
  dtypes, int32 and int64 indices, one to many blocks, NaN, inf and -0.0), and on convolution matrices
  whose products take four rows at a time (``tr_vec4``, ``fwd_vec4``).
* ``fwd_vec4`` (no Numba twin) against Numba's ``fwd_vec``, and the one-pass ``tr_vec4`` against Numba's
  (hypothesis: matrices whose quarters share their columns except in some slots, differing in a block
  of eight, in the entries left, or in length), and both serving products of float32 and float64
  beside Numba's kernels.
* Several columns: ``fwd_mat``, ``tr_mat``, ``row_keys`` and ``transpose_into`` against the Numba
  kernels in the blocks of :func:`convmat.spmm._products._product_mat` (hypothesis: the same matrices,
  their rows repeated so that runs of rows share columns, duplicates inside runs, 1 to 40 columns), and
  on convolutions (runs of output channels, four rows at a time, column blocks and the columns left).
* In a fresh process the first products (forward and transposed, one vector below and above
  ``TWIN_MAX_NNZ``, and several columns) run on them before Numba is imported, and give the bits of the
  products after it.
* Built as plain C (``-DCONVMAT_GENERIC``: no AVX2 or FMA clones, ``fma()`` from the C library), the
  same bits: what a processor without AVX2 and FMA runs.
* What they do not serve (mixed dtypes, strided arrays, ``CONVMAT_NATIVE=0``) goes to Numba or the twins.
* Where a C compiler is, the library was built (an optional extension must not fail silently).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from test_spmm_twins import DTYPES, kernels, operand, random_matrix, same_bits

from convmat.spmm import _native, _products


def native():
    if not _native.available():
        pytest.skip("the compiled kernels are not built (no C compiler when convmat was installed)")


def test_the_library_is_built_where_a_compiler_is():
    """``setup.py`` builds the library as an optional extension: with a compiler here, it must be there."""
    if os.environ.get("CONVMAT_NATIVE") == "0":
        pytest.skip("CONVMAT_NATIVE=0 switches the compiled kernels off")
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler on this machine: the optional extension is not built")
    assert _native.available()


def both(A, v, transpose, threads, P=None):
    """``_product_vec`` on the Numba kernels and on the compiled ones (the same blocks)."""
    K = kernels()
    n = A.shape[1]
    size = n if transpose else A.shape[0]
    out = [np.empty(size, A.dtype), np.empty(size, A.dtype)]
    N = _native.kernels(A.indptr, A.indices, A.data, v, out[1])
    assert N is not None
    for table, y in zip((K, N), out):
        _products._product_vec(table, A.indptr, A.indices, A.data, v, y, n, transpose, threads, A.dtype.type(0))
    return out


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(0, 90),
    n=st.integers(0, 70),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from(DTYPES),
    index_dtype=st.sampled_from(["int32", "int64"]),
    empty_every=st.sampled_from([0, 1, 2, 5]),
    transpose=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
    special=st.booleans(),
)
def test_compiled_kernels_give_the_numba_kernels_bits(seed, m, n, density, dtype, index_dtype, empty_every,
                                                      transpose, threads, special):
    native()
    A = random_matrix(seed, m, n, density, dtype, index_dtype, empty_every)
    v = operand(seed, m if transpose else n, dtype)
    if special and A.nnz:
        A.data[[0, A.nnz // 2, -1]] = [-0.0, np.inf, np.nan]
    if special and v.size:
        v[0] = -0.0
    mp = pytest.MonkeyPatch()
    mp.setattr(_products, "PARALLEL_MIN_WORK", 0)  # several blocks (and partial sums) even for small matrices
    try:
        numba_y, native_y = both(A, v, transpose, threads)
    finally:
        mp.undo()
    assert same_bits(native_y, numba_y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_compiled_kernels_on_convolutions_four_rows_at_a_time(monkeypatch, dtype, index_dtype):
    """Output channels a quarter apart share their columns (``tr_vec4``, ``fwd_vec4``); inf and -0.0 among the values."""
    native()
    from convmat import conv_matrix

    monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_products, "VEC4_MIN_NNZ", 0)  # the forward product's fwd_vec4 too
    rng = np.random.default_rng(7)
    C = conv_matrix(rng.standard_normal((8, 3, 3, 3)), (19, 17), padding=1, stride=(2, 1), dtype=dtype)
    C.indptr, C.indices = C.indptr.astype(index_dtype), C.indices.astype(index_dtype)
    assert _products._quarter_period(C.indptr, C.indices)
    C.data[5] = np.inf
    C.data[-3] = -0.0
    y = operand(3, C.shape[0], dtype)
    x = operand(4, C.shape[1], dtype)
    for transpose, v in ((True, y), (False, x)):
        for threads in (1, 2):
            numba_y, native_y = both(C, v, transpose, threads)
            assert same_bits(native_y, numba_y), (transpose, threads)


def quartered(seed, P, max_len, n, dtype, index_dtype, differ):
    """A CSR matrix of 4P rows whose rows s, s + P, s + 2P, s + 3P share their columns (duplicates and
    unsorted indices included), except in a fraction ``differ`` of the slots: one index changed (in a
    block of eight or among the entries left), or one row longer."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, max_len + 1, P)
    cols = [rng.integers(0, n, L) for L in lens]
    rows = [None] * (4 * P)
    for s in range(P):
        for k in range(4):
            rows[s + k * P] = cols[s].copy()
        if rng.random() < differ:
            k = int(rng.integers(1, 4))
            if lens[s] and rng.random() < 0.7:
                u = int(rng.integers(0, lens[s]))
                rows[s + k * P][u] = (rows[s + k * P][u] + 1 + rng.integers(0, n - 1)) % n if n > 1 else 0
            else:
                rows[s + k * P] = np.append(rows[s + k * P], rng.integers(0, n))
    indptr = np.zeros(4 * P + 1, np.int64)
    np.cumsum([r.size for r in rows], out=indptr[1:])
    indices = np.concatenate(rows) if indptr[-1] else np.zeros(0, np.int64)
    vals = rng.standard_normal(indices.size) * 10.0 ** rng.integers(-3, 4, indices.size)
    return sp.csr_array((vals.astype(dtype), indices.astype(index_dtype), indptr.astype(index_dtype)),
                        shape=(4 * P, n))


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    P=st.integers(1, 12),
    max_len=st.sampled_from([0, 3, 8, 9, 17, 40, 5000]),
    n=st.integers(1, 60),
    dtype=st.sampled_from(["float32", "float64"]),
    index_dtype=st.sampled_from(["int32", "int64"]),
    differ=st.sampled_from([0.0, 0.3, 1.0]),
    transpose=st.booleans(),
    special=st.booleans(),
)
def test_four_row_kernels_give_the_numba_kernels_bits(seed, P, max_len, n, dtype, index_dtype, differ, transpose,
                                                     special):
    """The library's ``fwd_vec4`` (no Numba twin) against Numba's ``fwd_vec``, and its one-pass ``tr_vec4``
    against Numba's ``tr_vec4``, over two pieces of the slots (the second adding into the first's
    result): four rows with the same columns taken together, slots whose rows differ (in a block of
    eight, in the entries left, in length) row by row (``tr_vec4``: after putting back what it had
    added), slots longer than the values it keeps (5000 entries) by the two-pass kernel."""
    native()
    A = quartered(seed, P, max_len, n, dtype, index_dtype, differ)
    v = operand(seed, A.shape[0] if transpose else n, dtype)
    if special and A.nnz:
        A.data[[0, A.nnz // 2, -1]] = [-0.0, np.inf, np.nan]
    if special:
        v[0] = -0.0
    zero = A.dtype.type(0)
    size = n if transpose else A.shape[0]
    cut = int(np.random.default_rng(seed).integers(0, P + 1))
    out = []
    for table, name in ((kernels(), "tr_vec4" if transpose else "fwd_vec"),
                        (_native.kernels(A.indptr, A.indices, A.data, v, np.empty(size, A.dtype)),
                         "tr_vec4" if transpose else "fwd_vec4")):
        y = np.full(size, np.nan, A.dtype)
        if transpose:
            for s0, s1, clear in ((0, cut, True), (cut, P, False)):
                table[name](A.indptr, A.indices, A.data, v, y, P, s0, s1, zero, clear)
        elif name == "fwd_vec":
            table[name](A.indptr, A.indices, A.data, v, y, 0, A.shape[0], zero)
        else:
            for s0, s1 in ((0, cut), (cut, P)):
                table[name](A.indptr, A.indices, A.data, v, y, P, s0, s1, zero)
        out.append(y)
    assert same_bits(out[1], out[0])


def test_four_row_kernels_serve_products_beside_numba(monkeypatch):
    """Once Numba's kernels are loaded, one-vector products on a convolution still take the library's
    ``fwd_vec4`` and one-pass ``tr_vec4`` (float32 and float64; complex ones Numba's alone), with the
    bits of Numba's ``fwd_vec`` and ``tr_vec4`` in the same blocks."""
    native()
    import convmat.spmm as spmm
    from convmat import conv_matrix

    K = kernels()
    monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_products, "THREADS_MIN_NNZ", 0)  # and on the pool
    monkeypatch.setattr(_products, "THREADS_MIN_WORK", 0)
    monkeypatch.setattr(_products, "VEC4_MIN_NNZ", 0)
    for dtype in DTYPES:
        C = conv_matrix(np.random.default_rng(5).standard_normal((8, 4, 3, 3)), (12, 10), padding=1, dtype=dtype)
        zero = C.dtype.type(0)
        for transpose, v, size in ((False, operand(1, C.shape[1], dtype), C.shape[0]),
                                   (True, operand(2, C.shape[0], dtype), C.shape[1])):
            spmm.csr_matmul(C, v, transpose=transpose)  # loads Numba's kernels of this signature
            spmm._threads.LOADER.settle()
            out = np.empty(size, dtype)
            key = spmm._threads.signature(transpose, C.indptr, C.indices, C.data, v, out)
            table, cold = spmm._vec_kernels(key, C.indptr, C.indices, C.data, v, out)
            assert not cold
            library = _native.kernels(C.indptr, C.indices, C.data, v, out)
            served = np.dtype(dtype) in _native.VEC4_DTYPES
            assert ("fwd_vec4" in table) == served, dtype
            assert (table["tr_vec4"] is library["tr_vec4"]) == served, dtype
            assert table["fwd_vec"] is K["fwd_vec"], dtype  # the rest is Numba's
            got = spmm.csr_matmul(C, v, transpose=transpose, threads=2)
            _products._product_vec(K, C.indptr, C.indices, C.data, v, out, C.shape[1], transpose, 2, zero)
            assert same_bits(got, out), (dtype, transpose)


def both_mat(A, X, transpose, threads):
    """``_product_mat`` (with its row order and the row-major copy of an F-ordered ``X``) on the Numba
    kernels and on the compiled ones."""
    K, N = kernels(), _native.kernels(A.indptr, A.indices, A.data, dtype=A.dtype)
    assert N is not None
    n = A.shape[1]
    out = []
    for table in (K, N):
        Xc = _products._rowmajor(table, np.asfortranarray(X), A.dtype, False, threads)
        Y = np.empty((n if transpose else A.shape[0], X.shape[1]), A.dtype)
        _products._product_mat(table, A.indptr, A.indices, A.data, Xc, Y, n, transpose, threads, A.dtype.type(0))
        out.append(Y)
    return out


def with_runs(A, repeat, seed):
    """``A``'s rows ``repeat`` times, with other values, interleaved (row ``i`` of copy ``c`` is row
    ``i * repeat + c``): runs of rows with the same columns, duplicates included, once sorted."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    copies = [A] + [sp.csr_array((rng.permutation(A.data), A.indices, A.indptr), shape=A.shape)
                    for _ in range(repeat - 1)]
    B = sp.vstack(copies, format="csr")
    perm = np.arange(B.shape[0]).reshape(repeat, -1).T.ravel()
    B = B[perm]
    B.indptr, B.indices = B.indptr.astype(A.indptr.dtype), B.indices.astype(A.indices.dtype)
    return B


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(0, 40),
    n=st.integers(0, 50),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from(DTYPES),
    index_dtype=st.sampled_from(["int32", "int64"]),
    empty_every=st.sampled_from([0, 1, 3]),
    repeat=st.sampled_from([1, 3, 6]),
    k=st.integers(2, 40),
    transpose=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
)
def test_compiled_batch_kernels_give_the_numba_kernels_bits(seed, m, n, density, dtype, index_dtype, empty_every,
                                                            repeat, k, transpose, threads):
    native()
    A = with_runs(random_matrix(seed, m, n, density, dtype, index_dtype, empty_every), repeat, seed)
    X = operand(seed, (A.shape[0] if transpose else A.shape[1]) * k, dtype).reshape(-1, k)
    mp = pytest.MonkeyPatch()
    for name in ("PARALLEL_MIN_WORK", "ORDER_MIN_WORK", "ORDER_MIN_ROW_NNZ"):  # blocks and sorted runs when small
        mp.setattr(_products, name, 0)
    try:
        numba_Y, native_Y = both_mat(A, X, transpose, threads)
    finally:
        mp.undo()
    assert same_bits(native_Y, numba_Y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 8, 16, 21, 40])
def test_compiled_batch_kernels_on_convolutions(monkeypatch, dtype, k):
    """Runs of output channels four rows at a time, in column blocks and the columns left; -0.0, inf."""
    native()
    from convmat import conv_matrix

    for name in ("PARALLEL_MIN_WORK", "ORDER_MIN_WORK", "ORDER_MIN_ROW_NNZ"):  # blocks and runs on a small layer
        monkeypatch.setattr(_products, name, 0)
    rng = np.random.default_rng(8)
    C = conv_matrix(rng.standard_normal((10, 3, 3, 3)), (15, 13), padding=1, dtype=dtype)
    C.data[7] = np.inf
    C.data[-2] = -0.0
    assert _products._row_order(kernels(), C.indptr, C.indices, C.shape[1], k, 1).tolist() != list(range(C.shape[0]))
    for transpose in (False, True):
        X = operand(k, (C.shape[0] if transpose else C.shape[1]) * k, dtype).reshape(-1, k)
        for threads in (1, 2):
            numba_Y, native_Y = both_mat(C, X, transpose, threads)
            assert same_bits(native_Y, numba_Y), (transpose, threads)


def test_the_plain_c_gives_the_same_bits(tmp_path):
    """``_native.c`` built without clones and intrinsics (``-DCONVMAT_GENERIC``: what a processor without
    AVX2 and FMA runs, ``fma()`` from the C library) gives the Numba kernels' bits, one vector and batch."""
    import ctypes
    import pathlib

    cc = shutil.which("cc") or shutil.which("gcc")
    source = pathlib.Path(_native.__file__).with_name("_native.c")
    if cc is None or not source.exists():
        pytest.skip("needs a C compiler and convmat's C source (an editable install)")
    lib = tmp_path / "generic.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-DCONVMAT_CONTRACT_OFF",
                    "-DCONVMAT_GENERIC", str(source), "-o", str(lib), "-lm"], check=True)
    generic = ctypes.CDLL(str(lib))
    from convmat import conv_matrix

    mp = pytest.MonkeyPatch()
    for name in ("PARALLEL_MIN_WORK", "ORDER_MIN_WORK", "ORDER_MIN_ROW_NNZ", "VEC4_MIN_NNZ"):
        mp.setattr(_products, name, 0)
    try:
        for dtype in DTYPES:
            C = conv_matrix(np.random.default_rng(9).standard_normal((8, 3, 3, 3)), (11, 9), padding=1, dtype=dtype)
            for A in (C, random_matrix(2, 40, 30, 0.3, dtype, "int64", 3)):
                table = _native._table(generic, A.dtype, A.indptr.dtype)
                mp.setattr(_native, "kernels", lambda *a, **kw: table)
                for transpose in (False, True):
                    size = A.shape[0] if transpose else A.shape[1]
                    v = operand(1, size, dtype)
                    numba_y, generic_y = both(A, v, transpose, 2)
                    assert same_bits(generic_y, numba_y), (dtype, transpose)
                    X = operand(2, size * 19, dtype).reshape(-1, 19)  # a block of 16 (8) columns and the rest
                    numba_Y, generic_Y = both_mat(A, X, transpose, 2)
                    assert same_bits(generic_Y, numba_Y), (dtype, transpose)
    finally:
        mp.undo()


def test_products_the_compiled_kernels_do_not_serve_go_elsewhere():
    native()
    A = random_matrix(1, 30, 20, 0.3, "float32", "int32", 0)
    x32, y32 = np.ones(20, np.float32), np.empty(30, np.float32)
    assert _native.kernels(A.indptr, A.indices, A.data, x32, y32) is not None
    assert _native.kernels(A.indptr, A.indices, A.data, np.ones(20), np.empty(30)) is None  # mixed dtypes
    assert _native.kernels(A.indptr, A.indices, A.data, np.ones(40, np.float32)[::2], y32) is None  # strided
    assert _native.kernels(A.indptr.astype(np.int64), A.indices, A.data, x32, y32) is None  # mixed index dtypes
    assert _native.kernels(A.indptr, A.indices, A.data.astype(np.float16), x32, y32) is None
    assert _native.kernels(A.indptr, A.indices, A.data, dtype=np.float32) is not None  # several columns
    assert _native.kernels(A.indptr, A.indices, A.data, dtype=np.float64) is None  # float32 data, float64 result


_FRESH = r"""
import json, sys
import numpy as np
from convmat import conv_matrix
from convmat.spmm import _native, _products, _threads, csr_matmul
_products.TWIN_MAX_NNZ = {twin_max}
served = []
kernels = _native.kernels
def recording(*arrays, **kw):
    table = kernels(*arrays, **kw)
    served.append((table is not None, "numba" in sys.modules))
    return table
_native.kernels = recording
rng = np.random.default_rng(3)
dt = np.dtype("{dtype}")
def values(*shape):
    v = rng.standard_normal(shape)
    return (v + 1j * rng.standard_normal(shape) if dt.kind == "c" else v).astype(dt)
C = conv_matrix(values(8, 8, 3, 3), (40, 40), padding=1, dtype=dt)
x, y = values(C.shape[1]), values(C.shape[0])
X, Y = values(C.shape[1], 24), np.asfortranarray(values(C.shape[0], 24))
products = [lambda: csr_matmul(C, x), lambda: csr_matmul(C, y, transpose=True)]
if {batch}:  # first of all, in a fresh process
    products = [lambda: csr_matmul(C, X), lambda: csr_matmul(C, Y, transpose=True)] + products
first = [p() for p in products]
_threads.LOADER.settle()
later = [p() for p in products]
print(json.dumps(dict(served=served, warm=len(_threads.LOADER.warm), available=_native.available(),
                      same=[a.tobytes() == b.tobytes() for a, b in zip(first, later)])))
"""


def _fresh(twin_max, batch=False, dtype="float32", **env):
    code = _FRESH.format(twin_max=twin_max, batch=batch, dtype=dtype)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("twin_max", [1 << 26, 1000])
def test_fresh_process_first_products_compiled_before_numba(twin_max):
    """First products on the compiled kernels, Numba not imported yet, even those the twins would leave to Numba."""
    native()
    kernels()
    r = _fresh(twin_max)
    assert r["available"]
    # the two first products, then the later ones on Numba's kernels with the library's fwd_vec4 and tr_vec4
    assert [table for table, _ in r["served"]] == [True] * 4
    assert r["served"][0][1] is False  # the first product ran before anything imported Numba
    assert r["served"][2][1] is True
    assert r["warm"] == 2  # then Numba's kernels were loaded in the background for the later products
    assert r["same"] == [True, True]


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_fresh_process_first_batch_products_compiled_before_numba(dtype):
    """Products of several columns first in a process: on the compiled kernels, before Numba is imported."""
    native()
    kernels()
    r = _fresh(1 << 26, batch=True, dtype=dtype)
    # the four first products, the two later batch products, and for float32 the library's fwd_vec4 and
    # tr_vec4 for the later one-vector products (which run on Numba's kernels otherwise)
    assert [table for table, _ in r["served"]] == [True] * (8 if dtype == "float32" else 6)
    assert r["served"][0][1] is False  # the first product ran before anything imported Numba
    assert r["served"][1][1] is False  # and the second: batch products do not load Numba
    assert r["warm"] == 2  # Numba's kernels of the two one-vector signatures only, loaded in the background
    assert r["same"] == [True] * 4


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_prefetch_batch_loads_the_signatures_of_batch_products(monkeypatch, index_dtype):
    """Where the library is not there, ``prefetch(dtype, batch=True)`` loads Numba's kernels of products of
    F-ordered columns (as ConvOperator passes them): the products find them loaded and wait for nothing."""
    kernels()
    from convmat.spmm import _threads, csr_matmul, prefetch

    A = random_matrix(5, 30, 20, 0.4, "complex128", index_dtype, 0)
    # forget the batch signatures earlier tests loaded (x of a signature: (dtype, contiguous, writeable, ndim))
    monkeypatch.setattr(_threads.LOADER, "warm", {key for key in _threads.LOADER.warm if key[4][3] != 2})
    monkeypatch.setattr(_native, "kernels", lambda *a, **kw: None)  # no library
    prefetch(np.complex128, np.dtype(index_dtype), batch=True)
    _threads.LOADER.settle()
    waited = []
    wait = _threads.wait
    monkeypatch.setattr(_threads, "wait", lambda key: waited.append(key) or wait(key))
    X, Y = np.asfortranarray(np.ones((20, 5), complex)), np.asfortranarray(np.ones((30, 5), complex))
    assert np.allclose(csr_matmul(A, X), A @ X) and np.allclose(csr_matmul(A, Y, transpose=True), A.T @ Y)
    assert waited == []  # both signatures were loaded by prefetch
    ready = [_threads.LOADER.ready(key) is not None for key in _threads.LOADER.warm if key[4][3] == 2]
    assert len(ready) == 2 and all(ready)
    with pytest.raises(TypeError, match="batch"):
        prefetch(np.float64, batch=1)


def test_batch_products_stay_on_the_library(monkeypatch):
    """Products of several columns, every dtype, run on the compiled kernels and load no Numba signature."""
    native()
    from convmat.spmm import _threads, csr_matmul

    monkeypatch.setattr(_threads.LOADER, "warm", {key for key in _threads.LOADER.warm if key[4][3] != 2})
    started = []
    monkeypatch.setattr(_threads, "prefetch", lambda key=None: started.append(key))
    monkeypatch.setattr(_threads, "wait", lambda key: started.append(key))
    for dtype in DTYPES:
        A = random_matrix(6, 30, 20, 0.4, dtype, "int32", 0)
        X = np.asfortranarray(operand(1, 20 * 4, dtype).reshape(4, 20).T)
        assert np.allclose(csr_matmul(A, X), A @ X, rtol=1e-4)
        assert np.allclose(csr_matmul(A, X[:, :3].T.copy().T, transpose=False), A @ X[:, :3], rtol=1e-4)
    assert started == []


def test_switched_off_by_the_environment():
    kernels()
    r = _fresh(1 << 26, CONVMAT_NATIVE="0")
    assert not r["available"]
    assert [table for table, _ in r["served"]] == [False] * 4  # nor the four-row kernels for the later products
    assert r["same"] == [True, True]

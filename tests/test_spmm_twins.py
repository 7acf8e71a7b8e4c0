"""The first products in a process: NumPy twins of the kernels (the same bits) and the background loader.

* :mod:`convmat.spmm._twins` against the compiled exact kernels, bit for bit
  (hypothesis: shapes, empty rows, duplicates, four dtypes, mixed
  precisions, int32 and int64 indices, one to many blocks), and against
  SciPy to rounding.
* The products of :func:`convmat.spmm.csr_matmul` before and after Numba is
  loaded give the same bits, for every thread count; in a fresh process
  the first products run before Numba is imported.  These tests switch off
  the compiled kernels of ``_native.c`` (``CONVMAT_NATIVE=0``), which
  otherwise compute the first products (``tests/test_spmm_native.py``).
* Numba blocked from import (a subprocess): one-vector products still run
  and give the bits the kernels give; batches are SciPy's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from convmat.spmm import _native, _products, _threads, _twins, csr_matmul

#: Subprocesses without the compiled kernels: their first products run on the twins.
TWIN_ENV = dict(os.environ, CONVMAT_NATIVE="0")

DTYPES = ("float32", "float64", "complex64", "complex128")
# (data dtype, result dtype) pairs: the data of a matrix is read in its own dtype.
MIXED = [(d, d) for d in DTYPES] + [("float32", "float64"), ("float32", "complex64"), ("float64", "complex128"),
                                    ("complex64", "complex128")]


def kernels():
    K = _threads.load()
    if K is None:
        pytest.skip("numba does not import")
    return K


def same_bits(a, b):
    """Equal bit patterns (signed zeros distinct), NaNs equal whatever their payloads."""
    assert a.shape == b.shape and a.dtype == b.dtype
    ra, rb = a.view(a.real.dtype), b.view(b.real.dtype)
    nan = np.isnan(ra) & np.isnan(rb)
    return np.array_equal(np.where(nan, 0, ra).view(np.uint8), np.where(nan, 0, rb).view(np.uint8))


def random_matrix(seed, m, n, density, data_dtype, index_dtype, empty_every):
    """A CSR matrix with duplicates, unsorted indices and empty rows, its arrays as given."""
    rng = np.random.default_rng(seed)
    lens = rng.binomial(max(1, int(n * density * 2)), 0.5, m) if n else np.zeros(m, np.int64)
    if empty_every:
        lens[::empty_every] = 0
    indptr = np.zeros(m + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    indices = rng.integers(0, max(n, 1), indptr[-1])
    vals = rng.standard_normal(indices.size) * 10.0 ** rng.integers(-3, 4, indices.size)
    if np.dtype(data_dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal(indices.size)
    A = sp.csr_array((vals.astype(data_dtype), indices.astype(index_dtype), indptr.astype(index_dtype)), shape=(m, n))
    return A


def operand(seed, size, dtype):
    rng = np.random.default_rng(seed + 1)
    v = rng.standard_normal(size) * 10.0 ** rng.integers(-3, 4, size)
    if np.dtype(dtype).kind == "c":
        v = v + 1j * rng.standard_normal(size)
    return v.astype(dtype)


def both_ways(A, v, result_dtype, transpose, nblocks, threads=1):
    """``A @ v`` (``A.T @ v``) by the compiled kernels and by the twins, over ``nblocks`` blocks of rows."""
    K = kernels()
    indptr, indices, data = A.indptr, A.indices, A.data
    m, n = A.shape
    zero = np.dtype(result_dtype).type(0)
    bounds = _products._cost_bounds(indptr, nblocks)
    if transpose:
        got = np.empty(n, result_dtype)
        part = np.empty((len(bounds) - 2, n), result_dtype)
        _products._scatter(K, "tr_vec", (indptr, indices, data, v), got, part, bounds, 2, zero, pieces=True)
        twin = np.empty(n, result_dtype)
        _twins.tr_vec(indptr, indices, data, v, twin, bounds, threads)
    else:
        got = np.empty(m, result_dtype)
        for b in range(len(bounds) - 1):
            K["fwd_vec"](indptr, indices, data, v, got, bounds[b], bounds[b + 1], zero)
        twin = np.empty(m, result_dtype)
        _twins.fwd_vec(indptr, indices, data, v, twin, threads)
    return got, twin


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(0, 70),
    n=st.integers(0, 70),
    density=st.floats(0.0, 1.0),
    dtypes=st.sampled_from(MIXED),
    index_dtype=st.sampled_from(["int32", "int64"]),
    empty_every=st.sampled_from([0, 1, 2, 5]),
    transpose=st.booleans(),
    nblocks=st.integers(1, 6),
    threads=st.integers(1, 3),
)
def test_twins_give_the_kernels_bits(seed, m, n, density, dtypes, index_dtype, empty_every, transpose, nblocks,
                                     threads):
    data_dtype, result_dtype = dtypes
    A = random_matrix(seed, m, n, density, data_dtype, index_dtype, empty_every)
    v = operand(seed, m if transpose else n, result_dtype)
    got, twin = both_ways(A, v, result_dtype, transpose, nblocks, threads)
    assert same_bits(got, twin)
    op = A.T if transpose else A
    ref = op @ v
    bound = abs(op.copy()) @ np.abs(v)  # c * eps * (|A| @ |v|); abs() sums A's duplicates in place: a copy
    eps = np.finfo(result_dtype).eps
    np.testing.assert_allclose(twin, ref, rtol=0, atol=64 * eps * (np.max(bound, initial=0) + 1))


def quarters(seed, P, n, density, data_dtype, index_dtype, broken):
    """A matrix of 4P rows whose quarters share their columns (as a convolution's output channels do),
    ``broken`` slots of which do not (two indices swapped, or a row one entry short)."""
    rng = np.random.default_rng(seed)
    base = random_matrix(seed, P, n, density, "float64", "int64", 0)
    A = sp.vstack([base] * 4, format="csr")
    A.sort_indices()
    indptr, indices = A.indptr.astype(np.int64), A.indices.astype(np.int64)
    for r in rng.integers(P, 4 * P, broken):
        q0, q1 = indptr[r], indptr[r + 1]
        if q1 - q0 >= 2:
            indices[q0], indices[q0 + 1] = indices[q0 + 1], indices[q0]
    keep = np.ones(indices.size, bool)
    if broken and indptr[-1]:
        keep[indptr[3 * P]] = indptr[3 * P + 1] == indptr[3 * P]  # drops the first entry of slot 0's last row
    lens = np.diff(indptr)
    lens -= np.bincount(np.repeat(np.arange(4 * P), lens)[~keep], minlength=4 * P).astype(lens.dtype)
    indptr = np.concatenate([[0], np.cumsum(lens)])
    vals = rng.standard_normal(int(indptr[-1]))
    if np.dtype(data_dtype).kind == "c":
        vals = vals + 1j * rng.standard_normal(vals.size)
    return sp.csr_array((vals.astype(data_dtype), indices[keep].astype(index_dtype), indptr.astype(index_dtype)),
                        shape=(4 * P, n))


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    P=st.integers(1, 30),
    n=st.integers(1, 40),
    density=st.floats(0.05, 1.0),
    dtypes=st.sampled_from(MIXED),
    index_dtype=st.sampled_from(["int32", "int64"]),
    broken=st.integers(0, 4),
    nblocks=st.integers(1, 5),
    threads=st.integers(1, 3),
)
def test_grouped_transposed_twin_gives_the_kernels_bits(seed, P, n, density, dtypes, index_dtype, broken, nblocks,
                                                         threads):
    """tr_vec4 (four quarters of rows sharing their columns) and its twin: the same bits, SciPy's product."""
    data_dtype, result_dtype = dtypes
    K = kernels()
    A = quarters(seed, P, n, density, data_dtype, index_dtype, broken)
    y = operand(seed, 4 * P, result_dtype)
    bounds = _products._cost_bounds(A.indptr[: P + 1], nblocks)
    zero = np.dtype(result_dtype).type(0)
    got = np.empty(n, result_dtype)
    part = np.empty((len(bounds) - 2, n), result_dtype)
    _products._scatter(K, "tr_vec4", (A.indptr, A.indices, A.data, y), got, part, bounds, threads, zero, extra=(P,),
                       pieces=True)
    twin = np.empty(n, result_dtype)
    _twins.tr_vec4(A.indptr, A.indices, A.data, y, twin, P, bounds, threads)
    assert same_bits(got, twin)
    ref = A.T @ y
    bound = abs(A.T.copy()) @ np.abs(y)
    np.testing.assert_allclose(twin, ref, rtol=0, atol=64 * np.finfo(result_dtype).eps * (np.max(bound) + 1))


def test_quarter_period_is_found_for_convolutions_only():
    from convmat import conv_matrix

    rng = np.random.default_rng(1)
    C = conv_matrix(rng.standard_normal((8, 3, 3, 3)), (9, 7), padding=1)
    assert _products._quarter_period(C.indptr, C.indices) == C.shape[0] // 4
    C6 = conv_matrix(rng.standard_normal((6, 3, 3, 3)), (9, 7), padding=1)  # 6 channels: quarters differ
    assert _products._quarter_period(C6.indptr, C6.indices) == 0
    G = conv_matrix(rng.standard_normal((8, 1, 3, 3)), (9, 7), padding=1, groups=2)  # two groups: other columns
    assert _products._quarter_period(G.indptr, G.indices) == 0
    R = random_matrix(2, 40, 30, 0.3, "float64", "int32", 0)
    assert _products._quarter_period(R.indptr, R.indices) == 0


@pytest.mark.parametrize("transpose", [False, True], ids=["A", "AT"])
def test_twins_in_chunks_and_special_values(monkeypatch, transpose):
    """Chunks of CHUNK non-zeros (the twins' temporaries) do not change the bits; NaN, inf and -0.0 follow."""
    monkeypatch.setattr(_twins, "CHUNK", 37)  # and the rows of the forward product in pieces on 2 threads
    A = random_matrix(5, 90, 60, 0.3, "float64", "int32", 7)
    v = operand(5, 90 if transpose else 60, "float64")
    v[[3, 11]] = np.nan, np.inf
    v[20:30] = -0.0
    A.data[::13] = -0.0
    got, twin = both_ways(A, v, "float64", transpose, 4, threads=2)
    assert same_bits(got, twin)
    ref = (A.T if transpose else A) @ v
    assert np.array_equal(np.isnan(twin), np.isnan(ref))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_products_before_and_after_loading_are_the_same_bits(monkeypatch, threads):
    """csr_matmul on the twins (kernels not ready) and on the kernels: one result, for every thread count."""
    monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(_products, "THREADS_MIN_NNZ", 0)  # and on the pool
    monkeypatch.setattr(_products, "THREADS_MIN_WORK", 0)
    kernels()
    from convmat import conv_matrix

    rng = np.random.default_rng(11)
    for dtype, cout in zip(DTYPES + DTYPES, (6, 6, 6, 6, 8, 8, 8, 8)):  # 8 channels: the grouped transposed kernel
        C = conv_matrix(rng.standard_normal((cout, 4, 3, 3)), (13, 11), padding=1, stride=(1, 2), dtype=dtype)
        x = operand(3, C.shape[1], dtype)
        y = operand(4, C.shape[0], dtype)
        warm = [csr_matmul(C, x, threads=threads), csr_matmul(C, y, transpose=True, threads=threads),
                csr_matmul(C, y, transpose=True, conjugate=True, threads=threads)]
        monkeypatch.setattr(_threads, "ready", lambda key: None)
        monkeypatch.setattr(_native, "kernels", lambda *arrays: None)
        cold = [csr_matmul(C, x, threads=threads), csr_matmul(C, y, transpose=True, threads=threads),
                csr_matmul(C, y, transpose=True, conjugate=True, threads=threads)]
        monkeypatch.undo()
        monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setattr(_products, "THREADS_MIN_NNZ", 0)  # and on the pool
        monkeypatch.setattr(_products, "THREADS_MIN_WORK", 0)
        for a, b in zip(warm, cold):
            assert same_bits(a, b), dtype


_FRESH = r"""
import json, sys
import numpy as np
BLOCK = {block}
if BLOCK:
    sys.modules["numba"] = None  # import numba raises ImportError
from convmat import conv_matrix
from convmat.spmm import _threads, available, csr_matmul, prefetch
rng = np.random.default_rng(3)
C = conv_matrix(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), (40, 40), padding=1, dtype=np.float32)
x = rng.standard_normal(C.shape[1]).astype(np.float32)
y = rng.standard_normal(C.shape[0]).astype(np.float32)
first = [csr_matmul(C, x), csr_matmul(C, y, transpose=True)]
numba_first = "numba" in sys.modules and sys.modules["numba"] is not None and bool(_threads.LOADER.warm)
ok = available()
for thread in [_threads.LOADER.thread]:
    if thread is not None:
        thread.join()
prefetch(np.float32)  # the signatures of the products above: nothing more to load
later = [csr_matmul(C, x), csr_matmul(C, y, transpose=True)]
warm_later = len(_threads.LOADER.warm)  # before the batch product loads its own signature
X = rng.standard_normal((C.shape[1], 3)).astype(np.float32)
batch_ok = bool(np.allclose(csr_matmul(C, X), C @ X, atol=1e-4))
print(json.dumps(dict(available=ok, warm_first=numba_first, warm_later=warm_later,
                      first=[a.tobytes().hex() for a in first], later=[a.tobytes().hex() for a in later],
                      batch_ok=batch_ok)))
"""


def _fresh(block):
    out = subprocess.run([sys.executable, "-c", _FRESH.format(block=block)], capture_output=True, text=True,
                         timeout=600, env=TWIN_ENV)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_first_products_without_numba_then_with_it():
    """In a fresh process the first products run on the twins; later ones on the kernels, the same bits."""
    kernels()
    r = _fresh(False)
    assert r["available"] and r["batch_ok"]
    assert not r["warm_first"]  # the first products did not wait for Numba
    assert r["warm_later"] == 2  # forward and transposed kernels of this signature were loaded
    assert r["first"] == r["later"]


def test_numba_blocked_products_still_work_with_the_same_bits():
    """With Numba blocked from import, products run (twins, SciPy for batches) and give the kernels' bits."""
    kernels()
    blocked, normal = _fresh(True), _fresh(False)
    assert not blocked["available"] and blocked["batch_ok"]
    assert blocked["warm_later"] == 0
    assert blocked["first"] == blocked["later"] == normal["later"]


def test_exact_kernels_compile_with_slp_and_restore_numbas_setting(monkeypatch):
    """SLP is on only while an exact kernel compiles; its result is the same bits as the twin's."""
    kernels()
    import numba
    from numba.core import config
    from numba.core.dispatcher import Dispatcher

    from convmat.spmm import _kernels

    before = config.SLP_VECTORIZE
    seen = []
    compile_ = Dispatcher.compile

    def recording(self, sig):
        if self.py_func is _kernels.KERNELS["fwd_vec"]:  # not its helpers' dispatchers (compiled inside it)
            seen.append(config.SLP_VECTORIZE)
        return compile_(self, sig)

    monkeypatch.setattr(Dispatcher, "compile", recording)
    fn = _kernels.jit(numba, _kernels.KERNELS["fwd_vec"], cache=False, fastmath=())
    A = random_matrix(9, 30, 20, 0.4, "float32", "int32", 4)
    x = operand(9, 20, "float32")
    y = np.empty(30, np.float32)
    fn(A.indptr, A.indices, A.data, x, y, 0, 30, np.float32(0))
    assert seen == [1] and config.SLP_VECTORIZE == before
    twin = np.empty(30, np.float32)
    _twins.fwd_vec(A.indptr, A.indices, A.data, x, twin)
    assert same_bits(y, twin)


def test_complex_kernels_bits_do_not_depend_on_what_numba_compiled_before():
    """A complex kernel compiled after a ``fastmath`` function, or after an exact one, gives the same bits.

    Numba compiles its complex multiplication once per process (per signature and error model) with
    the flags of the first function that needs it and links that copy into every later function:
    ``fwd_vec`` compiled after ``fwd_mat`` (or a user's ``fastmath`` function) had fused
    multiply-adds, other bits than the twin's; ``fwd_mat`` compiled after an exact kernel lost
    them.  Here that per-process copy is made in each flavour in turn before fresh kernels compile.
    """
    kernels()
    import numba
    from numba.core.registry import cpu_target

    from convmat.spmm import _kernels

    A = random_matrix(12, 40, 30, 0.4, "complex128", "int32", 5)
    x = operand(12, 30, "complex128")
    Y = np.stack([operand(13 + j, 40, "complex128") for j in range(3)], axis=1)
    got = []
    for fastmath in (True, False):
        cpu_target.target_context.cached_internal_func.clear()  # Numba's per-process helpers, made again:
        numba.njit(fastmath=fastmath, error_model="numpy")(lambda a, b: a * b)(1j, 2j)  # in this flavour
        fwd_vec = _kernels.jit(numba, _kernels.KERNELS["fwd_vec"], cache=False, fastmath=())
        tr_mat = _kernels.jit(numba, _kernels.KERNELS["tr_mat"], cache=False)
        y = np.empty(40, np.complex128)
        fwd_vec(A.indptr, A.indices, A.data, x, y, 0, 40, 0j)
        z = np.empty((30, 3), np.complex128)
        tr_mat(A.indptr, A.indices, A.data, Y, z, np.arange(40), 0, 40, 0j, True)
        got.append((y, z))
    twin = np.empty(40, np.complex128)
    _twins.fwd_vec(A.indptr, A.indices, A.data, x, twin)
    assert same_bits(got[0][0], twin) and same_bits(got[1][0], twin)
    assert same_bits(got[0][1], got[1][1])
    np.testing.assert_allclose(got[0][1], A.T @ Y, rtol=1e-12)


_BROKEN = r"""
import numba
import numpy as np
def broken(*args, **kwargs):
    raise RuntimeError("a broken Numba")
numba.njit = broken  # Numba imports, but compiles nothing
from convmat import conv_matrix
from convmat.spmm import available, csr_matmul
rng = np.random.default_rng(3)
C = conv_matrix(rng.standard_normal((4, 4, 3, 3)), (12, 12), padding=1)
x = rng.standard_normal(C.shape[1]); X = rng.standard_normal((C.shape[1], 2))
first = csr_matmul(C, x)
print(available(), np.array_equal(first, csr_matmul(C, x)), np.allclose(csr_matmul(C, X), C @ X),
      np.allclose(first, C @ x))
"""


def test_a_broken_numba_warns_once_and_products_run_without_it():
    out = subprocess.run([sys.executable, "-c", _BROKEN], capture_output=True, text=True, timeout=600,
                         env=TWIN_ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True", "True"]
    assert out.stderr.count("Numba failed to load (RuntimeError('a broken Numba'))") == 1


_FORK = r"""
import os, sys
import numpy as np
from convmat import conv_matrix
from convmat.spmm import _threads, csr_matmul
rng = np.random.default_rng(5)
C = conv_matrix(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), (16, 16), padding=1, dtype=np.float32)
x = rng.standard_normal(C.shape[1]).astype(np.float32)
X = rng.standard_normal((C.shape[1], 3)).astype(np.float32)
first = csr_matmul(C, x)  # starts the loader
started = _threads.LOADER.thread is not None
pid = os.fork()  # waits for the loader
if pid == 0:
    ok = np.array_equal(csr_matmul(C, x), first) and np.allclose(csr_matmul(C, X), C @ X, atol=1e-4)
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print(started, os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_loading_waits_for_the_loader():
    kernels()
    out = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, text=True, timeout=600,
                         env=TWIN_ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


_LARGE = r"""
import sys
import numpy as np
from convmat import conv_matrix
from convmat.spmm import _products, _threads, csr_matmul
_products.TWIN_MAX_NNZ = 1000  # this matrix counts as large: the first product waits for the kernels
rng = np.random.default_rng(2)
C = conv_matrix(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), (16, 16), padding=1, dtype=np.float32)
x = rng.standard_normal(C.shape[1]).astype(np.float32)
calls = []
twin = _products._twins.fwd_vec
_products._twins.fwd_vec = lambda *a: (calls.append(1), twin(*a))
first = csr_matmul(C, x)
print(len(calls), len(_threads.LOADER.warm), np.allclose(first, C @ x, atol=1e-4))
"""


def test_large_first_products_wait_for_the_kernels():
    kernels()
    out = subprocess.run([sys.executable, "-c", _LARGE], capture_output=True, text=True, timeout=600,
                         env=TWIN_ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "True"]  # no twin product; the forward kernel was loaded first

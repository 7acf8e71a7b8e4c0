"""The streamed operator and the row blocks and slabs it is built from (convmat.streamed, convmat.blocks)."""

import math
import tracemalloc

import numpy as np
import pytest
import scipy.signal
from scipy.sparse.linalg import lsqr

from convmat import ConvOperator, MatrixTooLargeError, adjoint_test, conv_plan, fill
from convmat.blocks import (
    block_index_dtype,
    block_nbytes,
    build_block,
    build_slab,
    combine,
    embed,
    reduce_partials,
    row_blocks,
    slab_adjoint,
    slab_forward,
    slab_nbytes,
    slab_support,
    slabs,
    tree_order,
)
from convmat.assemble import fused_matmat, fused_matvec
from convmat import _stream_adjoint as stream_adjoint
from convmat.spmm import _products, csr_matmul
from convmat import streamed
from convmat.streamed import StreamedConvOperator

GEOMETRIES = [
    dict(in_shape=(21, 19), padding=1),
    dict(in_shape=(21, 19), padding=2, stride=2, dilation=2),
    dict(in_shape=(21, 19), padding=1, padding_mode="reflect"),
    dict(in_shape=(21, 19), padding=(1, 2), groups=2),
    dict(in_shape=(21, 19), padding=2, stride=3, padding_mode="circular"),
    dict(in_shape=(7, 6, 5), padding=1, padding_mode="replicate"),
    dict(in_shape=(11, 10), padding=1, stride=2, transposed=True, output_padding=1),
]


def _layer(rng, geometry, dtype, cin=6, cout=8):
    g = dict(geometry)
    in_shape = g.pop("in_shape")
    groups = g.get("groups", 1)
    if g.get("transposed"):
        w = rng.standard_normal((cin, cout // groups) + (3,) * len(in_shape))
    else:
        w = rng.standard_normal((cout, cin // groups) + (3,) * len(in_shape))
    return w.astype(dtype), in_shape, g


@pytest.fixture(params=["defaults", "many blocks"])
def partition(request, monkeypatch):
    """The stored transposed product's tunables: as shipped, or small layers cut into many blocks,
    four-row slots and a sorted row order for batches (as large layers are)."""
    if request.param == "many blocks":
        monkeypatch.setattr(_products, "PARALLEL_MIN_WORK", 1)
        monkeypatch.setattr(_products, "THREADS_MIN_NNZ", 1)  # and on the pool
        monkeypatch.setattr(_products, "THREADS_MIN_WORK", 1)
        monkeypatch.setattr(_products, "TRANSPOSE_BLOCKS_PER_THREAD", 3)
        monkeypatch.setattr(_products, "ORDER_MIN_WORK", 1)
        monkeypatch.setattr(_products, "ORDER_MIN_ROW_NNZ", 1)
    return request.param


@pytest.mark.parametrize("engine", ["fused", "built rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_products_have_the_bits_of_the_stored_operator(geometry, dtype, partition, engine, monkeypatch):
    batches = []
    if engine == "fused":
        assert fill.kernel(dtype, np.int32, wait=True) is not None
        real = fill.multiply_batch
        monkeypatch.setattr(fill, "multiply_batch", lambda *a: batches.append(a[-1]) or real(*a))
    else:  # slabs of the matrix for a batch; the adjoint's one-vector rows built into buffers, scattered there
        monkeypatch.setattr(fill, "scatterer", lambda *a: None)
        monkeypatch.setattr(streamed, "fused_matmat", lambda *a: None)
    rng = np.random.default_rng(14)
    w, in_shape, kw = _layer(rng, geometry, dtype)
    A = ConvOperator(w, in_shape, **kw)
    S = StreamedConvOperator(w, in_shape, block_bytes=A.plan.nbytes(dtype) // 7, **kw)
    assert len(S.slabs) >= 7 and len(S.H.slabs) >= 7
    x = rng.standard_normal((5,) + A.in_shape).astype(dtype)
    y = rng.standard_normal((5,) + A.out_shape).astype(dtype)
    # forward: one row kernel per row, whatever the other rows of the product
    assert np.array_equal(S(x), A(x))
    assert np.array_equal(S(x[0]), A(x[0]))
    assert np.array_equal(S @ x[0].ravel(), A @ x[0].ravel())
    # adjoint: C's rows built again and added up in the blocks, order and kernels of the stored scatter
    Y = y.reshape(5, -1).T
    assert (S.H @ Y).tobytes() == (A.H @ Y).tobytes()
    assert S.rmatvec(Y[:, 0]).tobytes() == A.rmatvec(Y[:, 0]).tobytes()
    assert (S.H @ Y[:, :1]).tobytes() == (A.H @ Y[:, :1]).tobytes()
    assert S.apply_adjoint(y).tobytes() == A.apply_adjoint(y).tobytes()
    assert bool(batches) == (engine == "fused")  # the fused batch product ran (or the slabs did)


def test_adjoint_without_numba_builds_the_transposed_plan(monkeypatch):
    """Without the kernels (SciPy's product then runs the stored adjoint) the streamed adjoint is
    the CSR product of C^H, built from the transposed plan."""
    rng = np.random.default_rng(17)
    w, in_shape, kw = _layer(rng, GEOMETRIES[1], np.float64)
    A = ConvOperator(w, in_shape, **kw)
    S = StreamedConvOperator(w, in_shape, block_bytes=A.plan.nbytes(np.float64) // 7, **kw)
    monkeypatch.setattr(stream_adjoint, "_load", lambda: None)
    Y = rng.standard_normal((A.shape[0], 3))
    CH = A.plan.transpose().build(w)
    assert np.array_equal(S.H @ Y, csr_matmul(CH, Y))
    assert np.allclose(S.H @ Y, A.H @ Y, rtol=0, atol=1e-12)


def test_complex_adjoint_conjugates_and_bias_is_forward_only():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 2, 3)) + 1j * rng.standard_normal((3, 2, 3))
    b = np.array([1.0, -2.0, 0.5])
    A = ConvOperator(w, (17,), padding=1, bias=b)
    S = StreamedConvOperator(w, (17,), padding=1, bias=b, block_bytes=900)
    x = rng.standard_normal((2, 2, 17)) + 1j * rng.standard_normal((2, 2, 17))
    y = rng.standard_normal((2, 3, 17)) + 1j * rng.standard_normal((2, 3, 17))
    assert np.array_equal(S(x), A(x))
    assert np.array_equal(S.apply_adjoint(y), A.apply_adjoint(y))
    assert np.array_equal(S.H @ y[0].ravel(), A.H @ y[0].ravel())
    assert S.H.H is S and S.H.bias is None
    assert adjoint_test(S).passed


def test_linear_operator_lsqr_and_adjoint_test():
    rng = np.random.default_rng(5)
    w = 0.05 * rng.standard_normal((4, 4, 3, 3))
    w[:, :, 1, 1] += np.eye(4)  # well conditioned: lsqr converges in a few iterations
    S = StreamedConvOperator(w, (12, 12), padding=1, block_bytes=80_000)
    assert len(S.slabs) >= 3
    assert S.T is S.H and S.adjoint() is S.H
    assert adjoint_test(S).passed
    x = rng.standard_normal(S.shape[1])
    sol, stop = lsqr(S, S @ x, atol=1e-12, btol=1e-12, iter_lim=60)[:2]
    assert stop in (1, 2) and np.abs(sol - x).max() < 1e-8
    # products with the stored operator's bits, both ways: the solver takes the same steps
    A = ConvOperator(w, (12, 12), padding=1)
    assert lsqr(A, A @ x, atol=1e-12, btol=1e-12, iter_lim=60)[0].tobytes() == sol.tobytes()


def test_never_holds_more_than_block_bytes(monkeypatch):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((8, 8, 3, 3))
    A = ConvOperator(w, (32, 32), padding=1)
    whole = A.plan.nbytes(np.float64)
    budget = whole // 16
    S = StreamedConvOperator(w, (32, 32), padding=1, block_bytes=budget)
    for i in range(len(S.slabs)):
        B = S.build_slab(i)
        assert B.data.nbytes + B.indices.nbytes + B.indptr.nbytes <= budget
        assert B.indices.dtype == np.int32
    x = rng.standard_normal((1, 8, 32, 32))
    S(x)  # warm up (compiled kernels, tables)
    fill.settle()  # the compiled fill's loader, if that product started it, allocates while it runs
    tracemalloc.start()
    y = S(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # operands and results are x.nbytes each; everything else is one slab, its halo and build temporaries
    assert peak - 3 * x.nbytes < whole / 4
    assert np.array_equal(y, A(x))
    # a batch: four channels' rows built into a scratch within block_bytes and multiplied there
    xb = rng.standard_normal((4, 8, 32, 32))
    S(xb)
    tracemalloc.start()
    yb = S(xb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak - 4 * xb.nbytes < whole / 4  # operands, results and their column copies
    assert np.array_equal(yb, A(xb))
    # the adjoint: rows built at most block_bytes at a time, partial sums as the stored product's
    built = []
    real = stream_adjoint.build_ranges_csr
    monkeypatch.setattr(stream_adjoint, "build_ranges_csr",
                        lambda p, w, r, out: built.append(sum(a.nbytes for a in out)) or real(p, w, r, out))
    S.apply_adjoint(y)
    tracemalloc.start()
    x2 = S.apply_adjoint(y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    parts = _products._split(_products.TRANSPOSE_BLOCKS_PER_THREAD, A.plan.nnz) - 1
    assert peak - (3 + parts) * x.nbytes < whole / 4
    assert 1 < len(built) and max(built) <= budget
    assert np.array_equal(x2, A.apply_adjoint(y))


def test_past_int32_nonzeros_with_int32_blocks():
    # 64 -> 64 channels, 3x3 on 256^2: 2.4e9 non-zeros (int64 for the whole matrix); only a few slabs are built.
    rng = np.random.default_rng(31)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    S = StreamedConvOperator(w, (256, 256), padding=1, block_bytes=64 << 20)
    assert S.nnz > 2**31 and S.plan.index_dtype == np.int64
    assert S.max_block_nbytes <= 64 << 20
    x = rng.standard_normal((64, 256, 256)).astype(np.float32)
    for i in (0, 1, len(S.slabs) - 1):
        j0, j1, f0, f1 = S.slabs[i]
        B = S.build_slab(i)
        assert B.indices.dtype == np.int32 and B.indptr.dtype == np.int32 and B.shape == (64 * (j1 - j0), 64 * (f1 - f0))
        got = csr_matmul(B, np.ascontiguousarray(x.reshape(64, -1)[:, f0:f1]).reshape(-1)).reshape(64, -1)
        # oracle: every output channel at these positions, by scipy.signal (zero padding 1 = 'same' for 3x3)
        for c in (0, 63):
            ref = sum(scipy.signal.correlate(x[ci].astype(np.float64), w[c, ci], mode="same") for ci in range(64))
            assert np.allclose(got[c], ref.ravel()[j0:j1], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_slab_support_contains_every_column_a_slab_reads(geometry):
    rng = np.random.default_rng(11)
    w, in_shape, kw = _layer(rng, geometry, np.float64)
    plan = ConvOperator(w, in_shape, **kw).plan
    F = int(np.prod(plan.input_shape[1:]))
    O = int(np.prod(plan.output_shape[1:]))
    parts = slabs(plan, np.float64, plan.nbytes(np.float64) // 5)
    assert parts[0][0] == 0 and parts[-1][1] == O
    assert all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
    narrower = 0
    for j0, j1, f0, f1 in parts:
        assert (f0, f1) == slab_support(plan, j0, j1)
        for c in range(plan.output_shape[0]):
            cols = plan.build(w, rows=(c * O + j0, c * O + j1)).indices % F
            assert cols.size == 0 or (cols.min() >= f0 and cols.max() < f1)
        narrower += f1 - f0 < F
    assert narrower > 0  # the halo is smaller than the input for some slab


def test_slab_products_and_fixed_reduction():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 3, 3, 3))
    A = ConvOperator(w, (14, 13), padding=1, stride=(1, 2))
    plan = A.plan
    parts = slabs(plan, np.float64, plan.nbytes(np.float64) // 5)
    x = rng.standard_normal((2,) + A.in_shape)
    y = rng.standard_normal((2,) + A.out_shape)
    x3, y3 = x.reshape(2, 3, -1), y.reshape(2, 5, -1)
    ref = A(x).reshape(2, 5, -1)
    partials = []
    for s in parts:
        B = build_slab(plan, w, s, np.float64)
        assert np.array_equal(slab_forward(B, np.ascontiguousarray(x3[:, :, s[2] : s[3]]), 5), ref[:, :, s[0] : s[1]])
        partials.append(slab_adjoint(B, s, np.ascontiguousarray(y3[:, :, s[0] : s[1]])))
    got = embed(reduce_partials(partials), x3.shape[2]).reshape(x.shape)
    assert np.allclose(got, A.apply_adjoint(y), rtol=0, atol=1e-12)
    again = embed(reduce_partials(partials), x3.shape[2]).reshape(x.shape)
    assert np.array_equal(got, again)
    # the tree: every partial absorbed exactly once, into a lower index
    absorbed = sorted(j for level in tree_order(len(parts)) for _, j in level)
    assert absorbed == list(range(1, len(parts)))
    left, right = (0, 3, np.ones((1, 3, 1))), (2, 5, np.full((1, 3, 1), 2.0))
    assert combine(left, right)[2].ravel().tolist() == [1.0, 1.0, 3.0, 2.0, 2.0]


def test_bad_input():
    w = np.ones((2, 2, 3, 3))
    with pytest.raises(TypeError, match="block_bytes must be an int"):
        StreamedConvOperator(w, (8, 8), block_bytes=1e6)
    with pytest.raises(ValueError, match=r"block_bytes must be >= 1.*-5"):
        StreamedConvOperator(w, (8, 8), block_bytes=-5)
    with pytest.raises(ValueError, match=r"threads must be >= 1, got 0") as bad:
        StreamedConvOperator(w, (8, 8), block_bytes=10_000, threads=0)
    assert bad.value.parameter == "threads"
    with pytest.raises(TypeError, match=r"threads must be an integer, got 1.5 of type float"):
        StreamedConvOperator(w, (8, 8), block_bytes=10_000, threads=1.5)
    with pytest.raises(ValueError, match=r"block_bytes=100 is too small: the 2 rows of output position 0 take 444 bytes"):
        StreamedConvOperator(w, (8, 8), block_bytes=100)
    with pytest.raises(ValueError, match=r"block_bytes=100 is too small: the 2 rows of output position 0"):
        slabs(conv_plan(w.shape, (8, 8)), np.float64, 100)
    S = StreamedConvOperator(w, (8, 8), block_bytes=10_000)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 8, 8\).*got \(3, 8, 8\)"):
        S(np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="padding_mode='zeros' only"):
        StreamedConvOperator(w, (8, 8), block_bytes=10_000, transposed=True, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        StreamedConvOperator(w, (8, 8), block_bytes=10_000, bias=np.ones(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(2, 2, 3, 3\)"):
        StreamedConvOperator.from_plan(conv_plan(w.shape, (8, 8)), np.ones((2, 2, 3)), block_bytes=10_000)
    assert "StreamedConvOperator(conv2d" in repr(S) and "slabs" in repr(S)
    one = StreamedConvOperator(np.ones((1, 1, 3, 3)), (8, 8), padding=1, block_bytes=2_000)
    bare = np.arange(64.0).reshape(8, 8)  # channel-less, as ConvOperator takes it
    assert np.array_equal(one(bare), ConvOperator(np.ones((1, 1, 3, 3)), (8, 8), padding=1)(bare))
    assert isinstance(MatrixTooLargeError("x"), MemoryError)


def test_build_block_equals_the_rows_of_the_whole_matrix():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((3, 2, 2, 3))
    plan = conv_plan(w.shape, (7, 9), padding=(1, 1), dilation=(2, 1))
    C = plan.build(w)
    for a, b in row_blocks(plan, np.float64, 2_000):
        B = build_block(plan, w, (a, b), np.float64)
        R = C[a:b]
        assert np.array_equal(B.indptr, R.indptr) and np.array_equal(B.indices, R.indices)
        assert np.array_equal(B.data, R.data)


def test_slabs_built_into_one_buffer_have_the_bits_of_fresh_slabs():
    """Each slab built into the same bytes (slab_buffer) equals the slab built fresh, and is a view of them."""
    from convmat.blocks import slab_buffer, slab_nbytes

    rng = np.random.default_rng(12)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    plan = conv_plan(w.shape, (20, 17), padding=1, padding_mode="reflect")
    parts = slabs(plan, np.float32, 3_000)
    buf = slab_buffer(plan, parts, np.float32)
    assert buf.nbytes <= max(slab_nbytes(plan, np.float32, j0, j1, (f0, f1)) for j0, j1, f0, f1 in parts) + 3 * 64
    for slab in parts[::-1]:  # the last (smaller) slab first: stale bytes must not leak into the next
        B = build_slab(plan, w, slab, np.float32, buffer=buf)
        R = build_slab(plan, w, slab, np.float32)
        assert np.shares_memory(B.data, buf) and np.shares_memory(B.indices, buf)
        assert np.array_equal(B.indptr, R.indptr) and np.array_equal(B.indices, R.indices)
        assert B.data.tobytes() == R.data.tobytes()


def test_build_into_out_refuses_buffers_that_do_not_fit():
    from convmat.assemble import build_csr

    plan = conv_plan((2, 2, 3, 3), (10, 10), padding=1)
    w = np.ones(plan.weight_shape)
    nnz = plan.nnz
    good = (np.empty(nnz), np.empty(nnz, np.int32), np.empty(plan.shape[0] + 1, np.int32))
    C = build_csr(plan, w, out=good)
    assert np.array_equal(C.toarray(), plan.build(w).toarray())
    bad = {
        "room": (np.empty(nnz - 1), good[1], good[2]),
        "value dtype": (np.empty(nnz, np.float32), good[1], good[2]),
        "mixed index dtypes": (good[0], good[1], np.empty(plan.shape[0] + 1, np.int64)),
        "not a tuple": [good[0], good[1], good[2]],
    }
    for what, out in bad.items():
        with pytest.raises((ValueError, TypeError), match="out") as info:
            build_csr(plan, w, out=out)
        assert info.value.parameter == "out", what
    with pytest.raises(ValueError, match="backend 'torch'"):
        pytest.importorskip("torch")
        build_csr(plan, w, out=good, backend="torch")


@pytest.mark.parametrize("engine", ["compiled", "arrays"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_slabs_are_the_rows_and_columns_of_the_matrix(geometry, engine, monkeypatch):
    """build_slab: the slab's rows of every output channel, columns renumbered onto its support, same bits."""
    monkeypatch.setattr(fill, "USE_FILL_KERNEL", engine == "compiled")
    monkeypatch.setattr(fill, "FILL_KERNEL_NNZ", 0)
    monkeypatch.setattr(fill, "FILL_KERNEL_WAIT", True)
    rng = np.random.default_rng(21)
    w, in_shape, kw = _layer(rng, geometry, np.float32)
    plan = ConvOperator(w, in_shape, **kw).plan
    C = plan.build(w)
    R, O = plan.output_shape[0], math.prod(plan.output_shape[1:])
    Cin, F = plan.input_shape[0], math.prod(plan.input_shape[1:])
    for j0, j1, f0, f1 in slabs(plan, np.float32, plan.nbytes(np.float32) // 3):
        B = build_slab(plan, w, (j0, j1, f0, f1), np.float32)
        rows = np.concatenate([np.arange(c * O + j0, c * O + j1) for c in range(R)])
        cols = np.concatenate([np.arange(c * F + f0, c * F + f1) for c in range(Cin)])
        ref = C[rows][:, cols]
        assert B.shape == ref.shape and B.nnz == C[rows].nnz  # nothing outside the support
        assert np.array_equal(B.indptr, ref.indptr) and np.array_equal(B.indices, ref.indices)
        assert B.data.tobytes() == ref.data.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fused_vector_products_have_the_bits_of_the_stored_operator(geometry, dtype, monkeypatch):
    """One vector: rows built into a small scratch and multiplied at once (fill.mul_rows), the bits of
    the stored product; with the smallest block_bytes the slabs allow, the scratch holds a few rows."""
    rng = np.random.default_rng(15)
    w, in_shape, kw = _layer(rng, geometry, np.float64)
    if np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(w.shape)
    w = w.astype(dtype)
    A = ConvOperator(w, in_shape, **kw)
    x = rng.standard_normal(A.shape[1]).astype(dtype)
    y = rng.standard_normal(A.shape[0]).astype(dtype)
    assert fill.kernel(dtype, np.int32, wait=True) is not None
    calls, scatters = [], []
    real, real_scatter = fill.multiply, fill.scatter
    monkeypatch.setattr(fill, "multiply", lambda *a: calls.append(a[-2]) or real(*a))
    monkeypatch.setattr(fill, "scatter", lambda *a: scatters.append(a[-2][-1]) or real_scatter(*a))
    smallest = max(_one_position(plan, dtype) for plan in (A.plan, A.plan.transpose()))
    for block_bytes in (A.plan.nbytes(dtype) // 5, smallest):
        S = StreamedConvOperator(w, in_shape, block_bytes=block_bytes, **kw)
        assert np.array_equal(S @ x, A @ x)
        assert np.array_equal(S(x.reshape((1,) + A.in_shape)), A(x.reshape((1,) + A.in_shape)))
        assert np.array_equal(S.H @ y, A.H @ y)
        X = rng.standard_normal((A.shape[1], 3)).astype(dtype)  # a batch: fill.multiply_batch
        assert (S @ X).tobytes() == (A @ X).tobytes()
    assert len(calls) == 4 and min(calls) < fill.MUL_BLOCK_ROWS  # the fused path ran, with fewer rows at the end
    assert scatters and min(scatters) < fill.MUL_BLOCK_ROWS  # the fused adjoint ran, with small scratches too


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fused_slab_products_have_the_bits_of_the_slabs(geometry):
    """fused_matvec and fused_matmat of a slab and its halo (what a Dask worker runs): the bits of
    build_slab(...) @ halo, hence of those rows of the stored product."""
    rng = np.random.default_rng(16)
    w, in_shape, kw = _layer(rng, geometry, np.float32)
    plan = ConvOperator(w, in_shape, **kw).plan
    assert fill.kernel(np.float32, np.int32, wait=True) is not None
    Cin = plan.input_shape[0]
    x = rng.standard_normal((Cin, math.prod(plan.input_shape[1:]))).astype(np.float32)
    for slab in slabs(plan, np.float32, plan.nbytes(np.float32) // 3):
        halo = np.ascontiguousarray(x[:, slab[2] : slab[3]]).reshape(-1)
        B = build_slab(plan, w, slab, np.float32)
        assert fused_matvec(plan, w, halo, 2, 1 << 16, slab=slab).tobytes() == csr_matmul(B, halo).tobytes()
        H = rng.standard_normal((halo.size, 3)).astype(np.float32)
        assert fused_matmat(plan, w, H, 2, 1 << 16, slab=slab).tobytes() == csr_matmul(B, H).tobytes()


def _one_position(plan, dtype):
    """Bytes of the largest slab of one output position (the smallest block_bytes ``slabs`` accepts)."""
    O = math.prod(plan.output_shape[1:])
    return max(slab_nbytes(plan, dtype, j, j + 1, slab_support(plan, j, j + 1)) for j in range(O))


def test_empty_batches():
    """N = 0 images or columns: empty results of the right shapes, as ConvOperator gives."""
    w = np.random.default_rng(18).standard_normal((4, 2, 3, 3))
    A = ConvOperator(w, (8, 8), padding=1)
    S = StreamedConvOperator(w, (8, 8), padding=1, block_bytes=A.plan.nbytes() // 3)
    assert len(S.slabs) > 1
    for op in (A, S):
        assert op(np.zeros((0, 2, 8, 8))).shape == (0, 4, 8, 8)
        assert op.apply_adjoint(np.zeros((0, 4, 8, 8))).shape == (0, 2, 8, 8)
        assert (op @ np.zeros((128, 0))).shape == (256, 0) and (op.H @ np.zeros((256, 0))).shape == (128, 0)
    slab = S.slabs[0]
    assert slab_forward(S.build_slab(0), np.zeros((0, 2, slab[3] - slab[2])), 4).shape == (0, 4, slab[1] - slab[0])

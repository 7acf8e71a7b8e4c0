"""Sizes known before building, and the CSR that comes out, are what they claim.

* ``plan.nnz`` is DESIGN.md's formula
  nnz = C_out * (C_in/groups) * prod_axes sum_j #{t : 0 <= j*s - lo + t*d < n},
  counted by a slow, independent Python loop (zeros mode), forward and transposed.
* Every built matrix is canonical CSR (checked with NumPy), has ``plan.nnz``
  entries and exactly ``plan.nbytes(dtype)`` bytes; indices are int32 when
  nnz and both dimensions fit, int64 otherwise (at the exact boundary).
* Row blocks: ``rows=(a, b)`` gives exactly ``C[a:b]`` (same indptr, indices
  and values), ``plan.row_nnz(a, b)`` and ``plan.nbytes(rows=...)`` match it;
  threaded and single-threaded builds are identical.
* conv_output_shape / conv_transpose_output_shape follow the formulas.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convmat import (
    PADDING_MODES,
    conv_matrix,
    conv_output_shape,
    conv_plan,
    conv_transpose_matrix,
    conv_transpose_output_shape,
    conv_transpose_plan,
)
from oracles import (
    INT32_MAX,
    assert_canonical,
    assert_same_csr,
    forward_is_valid,
    out_len,
    resolve_padding,
    slow_nnz,
    transpose_len,
)

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
@st.composite
def geometries(draw, *, max_n=8, max_k=4, modes=("zeros",), transposed=None):
    """A valid forward or transposed geometry (as keyword arguments for the plan functions)."""
    ndim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    a, b = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, max_k)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    is_t = draw(st.booleans()) if transposed is None else transposed
    in_shape = tuple(draw(st.integers(1, max_n)) for _ in range(ndim))
    if is_t:
        pairs = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim))
        out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        m = tuple(transpose_len(n, k, s, d, lo, hi, op)
                  for n, k, s, d, (lo, hi), op in zip(in_shape, kernel, stride, dilation, pairs, out_pad))
        if min(m) < 1:
            pairs = ((0, 0),) * ndim
        return dict(transposed=True, weight_shape=(groups * a, b, *kernel), in_shape=in_shape, stride=stride,
                    padding=pairs, output_padding=out_pad, dilation=dilation, groups=groups)
    mode = draw(st.sampled_from(modes))
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same", "full"]),
        st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3)) for _ in range(ndim)]),
    ))
    pairs = resolve_padding(padding, in_shape, kernel, stride, dilation)
    if not forward_is_valid(in_shape, kernel, dilation, pairs, mode):
        padding = "same" if mode != "reflect" else "valid"
        in_shape = tuple(max(n, d * (k - 1) + 1) for n, k, d in zip(in_shape, kernel, dilation))
    return dict(transposed=False, weight_shape=(groups * a, b, *kernel), in_shape=in_shape, stride=stride,
                padding=padding, dilation=dilation, groups=groups, padding_mode=mode)


def make_plan(g):
    g = dict(g)
    if g.pop("transposed"):
        return conv_transpose_plan(g.pop("weight_shape"), g.pop("in_shape"), **g)
    return conv_plan(g.pop("weight_shape"), g.pop("in_shape"), **g)


def build(g, weight, **kwargs):
    g = dict(g)
    g.pop("weight_shape")
    if g.pop("transposed"):
        return conv_transpose_matrix(weight, g.pop("in_shape"), **g, **kwargs)
    return conv_matrix(weight, g.pop("in_shape"), **g, **kwargs)


def expected_nnz(g):
    """DESIGN.md's nnz formula by slow loops (zeros mode); transposed = forward on m, first n rows."""
    ws, n_in = g["weight_shape"], g["in_shape"]
    kernel, stride, dilation = ws[2:], g["stride"], g["dilation"]
    pairs = resolve_padding(g["padding"], n_in, kernel, stride, dilation)
    if g["transposed"]:
        m = [transpose_len(n, k, s, d, lo, hi, a)
             for n, k, s, d, (lo, hi), a in zip(n_in, kernel, stride, dilation, pairs, g["output_padding"])]
        axes = [(mi, k, s, d, lo, n) for mi, k, s, d, (lo, _), n in zip(m, kernel, stride, dilation, pairs, n_in)]
        return slow_nnz(ws[0], ws[1], axes)  # (C_in, C_out/groups): the forward's (C_out, C_in/groups)
    o = [out_len(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi) in zip(n_in, kernel, stride, dilation, pairs)]
    axes = [(n, k, s, d, lo, oi) for n, k, s, d, (lo, _), oi in zip(n_in, kernel, stride, dilation, pairs, o)]
    return slow_nnz(ws[0], ws[1], axes)


# --------------------------------------------------------------------------- #
# nnz, bytes, index dtype
# --------------------------------------------------------------------------- #
@settings(max_examples=150)
@given(g=geometries(max_n=40, max_k=5))
def test_plan_nnz_is_the_formula(g):
    """Plans only (nothing built), so the sizes can be larger."""
    plan = make_plan(g)
    assert plan.nnz == expected_nnz(g)
    assert plan.index_dtype == np.int32
    rows, cols = plan.shape
    assert rows == math.prod(plan.output_shape) and cols == math.prod(plan.input_shape)
    for dt in DTYPES:
        item = np.dtype(dt).itemsize
        assert plan.nbytes(dt) == plan.nnz * (item + 4) + (rows + 1) * 4


@settings(max_examples=60)
@given(g=geometries(modes=PADDING_MODES), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_built_matrix_is_canonical_and_sized_as_planned(g, dtype, seed):
    plan = make_plan(g)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(g["weight_shape"])
    A = build(g, w, dtype=dtype)
    assert A.dtype == dtype
    assert_canonical(A, plan=plan, nonzero_values=True)
    if g["transposed"] or g["padding_mode"] == "zeros":
        assert A.nnz == expected_nnz(g)
    # plan once, apply many: another weight, same structure
    B = plan.build(2 * w, dtype=dtype)
    np.testing.assert_array_equal(B.indptr, A.indptr)
    np.testing.assert_array_equal(B.indices, A.indices)
    np.testing.assert_allclose(B.data, 2 * A.data, rtol=1e-6)


def test_structural_zeros_are_stored():
    """Entries come from index arithmetic: a zero weight gives stored zeros, the same pattern."""
    w = np.zeros((2, 3, 3, 3))
    w[0, 0, 1, 1] = 1.0
    A = conv_matrix(w, (6, 5), padding=1)
    assert A.nnz == conv_plan(w.shape, (6, 5), padding=1).nnz
    assert np.count_nonzero(A.data) == 6 * 5
    assert_canonical(A)


def test_int32_boundary():
    """64 -> 64, 3x3, padding 1: nnz = 4096 (3n - 2)^2 crosses 2**31 - 1 between n = 242 and 243."""
    for n, expect in [(224, np.int32), (242, np.int32), (243, np.int64)]:
        plan = conv_plan((64, 64, 3, 3), (n, n), padding=1)
        assert plan.nnz == 4096 * (3 * n - 2) ** 2 == slow_nnz(64, 64, [(n, 3, 1, 1, 1, n)] * 2)
        assert (plan.nnz <= INT32_MAX) == (expect == np.int32)
        assert plan.index_dtype == expect
        idx = np.dtype(expect).itemsize
        assert plan.nbytes(np.float32) == plan.nnz * (4 + idx) + (plan.shape[0] + 1) * idx
    # DESIGN.md: 224^2 has about 1.84e9 non-zeros, 0.86 of the int32 limit
    nnz224 = conv_plan((64, 64, 3, 3), (224, 224), padding=1).nnz
    assert round(nnz224 / 1e9, 2) == 1.84 and round(nnz224 / INT32_MAX, 2) == 0.86


def test_int64_when_a_dimension_does_not_fit():
    """nnz and the other dimension small, but 2**31 columns: int64 indices."""
    plan = conv_plan((1, 2**31 // 4 + 1, 1), (4,))
    assert plan.shape[1] > INT32_MAX
    assert plan.index_dtype == np.int64


def test_plan_attributes_and_repr():
    plan = conv_plan((4, 3, 3, 3), (8, 8), padding=1)
    assert plan.shape == (4 * 64, 3 * 64)
    assert plan.input_shape == (3, 8, 8) and plan.output_shape == (4, 8, 8)
    assert plan.weight_shape == (4, 3, 3, 3)
    text = repr(plan)
    assert "256 x 192" in text and f"{plan.nnz:,}" in text and "int32" in text
    tplan = conv_transpose_plan((4, 3, 3, 3), (8, 8), stride=2, padding=1, output_padding=1)
    assert tplan.input_shape == (4, 8, 8) and tplan.output_shape == (3, 16, 16)
    assert tplan.weight_shape == (4, 3, 3, 3)
    assert "conv_transpose2d" in repr(tplan)


# --------------------------------------------------------------------------- #
# row blocks
# --------------------------------------------------------------------------- #
@settings(max_examples=60)
@given(g=geometries(modes=PADDING_MODES), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_row_blocks_are_slices(g, dtype, seed):
    plan = make_plan(g)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(g["weight_shape"])
    C = plan.build(w, dtype=dtype)
    R = C.shape[0]
    blocks = [(0, R), (0, 0), (R, R)]
    for _ in range(4):
        a, b = sorted(rng.integers(0, R + 1, size=2).tolist())
        blocks.append((a, b))
    for a, b in blocks:
        A = build(g, w, dtype=dtype, rows=(a, b))
        assert A.shape == (b - a, C.shape[1])
        assert A.dtype == dtype
        assert_same_csr(A, C[a:b])
        assert_canonical(A)
        assert A.indices.dtype == plan.index_dtype
        assert A.nnz == plan.row_nnz(a, b)
        assert plan.nbytes(dtype, rows=(a, b)) == A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
        S = plan.build(w, dtype=dtype, rows=slice(a, b))
        assert_same_csr(S, A)


def test_row_blocks_cover_the_matrix(rng):
    """Consecutive blocks, stacked, are the whole matrix (the out-of-core recipe)."""
    import scipy.sparse as sp

    w = rng.standard_normal((6, 2, 3, 2))
    plan = conv_plan(w.shape, (7, 6), padding=((1, 0), (0, 1)), stride=(2, 1), groups=2)
    C = plan.build(w)
    cuts = [0, 1, 17, 18, 40, plan.shape[0]]
    parts = [plan.build(w, rows=(a, b)) for a, b in zip(cuts[:-1], cuts[1:])]
    assert_same_csr(sp.vstack(parts, format="csr"), C)
    assert sum(plan.row_nnz(a, b) for a, b in zip(cuts[:-1], cuts[1:])) == plan.nnz


def test_threads_do_not_change_the_result(rng):
    """Above the threading threshold (>1e6 non-zeros), 1 and 2 threads build identical arrays."""
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    plan = conv_plan(w.shape, (48, 48), padding=1, groups=2)
    assert plan.nnz > 2**20
    A = plan.build(w, threads=1)
    B = plan.build(w, threads=2)
    assert_same_csr(A, B)
    assert_canonical(A, plan=plan)
    rows = (plan.shape[0] // 3, 2 * plan.shape[0] // 3 + 7)  # crosses output-channel boundaries
    assert_same_csr(plan.build(w, threads=2, rows=rows), A[rows[0]:rows[1]])


# --------------------------------------------------------------------------- #
# shape functions
# --------------------------------------------------------------------------- #
@settings(max_examples=150)
@given(g=geometries(max_n=30, max_k=5, transposed=False))
def test_conv_output_shape_formula(g):
    ws, n_in = g["weight_shape"], g["in_shape"]
    pairs = resolve_padding(g["padding"], n_in, ws[2:], g["stride"], g["dilation"])
    expect = tuple(out_len(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi) in zip(n_in, ws[2:], g["stride"], g["dilation"], pairs))
    assert conv_output_shape(n_in, ws[2:], stride=g["stride"], padding=g["padding"], dilation=g["dilation"]) == expect
    assert make_plan(g).output_shape == (ws[0], *expect)
    if g["padding"] == "same":
        assert expect == tuple(-(-n // s) for n, s in zip(n_in, g["stride"]))
    if g["padding"] == "full" and set(g["stride"]) == {1}:
        assert expect == tuple(n + d * (k - 1) for n, k, d in zip(n_in, ws[2:], g["dilation"]))


@settings(max_examples=150)
@given(g=geometries(max_n=30, max_k=5, transposed=True))
def test_conv_transpose_output_shape_formula(g):
    ws, n_in = g["weight_shape"], g["in_shape"]
    expect = tuple(transpose_len(n, k, s, d, lo, hi, a) for n, k, s, d, (lo, hi), a in
                   zip(n_in, ws[2:], g["stride"], g["dilation"], g["padding"], g["output_padding"]))
    got = conv_transpose_output_shape(n_in, ws[2:], stride=g["stride"], padding=g["padding"],
                                      output_padding=g["output_padding"], dilation=g["dilation"])
    assert got == expect
    assert make_plan(g).output_shape == (ws[1] * g["groups"], *expect)
    # output_size = m reproduces the same plan; its forward convolution maps m back to n when a < s
    g2 = dict(g, output_padding=0, output_size=expect)
    assert make_plan(g2).nnz == make_plan(g).nnz
    if all(a < s for a, s in zip(g["output_padding"], g["stride"])):
        fwd = conv_output_shape(expect, ws[2:], stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
        assert fwd == tuple(n_in)


@pytest.mark.parametrize(
    "n, k, s, p, d, a, m",
    [
        (112, 7, 2, 3, 1, 1, 224),  # ResNet stem, undone
        (2, 3, 2, 0, 1, 0, 5),
        (4, 3, 2, 1, 1, 1, 8),
        (3, 3, 1, 0, 3, 2, 11),  # output_padding >= stride, allowed by dilation 3
        (1, 1, 1, 0, 1, 0, 1),
    ],
)
def test_conv_transpose_output_shape_examples(n, k, s, p, d, a, m):
    assert conv_transpose_output_shape((n,), k, stride=s, padding=p, dilation=d, output_padding=a) == (m,)


@pytest.mark.parametrize("weight_dtype", [np.float32, np.float64, np.complex64, np.complex128, np.int64])
@pytest.mark.parametrize("dtype", [None, *DTYPES])
def test_value_dtype_conversions(weight_dtype, dtype):
    """dtype=None keeps the weight's dtype (float64 for integers); an explicit dtype casts the weight."""
    w = np.arange(1, 10).reshape(1, 1, 3, 3).astype(weight_dtype)
    if w.dtype.kind == "c":
        w = w * (1 + 1j)
    if dtype is not None and np.dtype(weight_dtype).kind == "c" and np.dtype(dtype).kind != "c":
        with pytest.raises(TypeError, match=r"imaginary"):
            conv_matrix(w, (4, 4), dtype=dtype)
        return
    C = conv_matrix(w, (4, 4), dtype=dtype)
    expect = np.dtype(dtype) if dtype is not None else (np.dtype(np.float64) if w.dtype.kind == "i" else w.dtype)
    assert C.dtype == expect
    np.testing.assert_array_equal(C.toarray()[0].reshape(4, 4)[:3, :3], w[0, 0].astype(expect))


@settings(max_examples=80, deadline=None)
@given(g=geometries(modes=PADDING_MODES), transpose=st.booleans(), chunk=st.integers(1, 60),
       seed=st.integers(0, 2**32 - 1))
def test_chunks_of_any_size_build_the_same_matrix(g, transpose, chunk, seed):
    """Rows are built a chunk at a time, each chunk reading only its rows' axis tables: tiny chunks
    (down to one spatial row, every table a few rows) give the same CSR, whole and in row blocks."""
    import convmat.assemble as A

    plan = make_plan(g)
    plan = plan.transpose() if transpose else plan
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(plan.weight_shape)
    C = plan.build(w)
    a, b = sorted(rng.integers(0, C.shape[0] + 1, size=2).tolist())
    saved = A._CHUNK_NNZ, A._MIN_CHUNK
    A._CHUNK_NNZ = A._MIN_CHUNK = chunk
    try:
        small = plan.build(w, threads=2)
        block = plan.build(w, rows=(a, b))
    finally:
        A._CHUNK_NNZ, A._MIN_CHUNK = saved
    assert_canonical(small)
    assert_same_csr(small, C)
    assert_same_csr(block, C[a:b])

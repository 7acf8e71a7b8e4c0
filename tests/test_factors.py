"""The transposed-convolution recipe as matrices (convmat.factors), proved exactly.

Every comparison is exact: weights are small integers stored as floats, so
sums of products are exact, and two matrices are equal when their difference
stores no non-zero (``_assert_same``).  The identities are those of the design
notes ("Identities worth making executable"); PyTorch is an independent oracle
for the padding modes and for the recipe itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from convmat import MatrixTooLargeError, conv_matrix, conv_output_shape, conv_transpose_matrix, conv_transpose_plan
from convmat.factors import (
    flip_kernel,
    kernel_zero_insertion,
    padding_matrix,
    recipe_factors,
    stride_matrix,
    transpose_by_recipe,
    zero_insertion_matrix,
)

PROPS = settings(derandomize=True, deadline=None, max_examples=50)
MODES = ("zeros", "reflect", "replicate", "circular")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _assert_canonical(A):
    """CSR with strictly increasing (row, column) keys: sorted, no duplicates (checked, not trusted)."""
    assert isinstance(A, sp.csr_array)
    rows = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))
    key = rows * A.shape[1] + A.indices.astype(np.int64)
    assert np.all(np.diff(key) > 0)


def _assert_same(A, B):
    """Exactly equal sparse matrices: same shape, and A - B stores no non-zero."""
    assert A.shape == B.shape, (A.shape, B.shape)
    D = sp.csr_array(A - B)
    D.eliminate_zeros()
    assert D.nnz == 0, f"{D.nnz} entries differ, max |diff| {abs(D).max()}"


def _assert_selection(A):
    """A 0/1 matrix with at most one entry per row, canonical."""
    _assert_canonical(A)
    assert np.all(np.diff(A.indptr) <= 1)
    assert np.all(A.data == 1)


def _int_weight(rng, shape):
    return rng.integers(-3, 4, size=shape).astype(np.float64)


@st.composite
def transposed_cases(draw):
    """A valid transposed convolution, including p > e - 1 and output_padding >= stride."""
    ndim = draw(st.integers(1, 3))
    nmax, smax = (3, 2) if ndim == 3 else (4, 3)
    groups = draw(st.integers(1, 2))
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pairs = draw(st.booleans())
    n, k, s, d, a, pad = [], [], [], [], [], []
    for _ in range(ndim):
        n.append(draw(st.integers(1, nmax)))
        k.append(draw(st.integers(1, 3)))
        s.append(draw(st.integers(1, smax)))
        d.append(draw(st.integers(1, 3)))
        a.append(draw(st.integers(0, max(s[-1], d[-1]) - 1)))
        e = d[-1] * (k[-1] - 1) + 1
        budget = (n[-1] - 1) * s[-1] + e + a[-1] - 1  # lo + hi <= budget keeps m >= 1
        if pairs:
            lo = draw(st.integers(0, budget))
            pad.append((lo, draw(st.integers(0, budget - lo))))
        else:
            pad.append(draw(st.integers(0, budget // 2)))
    seed = draw(st.integers(0, 2**32 - 1))
    weight = _int_weight(np.random.default_rng(seed), (cin_g * groups, cout_g, *k))
    return dict(weight=weight, in_shape=tuple(n), stride=tuple(s), padding=tuple(pad),
                output_padding=tuple(a), dilation=tuple(d), groups=groups)


@st.composite
def forward_cases(draw, modes=MODES):
    """A valid forward convolution with any padding mode and explicit (lo, hi) padding."""
    ndim = draw(st.integers(1, 3))
    nmax = 3 if ndim == 3 else 5
    mode = draw(st.sampled_from(modes))
    groups = draw(st.integers(1, 2))
    cin_g, cout = draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    n, k, s, d, pads = [], [], [], [], []
    for _ in range(ndim):
        n.append(draw(st.integers(1, nmax)))
        top = {"zeros": 3, "replicate": 3, "reflect": n[-1] - 1, "circular": n[-1]}[mode]
        pads.append((draw(st.integers(0, top)), draw(st.integers(0, top))))
        d.append(draw(st.integers(1, 2)))
        room = n[-1] + sum(pads[-1])  # extent must fit in the padded input
        k.append(draw(st.integers(1, min(3, (room - 1) // d[-1] + 1))))
        s.append(draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2**32 - 1))
    weight = _int_weight(np.random.default_rng(seed), (cout, cin_g, *k))
    return dict(weight=weight, in_shape=tuple(n), stride=tuple(s), padding=tuple(pads),
                dilation=tuple(d), groups=groups, padding_mode=mode)


def _padded(in_shape, pads):
    return tuple(n + lo + hi for n, (lo, hi) in zip(in_shape, pads))


# --------------------------------------------------------------------------- #
# small hand-worked matrices
# --------------------------------------------------------------------------- #
def test_stride_matrix_by_hand():
    S = stride_matrix((5, 3), (2, 3))
    _assert_selection(S)
    assert S.shape == (3 * 1, 15)
    assert S.indices.tolist() == [0, 6, 12]  # (0, 0), (2, 0), (4, 0) on a 5 x 3 grid


def test_zero_insertion_by_hand():
    Z = zero_insertion_matrix((2, 2), (2, 1), channels=2)
    _assert_selection(Z)
    x = np.arange(1.0, 9.0)
    assert (Z @ x).reshape(2, 3, 2).tolist() == [
        [[1, 2], [0, 0], [3, 4]],
        [[5, 6], [0, 0], [7, 8]],
    ]


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("zeros", [0, 0, 1, 2, 3, 0]),
        ("reflect", [3, 2, 1, 2, 3, 2]),
        ("replicate", [1, 1, 1, 2, 3, 3]),
        ("circular", [2, 3, 1, 2, 3, 1]),
    ],
)
def test_padding_matrix_by_hand(mode, expected):
    P = padding_matrix((3,), ((2, 1),), mode=mode)
    _assert_selection(P)
    assert (P @ np.array([1.0, 2.0, 3.0])).tolist() == expected


def test_padding_matrix_crops_with_negative_padding():
    P = padding_matrix((5, 2), ((-2, 1), (0, -1)))
    assert P.shape == (4 * 1, 10)
    x = np.arange(10.0).reshape(5, 2)
    assert (P @ x.ravel()).reshape(4, 1).ravel().tolist() == [4, 6, 8, 0]


def test_flip_kernel_by_hand():
    # ConvTranspose weight: C_in = 4, C_out/groups = 3, groups = 2 -> forward (6, 2, 2)
    w = np.arange(4 * 3 * 2).reshape(4, 3, 2)
    f = flip_kernel(w, groups=2)
    assert f.shape == (6, 2, 2) and f.dtype == w.dtype
    for g in range(2):
        for o in range(3):
            for i in range(2):
                assert f[g * 3 + o, i].tolist() == w[g * 2 + i, o, ::-1].tolist()


def test_kernel_zero_insertion_by_hand():
    w = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    z = kernel_zero_insertion(w, (3, 2))
    assert z.shape == (1, 1, 4, 5)
    assert z[0, 0].tolist() == [[1, 0, 2, 0, 3], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [4, 0, 5, 0, 6]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_factor_dtypes(dtype):
    for A in (stride_matrix((4,), 2, dtype=dtype), zero_insertion_matrix((4,), 2, dtype=dtype),
              padding_matrix((4,), 1, mode="reflect", dtype=dtype)):
        assert A.dtype == np.dtype(dtype)
        assert A.indices.dtype == np.int32 and A.indptr.dtype == np.int32


# --------------------------------------------------------------------------- #
# identity 3 (with 1): the transposed convolution is K_flip @ P @ Z
# --------------------------------------------------------------------------- #
@PROPS
@given(transposed_cases())
def test_recipe_equals_conv_transpose_matrix(case):
    T = transpose_by_recipe(**case)
    _assert_canonical(T)
    _assert_same(T, conv_transpose_matrix(**case))


@pytest.mark.parametrize(
    "kernel, in_shape, kw",
    [
        ((3,), (4,), dict(stride=2, padding=3)),  # p > e - 1: the recipe crops
        ((2,), (5,), dict(stride=3, padding=4, output_padding=2)),  # crop more than e - 1 + a
        ((3,), (3,), dict(stride=1, dilation=3, output_padding=2)),  # a >= s (allowed since a < d)
        ((2, 3), (3, 2), dict(stride=(2, 1), padding=((0, 2), (2, 1)), output_padding=(1, 0))),
        ((1,), (1,), dict()),  # the smallest transposed convolution
        ((3, 3, 3), (2, 2, 2), dict(stride=2, padding=1, output_padding=1, dilation=(1, 2, 1))),
    ],
)
@pytest.mark.parametrize("groups", [1, 2])
def test_recipe_edges(kernel, in_shape, kw, groups):
    w = _int_weight(np.random.default_rng(7), (2 * groups, 3, *kernel))
    T = transpose_by_recipe(w, in_shape, groups=groups, **kw)
    _assert_canonical(T)
    _assert_same(T, conv_transpose_matrix(w, in_shape, groups=groups, **kw))


@PROPS
@given(transposed_cases(), st.booleans())
def test_recipe_factors_multiply_to_the_transposed_matrix(case, by_size):
    """K_flip @ (P @ Z) is exactly conv_transpose_matrix (integer weights: every entry exact)."""
    A = conv_transpose_matrix(**case)
    if by_size:  # the same geometry asked for by output size: output_padding derived
        m = conv_transpose_plan(case["weight"].shape, case["in_shape"], **{
            k: v for k, v in case.items() if k not in ("weight", "in_shape")}).output_shape[1:]
        case = dict(case, output_padding=0, output_size=m)
    K, P, Z = recipe_factors(**case)
    for F in (K, P, Z):
        _assert_canonical(F)
    _assert_selection(P)
    _assert_selection(Z.T.tocsr())  # one entry per column: zero insertion
    B = sp.csr_array(K @ (P @ Z))
    assert A.shape == B.shape
    assert (A - B).nnz == 0
    assert K.shape[1] == P.shape[0] and P.shape[1] == Z.shape[0] and Z.shape[1] == A.shape[1]
    assert np.all(A.data == np.round(A.data))  # exactness of the comparison rests on integer values


def test_recipe_factors_shapes_by_hand():
    """n = 3, k = 3, s = 2, p = 1, a = 1: z = 5, padding (1, 2), L = 8, m = 6."""
    w = _int_weight(np.random.default_rng(4), (2, 3, 3))  # C_in = 2, C_out = 3
    K, P, Z = recipe_factors(w, (3,), stride=2, padding=1, output_padding=1)
    assert Z.shape == (2 * 5, 2 * 3) and P.shape == (2 * 8, 2 * 5) and K.shape == (3 * 6, 2 * 8)
    np.testing.assert_array_equal((P @ Z @ np.eye(6))[:8, :3].argmax(axis=0), [1, 3, 5])
    np.testing.assert_array_equal(K.toarray()[:6, :8][0, :3], flip_kernel(w)[0, 0])


def test_recipe_depthwise():
    w = _int_weight(np.random.default_rng(3), (4, 1, 3, 3))
    kw = dict(stride=2, padding=2, output_padding=1, dilation=2, groups=4)
    _assert_same(transpose_by_recipe(w, (3, 4), **kw), conv_transpose_matrix(w, (3, 4), **kw))


# --------------------------------------------------------------------------- #
# identity 1: stride is subsampling; identity 2: its transpose is zero insertion
# --------------------------------------------------------------------------- #
@PROPS
@given(forward_cases())
def test_stride_is_subsampling(case):
    c_out = case["weight"].shape[0]
    C1 = conv_matrix(**{**case, "stride": 1})
    out1 = conv_output_shape(case["in_shape"], case["weight"].shape[2:], padding=case["padding"],
                             dilation=case["dilation"])
    assert C1.shape[0] == c_out * math.prod(out1)
    S = stride_matrix(out1, case["stride"], channels=c_out)
    _assert_selection(S)
    _assert_same(conv_matrix(**case), S @ C1)


@PROPS
@given(
    st.lists(st.tuples(st.integers(1, 7), st.integers(1, 4)), min_size=1, max_size=3),
    st.integers(1, 3),
)
def test_zero_insertion_is_subsampling_transposed(axes, channels):
    shape = tuple(o for o, _ in axes)
    stride = tuple(s for _, s in axes)
    S = stride_matrix(shape, stride, channels=channels)
    n = tuple(-(-o // s) for o, s in axes)
    Z = zero_insertion_matrix(n, stride, out_shape=shape, channels=channels)
    _assert_selection(Z)
    _assert_same(sp.csr_array(S.T), Z)
    assert Z.shape == (S.shape[1], S.shape[0])


@PROPS
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=3),
)
def test_zero_insertion_default_and_trailing_zeros(axes):
    n = tuple(v for v, _, _ in axes)
    s = tuple(v for _, v, _ in axes)
    extra = tuple(v for _, _, v in axes)
    Z0 = zero_insertion_matrix(n, s)
    shortest = tuple((a - 1) * b + 1 for a, b in zip(n, s))
    assert Z0.shape == (math.prod(shortest), math.prod(n))
    _assert_same(sp.csr_array(stride_matrix(shortest, s).T), Z0)
    # a longer output only appends zero rows: cropping it with P gives back the default
    long = tuple(m + e for m, e in zip(shortest, extra))
    Z = zero_insertion_matrix(n, s, out_shape=long)
    assert Z.nnz == Z0.nnz == math.prod(n)
    crop = padding_matrix(long, tuple((0, -e) for e in extra))
    _assert_same(crop @ Z, Z0)


# --------------------------------------------------------------------------- #
# identity 4: a padding mode is a matrix
# --------------------------------------------------------------------------- #
@PROPS
@given(forward_cases())
def test_padding_mode_is_a_matrix(case):
    c_in = case["weight"].shape[1] * case["groups"]
    pads, mode = case["padding"], case["padding_mode"]
    P = padding_matrix(case["in_shape"], pads, mode=mode, channels=c_in)
    _assert_canonical(P)
    assert np.all(np.diff(P.indptr) <= 1)
    if mode != "zeros":  # every padded sample reads an input sample
        assert P.nnz == P.shape[0]
    K = conv_matrix(case["weight"], _padded(case["in_shape"], pads), stride=case["stride"],
                    dilation=case["dilation"], groups=case["groups"])
    _assert_same(conv_matrix(**case), K @ P)


@PROPS
@given(forward_cases())
def test_padding_matrix_is_the_unit_one_tap_convolution(case):
    """P_mode is conv_matrix of a 1-tap unit kernel with that padding (a second route through convmat)."""
    ndim, mode, pads = len(case["in_shape"]), case["padding_mode"], case["padding"]
    P = padding_matrix(case["in_shape"], pads, mode=mode)
    _assert_same(P, conv_matrix(np.ones((1, 1) + (1,) * ndim), case["in_shape"], padding=pads, padding_mode=mode))


# --------------------------------------------------------------------------- #
# identity 5: dilation is the zero-inserted kernel
# --------------------------------------------------------------------------- #
@PROPS
@given(forward_cases())
def test_dilation_is_the_zero_inserted_kernel(case):
    d = case["dilation"]
    wz = kernel_zero_insertion(case["weight"], d)
    assert wz.shape[2:] == tuple(dd * (k - 1) + 1 for dd, k in zip(d, case["weight"].shape[2:]))
    _assert_same(conv_matrix(**case), conv_matrix(**{**case, "weight": wz, "dilation": 1}))


# --------------------------------------------------------------------------- #
# PyTorch as an independent oracle
# --------------------------------------------------------------------------- #
def _torch_pad(pads):
    """F.pad's order: the last axis first, (lo, hi) each."""
    return tuple(v for lo, hi in reversed(pads) for v in (lo, hi))


@st.composite
def pad_cases(draw):
    ndim = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(MODES))
    channels = draw(st.integers(1, 3))
    n, pads = [], []
    for _ in range(ndim):
        n.append(draw(st.integers(1, 5)))
        if mode == "zeros":  # F.pad crops at most n - 1 per side
            lo = draw(st.integers(1 - n[-1], 3))
            hi = draw(st.integers(max(1 - n[-1], 1 - n[-1] - lo), 3))
        else:
            top = {"reflect": n[-1] - 1, "replicate": 3, "circular": n[-1]}[mode]
            lo, hi = draw(st.integers(0, top)), draw(st.integers(0, top))
        pads.append((lo, hi))
    return tuple(n), tuple(pads), mode, channels


@settings(derandomize=True, deadline=None, max_examples=40)
@given(pad_cases())
def test_padding_matrix_matches_torch_pad(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    n, pads, mode, channels = case
    x = np.random.default_rng(0).integers(-9, 10, size=(1, channels, *n)).astype(np.float64)
    P = padding_matrix(n, pads, mode=mode, channels=channels)
    tmode = "constant" if mode == "zeros" else mode
    ref = F.pad(torch.from_numpy(x), _torch_pad(pads), mode=tmode).numpy()
    assert P.shape == (ref.size, x.size)
    np.testing.assert_array_equal(P @ x.ravel(), ref.ravel())


@pytest.mark.parametrize(
    "kernel, in_shape, kw",
    [
        ((3,), (5,), dict(stride=2, padding=1, output_padding=1)),
        ((2,), (4,), dict(stride=3, padding=3, output_padding=2, groups=2)),  # cropping
        ((3, 2), (3, 4), dict(stride=(2, 1), padding=(2, 0), dilation=(1, 3), output_padding=(1, 2))),
        ((2, 2, 3), (2, 3, 2), dict(stride=2, padding=(0, 1, 2), output_padding=(1, 0, 1), groups=2)),
    ],
)
def test_recipe_matches_torch_conv_transpose(kernel, in_shape, kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    groups = kw.get("groups", 1)
    w = _int_weight(np.random.default_rng(1), (2 * groups, 2, *kernel))
    x = _int_weight(np.random.default_rng(2), (1, 2 * groups, *in_shape))
    T = transpose_by_recipe(w, in_shape, **kw)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(kernel)]
    ref = fn(torch.from_numpy(x), torch.from_numpy(w), **kw).numpy()
    assert T.shape == (ref.size, x.size)
    np.testing.assert_array_equal(T @ x.ravel(), ref.ravel())


# --------------------------------------------------------------------------- #
# errors: named parameter, quoted value, before allocating
# --------------------------------------------------------------------------- #
W1 = np.ones((2, 1, 3))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: stride_matrix((4,), 0), ValueError, r"stride must be >= 1"),
        (lambda: stride_matrix((4, 4), (1, 2, 3)), ValueError, r"stride must be an int or have 2 entries"),
        (lambda: stride_matrix((4,), 1.5), TypeError, r"stride must be an int"),
        (lambda: stride_matrix((0, 3), 1), ValueError, r"shape must contain positive sizes"),
        (lambda: stride_matrix((4,), 2, channels=0), ValueError, r"channels must be >= 1, got 0"),
        (lambda: stride_matrix((4,), 2, channels=2.0), TypeError, r"channels must be an integer"),
        (lambda: stride_matrix((4,), 2, dtype=np.int8), TypeError, r"dtype must be one of"),
        (lambda: zero_insertion_matrix((3,), 2, out_shape=(4,)), ValueError,
         r"out_shape must be at least \(n-1\)\*stride\+1 = \(5,\)"),
        (lambda: zero_insertion_matrix((3, 3), 2, out_shape=(5,)), ValueError, r"out_shape must be an int or have 2"),
        (lambda: padding_matrix((3,), 3, mode="reflect"), ValueError, r"reflect.*padding < input size"),
        (lambda: padding_matrix((3,), 4, mode="circular"), ValueError, r"circular.*padding <= input size"),
        (lambda: padding_matrix((3,), -1, mode="replicate"), ValueError, r"padding must be >= 0.*mode='zeros'"),
        (lambda: padding_matrix((3,), ((-2, -1),)), ValueError, r"crops everything.*3 \+ -2 \+ -1 = 0"),
        (lambda: padding_matrix((3,), 1, mode="mirror"), ValueError, r"mode must be one of .*'mirror'"),
        (lambda: padding_matrix((3,), 1, mode=None), TypeError, r"mode must be one of"),
        (lambda: padding_matrix((3,), "same"), ValueError, r"padding must be .*'same'"),
        (lambda: padding_matrix((3, 3), (1, 2, 3)), ValueError, r"padding must be .*one per spatial axis"),
        (lambda: padding_matrix((3,), ((1, 2, 3),)), ValueError, r"not a \(lo, hi\) pair"),
        (lambda: padding_matrix((3,), 1.0), TypeError, r"padding must be an int"),
        (lambda: flip_kernel(np.ones((3, 1, 2)), groups=2), ValueError, r"C_in = 3.*divisible by groups \(2\)"),
        (lambda: flip_kernel(np.ones((3, 1))), ValueError, r"at least one spatial axis, got shape \(3, 1\)"),
        (lambda: flip_kernel(np.array([["a"]])), TypeError, r"weight must be an array of numbers"),
        (lambda: flip_kernel(W1, groups=0), ValueError, r"groups must be >= 1, got 0"),
        (lambda: kernel_zero_insertion(W1, 0), ValueError, r"dilation must be >= 1"),
        (lambda: kernel_zero_insertion(W1, (1, 2)), ValueError, r"dilation must be an int or have 1 entries"),
        (lambda: transpose_by_recipe(W1, (3,), stride=2, output_padding=2), ValueError,
         r"output_padding must be smaller than max\(stride, dilation\)"),
        (lambda: transpose_by_recipe(W1, (3, 3)), ValueError, r"spatial axes"),
        (lambda: transpose_by_recipe(W1, (3,), padding="same"), ValueError, r"padding must be .*'same'"),
        (lambda: transpose_by_recipe(W1, (2,), padding=3), ValueError, r"removes everything"),
        (lambda: transpose_by_recipe(W1, (3,), groups=3), ValueError, r"divisible by groups \(3\)"),
        (lambda: transpose_by_recipe(W1, (3,), dtype="int64"), TypeError, r"dtype must be one of"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "bad",
    [
        dict(stride=2, output_padding=2),
        dict(stride=(1, 2)),
        dict(padding="same"),
        dict(padding=3, in_shape=(2,)),
        dict(groups=3),
        dict(stride=2, padding=1, output_size=(9,)),
        dict(output_padding=1, output_size=(3,)),
        dict(dilation=0),
        dict(weight=np.ones((3, 1))),
        dict(weight=np.array([[["a"]]])),
        dict(dtype="int64"),
    ],
)
def test_recipe_factors_refuse_with_conv_transpose_matrix_messages(bad):
    """The same message, word for word, as conv_transpose_matrix: both call the same validation."""
    kw = dict(dict(weight=W1, in_shape=(3,)), **bad)
    with pytest.raises((ValueError, TypeError)) as want:
        conv_transpose_matrix(**kw)
    with pytest.raises(want.type) as got:
        recipe_factors(**kw)
    assert str(got.value) == str(want.value)


def test_too_large_is_refused_before_allocating():
    with pytest.raises(MatrixTooLargeError, match=r"stride matrix with 1,000,000,000,000,000,000 rows"):
        stride_matrix((10**6,) * 3, 1)

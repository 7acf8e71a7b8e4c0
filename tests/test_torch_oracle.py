"""conv_matrix / conv_transpose_matrix against PyTorch, the reference the project promises to match.

* ``Y = C @ X`` equals torch.nn.functional.conv{1,2,3}d (after F.pad for the
  reflect / replicate / circular modes and for (lo, hi) pairs, 'full' and
  strided 'same', which PyTorch's conv cannot express), for hypothesis sweeps
  over ndim 1-3, stride, dilation, groups (depthwise included), channels, every
  padding form and mode, four dtypes and flip.
* ``T @ Y`` equals torch.nn.functional.conv_transpose{1,2,3}d, with
  output_padding in [0, max(s, d)) or an output_size, (lo, hi) padding pairs
  (PyTorch: unpadded, then cropped).
* The transposed matrix built directly equals the forward matrix on the
  transposed output length, transposed (exactly; the first n rows per axis
  when output_padding >= stride).
* Every matrix is canonical CSR, its nnz is the DESIGN.md formula counted by
  a slow loop, and its size is what the plan said.

The oracle runs in double precision; results are compared with a tolerance
chosen by the matrix dtype.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convmat import (
    conv_matrix,
    conv_output_shape,
    conv_plan,
    conv_transpose_matrix,
    conv_transpose_output_shape,
    conv_transpose_plan,
)
from oracles import (
    apply,
    assert_canonical,
    assert_same_csr,
    extent,
    forward_is_valid,
    out_len,
    resolve_padding,
    slow_nnz,
    spatial_flip,
    tolerance,
    torch_conv,
    torch_conv_transpose,
    transpose_len,
)

DTYPES = ("float32", "float64", "complex64", "complex128")
MODES = ("zeros", "reflect", "replicate", "circular")


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #
def _per_axis(draw, values, ndim):
    """A per-axis parameter, given as an int when all axes agree (and the draw says so)."""
    vals = tuple(draw(values) for _ in range(ndim))
    if len(set(vals)) == 1 and draw(st.booleans()):
        return vals[0], vals
    return vals, vals


def _channels(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    if groups > 1 and draw(st.booleans()):  # depthwise: one input channel per group
        cin_g, cout_g = 1, draw(st.integers(1, 2))
    else:
        cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return groups, cin_g, cout_g


def _min_valid_size(k, d, pad, mode):
    """Smallest input length for which this axis is valid (DESIGN.md's rules), for steering draws."""
    e = extent(k, d)
    if pad == "valid":
        lo = hi = 0
    elif pad == "full":
        lo = hi = e - 1
    elif pad == "same":  # at most ceil((e-1)/2) on a side
        lo = hi = -(-(e - 1) // 2)
        return {"reflect": hi + 1, "circular": max(hi, 1)}.get(mode, 1)
    else:
        lo, hi = pad
    n = max(1, e - lo - hi)
    if mode == "reflect":
        n = max(n, lo + 1, hi + 1)
    elif mode == "circular":
        n = max(n, lo, hi)
    return n


@st.composite
def forward_cases(draw):
    ndim = draw(st.integers(1, 3))
    spread, kmax = {1: (5, 4), 2: (3, 3), 3: (2, 2)}[ndim]
    groups, cin_g, cout_g = _channels(draw)
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(ndim))
    stride_arg, stride = _per_axis(draw, st.integers(1, 3), ndim)
    dilation_arg, dilation = _per_axis(draw, st.integers(1, 3), ndim)
    form = draw(st.sampled_from(["same", "full", "pairs", "int", "per_axis", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
        per_axis = [(padding, padding)] * ndim
    elif form == "per_axis":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(ndim))
        per_axis = [(p, p) for p in padding]
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim))
        per_axis = list(padding)
    else:
        padding = form
        per_axis = [form] * ndim
    mode = draw(st.sampled_from(MODES))
    if draw(st.integers(0, 7)) == 0:  # sometimes any size: invalid geometries must raise ValueError
        in_shape = tuple(draw(st.integers(1, 3 + spread)) for _ in range(ndim))
    else:  # mostly a valid size, just above the smallest one
        in_shape = tuple(_min_valid_size(k, d, p, mode) + draw(st.integers(0, spread))
                         for k, d, p in zip(kernel, dilation, per_axis))
    return dict(
        ndim=ndim, groups=groups, c_in=groups * cin_g, c_out=groups * cout_g, in_shape=in_shape,
        kernel=kernel, stride_arg=stride_arg, stride=stride, dilation_arg=dilation_arg, dilation=dilation,
        form=form, padding=padding, mode=mode, dtype=draw(st.sampled_from(DTYPES)),
        dtype_via_weight=draw(st.booleans()), flip=draw(st.booleans()), batch=draw(st.integers(1, 2)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def transpose_cases(draw):
    ndim = draw(st.integers(1, 3))
    nmax, kmax = {1: (6, 4), 2: (4, 3), 3: (3, 2)}[ndim]
    groups, cin_g, cout_g = _channels(draw)
    in_shape = tuple(draw(st.integers(1, nmax)) for _ in range(ndim))
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(ndim))
    stride_arg, stride = _per_axis(draw, st.integers(1, 3), ndim)
    dilation_arg, dilation = _per_axis(draw, st.integers(1, 3), ndim)
    form = draw(st.sampled_from(["int", "per_axis", "pairs"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "per_axis":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    else:
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim))
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size_by = draw(st.sampled_from(["default", "output_padding", "output_size"]))
    if size_by == "default":
        out_pad = (0,) * ndim
    return dict(
        ndim=ndim, groups=groups, c_in=groups * cin_g, c_out=groups * cout_g, in_shape=in_shape,
        kernel=kernel, stride_arg=stride_arg, stride=stride, dilation_arg=dilation_arg, dilation=dilation,
        form=form, padding=padding, out_pad=out_pad, size_by=size_by,
        size_with_channels=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        flip=draw(st.booleans()), batch=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**32 - 1)),
    )


def _weight(rng, shape, dtype):
    w = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(shape)
    return w


def _real_dtype(dtype):
    return np.float32 if np.dtype(dtype) in (np.dtype("float32"), np.dtype("complex64")) else np.float64


# --------------------------------------------------------------------------- #
# forward
# --------------------------------------------------------------------------- #
def check_forward(case):
    """Build, check structure and nnz, compare with torch. Returns the matrix."""
    in_shape, kernel, stride, dilation = case["in_shape"], case["kernel"], case["stride"], case["dilation"]
    groups, c_in, c_out, mode, dtype = case["groups"], case["c_in"], case["c_out"], case["mode"], case["dtype"]
    padding = case["padding"]
    pairs = resolve_padding(padding, in_shape, kernel, stride, dilation)
    rng = np.random.default_rng(case.get("seed", 0))
    w = _weight(rng, (c_out, c_in // groups, *kernel), dtype)
    kwargs = dict(
        stride=case.get("stride_arg", stride), padding=padding, dilation=case.get("dilation_arg", dilation),
        groups=groups, padding_mode=mode,
    )
    if not forward_is_valid(in_shape, kernel, dilation, pairs, mode):
        with pytest.raises(ValueError):
            conv_matrix(w, in_shape, **kwargs)
        return None

    w_used = w.astype(dtype)  # the values the matrix can hold
    if case.get("dtype_via_weight", False):
        C = conv_matrix(w_used, in_shape, flip=case.get("flip", False), **kwargs)
    else:
        C = conv_matrix(w, in_shape, dtype=dtype, flip=case.get("flip", False), **kwargs)
    plan = conv_plan(w.shape, in_shape, **kwargs)

    out_shape = tuple(out_len(n, k, s, d, lo, hi)
                      for n, k, s, d, (lo, hi) in zip(in_shape, kernel, stride, dilation, pairs))
    assert conv_output_shape(in_shape, kernel, stride=kwargs["stride"], padding=padding,
                             dilation=kwargs["dilation"]) == out_shape
    assert C.dtype == np.dtype(dtype)
    assert C.shape == (c_out * math.prod(out_shape), c_in * math.prod(in_shape))
    assert_canonical(C, plan=plan, nonzero_values=True)
    if mode == "zeros":
        axes = [(n, k, s, d, lo, o)
                for n, k, s, d, (lo, _), o in zip(in_shape, kernel, stride, dilation, pairs, out_shape)]
        assert C.nnz == plan.nnz == slow_nnz(c_out, c_in // groups, axes)

    x = rng.standard_normal((case.get("batch", 1), c_in, *in_shape)).astype(_real_dtype(dtype))
    got = apply(C, x, (c_out, *out_shape))
    torch_padding = None
    torch_reads_it = case["form"] in ("int", "per_axis", "valid") or (case["form"] == "same" and set(stride) == {1})
    if mode == "zeros" and torch_reads_it:
        torch_padding = padding  # PyTorch's own reading of the padding argument
    w_ref = spatial_flip(w_used) if case.get("flip", False) else w_used
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: 'same' with an even kernel copies the input
        ref = torch_conv(x.astype(np.float64), w_ref, stride=stride, padding=pairs, dilation=dilation, groups=groups,
                         padding_mode=mode, torch_padding=torch_padding)
    np.testing.assert_allclose(got, ref, **tolerance(dtype))
    return C


@settings(max_examples=80)
@given(case=forward_cases())
def test_conv_matrix_matches_torch(torch, case):
    check_forward(case)


# --------------------------------------------------------------------------- #
# transposed
# --------------------------------------------------------------------------- #
def check_transpose(case):
    in_shape, kernel, stride, dilation = case["in_shape"], case["kernel"], case["stride"], case["dilation"]
    groups, c_in, c_out, dtype = case["groups"], case["c_in"], case["c_out"], case["dtype"]
    padding, out_pad = case["padding"], case["out_pad"]
    flip = case.get("flip", False)
    pairs = resolve_padding(padding, in_shape, kernel, stride, dilation)
    m = tuple(transpose_len(n, k, s, d, lo, hi, a)
              for n, k, s, d, (lo, hi), a in zip(in_shape, kernel, stride, dilation, pairs, out_pad))
    rng = np.random.default_rng(case.get("seed", 0))
    w = _weight(rng, (c_in, c_out // groups, *kernel), dtype)
    kwargs = dict(stride=case.get("stride_arg", stride), padding=padding, dilation=case.get("dilation_arg", dilation),
                  groups=groups)
    size_by = case.get("size_by", "output_padding")
    if size_by == "output_size":
        size = m if not case.get("size_with_channels") else (case.get("batch", 1), c_out, *m)
        kwargs["output_size"] = size
    elif size_by == "output_padding":
        kwargs["output_padding"] = out_pad
    if min(m) < 1:
        with pytest.raises(ValueError):
            conv_transpose_matrix(w, in_shape, **kwargs)
        return None

    T = conv_transpose_matrix(w, in_shape, dtype=dtype, flip=flip, **kwargs)
    plan = conv_transpose_plan(w.shape, in_shape, **kwargs)
    if size_by != "output_size":
        assert conv_transpose_output_shape(
            in_shape, kernel, stride=kwargs["stride"], padding=padding, output_padding=out_pad,
            dilation=kwargs["dilation"]) == m
    assert T.dtype == np.dtype(dtype)
    assert T.shape == (c_out * math.prod(m), c_in * math.prod(in_shape))
    assert plan.output_shape == (c_out, *m) and plan.input_shape == (c_in, *in_shape)
    assert_canonical(T, plan=plan, nonzero_values=True)
    # The transposed matrix has the non-zeros of the forward one on length m, first n rows per axis.
    axes = [(mi, k, s, d, lo, n) for mi, k, s, d, (lo, _), n in zip(m, kernel, stride, dilation, pairs, in_shape)]
    assert T.nnz == slow_nnz(c_in, c_out // groups, axes)

    y = rng.standard_normal((case.get("batch", 1), c_in, *in_shape)).astype(_real_dtype(dtype))
    got = apply(T, y, (c_out, *m))
    w_used = w.astype(dtype)
    ref = torch_conv_transpose(
        y.astype(np.float64), spatial_flip(w_used) if flip else w_used, stride=stride,
        padding=padding if isinstance(padding, int) else pairs, output_padding=out_pad, dilation=dilation,
        groups=groups,
    )
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, **tolerance(dtype))

    # Exactly the forward matrix (same weight) on length m, transposed (first n rows per axis).
    F = conv_matrix(w, m, stride=stride, padding=pairs, dilation=dilation, groups=groups, dtype=dtype, flip=flip)
    o = tuple(out_len(mi, k, s, d, lo, hi) for mi, k, s, d, (lo, hi) in zip(m, kernel, stride, dilation, pairs))
    if all(a < s for a, s in zip(out_pad, stride)):
        assert o == tuple(in_shape)
    keep = _first_rows(c_in, o, in_shape)
    assert_same_csr(T, F[keep].T)
    return T


def _first_rows(channels, o, n):
    """Row numbers of the forward matrix (channels, *o) that lie in the first n[i] outputs of every axis."""
    grid = np.indices((channels, *n)).reshape(len(n) + 1, -1)
    return np.ravel_multi_index(tuple(grid), (channels, *o))


@settings(max_examples=80)
@given(case=transpose_cases())
def test_conv_transpose_matrix_matches_torch(torch, case):
    check_transpose(case)


@st.composite
def integer_transpose_cases(draw):
    """Transposed geometries stressing output_padding >= stride (dilation > stride)."""
    ndim = draw(st.integers(1, 2))
    groups, cin_g, cout_g = _channels(draw)
    stride = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    return dict(
        ndim=ndim, groups=groups, c_in=groups * cin_g, c_out=groups * cout_g,
        in_shape=tuple(draw(st.integers(1, 5)) for _ in range(ndim)),
        kernel=tuple(draw(st.integers(1, 3)) for _ in range(ndim)),
        stride=stride, dilation=dilation,
        padding=tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim)),
        out_pad=tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=60)
@given(case=integer_transpose_cases())
def test_transpose_equals_forward_transposed_exactly(case):
    """Integer-valued float weights: conv_transpose_matrix == conv_matrix(on m).T, entry for entry."""
    in_shape, kernel, stride, dilation = case["in_shape"], case["kernel"], case["stride"], case["dilation"]
    groups, c_in, c_out, pairs, out_pad = case["groups"], case["c_in"], case["c_out"], case["padding"], case["out_pad"]
    m = tuple(transpose_len(n, k, s, d, lo, hi, a)
              for n, k, s, d, (lo, hi), a in zip(in_shape, kernel, stride, dilation, pairs, out_pad))
    assume(min(m) >= 1)
    rng = np.random.default_rng(case["seed"])
    w = rng.integers(-9, 10, size=(c_in, c_out // groups, *kernel)).astype(np.float64)
    T = conv_transpose_matrix(w, in_shape, stride=stride, padding=pairs, output_padding=out_pad,
                              dilation=dilation, groups=groups)
    F = conv_matrix(w, m, stride=stride, padding=pairs, dilation=dilation, groups=groups)
    o = tuple(out_len(mi, k, s, d, lo, hi) for mi, k, s, d, (lo, hi) in zip(m, kernel, stride, dilation, pairs))
    if all(a < s for a, s in zip(out_pad, stride)):
        assert o == tuple(in_shape)
        B = F.T
    else:
        assert all(oi >= ni for oi, ni in zip(o, in_shape))
        B = F[_first_rows(c_in, o, in_shape)].T
    assert_same_csr(T, B)
    D = (T - B.tocsr())
    D.eliminate_zeros()
    assert D.nnz == 0


# --------------------------------------------------------------------------- #
# hand-picked edges
# --------------------------------------------------------------------------- #
def _fwd(in_shape, kernel, *, stride=1, padding=0, dilation=1, groups=1, c_in=1, c_out=1, mode="zeros",
         dtype="float64", flip=False):
    ndim = len(in_shape)
    per = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * ndim  # noqa: E731
    form = padding if isinstance(padding, str) else ("int" if isinstance(padding, int) else "pairs")
    if form == "pairs" and all(isinstance(p, int) for p in padding):
        form = "per_axis"
    return dict(in_shape=tuple(in_shape), kernel=per(kernel), stride_arg=stride, stride=per(stride),
                dilation_arg=dilation, dilation=per(dilation), padding=padding, form=form, groups=groups,
                c_in=c_in, c_out=c_out, mode=mode, dtype=dtype, flip=flip, batch=2, seed=7)


FORWARD_EDGES = {
    # padding beyond the kernel's reach: whole rows without entries
    "pad-beyond-reach-1d": _fwd((2,), 1, padding=3),
    "pad-beyond-reach-2d-pairs": _fwd((3, 2), 2, padding=((4, 1), (0, 3)), c_in=2, c_out=2),
    "pad-beyond-reach-dilated-3d": _fwd((2, 1, 2), (2, 1, 1), padding=2, dilation=3),
    "empty-rows-strided": _fwd((3,), 2, padding=(5,), stride=2, c_out=3),
    # even kernels with 'same': the extra sample on the high side
    "same-even-k2": _fwd((5,), 2, padding="same"),
    "same-even-k4": _fwd((6, 5), (4, 2), padding="same", c_in=2, c_out=3),
    "same-even-k4-reflect": _fwd((6,), 4, padding="same", mode="reflect"),
    "same-dilated-even-extent": _fwd((7,), 2, padding="same", dilation=3),
    # strided 'same' (TensorFlow: o = ceil(n/s)); PyTorch refuses it, the oracle pads by hand
    "same-stride2-n5": _fwd((5,), 3, padding="same", stride=2),
    "same-stride2-n6": _fwd((6,), 3, padding="same", stride=2),
    "same-stride3-n7-k4": _fwd((7, 8), 4, padding="same", stride=3, c_out=2),
    "same-stride3-circular": _fwd((7,), 4, padding="same", stride=3, mode="circular"),
    "same-stride4-k1-no-pad": _fwd((5,), 1, padding="same", stride=4),
    # k = 1 and n = 1
    "k1": _fwd((4, 3), 1, c_in=3, c_out=2),
    "k1-grouped": _fwd((3,), 1, groups=3, c_in=3, c_out=6),
    "n1": _fwd((1,), 1),
    "n1-full": _fwd((1, 1), 3, padding="full", c_out=2),
    "n1-same-k3": _fwd((1,), 3, padding="same"),
    "n1-circular": _fwd((1,), 3, padding=1, mode="circular"),
    "n1-replicate": _fwd((1, 1, 1), 3, padding=1, mode="replicate"),
    "kernel-equals-input": _fwd((3, 3), 3, padding="valid"),
    # reflect at its limit (pad = n - 1), circular at its limit (pad = n)
    "reflect-limit": _fwd((3,), 3, padding=2, mode="reflect"),
    "circular-limit": _fwd((2, 3), 3, padding=((2, 2), (3, 3)), mode="circular"),
    "replicate-large": _fwd((2,), 2, padding=(5,), mode="replicate"),
    "depthwise-3d": _fwd((3, 3, 3), 2, groups=4, c_in=4, c_out=8, stride=(1, 2, 1), dilation=(2, 1, 1), padding=1),
    "complex64-flip": _fwd((5, 4), 3, padding=1, dtype="complex64", flip=True),
}


@pytest.mark.parametrize("case", FORWARD_EDGES.values(), ids=FORWARD_EDGES.keys())
def test_forward_edges(torch, case):
    C = check_forward(case)
    assert C is not None, "edge case unexpectedly invalid"


def test_padding_beyond_reach_has_empty_rows():
    C = conv_matrix(np.array([[[2.0]]]), (2,), padding=3)
    assert C.shape == (8, 2)
    np.testing.assert_array_equal(np.diff(C.indptr), [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(C.toarray()[3:5], [[2.0, 0.0], [0.0, 2.0]])


@pytest.mark.parametrize("n, k, s, d", [(5, 3, 2, 1), (6, 3, 2, 1), (7, 4, 3, 1), (8, 2, 3, 2), (4, 1, 3, 1), (5, 3, 1, 2)])
def test_same_is_tensorflow_rule(n, k, s, d):
    """'same' gives ceil(n/s) outputs, the odd padding sample on the high side, for every stride."""
    o = -(-n // s)
    total = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
    lo, hi = total // 2, total - total // 2
    assert conv_output_shape((n,), k, stride=s, padding="same", dilation=d) == (o,)
    w = np.arange(1.0, k + 1).reshape(1, 1, k)
    A = conv_matrix(w, (n,), stride=s, dilation=d, padding="same")
    B = conv_matrix(w, (n,), stride=s, dilation=d, padding=((lo, hi),))
    assert_same_csr(A, B)


def _tr(in_shape, kernel, *, stride=1, padding=0, dilation=1, out_pad=0, groups=1, c_in=1, c_out=1,
        dtype="float64", flip=False, size_by="output_padding"):
    ndim = len(in_shape)
    per = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * ndim  # noqa: E731
    return dict(in_shape=tuple(in_shape), kernel=per(kernel), stride_arg=stride, stride=per(stride),
                dilation_arg=dilation, dilation=per(dilation), padding=padding, out_pad=per(out_pad),
                groups=groups, c_in=c_in, c_out=c_out, dtype=dtype, flip=flip, size_by=size_by, batch=2, seed=11)


TRANSPOSE_EDGES = {
    # output_padding >= stride, allowed because dilation > stride
    "outpad-ge-stride-1d": _tr((3,), 3, stride=1, dilation=3, out_pad=2),
    "outpad-ge-stride-2d": _tr((2, 3), (2, 3), stride=(2, 1), dilation=(3, 2), out_pad=(2, 1), c_in=2, c_out=2),
    "outpad-ge-stride-grouped": _tr((3,), 2, stride=2, dilation=4, out_pad=3, groups=2, c_in=2, c_out=4),
    "outpad-ge-stride-output-size": _tr((3,), 3, stride=1, dilation=3, out_pad=2, size_by="output_size"),
    "outpad-ge-stride-padded": _tr((4,), 2, stride=2, dilation=5, out_pad=4, padding=1),
    # ordinary strided upsampling, with output_padding restoring an even size
    "upsample-2x2-to-5x5": _tr((2, 2), 3, stride=2),
    "upsample-with-outpad": _tr((4, 4), 3, stride=2, padding=1, out_pad=1, c_in=2, c_out=3),
    "upsample-output-size": _tr((4, 3), 3, stride=2, padding=1, out_pad=(1, 0), size_by="output_size"),
    # padding that crops to a single sample, and n = 1 / k = 1
    "crop-to-one": _tr((2, 2), 2, padding=1),
    "k1-padding-crops": _tr((3,), 1, padding=1),
    "n1": _tr((1,), 1),
    "n1-strided": _tr((1, 1), 3, stride=3),
    "pairs-asymmetric": _tr((3, 2), 3, stride=2, padding=((0, 2), (1, 0)), out_pad=1),
    "depthwise-3d": _tr((2, 2, 2), 2, stride=2, groups=3, c_in=3, c_out=3, out_pad=(1, 0, 1)),
    "complex128-flip": _tr((3, 3), 2, stride=2, dtype="complex128", flip=True),
}


@pytest.mark.parametrize("case", TRANSPOSE_EDGES.values(), ids=TRANSPOSE_EDGES.keys())
def test_transpose_edges(torch, case):
    T = check_transpose(case)
    assert T is not None, "edge case unexpectedly invalid"


def test_output_size_through_torch_module(torch):
    """output_size derives output_padding as nn.ConvTranspose2d(...)(y, output_size=...) does."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 3, 3))
    y = rng.standard_normal((1, 2, 4, 5))
    layer = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    for size in [(7, 9), (8, 10), (7, 10), (8, 9)]:
        with torch.no_grad():
            ref = layer(torch.from_numpy(y), output_size=list(size)).numpy()
        T = conv_transpose_matrix(w, (4, 5), stride=2, padding=1, output_size=size)
        got = apply(T, y, (3, *size))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_padding_modes_through_torch_module(torch):
    """nn.Conv2d(padding_mode=...) is PyTorch's own reading of the padding modes (symmetric padding)."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 2, 3, 2))
    x = rng.standard_normal((2, 2, 5, 4))
    for mode in ("zeros", "reflect", "replicate", "circular"):
        for padding in (1, (2, 1), "same"):
            layer = torch.nn.Conv2d(2, 3, (3, 2), padding=padding, padding_mode=mode, bias=False).double()
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(w))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    ref = layer(torch.from_numpy(x)).numpy()
            C = conv_matrix(w, (5, 4), padding=padding, padding_mode=mode)
            got = apply(C, x, ref.shape[1:])
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, err_msg=f"{mode} {padding}")


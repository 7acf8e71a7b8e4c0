"""Independent oracles shared by the tests of the core builders: NumPy references and PyTorch.

Two kinds of oracles live here:

* NumPy-only references written straight from DESIGN.md, deliberately as slow
  and obvious Python (padding strings resolved by hand, nnz counted by loops,
  canonical-CSR checks done with NumPy rather than trusted flags).  They never
  call convmat and need no torch.
* PyTorch oracles (``torch_conv``, ``torch_conv_transpose``) that import torch
  lazily, so importing this module never needs it; the tests calling them take
  the ``torch`` fixture of conftest.py, which skips that test alone where
  PyTorch is missing.  Everything is computed in double precision; a complex
  weight is split into real and imaginary parts, so the oracle never relies on
  complex convolution support in torch.
"""

from __future__ import annotations

import numpy as np

INT32_MAX = np.iinfo(np.int32).max

# --------------------------------------------------------------------------- #
# per-axis arithmetic, from DESIGN.md (independent of convmat.geometry)
# --------------------------------------------------------------------------- #


def extent(k: int, d: int) -> int:
    """Effective kernel extent e = d(k-1) + 1."""
    return d * (k - 1) + 1


def resolve_padding(padding, in_shape, kernel_size, stride, dilation):
    """Any accepted padding form -> one (lo, hi) pair per axis, by DESIGN.md's rules.

    'same' follows TensorFlow for every stride: o = ceil(n/s),
    total = max((o-1)s + e - n, 0), the odd sample on the HIGH side.
    """
    ndim = len(in_shape)
    if isinstance(padding, str):
        pairs = []
        for n, k, s, d in zip(in_shape, kernel_size, stride, dilation):
            e = extent(k, d)
            if padding == "valid":
                pairs.append((0, 0))
            elif padding == "full":
                pairs.append((e - 1, e - 1))
            elif padding == "same":
                o = -(-n // s)
                total = max((o - 1) * s + e - n, 0)
                pairs.append((total // 2, total - total // 2))
            else:  # pragma: no cover - test bug
                raise AssertionError(padding)
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * ndim
    return [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in padding]


def out_len(n, k, s, d, lo, hi) -> int:
    """Forward output length o = floor((n + lo + hi - e)/s) + 1."""
    return (n + lo + hi - extent(k, d)) // s + 1


def transpose_len(n, k, s, d, lo, hi, a) -> int:
    """Transposed output length m = (n-1)s - lo - hi + d(k-1) + a + 1."""
    return (n - 1) * s - lo - hi + d * (k - 1) + a + 1


def forward_is_valid(in_shape, kernel_size, dilation, pairs, mode) -> bool:
    """DESIGN.md's validity rules: the kernel fits the padded input; reflect pads < n; circular pads <= n."""
    for n, k, d, (lo, hi) in zip(in_shape, kernel_size, dilation, pairs):
        if n + lo + hi < extent(k, d):
            return False
        if mode == "reflect" and (lo >= n or hi >= n):
            return False
        if mode == "circular" and (lo > n or hi > n):
            return False
    return True


def slow_axis_taps(n, k, s, d, lo, o) -> int:
    """Sum over outputs j < o of #{t : 0 <= j*s - lo + t*d < n}, by two plain loops."""
    count = 0
    for j in range(o):
        for t in range(k):
            u = j * s - lo + t * d
            if 0 <= u < n:
                count += 1
    return count


def slow_nnz(c_out, c_in_per_group, axes) -> int:
    """nnz (zeros mode) = C_out * (C_in/groups) * prod over axes of slow_axis_taps.

    ``axes`` is a list of (n, k, s, d, lo, o) tuples.
    """
    total = c_out * c_in_per_group
    for n, k, s, d, lo, o in axes:
        total *= slow_axis_taps(n, k, s, d, lo, o)
    return total


# --------------------------------------------------------------------------- #
# structural checks
# --------------------------------------------------------------------------- #


def assert_canonical(A, *, plan=None, nonzero_values=False):
    """Check, with NumPy and not only scipy's flags, that ``A`` is canonical CSR.

    Sorted column indices within each row, no duplicates, indices in range,
    consistent indptr, int32 indices when everything fits; with ``plan``,
    nnz and bytes agree with the plan.  With ``nonzero_values`` (generic
    random weights), no stored value is zero.
    """
    assert A.format == "csr"
    assert A.has_canonical_format
    indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
    n_rows, n_cols = A.shape
    assert indptr.shape == (n_rows + 1,)
    assert indptr[0] == 0 and indptr[-1] == A.nnz == indices.size == A.data.size
    row_len = np.diff(indptr)
    assert (row_len >= 0).all()
    if indices.size:
        assert indices.min() >= 0 and indices.max() < n_cols
    # strictly increasing within every row: sorted and duplicate-free
    row_of = np.repeat(np.arange(n_rows), row_len)
    same_row = row_of[1:] == row_of[:-1]
    assert (np.diff(indices.astype(np.int64))[same_row] > 0).all(), "indices not strictly increasing in a row"
    if max(A.nnz, n_rows, n_cols) <= INT32_MAX:
        assert indices.dtype == np.int32 and indptr.dtype == np.int32
    if nonzero_values:
        assert np.all(A.data != 0), "explicit zero stored for a generic weight"
    if plan is not None:
        assert plan.index_dtype == indices.dtype
        if A.shape[0] == plan.shape[0]:
            assert A.shape == plan.shape
            assert A.nnz == plan.nnz
            assert plan.nbytes(A.dtype) == A.data.nbytes + indices.nbytes + indptr.nbytes


def assert_same_csr(A, B):
    """Exact structural and numerical equality of two CSR matrices (after sorting B)."""
    B = B.tocsr()
    B.sort_indices()
    assert A.shape == B.shape
    np.testing.assert_array_equal(np.asarray(A.indptr), np.asarray(B.indptr))
    np.testing.assert_array_equal(np.asarray(A.indices), np.asarray(B.indices))
    np.testing.assert_array_equal(A.data, B.data)


# --------------------------------------------------------------------------- #
# applying a matrix to images, tolerances
# --------------------------------------------------------------------------- #


def apply(A, x, out_shape):
    """``A @ X`` with X[:, i] = x[i].ravel(), back as images (N, *out_shape) (no convmat helpers)."""
    X = x.reshape(x.shape[0], -1).T
    Y = A @ X
    return np.asarray(Y).T.reshape((x.shape[0],) + tuple(out_shape))


def tolerance(dtype) -> dict:
    """assert_allclose tolerances for values of ``dtype`` (relative to O(1) data)."""
    single = np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.complex64))
    return dict(rtol=2e-5, atol=2e-4) if single else dict(rtol=1e-10, atol=1e-10)


def spatial_flip(w):
    """Reverse every spatial axis of a (C, C', *k) weight."""
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)]


# --------------------------------------------------------------------------- #
# PyTorch oracles (torch imported lazily)
# --------------------------------------------------------------------------- #


def _torch():
    import torch

    torch.set_num_threads(1)  # the machine is shared; results do not depend on it
    return torch


def _split(w):
    """A (real, imag) pair of float64 arrays (imag None for a real weight)."""
    w = np.asarray(w)
    if np.iscomplexobj(w):
        return w.real.astype(np.float64), w.imag.astype(np.float64)
    return w.astype(np.float64), None


def _torch_pad_arg(pairs):
    """(lo, hi) per axis -> F.pad's flat list, last axis first."""
    flat = []
    for lo, hi in reversed(list(pairs)):
        flat += [lo, hi]
    return flat


def torch_conv(x, w, *, stride, padding, dilation, groups, padding_mode="zeros", torch_padding=None):
    """torch.nn.functional.conv{1,2,3}d in double precision.

    ``padding`` is one (lo, hi) pair per axis; it is applied with F.pad
    (mode 'constant', 'reflect', 'replicate' or 'circular') before an
    unpadded convolution.  ``torch_padding``, when given (an int, a tuple of
    ints or a string), is passed to the convolution itself instead, so that
    PyTorch's own reading of the padding argument is the oracle.
    """
    torch = _torch()
    F = torch.nn.functional
    ndim = np.ndim(w) - 2
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    if torch_padding is not None:
        assert padding_mode == "zeros"
        pad_arg = torch_padding
    else:
        flat = _torch_pad_arg(padding)
        if any(flat):
            mode = "constant" if padding_mode == "zeros" else padding_mode
            xt = F.pad(xt, flat, mode=mode)
        pad_arg = 0

    def run(wr):
        wt = torch.from_numpy(np.ascontiguousarray(wr))
        return conv(xt, wt, stride=tuple(stride), padding=pad_arg, dilation=tuple(dilation), groups=groups).numpy()

    wr, wi = _split(w)
    out = run(wr)
    return out if wi is None else out + 1j * run(wi)


def torch_conv_transpose(y, w, *, stride, padding, output_padding, dilation, groups):
    """torch.nn.functional.conv_transpose{1,2,3}d in double precision.

    ``padding`` is an int (given to PyTorch as is) or one (lo, hi) pair per
    axis, which PyTorch cannot express: then the transposed convolution runs
    unpadded and ``lo`` samples are cropped at the low end, ``hi`` at the high
    end (padding of a transposed convolution removes outputs).
    """
    torch = _torch()
    F = torch.nn.functional
    ndim = np.ndim(w) - 2
    tconv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[ndim]
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64))
    pairs = None if isinstance(padding, int) else [tuple(p) for p in padding]

    def run(wr):
        wt = torch.from_numpy(np.ascontiguousarray(wr))
        out = tconv(
            yt, wt, stride=tuple(stride), padding=padding if pairs is None else 0,
            output_padding=tuple(output_padding), groups=groups, dilation=tuple(dilation),
        ).numpy()
        if pairs is not None:
            crop = tuple(slice(lo, out.shape[2 + i] - hi) for i, (lo, hi) in enumerate(pairs))
            out = out[(slice(None), slice(None)) + crop]
        return out

    wr, wi = _split(w)
    out = run(wr)
    return out if wi is None else out + 1j * run(wi)

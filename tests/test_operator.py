"""ConvOperator: images in, images out, against PyTorch (forward, conv_transpose, autograd VJP).

The tests that call PyTorch take the ``torch`` fixture (conftest.py) and are
skipped, each with the reason, where it is missing; the rest (views, SciPy's
LinearOperator, dtypes, state, repr, bad input, the example) run without it.
"""

import importlib.util
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator, lsqr, svds

from convmat import conv_matrix
from convmat.checks import adjoint_test
from convmat.operator import ConvOperator

MODES = ("zeros", "reflect", "replicate", "circular")


def _functional():
    """torch.nn.functional, imported when a test that took the ``torch`` fixture first needs it."""
    import torch.nn.functional

    return torch.nn.functional


def conv(ndim):
    """F.conv{1,2,3}d."""
    return getattr(_functional(), f"conv{ndim}d")


def conv_transpose(ndim):
    """F.conv_transpose{1,2,3}d."""
    return getattr(_functional(), f"conv_transpose{ndim}d")


def torch_pad(x, pads, mode):
    """F.pad with one (lo, hi) pair per spatial axis (F.pad lists the last axis first)."""
    flat = [p for lo, hi in reversed(pads) for p in (lo, hi)]
    return _functional().pad(x, flat, mode="constant" if mode == "zeros" else mode)


def t(a):
    """A torch tensor sharing ``a``'s memory (contiguous)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


# --------------------------------------------------------------------------- #
# forward against torch
# --------------------------------------------------------------------------- #
FORWARD_CASES = [
    # weight shape, spatial, stride, padding pairs, dilation, groups
    ((3, 2, 3), (11,), 2, ((1, 1),), 1, 1),
    ((4, 2, 3, 3), (7, 6), 1, ((1, 1), (1, 1)), 1, 1),
    ((4, 1, 3, 2), (8, 7), (2, 1), ((2, 1), (0, 1)), (1, 2), 2),
    ((6, 1, 3, 3), (9, 9), 3, ((1, 1), (2, 2)), 2, 2),
    ((2, 2, 2, 3, 2), (4, 5, 4), (1, 2, 1), ((1, 1), (1, 0), (0, 1)), 1, 1),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: f"w{c[0]}-n{c[1]}")
def test_forward_matches_torch_with_bias(torch, case, mode):
    wshape, spatial, stride, pads, dilation, groups = case
    rng = np.random.default_rng(1)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])
    c_in = wshape[1] * groups
    x = rng.standard_normal((3, c_in) + spatial)
    A = ConvOperator(w, spatial, stride=stride, padding=pads, dilation=dilation, groups=groups, padding_mode=mode, bias=b)
    D = len(spatial)
    ref = conv(D)(torch_pad(t(x), pads, mode), t(w), t(b), stride=stride, dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(A(x), ref, rtol=1e-12, atol=1e-12)
    # one unbatched image gives one unbatched output
    np.testing.assert_allclose(A.apply(x[1]), ref[1], rtol=1e-12, atol=1e-12)
    assert A.out_shape == ref.shape[1:] and A.in_shape == x.shape[1:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: f"w{c[0]}-n{c[1]}")
def test_adjoint_is_torch_autograd_vjp(torch, case, mode):
    """The oracle: y = conv(pad(x, mode)); autograd's vector-Jacobian product is C^T v, for every mode."""
    wshape, spatial, stride, pads, dilation, groups = case
    rng = np.random.default_rng(2)
    w = rng.standard_normal(wshape)
    c_in = wshape[1] * groups
    A = ConvOperator(w, spatial, stride=stride, padding=pads, dilation=dilation, groups=groups, padding_mode=mode,
                     bias=rng.standard_normal(wshape[0]))
    x = t(rng.standard_normal((2, c_in) + spatial)).requires_grad_(True)
    y = conv(len(spatial))(torch_pad(x, pads, mode), t(w), stride=stride, dilation=dilation, groups=groups)
    v = rng.standard_normal(tuple(y.shape))
    (vjp,) = torch.autograd.grad(y, x, grad_outputs=t(v))
    np.testing.assert_allclose(A.apply_adjoint(v), vjp.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A.T(v), vjp.numpy(), rtol=1e-12, atol=1e-12)  # A.T's forward is the adjoint
    np.testing.assert_allclose(A.apply_adjoint(v[0]), vjp.numpy()[0], rtol=1e-12, atol=1e-12)


def test_reflect_adjoint_folds_the_border_unlike_conv_transpose(torch):
    """Reflect maps u = -1 onto 1 and u = n onto n - 2: C^T differs from PyTorch's conv_transpose
    (zeros only) exactly on rows and columns 1 and n - 2, where the border is folded back."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1, 1, 3, 3))
    A = ConvOperator(w, (6, 6), padding=1, padding_mode="reflect")
    v = rng.standard_normal((1, 1, 6, 6))
    zero_pad_transpose = conv_transpose(2)(t(v), t(w), padding=1).numpy()
    diff = np.abs(A.apply_adjoint(v) - zero_pad_transpose)[0, 0]
    folded = np.zeros((6, 6), bool)
    folded[[1, 4], :] = folded[:, [1, 4]] = True
    assert diff[~folded].max() < 1e-12 < diff[folded].min()


# --------------------------------------------------------------------------- #
# transposed=True against torch
# --------------------------------------------------------------------------- #
TRANSPOSED_CASES = [
    # weight (C_in, C_out/g, *k), spatial input, stride, padding, output_padding, dilation, groups
    ((2, 3, 3), (5,), 2, 1, 1, 1, 1),
    ((4, 1, 3, 3), (4, 5), 2, 1, 1, 1, 2),
    ((2, 2, 4, 4), (3, 3), 2, 1, 0, 1, 1),
    ((2, 3, 3, 2), (4, 3), (3, 2), (1, 0), (2, 1), (1, 2), 1),
    ((2, 2, 2, 2, 3), (3, 2, 3), (2, 1, 2), 0, (1, 0, 0), 1, 2),
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=lambda c: f"w{c[0]}-n{c[1]}")
def test_transposed_matches_torch_conv_transpose(torch, case):
    wshape, spatial, stride, padding, a, dilation, groups = case
    rng = np.random.default_rng(4)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[1] * groups)
    x = rng.standard_normal((2, wshape[0]) + spatial)
    A = ConvOperator(w, spatial, stride=stride, padding=padding, output_padding=a, dilation=dilation, groups=groups,
                     bias=b, transposed=True)
    ref = conv_transpose(len(spatial))(t(x), t(w), t(b), stride=stride, padding=padding, output_padding=a,
                               dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(A(x), ref, rtol=1e-12, atol=1e-12)
    assert sp.isspmatrix_csr(A.matrix) or isinstance(A.matrix, sp.csr_array)
    # its adjoint is the autograd VJP of conv_transpose
    xt = t(x).requires_grad_(True)
    y = conv_transpose(len(spatial))(xt, t(w), stride=stride, padding=padding, output_padding=a, dilation=dilation, groups=groups)
    v = rng.standard_normal(tuple(y.shape))
    (vjp,) = torch.autograd.grad(y, xt, grad_outputs=t(v))
    np.testing.assert_allclose(A.apply_adjoint(v), vjp.numpy(), rtol=1e-12, atol=1e-12)


def test_transposed_output_size_derives_output_padding():
    w = np.random.default_rng(5).standard_normal((2, 3, 3, 3))
    A = ConvOperator(w, (4, 4), stride=2, padding=1, output_size=(8, 7), transposed=True)
    assert A.out_shape == (3, 8, 7)
    with pytest.raises(ValueError, match=r"requested an output_size of \(9, 7\), but valid sizes range"):
        ConvOperator(w, (4, 4), stride=2, padding=1, output_size=(9, 7), transposed=True)


def test_adjoint_of_forward_is_conv_transpose_for_zeros():
    """Zeros padding: the adjoint of the forward conv is the transposed conv (same weight tensor)."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 2, 3, 3))
    A = ConvOperator(w, (8, 8), stride=2, padding=1)
    B = ConvOperator(w, (4, 4), stride=2, padding=1, output_padding=1, transposed=True)
    v = rng.standard_normal((2, 4, 4, 4))
    np.testing.assert_allclose(A.apply_adjoint(v), B(v), rtol=1e-13, atol=1e-13)
    assert (A.matrix.T != B.matrix).nnz == 0


# --------------------------------------------------------------------------- #
# .T, @, LinearOperator, dtypes, state
# --------------------------------------------------------------------------- #
def test_T_view_shares_the_matrix_and_round_trips():
    rng = np.random.default_rng(7)
    A = ConvOperator(rng.standard_normal((3, 2, 3, 3)), (6, 5), stride=2, padding=1, padding_mode="replicate",
                     bias=np.ones(3))
    AT = A.T
    assert AT.T is A and A.T is AT and AT.is_adjoint and not A.is_adjoint
    assert AT.in_shape == A.out_shape and AT.out_shape == A.in_shape and AT.shape == A.shape[::-1]
    assert AT.bias is None and np.shares_memory(AT.matrix.data, A.matrix.data)  # no copy
    y = rng.standard_normal((2,) + A.out_shape)
    np.testing.assert_array_equal(AT(y), A.apply_adjoint(y))
    x = rng.standard_normal((2,) + A.in_shape)
    np.testing.assert_allclose(AT.apply_adjoint(x), A(x) - 1.0, rtol=1e-13, atol=1e-13)  # linear part only
    assert "adjoint of" in repr(AT)


def test_matmul_on_columns_and_vectors():
    rng = np.random.default_rng(8)
    A = ConvOperator(rng.standard_normal((2, 1, 3)), (7,), padding=1, bias=np.array([5.0, 6.0]))
    X = rng.standard_normal((7, 4))
    np.testing.assert_allclose(A @ X, A.matrix @ X)
    np.testing.assert_allclose(A @ X[:, 0], A.matrix @ X[:, 0])
    np.testing.assert_allclose(A.T @ (A @ X), A.matrix.T @ (A.matrix @ X))
    with pytest.raises(ValueError, match=r"x has shape \(6, 4\) \(6 rows\), but this operator takes \(7, k\)"):
        A @ X[:6]
    with pytest.raises(ValueError, match=r"x has shape \(7, 4, 1\)"):
        A @ X[..., None]


def test_as_linear_operator_is_the_operator_itself():
    rng = np.random.default_rng(9)
    A = ConvOperator(rng.standard_normal((4, 1, 3, 3)), (10, 10), padding=1, padding_mode="reflect")
    L = A.as_linear_operator()
    assert L is A and isinstance(L, LinearOperator) and L.shape == A.shape and L.dtype == A.dtype
    x = rng.standard_normal(A.shape[1])
    y = rng.standard_normal(A.shape[0])
    np.testing.assert_allclose(L.matvec(x), A.matrix @ x)
    np.testing.assert_allclose(L.rmatvec(y), A.matrix.T @ y)
    np.testing.assert_allclose(L.matmat(np.c_[x, x]), A.matrix @ np.c_[x, x])
    np.testing.assert_allclose(L.rmatmat(np.c_[y, y]), A.matrix.T @ np.c_[y, y])
    sol = lsqr(L, L.matvec(x), atol=1e-14, btol=1e-14, iter_lim=2000)[0]
    np.testing.assert_allclose(sol, x, atol=1e-8)
    top = svds(L, k=1, return_singular_vectors=False, rng=np.random.default_rng(0))[0]
    assert top == pytest.approx(np.linalg.norm(A.matrix.toarray(), 2), rel=1e-9)
    assert adjoint_test(L).passed


def test_complex_adjoint_is_the_conjugate_transpose():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((2, 2, 3)) + 1j * rng.standard_normal((2, 2, 3))
    A = ConvOperator(w, (9,), padding=1, padding_mode="circular")
    y = rng.standard_normal((2, 9)) + 1j * rng.standard_normal((2, 9))
    np.testing.assert_allclose(A.apply_adjoint(y).ravel(), A.matrix.conj().T @ y.ravel())
    assert not np.allclose(A.apply_adjoint(y).ravel(), A.matrix.T @ y.ravel())
    assert adjoint_test(A).passed and adjoint_test(A.H).passed and adjoint_test(A.T).passed
    # SciPy's convention: .H is the conjugate transpose (a ConvOperator), .T the plain transpose
    assert isinstance(A.H, ConvOperator) and A.adjoint() is A.H and not isinstance(A.T, ConvOperator)
    np.testing.assert_allclose(A.T @ y.ravel(), A.matrix.T @ y.ravel())
    np.testing.assert_allclose(A.transpose().rmatvec(np.ones(A.shape[1])), A.matrix.conj() @ np.ones(A.shape[1]))


def test_dtype_float32_is_kept_and_integer_weights_give_float64():
    w = np.random.default_rng(11).standard_normal((2, 1, 3, 3)).astype(np.float32)
    A = ConvOperator(w, (5, 5), padding=1)
    assert A.dtype == np.float32 and A(np.ones((1, 5, 5), np.float32)).dtype == np.float32
    assert A.apply_adjoint(np.ones((2, 5, 5), np.float32)).dtype == np.float32
    assert ConvOperator(np.ones((1, 1, 3), int), (4,)).dtype == np.float64
    assert ConvOperator(w, (5, 5), dtype=np.float64).dtype == np.float64


def test_torch_parameters_are_accepted_but_operands_must_match_the_backend(torch):
    w = torch.randn(2, 1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A = ConvOperator(w, (6,), bias=torch.zeros(2))  # parameters on the host: any library
    x = torch.ones(1, 6, dtype=torch.float64)
    np.testing.assert_allclose(A(x.numpy()), conv(1)(x[None], w)[0].detach().numpy())
    with pytest.raises(TypeError, match=r"x is a torch.Tensor on device cpu, but this operator lives on backend "
                                        r"'scipy' \(NumPy\); pass x.numpy\(force=True\), or move the operator "
                                        r"with .to\('torch'\)"):
        A(x)
    with pytest.raises(TypeError, match=r"y is a torch.Tensor"):
        A.apply_adjoint(torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x is a torch.Tensor on device cpu, but this operator lives on backend 'scipy'"):
        A.matvec(torch.ones(6, dtype=torch.float64))
    # a weight that requires grad: kept on the torch backend, refused (never silently detached) elsewhere
    with pytest.raises(TypeError, match=r"weight requires grad, and backend 'scipy' cannot carry PyTorch's autograd"):
        ConvOperator(w.clone().requires_grad_(True), (6,))
    with pytest.raises(TypeError, match=r"weight requires grad, and a sparse matrix cannot carry"):
        conv_matrix(w.clone().requires_grad_(True), (6,))


def test_apply_never_changes_the_operator():
    rng = np.random.default_rng(12)
    bias = rng.standard_normal(3)
    A = ConvOperator(rng.standard_normal((3, 2, 3, 3)), (5, 5), padding=1, bias=bias)
    data, indices = A.matrix.data.copy(), A.matrix.indices.copy()
    x = rng.standard_normal((2, 2, 5, 5))
    x0 = x.copy()
    first = A(x)
    A.apply_adjoint(first)
    A @ x.reshape(2, -1).T
    np.testing.assert_array_equal(A(x), first)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(A.matrix.data, data)
    np.testing.assert_array_equal(A.matrix.indices, indices)
    bias[:] = 0  # the operator keeps its own read-only copy
    np.testing.assert_array_equal(A(x), first)
    with pytest.raises(ValueError, match="read-only"):
        A.bias[0] = 1.0


def test_repr_names_geometry_shape_nnz_and_bytes():
    A = ConvOperator(np.ones((2, 1, 3, 3)), (8, 8), stride=2, padding=1, padding_mode="circular", bias=np.zeros(2))
    text = repr(A)
    for piece in ("conv2d", "input (1, 8, 8) -> output (2, 4, 4)", "stride=(2, 2)", "'circular'",
                  f"nnz {A.nnz:,}", "kB in memory", "bias shape (2,)"):
        assert piece in text, piece
    B = ConvOperator(np.ones((1, 1, 3)), (4,), stride=2, padding=1, output_padding=1, transposed=True)
    assert "conv_transpose1d" in repr(B) and "padding=((1, 1),), output_padding=(1,)" in repr(B)


def test_to_pylops():
    pylops = pytest.importorskip("pylops")
    rng = np.random.default_rng(13)
    A = ConvOperator(rng.standard_normal((2, 1, 3, 3)), (6, 6), padding=1, padding_mode="reflect")
    P = A.to_pylops()
    x = rng.standard_normal(A.shape[1])
    y = rng.standard_normal(A.shape[0])
    np.testing.assert_allclose(P @ x, A.matrix @ x)
    np.testing.assert_allclose(P.H @ y, A.matrix.T @ y)
    assert pylops.utils.dottest(P, *A.shape, rtol=1e-10)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_inputs():
    w = np.ones((2, 1, 3, 3))
    A = ConvOperator(w, (5, 6), padding=1)
    with pytest.raises(ValueError, match=r"x must have shape \(1, 5, 6\) \(one image\) or \(N, 1, 5, 6\).*got \(2, 1, 6, 5\)"):
        A(np.ones((2, 1, 6, 5)))
    with pytest.raises(ValueError, match=r"x must have shape .*or \(5, 6\) \(one channel-less image\), got \(6, 5\)"):
        A(np.ones((6, 5)))
    with pytest.raises(ValueError, match=r"y must have shape \(2, 5, 6\) \(one image\) or \(N, 2, 5, 6\) \(a batch\), got \(5, 6\)"):
        A.apply_adjoint(np.ones((5, 6)))  # two output channels: no channel-less form
    with pytest.raises(ValueError, match=r"y must have shape \(2, 5, 6\) \(one image\) or \(N, 2, 5, 6\).*got \(1, 1, 5, 6\)"):
        A.apply_adjoint(np.ones((1, 1, 5, 6)))
    with pytest.raises(TypeError, match="x must be an array of numbers, got dtype <U1"):
        A(np.array(["a"]))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\).*got \(3,\)"):
        ConvOperator(w, (5, 6), bias=np.ones(3))
    with pytest.raises(TypeError, match="complex bias needs a complex matrix"):
        ConvOperator(w, (5, 6), bias=np.ones(2) * 1j)
    with pytest.raises(ValueError, match=r"transposed convolution takes padding_mode='zeros' only.*'reflect'"):
        ConvOperator(w, (5, 6), padding=1, padding_mode="reflect", transposed=True)
    with pytest.raises(ValueError, match="output_padding and output_size apply to a transposed convolution only"):
        ConvOperator(w, (5, 6), stride=2, output_padding=1)
    with pytest.raises(TypeError, match="transposed must be a bool"):
        ConvOperator(w, (5, 6), transposed="yes")
    with pytest.raises(TypeError, match="weight must be an array of numbers"):
        ConvOperator([["a"]], (5, 6))
    with pytest.raises(ValueError, match="has 2 spatial axes but in_shape"):
        ConvOperator(w, (5,))
    with pytest.raises(ValueError, match=r"weight must have shape \(2, 1, 3\).*for this plan|padding_mode must be one of"):
        ConvOperator(w, (5, 6), padding_mode="mirror")


# --------------------------------------------------------------------------- #
# property: any geometry, the adjoint is the matrix transpose and passes the test
# --------------------------------------------------------------------------- #
@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 9),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    lo=st.integers(0, 2),
    hi=st.integers(0, 2),
    mode=st.sampled_from(MODES),
    groups=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_property_adjoint_matches_torch_vjp(torch, n, k, s, d, lo, hi, mode, groups, seed):
    assume(d * (k - 1) + 1 <= n + lo + hi)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((2 * groups, 1, k, k))
    A = ConvOperator(w, (n, n + 1), stride=s, padding=((lo, hi), (hi, lo)), dilation=d, groups=groups,
                     padding_mode=mode)
    x = t(rng.standard_normal((1,) + A.in_shape)).requires_grad_(True)
    y = conv(2)(torch_pad(x, ((lo, hi), (hi, lo)), mode), t(w), stride=s, dilation=d, groups=groups)
    np.testing.assert_allclose(A(x.detach().numpy()), y.detach().numpy(), rtol=1e-12, atol=1e-12)
    v = rng.standard_normal(tuple(y.shape))
    (vjp,) = torch.autograd.grad(y, x, grad_outputs=t(v))
    np.testing.assert_allclose(A.apply_adjoint(v), vjp.numpy(), rtol=1e-12, atol=1e-12)
    assert adjoint_test(A, rng=seed).passed


# --------------------------------------------------------------------------- #
# the least-squares example
# --------------------------------------------------------------------------- #
def _example():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "least_squares.py"
    spec = importlib.util.spec_from_file_location("least_squares_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_least_squares_recovers_what_the_transpose_does_not(tmp_path, capsys):
    ex = _example()
    x = ex.test_image(48)
    r = ex.recover(x, seed=1)
    assert r["operator"].shape[0] > r["operator"].shape[1]
    assert r["err_lsqr"] < 1e-8 and r["res_lsqr"] < 1e-8
    assert r["err_transpose"] > 0.1 and r["err_scaled"] > 0.05  # not the inverse, even rescaled
    assert r["err_scaled"] / r["err_lsqr"] > 1e6  # orders of magnitude
    assert ex.main(["--out", str(tmp_path), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "lsqr(C, y)" in out and "C^T y (transposed conv)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lsqr.png", "transpose.png", "x.png", "y.png"]

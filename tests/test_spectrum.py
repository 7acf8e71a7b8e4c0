"""Spectra: the circular FFT formula (Sedghi, Gupta & Long) against dense SVDs; operator norms."""

import numpy as np
import pytest
import scipy.sparse as sp

from convmat import conv_matrix
from convmat.operator import ConvOperator
from convmat.spectrum import circular_singular_values, operator_norm


def dense_singular_values(C):
    return np.linalg.svd(C.toarray(), compute_uv=False)


CIRCULAR_CASES = [
    # weight shape, spatial, groups, dilation
    ((1, 1, 3), (7,), 1, 1),
    ((1, 1, 4), (9,), 1, 1),  # even kernel: 'same' pads (1, 2)
    ((3, 2, 5), (8,), 1, 1),  # C_out > C_in
    ((2, 3, 5), (4,), 1, 1),  # kernel longer than the input: taps wrap
    ((4, 2, 3), (9,), 2, 2),  # groups and dilation
    ((1, 1, 3, 3), (6, 5), 1, 1),
    ((3, 2, 3, 2), (5, 6), 1, 1),
    ((6, 2, 3, 3), (4, 5), 3, (1, 2)),  # 3 groups, block-diagonal symbol
    ((2, 2, 2, 2, 3), (3, 4, 5), 1, 1),  # 3-D
]


@pytest.mark.parametrize("case", CIRCULAR_CASES, ids=lambda c: f"w{c[0]}-n{c[1]}-g{c[2]}")
def test_circular_singular_values_equal_dense_svd(case):
    wshape, spatial, groups, dilation = case
    w = np.random.default_rng(0).standard_normal(wshape)
    C = conv_matrix(w, spatial, padding="same", padding_mode="circular", groups=groups, dilation=dilation)
    assert C.shape[0] // wshape[0] == C.shape[1] // (wshape[1] * groups)  # maps the size onto itself
    fft = circular_singular_values(w, spatial, groups=groups, dilation=dilation)
    dense = dense_singular_values(C)
    assert fft.shape == dense.shape == (min(C.shape),)
    np.testing.assert_allclose(fft, dense, rtol=0, atol=1e-10 * dense[0])
    assert np.all(np.diff(fft) <= 0)


STRIDED_CASES = [
    # weight shape, spatial, stride, groups, dilation, padding
    ((1, 1, 3), (8,), 2, 1, 1, "same"),
    ((1, 1, 4), (12,), 4, 1, 1, ((0, 3),)),  # stride = kernel: disjoint windows
    ((3, 2, 5), (12,), 3, 1, 2, ((2, 6),)),  # dilation; kernel wider than the stride
    ((2, 1, 2), (6,), 3, 2, 1, "same"),  # depthwise-like, C_out < s * C_in
    ((4, 2, 3, 3), (6, 8), (2, 4), 2, 1, "same"),  # groups, a different stride per axis
    ((2, 3, 2, 2), (4, 6), (2, 3), 1, (2, 1), ((1, 0), (1, 0))),
    ((6, 1, 3), (9,), 3, 6, 1, "same"),  # 6 groups of one channel
    ((5, 1, 3, 3), (4, 4), 2, 1, 1, "same"),  # C_out > s^D * C_in: zero singular values
    ((2, 2, 2, 2, 3), (4, 2, 6), (2, 1, 3), 1, 1, "same"),  # 3-D
]


@pytest.mark.parametrize("case", STRIDED_CASES, ids=lambda c: f"w{c[0]}-n{c[1]}-s{c[2]}-g{c[3]}-d{c[4]}")
def test_strided_circular_singular_values_equal_dense_svd(case):
    """Polyphase blocks: output frequency w couples the input frequencies w + q n/s."""
    wshape, spatial, stride, groups, dilation, padding = case
    w = np.random.default_rng(10).standard_normal(wshape)
    C = conv_matrix(w, spatial, stride=stride, padding=padding, padding_mode="circular", groups=groups,
                    dilation=dilation)
    s = (stride,) * len(spatial) if isinstance(stride, int) else stride
    assert C.shape[0] == wshape[0] * np.prod([n // v for n, v in zip(spatial, s)])  # n/s outputs per axis
    fft = circular_singular_values(w, spatial, stride=stride, groups=groups, dilation=dilation)
    dense = dense_singular_values(C)
    assert fft.shape == dense.shape == (min(C.shape),)
    np.testing.assert_allclose(fft, dense, rtol=0, atol=1e-10 * dense[0])
    assert np.all(np.diff(fft) <= 0)


def test_strided_singular_values_by_hand():
    """The Haar sum [1, 1] with stride 2 sums disjoint pairs: every singular value is sqrt(2);
    with stride 1 the same kernel has |1 + e^{iw}| = 2|cos(w/2)|, which is 0 at w = pi."""
    haar = np.array([[[1.0, 1.0]]])
    np.testing.assert_allclose(circular_singular_values(haar, (8,), stride=2), np.full(4, np.sqrt(2)), atol=1e-15)
    one = circular_singular_values(haar, (8,))
    np.testing.assert_allclose(one, np.sort(2 * np.abs(np.cos(np.pi * np.arange(8) / 8)))[::-1], atol=1e-14)


def test_stride_that_does_not_divide_is_refused():
    w = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"stride must divide in_shape on every axis.*got stride \(2, 3\) for "
                       r"in_shape \(6, 7\) \(axis 1: 7 is not a multiple of 3\)"):
        circular_singular_values(w, (6, 7), stride=(2, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        circular_singular_values(w, (6, 6), stride=0)
    with pytest.raises(ValueError, match="stride must be an int or have 2 entries"):
        circular_singular_values(w, (6, 6), stride=(1, 2, 3))


def test_padding_offset_does_not_matter():
    """Any (lo, hi) with lo + hi = e - 1 is a circular shift of 'same': same singular values."""
    w = np.random.default_rng(1).standard_normal((2, 2, 5))
    fft = circular_singular_values(w, (11,))
    for pads in ([(0, 4)], [(3, 1)], [(4, 0)]):
        C = conv_matrix(w, (11,), padding=pads, padding_mode="circular")
        np.testing.assert_allclose(dense_singular_values(C), fft, atol=1e-12)


def test_cross_correlation_and_true_convolution_have_the_same_singular_values():
    """flip=True (scipy.signal.convolve) gives W^(-w) instead of W^(w): the same set of singular values,
    though for a multichannel kernel the two matrices differ."""
    w = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    corr = conv_matrix(w, (5, 6), padding="same", padding_mode="circular")
    conv = conv_matrix(w, (5, 6), padding="same", padding_mode="circular", flip=True)
    assert abs(corr - conv).max() > 0.1
    fft = circular_singular_values(w, (5, 6))
    np.testing.assert_allclose(dense_singular_values(conv), fft, atol=1e-12)
    np.testing.assert_allclose(dense_singular_values(corr), fft, atol=1e-12)


def test_complex_weights():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 3)) + 1j * rng.standard_normal((2, 3, 3))
    C = conv_matrix(w, (7,), padding="same", padding_mode="circular")
    np.testing.assert_allclose(circular_singular_values(w, (7,)), dense_singular_values(C), atol=1e-12)


def test_hand_worked_second_difference():
    """[1, -2, 1] on 4 samples: |e^{iw} - 2 + e^{-iw}| = 2 - 2 cos w at w = 0, pi/2, pi, 3pi/2."""
    s = circular_singular_values(np.array([[[1.0, -2.0, 1.0]]]), (4,))
    np.testing.assert_allclose(s, [4.0, 2.0, 2.0, 0.0], atol=1e-15)


# --------------------------------------------------------------------------- #
# operator_norm
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["auto", "dense", "svds", "power"])
def test_operator_norm_agrees_with_dense_svd(method):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 2, 3, 3))
    C = conv_matrix(w, (9, 8), stride=2, padding=1, padding_mode="reflect")
    exact = dense_singular_values(C)[0]
    assert operator_norm(C, method=method, tol=1e-13) == pytest.approx(exact, rel=1e-9)


def test_operator_norm_of_every_kind_of_operator():
    rng = np.random.default_rng(5)
    A = ConvOperator(rng.standard_normal((3, 2, 3)), (12,), padding=1, padding_mode="replicate")
    exact = dense_singular_values(A.matrix)[0]
    for op in (A, A.T, A.matrix, sp.csr_matrix(A.matrix), A.matrix.toarray(), A.as_linear_operator()):
        assert operator_norm(op) == pytest.approx(exact, rel=1e-9), type(op).__name__
    assert operator_norm(A.as_linear_operator(), method="power", tol=1e-14) == pytest.approx(exact, rel=1e-8)
    # a 1 x n matrix (ARPACK needs k < min(shape)): the norm of the row
    row = sp.csr_array(np.array([[3.0, 4.0, 0.0]]))
    assert operator_norm(row, method="svds") == pytest.approx(5.0)
    assert operator_norm(row.T, method="svds") == pytest.approx(5.0)


def test_operator_norm_large_uses_svds_and_is_deterministic():
    w = np.random.default_rng(6).standard_normal((2, 2, 3, 3))
    C = conv_matrix(w, (48, 48), padding=1, padding_mode="circular")  # 4608 x 4608: above the dense limit
    bound = circular_singular_values(w, (48, 48))[0]
    assert operator_norm(C) == pytest.approx(bound, rel=1e-10)
    with pytest.warns(RuntimeWarning, match=r"did not reach tol=1e-10 in maxiter=50 iterations.*lower bound"):
        power = operator_norm(C, method="power", rng=3, maxiter=50)
    with pytest.warns(RuntimeWarning):
        again = operator_norm(C, method="power", rng=np.random.default_rng(3), maxiter=50)
    assert power == again and power <= bound * (1 + 1e-12)


def test_svds_on_threaded_products_reaches_its_tol(monkeypatch):
    """CSR/CSC matrices and ConvOperators are multiplied by convmat.spmm (forward and adjoint);
    'svds' meets its tol, from below (a Lanczos Ritz value of A^H A), for either Gram matrix."""
    import convmat.spmm

    calls = {"fwd": 0, "adj": 0}
    real = convmat.spmm.csr_matmul

    def counting(A, X, **kw):
        calls["adj" if kw.get("transpose") else "fwd"] += 1
        return real(A, X, **kw)

    monkeypatch.setattr(convmat.spmm, "csr_matmul", counting)
    w = np.random.default_rng(7).standard_normal((3, 2, 3, 3))
    C = conv_matrix(w, (10, 9), padding=1, stride=(2, 1))  # 135 x 180: A A^H is the smaller Gram matrix
    exact = dense_singular_values(C)[0]
    for A in (C, C.T.tocsr(), sp.csc_array(C)):
        for tol in (1e-3, 1e-8):
            calls.update(fwd=0, adj=0)
            est = operator_norm(A, method="svds", tol=tol)
            assert abs(est - exact) <= tol * exact and est <= exact * (1 + 1e-12), (A.shape, tol, est, exact)
            assert calls["fwd"] > 0 and calls["fwd"] == calls["adj"], calls
    assert operator_norm(ConvOperator(w, (10, 9), padding=1, stride=(2, 1)), method="svds") == pytest.approx(
        exact, rel=1e-9
    )


def test_svds_runs_blas_on_one_thread():
    """Inside operator_norm's ARPACK loop BLAS has one thread (its idle threads would spin on the
    cores the products use); outside, the limit is what it was."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from scipy.sparse.linalg import LinearOperator

    def blas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    seen = []
    C = conv_matrix(np.random.default_rng(8).standard_normal((2, 2, 3, 3)), (40, 40), padding=1)

    def matvec(v):
        seen.append(blas_threads())
        return C @ v

    L = LinearOperator(C.shape, matvec=matvec, rmatvec=lambda v: C.T @ v, dtype=C.dtype)
    assert operator_norm(L, method="svds") == pytest.approx(operator_norm(C, method="svds"), rel=1e-9)
    assert seen and all(t == [1] * len(before) for t in seen), (before, seen[:3])
    assert blas_threads() == before


@pytest.mark.parametrize("n", [16, 20])
def test_power_iteration_reaches_the_accuracy_it_promises(n, recwarn):
    """tol is an accuracy: the residual stop gives about tol/2 relative error, from below, without a warning
    (the earlier relative-change stop gave 1.4e-9 here at n = 20 with tol = 1e-10)."""
    w = np.random.default_rng(11).standard_normal((2, 2, 3, 3))
    C = conv_matrix(w, (n, n), padding=1)  # top singular values close together: slow convergence
    exact = dense_singular_values(C)[0]
    for tol in (1e-6, 1e-10):
        estimate = operator_norm(C, method="power", tol=tol)
        assert exact * (1 - tol) <= estimate <= exact * (1 + 1e-14)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_zero_padding_norm_is_bounded_by_the_fft_and_the_gap_shrinks():
    """||C_zero|| <= max circular singular value (size n, and rigorously size n + lo + hi);
    the gaps decrease as n grows."""
    w = np.random.default_rng(7).standard_normal((3, 2, 3, 3))
    gaps_n, gaps_padded = [], []
    for n in (4, 8, 16, 32):
        norm = operator_norm(conv_matrix(w, (n, n), padding=1), method="svds", tol=1e-12)
        on_n = circular_singular_values(w, (n, n))[0]
        on_padded = circular_singular_values(w, (n + 2, n + 2))[0]  # C_zero is a selection of this circulant
        assert norm <= on_n and norm <= on_padded
        gaps_n.append(on_n - norm)
        gaps_padded.append(on_padded - norm)
    assert all(a > b for a, b in zip(gaps_n, gaps_n[1:])), gaps_n
    assert all(a > b for a, b in zip(gaps_padded, gaps_padded[1:])), gaps_padded
    assert gaps_n[-1] < 0.05 * gaps_n[0]  # measured: 1.97 -> 0.047 from n = 4 to 32


def test_zero_padding_bound_holds_for_any_stride():
    """Rigorous: with zero padding (lo, hi) and any stride, ||C|| <= max sv of the circular conv on n + lo + hi."""
    rng = np.random.default_rng(8)
    for stride, pads, n in [(2, ((1, 2), (0, 1)), (9, 7)), (3, ((2, 2), (2, 0)), (10, 11)), (1, ((0, 0), (3, 1)), (6, 6))]:
        w = rng.standard_normal((2, 3, 3, 3))
        norm = dense_singular_values(conv_matrix(w, n, stride=stride, padding=pads))[0]
        bound = circular_singular_values(w, tuple(k + lo + hi for k, (lo, hi) in zip(n, pads)))[0]
        assert norm <= bound * (1 + 1e-12)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_inputs():
    C = conv_matrix(np.ones((1, 1, 3)), (5,))
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'dense', 'svds', 'power'\), got 'lanczos'"):
        operator_norm(C, method="lanczos")
    with pytest.raises(ValueError, match="tol must be a non-negative number, got -1"):
        operator_norm(C, tol=-1)
    with pytest.raises(ValueError, match=r"maxiter must be a positive int or None \(at least one iteration\), got 0"):
        operator_norm(C, method="power", maxiter=0)
    with pytest.raises(ValueError, match="maxiter must be a positive int or None"):
        operator_norm(C, method="svds", maxiter=-3)
    with pytest.raises(TypeError, match="maxiter must be a positive int or None, got 2.5"):
        operator_norm(C, method="power", maxiter=2.5)
    with pytest.raises(TypeError, match="rng must be None, a non-negative int seed or a numpy.random.Generator, got 'x'"):
        operator_norm(C, rng="x")
    with pytest.raises(ValueError, match="rng must be None, a non-negative int seed .*got -1"):
        operator_norm(C, method="power", rng=-1)
    with pytest.raises(ValueError, match="tol must be a non-negative number, got True"):
        operator_norm(C, tol=True)
    with pytest.raises(ValueError, match="method='dense' needs an explicit matrix"):
        operator_norm(sp.linalg.aslinearoperator(C), method="dense")
    with pytest.raises(TypeError, match="A must be a scipy sparse matrix.*got list"):
        operator_norm([[1.0]])
    w = np.ones((4, 1, 3, 3))
    with pytest.raises(ValueError, match=r"weight of shape \(4, 1, 3, 3\) has 2 spatial axes but in_shape \(5,\) has 1"):
        circular_singular_values(w, (5,))
    with pytest.raises(ValueError, match=r"C_out \(4, weight.shape\[0\]\) must be divisible by groups \(3\)"):
        circular_singular_values(w, (5, 5), groups=3)
    with pytest.raises(ValueError, match="groups must be a positive int, got 0"):
        circular_singular_values(w, (5, 5), groups=0)
    with pytest.raises(ValueError, match=r"weight must have shape \(C_out, C_in/groups, \*kernel_size\), got shape \(3,\)"):
        circular_singular_values(np.ones(3), (5,))
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        circular_singular_values(w, (5, 5), dilation=0)
    with pytest.raises(TypeError, match="weight must be an array of numbers"):
        circular_singular_values(np.array([[["a"]]]), (5,))
    with pytest.raises(ValueError, match=r"weight must have at least one output channel.*empty weight of shape \(0, 1, 3\)"):
        circular_singular_values(np.ones((0, 1, 3)), (5,))
    with pytest.raises(ValueError, match=r"empty weight of shape \(1, 1, 0\)"):
        circular_singular_values(np.ones((1, 1, 0)), (5,))


@pytest.mark.parametrize(
    "call, parameter",
    [
        (lambda C: operator_norm(C, method="power", maxiter=0), "maxiter"),
        (lambda C: operator_norm(C, rng="x"), "rng"),
        (lambda C: operator_norm(C, tol=-1.0), "tol"),
        (lambda C: circular_singular_values(np.ones((0, 1, 3)), (6,)), "weight"),
        (lambda C: circular_singular_values(np.ones((1, 1, 3)), (7,), stride=2), "stride"),
        (lambda C: circular_singular_values(np.ones((2, 1, 3)), (6,), groups=3), "groups"),
    ],
)
def test_errors_carry_the_parameter(call, parameter):
    with pytest.raises((ValueError, TypeError)) as exc:
        call(conv_matrix(np.ones((1, 1, 3)), (5,)))
    assert exc.value.parameter == parameter and parameter in str(exc.value)

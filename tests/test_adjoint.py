"""adjoint_test on black boxes: function pairs, torch and PyLops operators, resolution, overflow, bad input.

The rates behind these tests (up to 1000 seeds per case, sizes up to 1024 x 1024)
are measured by benchmarks/adjoint_power.py and tabulated in docs/adjoint.rst;
here a few seeds per case check the same claims.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from convmat import conv_matrix
from convmat.adjoint import AdjointTestWarning, adjoint_test


def blur(n, dtype, k=5, seed=0):
    """A k x k convolution with random weights on an n x n image ('same' zero padding)."""
    w = np.random.default_rng(seed).standard_normal((1, 1, k, k))
    return conv_matrix(w, (n, n), padding=k // 2, dtype=dtype)


def black_box(C, scale=1.0, adjoint=None):
    """C as a LinearOperator whose adjoint is ``scale * C^H`` (or ``adjoint``): nothing about it is visible."""
    CH = (C.conj().T if adjoint is None else adjoint).tocsr()
    s = np.asarray(scale, dtype=C.dtype)
    return LinearOperator(C.shape, matvec=lambda v: C @ v, rmatvec=lambda v: s * (CH @ v), dtype=C.dtype)


# --------------------------------------------------------------------------- #
# sensitivity without knowing the sparsity
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e-4), (np.float64, 1e-10), (np.complex64, 1e-4),
                                          (np.complex128, 1e-10)])
def test_black_box_scale_errors_are_detected(dtype, scale):
    """The issue's targets at 64 x 64: a scale error of 1e-4 (single) / 1e-10 (double) fails every seed."""
    C = blur(64, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdjointTestWarning)  # a correct run resolves well below the limits
        good = [adjoint_test(black_box(C), rng=seed) for seed in range(10)]
    bad = [adjoint_test(black_box(C, 1 + scale), rng=seed) for seed in range(10)]
    assert all(r.passed for r in good) and not any(r.passed for r in bad)
    assert max(r.resolution for r in good) < scale / 3
    assert all(r.row_length is None for r in good)  # nothing known about the sparsity
    # the errors are far apart: the correct ones at rounding level, the wrong ones near scale / 3
    assert max(r.max_error for r in good) < 1e-3 * min(r.max_error for r in bad)


def test_correct_tiny_operators_never_fail():
    """Dense and sparse float32 matrices of 1 to 12 rows, where the noise estimate has the fewest samples."""
    rng = np.random.default_rng(0)
    runs = 0
    for m in range(1, 13):
        for n in (1, 2, 5, 12):
            for seed in range(8):
                A = rng.standard_normal((m, n)).astype(np.float32) * 10.0 ** rng.integers(-3, 4)
                for op in (A, black_box(sp.csr_array(A)), sp.random_array((m, n), density=0.5, rng=rng,
                                                                           dtype=np.float32)):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", AdjointTestWarning)  # an all-zero random matrix
                        r = adjoint_test(op, rng=seed)
                    assert r.passed, (m, n, seed, r)
                    runs += 1
    assert runs == 12 * 4 * 8 * 3


def test_missing_conjugate_fails():
    C = blur(32, np.complex64) * (1 + 1j)
    assert adjoint_test(black_box(C)).passed
    r = adjoint_test(black_box(C, adjoint=C.T))  # transpose without conjugate
    assert not r.passed and r.max_error > 1e3 * r.tolerance


def test_the_tolerance_follows_the_measured_noise():
    """A black box that rounds its products to fewer bits gets a proportionally larger tolerance, and says so."""
    C = blur(64, np.float64)

    def coarse(bits):
        def rnd(v):
            m, e = np.frexp(v)
            return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e)

        return LinearOperator(C.shape, matvec=lambda v: rnd(C @ v), rmatvec=lambda v: rnd(C.T @ v), dtype=C.dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdjointTestWarning)
        tol = {bits: adjoint_test(coarse(bits)).tolerance for bits in (30, 20, 10)}
        results = [adjoint_test(coarse(10), rng=seed) for seed in range(20)]
    assert all(r.passed for r in results)
    assert 2.0**8 < tol[20] / tol[30] < 2.0**12 and 2.0**8 < tol[10] / tol[20] < 2.0**12
    with pytest.warns(AdjointTestWarning, match=r"resolution .* is worse than 1e-10 for float64"):
        r = adjoint_test(coarse(10))
    assert r.resolution > 1e-4 and r.noise[0] > 1e-4
    assert f"resolution {r.resolution:.2e}" in r.summary()


def test_an_operator_that_sees_nothing_warns():
    """The zero operator passes trivially; its resolution is infinite and the run says so."""
    with pytest.warns(AdjointTestWarning, match="resolution inf"):
        r = adjoint_test(np.zeros((3, 4)))
    assert r.passed and r.resolution == np.inf


# --------------------------------------------------------------------------- #
# any operator, any library, dtypes honoured
# --------------------------------------------------------------------------- #
def test_numpy_function_pair_keeps_float32():
    seen = []

    def f(x):
        seen.append((x.dtype, x.shape))
        return np.cumsum(x, axis=1)

    def g(y):
        seen.append((y.dtype, y.shape))
        return np.cumsum(y[:, ::-1], axis=1)[:, ::-1]

    r = adjoint_test(f, g, in_shape=(3, 40), out_shape=(3, 40), dtype=np.float32, trials=2)
    assert r.passed and r.dtype == np.float32 and r.library == "scipy"
    assert set(seen) == {(np.dtype(np.float32), (3, 40))}
    wrong = adjoint_test(f, lambda y: np.cumsum(y, axis=1), in_shape=(3, 40), out_shape=(3, 40))
    assert not wrong.passed


def test_torch_function_pair():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    w = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32))
    seen = set()

    def forward(x):
        seen.add((type(x).__name__, x.dtype, str(x.device)))
        return F.conv2d(x, w, stride=2, padding=2)

    def adjoint(y):
        seen.add((type(y).__name__, y.dtype, str(y.device)))
        return F.conv_transpose2d(y, w, stride=2, padding=2, output_padding=1)

    kw = dict(in_shape=(1, 3, 32, 32), out_shape=(1, 4, 16, 16), dtype=torch.float32)
    r = adjoint_test(forward, adjoint, **kw)
    assert r.passed and r.dtype == np.float32 and r.library == "torch, device cpu"
    assert seen == {("Tensor", torch.float32, "cpu")}
    assert r.resolution < 1e-4
    def no_output_padding(y):  # 31 x 31, zero-padded to 32 x 32
        return F.pad(F.conv_transpose2d(y, w, stride=2, padding=2), (0, 1, 0, 1))

    no_op = adjoint_test(forward, no_output_padding, **kw)
    assert not no_op.passed  # the transposed conv without output_padding: the last row and column missing
    flipped = adjoint_test(forward, lambda y: F.conv_transpose2d(y, w.flip(-1, -2), stride=2, padding=2,
                                                                 output_padding=1), **kw)
    assert not flipped.passed


def test_torch_dtype_attribute_is_honoured():
    """An object whose dtype is torch.float32 gets float32 tensors (not float64 NumPy arrays)."""
    torch = pytest.importorskip("torch")
    M = torch.from_numpy(blur(16, np.float32).toarray())

    class Op:
        shape, dtype = tuple(M.shape), torch.float32

        def matvec(self, v):
            assert isinstance(v, torch.Tensor) and v.dtype == torch.float32
            return M @ v

        def rmatvec(self, v):
            assert isinstance(v, torch.Tensor) and v.dtype == torch.float32
            return M.T @ v

    r = adjoint_test(Op())
    assert r.passed and r.dtype == np.float32 and r.library.startswith("torch")


def test_pylops_operators():
    pylops = pytest.importorskip("pylops")
    h = np.random.default_rng(1).standard_normal((5, 5)).astype(np.float32)
    Op = pylops.signalprocessing.Convolve2D((48, 40), h=h, offset=(2, 2), dtype="float32")
    r = adjoint_test(Op)
    assert r.passed and r.dtype == np.float32 and r.resolution < 1e-4
    wrong = pylops.signalprocessing.Convolve2D((48, 40), h=h[::-1, ::-1].copy(), offset=(2, 2), dtype="float32")
    assert not adjoint_test(Op, wrong.H).passed


# --------------------------------------------------------------------------- #
# overflow, underflow, NaN
# --------------------------------------------------------------------------- #
def test_scaled_norms_neither_overflow_nor_underflow():
    C = blur(32, np.float64)
    wrong = blur(32, np.float64, seed=1).T.tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning either
        big_ok, big_wrong = adjoint_test(C * 1e160), adjoint_test(C * 1e160, wrong * 1e160)
        tiny_ok, tiny_wrong = adjoint_test(C * 1e-200), adjoint_test(C * 1e-200, wrong * 1e-200)
    assert big_ok.passed and tiny_ok.passed
    assert not big_wrong.passed and not tiny_wrong.passed
    assert np.isfinite([big_wrong.max_error, tiny_ok.max_error, tiny_ok.resolution]).all()
    assert tiny_ok.resolution < 1e-10 and big_ok.resolution < 1e-10


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_products_fail(bad):
    C = blur(16, np.float32)

    def poisoned(v):
        out = C.T @ v
        out[3] = bad
        return out

    r = adjoint_test(C, poisoned)  # a matrix and a plain function as its adjoint
    assert not r.passed and r.max_error == np.inf and r.resolution == np.inf
    assert "FAILED" in r.summary()
    assert not adjoint_test(C * np.float32(np.inf)).passed


def test_bit_for_bit_reproducible():
    C = black_box(blur(32, np.float32))
    a, b = adjoint_test(C, rng=5), adjoint_test(C, rng=5)
    assert a.tolerance == b.tolerance and a.resolution == b.resolution
    np.testing.assert_array_equal(a.lhs, b.lhs)
    np.testing.assert_array_equal(a.errors, b.errors)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_a_function_of_the_wrong_size():
    def f(x):
        return x[:, :-1]

    with pytest.raises(ValueError, match=r"forward function 'test_a_function_of_the_wrong_size.<locals>.f' must "
                                         r"return shape \(2, 5\) \(10 values\) for an input of shape \(2, 5\), got "
                                         r"shape \(2, 4\)"):
        adjoint_test(f, lambda y: y, in_shape=(2, 5), out_shape=(2, 5))


def test_a_function_that_raises_is_reported_with_context():
    def g(y):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match=r"adjoint function '.*g' raised ZeroDivisionError on an input of "
                                                r"shape \(7,\) and dtype float32 .*: boom") as info:
        adjoint_test(lambda x: x[:7], g, in_shape=(9,), out_shape=(7,), dtype="float32")
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    class Custom(Exception):
        pass

    def h(x):
        raise Custom("mine")

    with pytest.raises(RuntimeError, match=r"forward function '.*h' raised Custom on an input of shape \(3,\)"):
        adjoint_test(h, h, in_shape=3, out_shape=3)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(rtol=0), ValueError, r"rtol must be a positive finite number or None, got 0"),
    (dict(rtol=-1e-3), ValueError, r"rtol must be a positive finite number or None, got -0.001"),
    (dict(rtol=float("nan")), ValueError, r"rtol must be .* got nan"),
    (dict(trials=0), ValueError, r"trials must be >= 1, got 0"),
    (dict(trials=2.0), TypeError, r"trials must be an integer, got 2.0 of type float"),
    (dict(rng="seed"), TypeError, r"rng must be None, an int seed or a numpy.random.Generator, got 'seed'"),
    (dict(in_shape=(4, 0)), ValueError, r"in_shape must be a tuple of positive ints, got \(4, 0\)"),
    (dict(out_shape="x"), ValueError, r"out_shape must be a tuple of positive ints, got 'x'"),
    (dict(dtype="float17"), TypeError, r"dtype of the functions must be a NumPy, CuPy or torch dtype, got 'float17'"),
])
def test_bad_arguments_are_refused_before_anything_is_allocated(kwargs, exc, match):
    calls = []

    def f(x):
        calls.append(x.shape)
        return x

    args = dict(in_shape=(2000, 2000), out_shape=(2000, 2000)) | kwargs
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=match):
            adjoint_test(f, f, **args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert calls == [] and peak < 1 << 20  # a test vector would be 16 MB


def test_a_function_needs_its_adjoint_and_shapes():
    with pytest.raises(TypeError, match=r"a function A needs its adjoint function and both shapes"):
        adjoint_test(np.cumsum)
    with pytest.raises(TypeError, match=r"got AT=None, in_shape=\(3,\), out_shape=None"):
        adjoint_test(np.cumsum, None, in_shape=3)

"""adjoint_test: never fails a correct float32 operator, always fails a wrong adjoint; check_geometry rows."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import aslinearoperator

from convmat import conv_matrix, conv_plan, conv_transpose_matrix
from convmat.checks import AdjointTestResult, adjoint_test, check_geometry
from convmat.operator import ConvOperator

N256 = (256, 256)


@pytest.fixture(scope="module")
def conv256():
    """A float32 3 x 3 convolution on a 256 x 256 image, and its weight."""
    w = np.random.default_rng(0).standard_normal((1, 1, 3, 3)).astype(np.float32)
    return w, ConvOperator(w, N256, padding=1)


def pylops_style_passes(A, rng, rtol=1e-6):
    """PyLops' dottest criterion: relative to the inner products themselves, computed in the operator's dtype."""
    m, n = A.shape
    u = rng.standard_normal(n).astype(A.dtype)
    v = rng.standard_normal(m).astype(A.dtype)
    yy = np.vdot(v, A @ u)
    xx = np.vdot(A.T @ v, u)
    return abs((yy - xx) / ((yy + xx + 1e-15) / 2)) < rtol


# --------------------------------------------------------------------------- #
# correct operators pass
# --------------------------------------------------------------------------- #
def test_float32_never_fails_falsely_on_256x256(conv256):
    """200 seeds x 5 trials: zero false failures; PyLops' relative-only criterion fails most of them."""
    _, A = conv256
    results = [adjoint_test(A, rng=seed) for seed in range(200)]
    worst = max(r.max_error for r in results)
    assert all(r.passed for r in results)
    eps = np.finfo(np.float32).eps
    assert results[0].dtype == np.float32 and 4 * eps < results[0].tolerance < 20 * eps
    assert worst < min(r.tolerance for r in results) / 100  # measured: worst 3.6e-10, tolerance 8.2e-7
    assert max(r.resolution for r in results) < 1e-5  # a scale error of 1e-5 fails every one of them
    rng = np.random.default_rng(0)
    pylops_failures = np.mean([not pylops_style_passes(A, rng) for _ in range(200)])
    assert pylops_failures > 0.3  # measured over 2000 runs: 0.53


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_every_kind_of_operator_passes(dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 2, 3, 3))
    if np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(w.shape)
    A = ConvOperator(w, (9, 8), stride=2, padding=1, padding_mode="reflect", dtype=dtype, bias=np.ones(3))
    C = A.matrix
    kinds = {
        "ConvOperator": (A, None),
        "ConvOperator.T": (A.T, None),
        "csr_array": (C, None),
        "csr_matrix": (sp.csr_matrix(C), None),
        "ndarray": (C.toarray(), None),
        "LinearOperator": (A.as_linear_operator(), None),
        "explicit AT": (C, C.conj().T.tocsr()),
        "AT as LinearOperator": (A, aslinearoperator(C.conj().T)),
    }
    for name, (op, AT) in kinds.items():
        r = adjoint_test(op, AT, rng=3)
        assert r.passed, (name, r)
        assert r.dtype == np.dtype(dtype), name
        assert r.max_error <= r.tolerance


def test_forward_adjoint_objects_with_image_shapes():
    """Anything with forward/adjoint and in_shape/out_shape is tested on images (here: a bias-free wrapper)."""
    rng = np.random.default_rng(2)
    A = ConvOperator(rng.standard_normal((2, 1, 3)), (10,), padding=2, padding_mode="circular")

    class Wrapped:
        in_shape, out_shape, dtype = A.in_shape, A.out_shape, A.dtype

        def forward(self, x):
            assert x.shape == self.in_shape
            return A.apply(x)

        def adjoint(self, y):
            assert y.shape == self.out_shape
            return A.apply_adjoint(y)

    r = adjoint_test(Wrapped())
    assert r.passed and r.shape == A.shape and r.row_length is None  # a black box: nothing known


def test_bias_is_not_part_of_the_test():
    """A ConvOperator with a bias is affine; the test checks its linear part and passes."""
    A = ConvOperator(np.ones((2, 1, 3)), (6,), bias=np.array([100.0, -3.0]))
    assert adjoint_test(A).passed


def test_results_are_deterministic_and_seeded():
    C = conv_matrix(np.random.default_rng(3).standard_normal((2, 2, 3)), (20,), padding=1)
    a, b = adjoint_test(C, rng=7), adjoint_test(C, rng=7)
    np.testing.assert_array_equal(a.lhs, b.lhs)
    np.testing.assert_array_equal(adjoint_test(C).rhs, adjoint_test(C, rng=0).rhs)  # None is seed 0
    c = adjoint_test(C, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.lhs, c.lhs)
    assert not np.array_equal(a.lhs, adjoint_test(C, rng=8).lhs)
    assert a.lhs.shape == a.rhs.shape == a.errors.shape == (5,) and a.trials == 5
    assert adjoint_test(C, trials=2).lhs.shape == (2,)


def test_result_is_frozen_and_prints_both_inner_products():
    C = conv_matrix(np.arange(6.0).reshape(2, 1, 3), (10,), padding=1)
    r = adjoint_test(C, trials=3)
    assert isinstance(r, AdjointTestResult)
    with pytest.raises(AttributeError):
        r.passed = False
    text = repr(r)
    assert "PASSED" in text and "<A x, y>" in text and "<x, A^H y>" in text and "tolerance" in text
    assert f"{float(r.lhs[2]):.16e}" in text and f"{float(r.rhs[2]):.16e}" in text
    assert f"resolution {r.resolution:.2e}" in text and "rounding noise" in text
    assert len(r.summary().splitlines()) == 3 + 3
    from convmat.adjoint import AdjointTestWarning

    with pytest.warns(AdjointTestWarning, match="resolution"):  # rtol=1e-3 on float64 sees little
        assert adjoint_test(C, rtol=1e-3).tolerance == 1e-3


def test_tolerance_formula():
    """tol = c (noise bound / D + eps) + 10 sqrt(max(m, n)) eps64: at least the floor, whatever the sparsity."""
    C = conv_matrix(np.ones((3, 2, 3, 3), np.float32), (10, 12), padding=1)  # rows hold 18, columns 27
    r = adjoint_test(C)
    m, n = C.shape
    eps32, eps64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    floor = 4 * eps32 + 10 * np.sqrt(max(m, n)) * eps64
    assert r.row_length == 27  # informational: the tolerance does not use it
    assert floor < r.tolerance < floor + 4 * 4 * max(r.noise)  # D >= the noise bound's own norms
    dense = adjoint_test(C.toarray())
    assert dense.row_length == max(m, n) and dense.passed
    assert dense.tolerance < 10 * r.tolerance  # a dense matrix of the same values is not penalised


# --------------------------------------------------------------------------- #
# wrong adjoints fail, every time
# --------------------------------------------------------------------------- #
def _flipped(w):
    C_flip = conv_matrix(w[..., ::-1, ::-1].copy(), N256, padding=1)
    return C_flip.T.tocsr()


def _perturbed(C, rng):
    """1% of the entries of C^T off by a tenth of the largest entry."""
    W = C.T.tocsr().copy()
    hit = rng.choice(W.nnz, W.nnz // 100, replace=False)
    W.data[hit] += 0.1 * np.abs(W.data).max() * rng.choice([-1.0, 1.0], hit.size).astype(W.dtype)
    return W


def _missing_output_padding_row(w):
    """The transposed conv of a stride-2 conv with output_padding 0 instead of 1 (255 x 255), zero-padded to 256."""
    T0 = conv_transpose_matrix(w, (128, 128), stride=2, padding=1, output_padding=0)  # 255 x 255 output
    embed = sp.eye(256, 255, dtype=w.dtype, format="csr")  # a zero last row
    return (sp.kron(embed, embed, format="csr") @ T0).tocsr()


def test_wrong_adjoints_fail_every_time(conv256):
    w, A = conv256
    C = A.matrix
    A2 = ConvOperator(w, N256, stride=2, padding=1)
    assert A2.out_shape == (1, 128, 128)
    right = conv_transpose_matrix(w, (128, 128), stride=2, padding=1, output_padding=1)
    assert adjoint_test(A2, right).passed
    wrong = {
        "flipped kernel": (A, _flipped(w)),
        "1% perturbed": (A, _perturbed(C, np.random.default_rng(0))),
        "missing output_padding row": (A2, _missing_output_padding_row(w)),
    }
    ratios = {}
    for name, (op, AT) in wrong.items():
        results = [adjoint_test(op, AT, rng=seed) for seed in range(20)]
        assert not any(r.passed for r in results), name
        ratios[name] = min(r.max_error / r.tolerance for r in results)
    # measured over these 20 seeds: worst ratios flipped 2.6e5, perturbed 43, missing row 2.5e3 (the tolerance
    # bounds a black box's rounding by Cauchy-Schwarz, so it sits ~1000x above a known sparse matrix's errors)
    assert min(ratios.values()) > 10, ratios


def test_wrong_adjoint_as_forward_adjoint_object():
    """A hand-written operator whose adjoint forgets the reflect fold is caught."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((1, 1, 3, 3))
    A = ConvOperator(w, (32, 32), padding=1, padding_mode="reflect")
    zero_pad_transpose = ConvOperator(w, (32, 32), padding=1).T  # PyTorch's conv_transpose

    class Naive:
        in_shape, out_shape = A.in_shape, A.out_shape

        def forward(self, x):
            return A(x)

        def adjoint(self, y):
            return zero_pad_transpose(y)

    assert not adjoint_test(Naive()).passed
    assert adjoint_test(A).passed


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_inputs():
    C = conv_matrix(np.ones((1, 1, 3)), (8,))
    with pytest.raises(ValueError, match=r"AT must have shape \(8, 6\) \(the transpose of A's \(6, 8\)\), got \(6, 8\)"):
        adjoint_test(C, C)
    with pytest.raises(ValueError, match="trials must be >= 1, got 0"):
        adjoint_test(C, trials=0)
    with pytest.raises(ValueError, match="rtol must be a positive finite number or None, got -1"):
        adjoint_test(C, rtol=-1)
    with pytest.raises(TypeError, match="rng must be None, an int seed or a numpy.random.Generator, got 'seed'"):
        adjoint_test(C, rng="seed")
    with pytest.raises(TypeError, match=r"A must be a sparse matrix \(scipy, cupyx or torch\), a 2-D array.*got str"):
        adjoint_test("C")
    with pytest.raises(ValueError, match=r"A must be a 2-D matrix, got shape \(8,\)"):
        adjoint_test(np.ones(8))
    with pytest.raises(TypeError, match="AT must be"):
        adjoint_test(C, [[1.0]])

    class Bad:
        shape, dtype = (6, 8), np.float64

        def matvec(self, x):
            return np.ones(5)

        def rmatvec(self, y):
            return np.ones(8)

    with pytest.raises(ValueError, match=r"A.matvec must return shape \(6,\) \(6 values\) for an input of shape "
                                         r"\(8,\), got shape \(5,\)"):
        adjoint_test(Bad())

    class NoShape:
        def forward(self, x):
            return x

        def adjoint(self, y):
            return y

    with pytest.raises(TypeError, match="neither in_shape/out_shape nor shape"):
        adjoint_test(NoShape())


# --------------------------------------------------------------------------- #
# check_geometry
# --------------------------------------------------------------------------- #
GEOMETRIES = [
    dict(weight_shape=(4, 2, 3, 3), in_shape=(9, 8), stride=2, padding=1, groups=2),
    dict(weight_shape=(2, 2, 3, 3), in_shape=(7, 6), stride=2, padding=((1, 2), (0, 1))),
    dict(weight_shape=(4, 2, 3, 3), in_shape=(9, 8), stride=2, padding=((1, 2), (0, 1)), dilation=2,
         padding_mode="reflect"),
    dict(weight_shape=(4, 2, 3, 3), in_shape=(9, 8), padding="same", padding_mode="circular"),
    dict(weight_shape=(4, 3, 3), in_shape=(9,), stride=3, padding=2, padding_mode="replicate"),
    dict(weight_shape=(4, 2, 3, 3), in_shape=(5, 6), stride=2, padding=1, transposed=True, output_padding=1, groups=2),
    dict(weight_shape=(2, 2, 3, 2, 2), in_shape=(4, 5, 3), stride=(2, 1, 2), padding=1, dilation=(1, 2, 1),
         transposed=True, output_padding=(1, 0, 1)),
]


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: f"{kw['weight_shape']}-{kw.get('padding_mode', 'zeros')}"
                         f"{'-T' if kw.get('transposed') else ''}")
def test_check_geometry_rows_all_pass(kw):
    pytest.importorskip("torch")
    kw = dict(kw)
    rows = check_geometry(kw.pop("weight_shape"), kw.pop("in_shape"), **kw)
    names = [r[0] for r in rows]
    for name, value, tol, passed in rows:
        assert passed, (name, value, tol)
        assert tol is None or (isinstance(tol, float) and value <= tol)
    assert names[:2] == ["nnz", "adjoint test"]
    mode = kw.get("padding_mode", "zeros")
    assert names[2] == ("recipe C^T = K_flip P Z" if mode == "zeros" else f"padding C = K P_{mode}")
    assert rows[2][1] == 0.0  # integer weights: the identity is exact
    if kw.get("transposed"):
        assert {"torch conv_transpose", "torch conv (adjoint)"} <= set(names)
    else:
        assert {"torch forward", "torch adjoint (autograd)"} <= set(names)


def test_check_geometry_without_torch_and_deterministic():
    plan = conv_plan((2, 1, 3, 3), (6, 5), stride=2, padding=1)
    rows = check_geometry(plan, torch_compare=False)
    assert [r[0] for r in rows] == ["nnz", "adjoint test", "recipe C^T = K_flip P Z"]
    assert rows == check_geometry(plan, torch_compare=False)
    # the keyword form makes the same plan
    assert rows == check_geometry((2, 1, 3, 3), (6, 5), stride=2, padding=1, torch_compare=False)
    with pytest.raises(TypeError, match="takes a ConvPlan alone"):
        check_geometry(plan, (6, 5))


def test_check_geometry_reports_a_broken_identity(monkeypatch):
    """If the recipe disagrees with the built matrix, its row fails (and says by how much)."""
    import convmat.checks

    real = convmat.checks.transpose_by_recipe

    def off_by_one(*args, **kwargs):
        T = real(*args, **kwargs).copy()
        T.data[0] += 1.0
        return T

    monkeypatch.setattr(convmat.checks, "transpose_by_recipe", off_by_one)
    rows = check_geometry((2, 1, 3, 3), (6, 5), stride=2, padding=1, torch_compare=False)
    name, value, tol, passed = rows[2]
    assert name == "recipe C^T = K_flip P Z" and value == 1.0 and tol == 0.0 and not passed


def test_check_geometry_bad_input():
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        check_geometry((1, 1, 3), (5,), padding_mode="mirror")
    with pytest.raises(ValueError, match="transposed convolution takes padding_mode='zeros' only"):
        check_geometry((1, 1, 3), (5,), padding=1, padding_mode="reflect", transposed=True)

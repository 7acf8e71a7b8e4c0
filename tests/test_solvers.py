"""ConvOperator as a SciPy LinearOperator: SciPy's solvers on A itself, operator algebra, from_plan/from_matrix.

Oracles: the explicit matrix ``A.matrix`` (SciPy's own product), dense SVDs,
and the known solution of a consistent system.  Every random test is seeded.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, aslinearoperator, cg, lsmr, lsqr, svds

from convmat import ConvOperator, conv_matrix, conv_plan, conv_transpose_plan

SEED = 20261130


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


def tall_operator(rng, mode="reflect"):
    """A 2 -> 4 channel 3x3 layer on 9x8 images: tall, full column rank (checked by the tests that need it)."""
    return ConvOperator(rng.standard_normal((4, 2, 3, 3)), (9, 8), padding=1, padding_mode=mode, bias=np.ones(4))


def test_is_a_linear_operator_and_aslinearoperator_returns_it(rng):
    A = tall_operator(rng)
    assert isinstance(A, LinearOperator) and isinstance(A.H, LinearOperator)
    assert aslinearoperator(A) is A and A.as_linear_operator() is A
    assert A.shape == (4 * 72, 2 * 72) and A.H.shape == A.shape[::-1] and A.dtype == np.float64
    assert A.H is A.adjoint() and A.T is A.transpose() and A.H.H is A and A.T.T is A


def test_products_on_flat_vectors_are_the_matrix_products(rng):
    A = tall_operator(rng)
    C = A.matrix
    x, y = rng.standard_normal(A.shape[1]), rng.standard_normal(A.shape[0])
    X, Y = rng.standard_normal((A.shape[1], 3)), rng.standard_normal((A.shape[0], 3))
    for got, ref in [
        (A.matvec(x), C @ x), (A.rmatvec(y), C.T @ y), (A.matmat(X), C @ X), (A.rmatmat(Y), C.T @ Y),
        (A @ x, C @ x), (A @ X, C @ X), (A.H @ y, C.T @ y), (A.H @ Y, C.T @ Y), (A * x, C @ x),
        (A.matvec(x[:, None]), (C @ x)[:, None]), (A.dot(X), C @ X),
    ]:
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)
    # the bias belongs to the images only: the LinearOperator is the linear part
    np.testing.assert_allclose(A(x.reshape(A.in_shape)).ravel() - 1.0, C @ x, rtol=1e-13, atol=1e-13)


def test_sums_products_and_scalings_with_other_operators(rng):
    A = tall_operator(rng)
    C = A.matrix.toarray()
    D = aslinearoperator(np.diag(rng.standard_normal(A.shape[0])))
    x = rng.standard_normal(A.shape[1])
    for op, ref in [
        (2.5 * A, 2.5 * C), (A * 2.5, 2.5 * C), (A + A, 2 * C), (A - 0.5 * A, 0.5 * C), (-A, -C),
        (A.H @ A, C.T @ C), (D @ A, np.diag(D.matvec(np.ones(A.shape[0]))) @ C), (A / 4.0, C / 4.0),
        (A.H * A, C.T @ C),
    ]:
        assert isinstance(op, LinearOperator) and op.shape == ref.shape
        np.testing.assert_allclose(op @ x, ref @ x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(op.H @ (op @ x), ref.T @ (ref @ x), rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_lsqr_lsmr_and_cg_on_the_normal_equations_recover_x(rng, mode):
    A = tall_operator(rng, mode)
    assert np.linalg.matrix_rank(A.matrix.toarray()) == A.shape[1]  # so x is the unique solution
    x = rng.standard_normal(A.shape[1])
    b = A @ x
    got = lsqr(A, b, atol=1e-14, btol=1e-14, iter_lim=5000)[0]
    np.testing.assert_allclose(got, x, atol=1e-7)
    got = lsmr(A, b, atol=1e-14, btol=1e-14, maxiter=5000)[0]
    np.testing.assert_allclose(got, x, atol=1e-7)
    N = A.H @ A
    got, info = cg(N, A.H @ b, rtol=1e-13, maxiter=5000)
    assert info == 0
    np.testing.assert_allclose(got, x, atol=1e-6)


def test_svds_gives_the_dense_singular_values(rng):
    A = ConvOperator(rng.standard_normal((3, 2, 3, 3)), (7, 6), stride=2, padding=1, padding_mode="replicate")
    dense = np.linalg.svd(A.matrix.toarray(), compute_uv=False)
    top = np.sort(svds(A, k=3, return_singular_vectors=False, rng=np.random.default_rng(0)))[::-1]
    np.testing.assert_allclose(top, dense[:3], rtol=1e-9)
    top_h = np.sort(svds(A.H, k=2, return_singular_vectors=False, rng=np.random.default_rng(1)))[::-1]
    np.testing.assert_allclose(top_h, dense[:2], rtol=1e-9)


def test_float32_operator_in_lsqr_keeps_its_dtype(rng):
    A = ConvOperator(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), (8, 8), padding=1)
    assert A.dtype == np.float32 and (A @ np.ones(64, np.float32)).dtype == np.float32
    x = rng.standard_normal(64).astype(np.float32)
    got = lsqr(A, A @ x, atol=1e-7, btol=1e-7, iter_lim=500)[0]
    assert np.linalg.norm(got - x) / np.linalg.norm(x) < 1e-3


# --------------------------------------------------------------------------- #
# images: one convention, channel-less images of one-channel layers
# --------------------------------------------------------------------------- #
def test_channel_less_images_of_one_channel_layers(rng):
    w = rng.standard_normal((1, 1, 3, 3))
    A = ConvOperator(w, (10, 12), stride=2, padding=1, padding_mode="reflect")
    img = rng.standard_normal((10, 12))
    out = A(img)
    assert out.shape == (5, 6)
    np.testing.assert_array_equal(out, A.apply(img[None])[0])
    np.testing.assert_array_equal(out.ravel(), A @ img.ravel())
    back = A.apply_adjoint(out)
    assert back.shape == (10, 12)
    np.testing.assert_array_equal(back, A.H(out))
    # one input channel, two output channels: (H, W) in, (2, H', W') out
    B = ConvOperator(rng.standard_normal((2, 1, 3, 3)), (10, 12), padding=1)
    assert B(img).shape == (2, 10, 12)


# --------------------------------------------------------------------------- #
# from_plan and from_matrix
# --------------------------------------------------------------------------- #
def test_from_plan_is_the_keyword_constructor(rng):
    w = rng.standard_normal((2, 4, 3, 3))
    plan = conv_transpose_plan(w.shape, (5, 6), stride=2, padding=1, output_padding=1, groups=2)
    A = ConvOperator.from_plan(plan, w, bias=np.arange(8.0))
    B = ConvOperator(w, (5, 6), stride=2, padding=1, output_padding=1, groups=2, transposed=True,
                     bias=np.arange(8.0))
    assert A.plan is plan and A.in_shape == B.in_shape and A.out_shape == B.out_shape
    y = rng.standard_normal((3,) + A.in_shape)
    np.testing.assert_array_equal(A(y), B(y))
    with pytest.raises(TypeError, match="plan must be a ConvPlan"):
        ConvOperator.from_plan((2, 4, 3, 3), w)
    with pytest.raises(ValueError, match=r"weight must have shape \(2, 4, 3, 3\).*got \(2, 4, 3, 2\)"):
        ConvOperator.from_plan(plan, w[..., :2])


@pytest.mark.parametrize("container", [sp.csr_array, sp.csr_matrix])
def test_save_npz_load_npz_round_trip(rng, tmp_path, container):
    w = rng.standard_normal((3, 2, 3, 3))
    kw = dict(stride=2, padding=1, padding_mode="circular")
    C = container(conv_matrix(w, (8, 9), **kw))
    sp.save_npz(tmp_path / "C.npz", C)
    plan = conv_plan(w.shape, (8, 9), **kw)
    A = ConvOperator.from_matrix(sp.load_npz(tmp_path / "C.npz"), plan, bias=np.ones(3))
    B = ConvOperator(w, (8, 9), bias=np.ones(3), **kw)
    x = rng.standard_normal((2,) + A.in_shape)
    y = rng.standard_normal((2,) + A.out_shape)
    np.testing.assert_array_equal(A(x), B(x))
    np.testing.assert_array_equal(A.apply_adjoint(y), B.apply_adjoint(y))
    v = rng.standard_normal(A.shape[1])
    np.testing.assert_allclose(lsqr(A, A @ v, atol=1e-14, btol=1e-14, iter_lim=4000)[0],
                               lsqr(B, B @ v, atol=1e-14, btol=1e-14, iter_lim=4000)[0], atol=1e-10)


def test_from_matrix_refuses_a_matrix_of_another_plan(rng):
    w = rng.standard_normal((2, 1, 3))
    C = conv_matrix(w, (8,), padding=1)
    with pytest.raises(ValueError, match=r"matrix has shape \(16, 8\), but the plan's matrix has shape \(12, 8\)"):
        ConvOperator.from_matrix(C, conv_plan(w.shape, (8,)))
    with pytest.raises(ValueError, match=r"matrix has 44 stored entries, but the plan's pattern has 48"):
        ConvOperator.from_matrix(C, conv_plan(w.shape, (8,), padding=1, padding_mode="circular"))
    with pytest.raises(TypeError, match=r"matrix must be in CSR format, got format 'coo'"):
        ConvOperator.from_matrix(C.tocoo(), conv_plan(w.shape, (8,), padding=1))
    with pytest.raises(TypeError, match=r"matrix must be a sparse CSR matrix.*got ndarray"):
        ConvOperator.from_matrix(C.toarray(), conv_plan(w.shape, (8,), padding=1))


# --------------------------------------------------------------------------- #
# bad operands
# --------------------------------------------------------------------------- #
def test_wrong_vector_lengths_name_both_sizes(rng):
    A = tall_operator(rng)
    n, m = A.shape[1], A.shape[0]
    with pytest.raises(ValueError, match=rf"x has shape \({n + 1},\) \({n + 1} rows\), but this operator takes \({n},\) or \({n}, 1\)"):
        A.matvec(np.ones(n + 1))
    with pytest.raises(ValueError, match=rf"x has shape \({n},\) \({n} rows\), but this operator takes \({m},\) or \({m}, 1\)"):
        A.rmatvec(np.ones(n))
    with pytest.raises(ValueError, match=rf"X has shape \(5, 2\) \(5 rows\), but this operator takes \({n}, k\)"):
        A.matmat(np.ones((5, 2)))
    with pytest.raises(ValueError, match=rf"x has shape \({n}, 2\).*takes \({n},\) or \({n}, 1\)"):
        A.matvec(np.ones((n, 2)))
    with pytest.raises(ValueError, match=rf"x has shape \(3,\) \(3 rows\), but this operator takes \({n},\) or"):
        A @ np.ones(3)
    with pytest.raises(ValueError, match=rf"x has shape \(3, 4\) \(3 rows\), but this operator takes \({n}, k\)"):
        A @ np.ones((3, 4))


def test_a_torch_tensor_on_another_device_names_both_devices(rng):
    torch = pytest.importorskip("torch")
    A = ConvOperator(rng.standard_normal((2, 1, 3)), (6,), backend="torch")
    x = torch.ones(6, dtype=torch.float64, device="meta")
    with pytest.raises(TypeError, match=r"x is a torch.Tensor on device meta, but this operator lives on backend "
                                        r"'torch' \(device cpu\)"):
        A.matvec(x)
    with pytest.raises(TypeError, match=r"on device meta.*\(device cpu\)"):
        A(x.reshape(1, 6))
    B = ConvOperator(rng.standard_normal((2, 1, 3)), (6,))
    with pytest.raises(TypeError, match=r"x is a torch.Tensor on device cpu, but this operator lives on backend "
                                        r"'scipy' \(NumPy\)"):
        B.matvec(torch.ones(6, dtype=torch.float64))


def test_lsqr_gives_the_same_bits_in_repeated_runs(rng):
    """The issue's symptom: four identical lsqr runs on a threaded float32 operator gave four solutions."""
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    A = ConvOperator(w, (32, 32), padding=1)
    b = (A @ rng.standard_normal(A.shape[1]).astype(np.float32)).astype(np.float32)
    runs = {lsqr(A, b, iter_lim=25, atol=0.0, btol=0.0)[0].tobytes() for _ in range(4)}
    assert len(runs) == 1
    images = rng.standard_normal((3,) + A.out_shape).astype(np.float32)
    assert len({A.apply_adjoint(images).tobytes() for _ in range(20)}) == 1


def test_from_matrix_on_the_torch_backend_builds_the_adjoint_from_the_matrix(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((3, 2, 3, 3))
    kw = dict(stride=2, padding=1, padding_mode="reflect")
    plan = conv_plan(w.shape, (7, 8), **kw)
    T = ConvOperator.from_matrix(conv_matrix(w, (7, 8), backend="torch", **kw), plan)  # no weight given
    A = ConvOperator(w, (7, 8), **kw)
    assert T.backend.name == "torch"
    y = rng.standard_normal((2,) + A.out_shape)
    np.testing.assert_allclose(T.apply_adjoint(torch.from_numpy(y)).numpy(), A.apply_adjoint(y), rtol=1e-13, atol=1e-13)
    x = rng.standard_normal((2,) + A.in_shape)
    np.testing.assert_allclose(T(torch.from_numpy(x)).numpy(), A(x), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(T.H.matrix.to_dense().numpy(), A.matrix.T.toarray())

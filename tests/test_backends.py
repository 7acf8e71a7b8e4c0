"""Every backend against 'scipy' on the same geometries, and the rules between backends.

Backends under test: 'scipy'; 'torch' on the CPU (torch is a test dependency;
without it these cases are skipped, with the reason, and the torch-free tests
still run); 'torch' on CUDA and 'cupy', which run where a CUDA device is
present and are skipped, with the reason, everywhere else.  Tests that call
torch directly take the ``torch`` fixture (conftest.py).

``test_builder_runs_without_numpy_on_device_arrays`` runs the builder's array
code on torch tensors that refuse conversion to NumPy, as CuPy arrays do, so
that a NumPy-only call on a device array cannot creep into the shared code.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import convmat
from convmat import (
    ConvOperator,
    MatrixTooLargeError,
    adjoint_test,
    columns_to_images,
    conv_matrix,
    conv_plan,
    conv_transpose_matrix,
    images_to_columns,
    padding_matrix,
    stride_matrix,
    transpose_by_recipe,
    zero_insertion_matrix,
)
from convmat.backends import ScipyBackend, array_library, backend_of, get_backend

def _torch_reason(device):
    """Why the torch backend on ``device`` cannot run here (None when it can); imports torch if present."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install 'convmat[torch]')"
    if device == "cuda" and not torch.cuda.is_available():
        return "this PyTorch finds no CUDA device"
    return None


def _cuda_reason():
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'convmat[gpu]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
    except Exception as exc:  # CUDARuntimeError without a driver
        return f"CuPy finds no CUDA device: {exc}"
    return "CuPy finds no CUDA device"


_CUPY_SKIP = _cuda_reason()
_TORCH_SKIP = _torch_reason("cpu")
_TORCH_CUDA_SKIP = _torch_reason("cuda")

BACKENDS = [
    pytest.param(("torch", "cpu"), id="torch-cpu", marks=pytest.mark.skipif(bool(_TORCH_SKIP), reason=str(_TORCH_SKIP))),
    pytest.param(("torch", "cuda"), id="torch-cuda", marks=pytest.mark.skipif(bool(_TORCH_CUDA_SKIP), reason=str(_TORCH_CUDA_SKIP))),
    pytest.param(("cupy", None), id="cupy", marks=pytest.mark.skipif(bool(_CUPY_SKIP), reason=str(_CUPY_SKIP))),
]


@pytest.fixture(params=BACKENDS)
def be(request):
    name, device = request.param
    return get_backend(name, device)


def host_csr(be, A) -> sp.csr_array:
    """The backend's CSR matrix as a scipy csr_array with the same arrays (copied to the host)."""
    data, indices, indptr = (be.to_host(a) for a in be.csr_arrays(A))
    return sp.csr_array((data, indices, indptr), shape=tuple(A.shape))


def assert_same_csr(be, A, ref):
    """Exactly the same CSR arrays: values, column indices, row pointers, shape and dtypes."""
    got = host_csr(be, A)
    assert got.shape == ref.shape
    assert got.data.dtype == ref.data.dtype
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data)


def on(be, a):
    return be.asarray(np.asarray(a))


# --------------------------------------------------------------------------- #
# the builder: same arrays on every backend
# --------------------------------------------------------------------------- #
FORWARD_CASES = [
    # weight shape, in_shape, kwargs
    ((3, 2, 3, 3), (7, 9), dict(padding=1)),
    ((4, 2, 3, 3), (9, 10), dict(padding=1, stride=2, groups=2, padding_mode="reflect")),
    ((4, 1, 2, 3), (6, 7), dict(padding=((1, 0), (2, 1)), dilation=(2, 1), groups=4, padding_mode="circular")),
    ((2, 3, 3), (11,), dict(padding=2, stride=3, padding_mode="replicate")),
    ((2, 1, 2, 2, 3), (4, 5, 6), dict(padding=1, stride=(1, 2, 2))),
    ((5, 3, 1, 1), (4, 4), dict()),
    ((2, 2, 5, 5), (3, 3), dict(padding=1)),  # kernel larger than the padded input on no axis... valid
]
TRANSPOSE_CASES = [
    ((3, 2, 3, 3), (4, 5), dict(stride=2, padding=1, output_padding=1)),
    ((4, 1, 3, 2), (5, 3), dict(stride=(3, 2), dilation=(1, 2), groups=2)),
    ((2, 2, 4), (6,), dict(stride=3, padding=2, output_padding=2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("case", range(len(FORWARD_CASES)))
def test_conv_matrix_is_the_same_on_every_backend(be, case, dtype):
    shape, n, kw = FORWARD_CASES[case]
    rng = np.random.default_rng(case)
    w = rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(shape)
    ref = conv_matrix(w, n, **kw)
    assert_same_csr(be, conv_matrix(w, n, backend=be.name, device=be.device, **kw), ref)


@pytest.mark.parametrize("case", range(len(TRANSPOSE_CASES)))
def test_conv_transpose_matrix_is_the_same_on_every_backend(be, case):
    shape, n, kw = TRANSPOSE_CASES[case]
    w = np.random.default_rng(10 + case).standard_normal(shape).astype(np.float32)
    ref = conv_transpose_matrix(w, n, **kw)
    assert_same_csr(be, conv_transpose_matrix(w, n, backend=be.name, device=be.device, **kw), ref)


def test_row_blocks_flip_and_weights_of_the_backend(be):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3))
    plan = conv_plan(w, (10, 9), padding=1, stride=(2, 1), padding_mode="reflect")
    for start, stop in plan.row_blocks(max_nnz=700):
        block = plan.build(on(be, w), rows=(start, stop), flip=True, backend=be)
        assert_same_csr(be, block, plan.build(w, rows=(start, stop), flip=True))
    # the transposed plan (C^T for every padding mode) on the backend
    assert_same_csr(be, plan.transpose().build(w, backend=be), plan.transpose().build(w))


def test_factor_matrices_are_the_same_on_every_backend(be):
    kw = dict(backend=be.name, device=be.device)
    assert_same_csr(be, stride_matrix((7, 6), (2, 3), channels=3, **kw), stride_matrix((7, 6), (2, 3), channels=3))
    assert_same_csr(
        be,
        zero_insertion_matrix((3, 4), 2, out_shape=(6, 8), channels=2, dtype=np.float32, **kw),
        zero_insertion_matrix((3, 4), 2, out_shape=(6, 8), channels=2, dtype=np.float32),
    )
    for mode in ("zeros", "reflect", "replicate", "circular"):
        pad = ((2, 1), (0, 3)) if mode != "zeros" else ((-1, 2), (1, -2))
        assert_same_csr(be, padding_matrix((5, 6), pad, mode=mode, channels=2, **kw), padding_matrix((5, 6), pad, mode=mode, channels=2))


def test_transpose_recipe_with_the_backends_sparse_products(be):
    """K_flip @ P @ Z multiplied by the backend's library equals the directly built matrix."""
    w = np.random.default_rng(4).integers(-3, 4, size=(2, 3, 3, 3)).astype(np.float64)
    kw = dict(stride=2, padding=1, output_padding=1, groups=1)
    T = transpose_by_recipe(w, (4, 3), backend=be.name, device=be.device, **kw)
    ref = conv_transpose_matrix(w, (4, 3), **kw)
    got = host_csr(be, T if be.name != "torch" else T.to_sparse_csr())
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got.toarray(), ref.toarray())  # integer weights: exact


# --------------------------------------------------------------------------- #
# the operator
# --------------------------------------------------------------------------- #
OPERATOR_CASES = [
    dict(weight=(4, 2, 3, 3), in_shape=(7, 8), padding=1, stride=2, padding_mode="reflect", bias=True),
    dict(weight=(3, 3, 5), in_shape=(12,), padding=2, dilation=2, padding_mode="circular"),
    dict(weight=(2, 3, 3, 3), in_shape=(4, 5), stride=2, padding=1, output_padding=1, transposed=True, bias=True),
    dict(weight=(4, 1, 3, 3), in_shape=(6, 6), padding=1, groups=2, dtype=np.complex128),
]


def _operator(case, backend="scipy", device=None):
    kw = dict(OPERATOR_CASES[case])
    rng = np.random.default_rng(100 + case)
    w = rng.standard_normal(kw.pop("weight"))
    dtype = kw.get("dtype")
    if dtype is not None and np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(w.shape)
    in_shape = kw.pop("in_shape")
    if kw.pop("bias", False):
        c_out = w.shape[1] * kw.get("groups", 1) if kw.get("transposed") else w.shape[0]
        kw["bias"] = rng.standard_normal(c_out)
    return ConvOperator(w, in_shape, backend=backend, device=device, **kw)


@pytest.mark.parametrize("case", range(len(OPERATOR_CASES)))
def test_operator_matches_scipy_and_stays_on_the_device(be, case):
    A = _operator(case)
    B = _operator(case, be.name, be.device)
    assert B.backend == be and B.shape == A.shape and B.dtype == A.dtype
    rng = np.random.default_rng(case)
    x = rng.standard_normal((3, *A.in_shape)).astype(A.dtype)
    y = rng.standard_normal((3, *A.out_shape)).astype(A.dtype)
    tol = dict(rtol=1e-12, atol=1e-12)
    for got, ref in [
        (B(on(be, x)), A(x)),
        (B(on(be, x[0])), A(x[0])),
        (B.apply_adjoint(on(be, y)), A.apply_adjoint(y)),
        (B.H(on(be, y)), A.H(y)),
        (B.H.apply_adjoint(on(be, x)), A.H.apply_adjoint(x)),
        (B @ on(be, x.reshape(3, -1).T), A @ x.reshape(3, -1).T),
        (B.H @ on(be, y[0].ravel()), A.H @ y[0].ravel()),
    ]:
        assert array_library(got) == be.library and be.owns(got), type(got)
        np.testing.assert_allclose(be.to_host(got), ref, **tol)
    # the matrices themselves: C, and C^H of the adjoint view
    np.testing.assert_allclose(_dense(be, B.matrix), A.matrix.toarray(), **tol)
    np.testing.assert_allclose(_dense(be, B.H.matrix), A.H.matrix.toarray(), **tol)


def _dense(be, M):
    if be.name == "torch":
        return M.to_dense().cpu().numpy()
    return be.to_host(M.toarray())


@pytest.mark.parametrize("case", range(len(OPERATOR_CASES)))
def test_adjoint_test_on_the_device_gives_scipys_verdict(be, case):
    A = _operator(case)
    B = _operator(case, be.name, be.device)
    ra, rb = adjoint_test(A, rng=case), adjoint_test(B, rng=case)
    assert rb.passed and ra.passed
    assert rb.tolerance == pytest.approx(ra.tolerance, rel=0.05)  # measured rounding noise: same size, not bits
    # same seed, same vectors: the inner products agree to rounding
    np.testing.assert_allclose(rb.lhs, ra.lhs, rtol=1e-10)
    np.testing.assert_allclose(rb.rhs, ra.rhs, rtol=1e-10)


def test_adjoint_test_catches_a_wrong_adjoint_on_the_device(be):
    w = np.random.default_rng(5).standard_normal((1, 1, 3, 3))
    C = conv_matrix(w, (16, 16), padding=1, backend=be.name, device=be.device)
    wrong = conv_matrix(w, (16, 16), padding=1, flip=True, backend=be.name, device=be.device)
    wrongT = be.transpose(wrong) if be.name != "torch" else wrong.t().to_sparse_csr()
    right = adjoint_test(C)
    bad = adjoint_test(C, wrongT)
    assert right.passed and right.row_length == 9
    assert not bad.passed and bad.max_error > 100 * bad.tolerance


def test_adjoint_test_of_a_black_box_on_the_backend(be):
    """backend= hands the backend's vectors to a user's own operator."""
    B = _operator(1, be.name, be.device)

    class Mine:  # forward/adjoint of the user's own, written against the backend's arrays
        in_shape, out_shape, dtype = B.in_shape, B.out_shape, np.float64

        def forward(self, x):
            assert be.owns(x)
            return B(x)

        def adjoint(self, y):
            assert be.owns(y)
            return B.apply_adjoint(y)

    assert adjoint_test(Mine(), backend=be).passed
    with pytest.raises(TypeError, match="A and AT must take vectors of the same library and device"):
        adjoint_test(B, _operator(1).T)


def test_images_to_columns_keeps_the_library(be):
    x = on(be, np.arange(24.0).reshape(2, 3, 2, 2))
    X = images_to_columns(x)
    assert be.owns(X) and tuple(X.shape) == (12, 2)
    back = columns_to_images(X, (3, 2, 2))
    assert be.owns(back)
    np.testing.assert_array_equal(be.to_host(back), np.arange(24.0).reshape(2, 3, 2, 2))


def test_to_moves_the_operator_and_back(be):
    A = _operator(0)
    B = A.to(be.name, be.device)
    assert B.backend == be and B is not A
    assert B.to(be.name, be.device) is B and A.to("scipy") is A
    assert_same_csr(be, B.matrix, A.matrix)
    back = B.to("scipy")
    assert (back.matrix != A.matrix).nnz == 0 and back.backend.name == "scipy"
    np.testing.assert_array_equal(back.bias, A.bias)
    # the adjoint view moves as an adjoint view
    BT = A.T.to(be.name, be.device)
    assert BT.is_adjoint and BT.T.backend == be
    y = np.random.default_rng(0).standard_normal(A.out_shape)
    np.testing.assert_allclose(be.to_host(BT(on(be, y))), A.T(y), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# mixing libraries is a TypeError that says what to do
# --------------------------------------------------------------------------- #
def test_operands_of_another_library_are_refused(be):
    B = _operator(0, be.name, be.device)
    x = np.zeros(B.in_shape)
    with pytest.raises(TypeError, match=rf"x is a numpy.ndarray, but this operator lives on backend '{be.name}'"):
        B(x)
    with pytest.raises(TypeError, match=r"y is a numpy.ndarray"):
        B.apply_adjoint(np.zeros(B.out_shape))
    with pytest.raises(TypeError, match=r"x is a numpy.ndarray"):
        B @ np.zeros(B.shape[1])
    A = _operator(0)
    with pytest.raises(TypeError, match=r"but this operator lives on backend 'scipy' \(NumPy\); pass x"):
        A(on(be, x))


def test_torch_only_api_limits_are_errors(torch):
    B = _operator(0, "torch")
    with pytest.raises(TypeError, match=r"backend 'torch' has no LinearOperator; move the operator with .to\('scipy'\)"):
        B.as_linear_operator()
    with pytest.raises(TypeError, match=r"to_pylops takes backends 'scipy' and 'cupy'"):
        B.to_pylops()


class _FakeCupyArray:
    """Looks like a CuPy array to convmat (the module name is all it reads); imports nothing."""

    __module__ = "cupy._core.core"
    shape = (1, 1, 3)
    dtype = np.dtype(np.float64)
    ndim = 3


def test_device_arrays_for_the_host_backend_are_refused_without_importing_their_library():
    fake = _FakeCupyArray()
    assert array_library(fake) == "cupy"
    with pytest.raises(TypeError, match=r"weight is a CuPy array \(on a CUDA device\), but the matrix is built for "
                                        r"backend 'scipy'; pass backend='cupy', or weight.get\(\)"):
        conv_matrix(fake, (5,))
    with pytest.raises(TypeError, match=r"weight is a CuPy array"):
        ConvOperator(fake, (5,))
    with pytest.raises(TypeError, match=r"x is a cupy._core.core._FakeCupyArray on a CUDA device, but this operator "
                                        r"lives on backend 'scipy'"):
        ConvOperator(np.ones((1, 1, 3)), (5,))(fake)
    assert "cupy" not in sys.modules or _CUPY_SKIP is None


def test_torch_weights_choose_the_device_and_requires_grad_keeps_the_graph(torch):
    w = torch.ones(2, 1, 3, requires_grad=True)
    M = conv_matrix(w.detach(), (5,), backend="torch")
    assert M.layout == torch.sparse_csr and M.device == w.device and M.dtype == torch.float32
    with pytest.raises(TypeError, match="weight requires grad, and a sparse matrix cannot carry"):
        conv_matrix(w, (5,), backend="torch")  # never a silent detach
    B = ConvOperator(w, (5,), backend="torch")
    x = torch.ones(1, 5, requires_grad=True)
    assert B(x).shape == (2, 3) and B(x).requires_grad


def test_backend_errors():
    with pytest.raises(ValueError, match=r"backend must be one of \('scipy', 'cupy', 'torch'\), got 'jax'"):
        conv_matrix(np.ones((1, 1, 3)), (5,), backend="jax")
    with pytest.raises(TypeError, match=r"backend must be a string"):
        conv_matrix(np.ones((1, 1, 3)), (5,), backend=3)
    with pytest.raises(ValueError, match=r"device must be None or 'cpu' for backend 'scipy', got 'cuda'"):
        conv_matrix(np.ones((1, 1, 3)), (5,), device="cuda")
    if _CUPY_SKIP is not None:
        with pytest.raises((ImportError, RuntimeError), match=r"backend 'cupy' needs"):
            conv_matrix(np.ones((1, 1, 3)), (5,), backend="cupy")


def test_backend_of_and_equality():
    assert backend_of(np.ones(3)) == get_backend("scipy") == get_backend("scipy", "cpu")
    assert backend_of(sp.eye_array(3, format="csr")).name == "scipy"
    assert backend_of("text") is None


def test_backend_of_and_equality_for_torch(torch):
    assert backend_of(torch.ones(3)) == get_backend("torch", "cpu")
    assert get_backend(get_backend("torch")) is get_backend("torch")
    assert repr(get_backend("torch")) == "<convmat backend 'torch', device=cpu>"
    with pytest.raises(ValueError, match=r"device must be a torch device \(such as 'cpu' or 'cuda:0'\), got 'gpu7'"):
        conv_matrix(np.ones((1, 1, 3)), (5,), backend="torch", device="gpu7")


# --------------------------------------------------------------------------- #
# int32-only libraries (cupyx): refuse past 2**31 - 1, or build in row blocks
# --------------------------------------------------------------------------- #
class _Int32Only(ScipyBackend):
    """The scipy backend restricted to int32 indices, as cupyx is."""

    name = "int32-only"
    index_dtypes = (np.dtype(np.int32),)


def test_int32_only_libraries_refuse_big_matrices_with_the_size_and_the_way_out():
    be = _Int32Only()
    plan = conv_plan((64, 64, 3, 3), (1024, 1024), padding=1)
    assert plan.nnz > 2**31 and plan.index_dtype == np.int64
    w = np.zeros(plan.weight_shape, np.float32)
    with pytest.raises(MatrixTooLargeError, match=rf"backend 'int32-only' takes int32 indices only, and the matrix of "
                                                  rf"shape \(67108864, 67108864\) has {plan.nnz:,} non-zeros, more than "
                                                  rf"2,147,483,647; build it in row blocks.*plan.row_blocks\(max_nnz=2147483647\)"):
        plan.build(w, backend=be, max_bytes=0)  # refused before the memory check: nothing allocated
    blocks = list(plan.row_blocks(max_nnz=2**31 - 1))
    assert blocks[0][0] == 0 and blocks[-1][1] == plan.shape[0]
    assert all(a < b == c for (a, b), (c, _) in zip(blocks, blocks[1:]))
    assert all(plan.row_nnz(a, b) <= 2**31 - 1 for a, b in blocks) and len(blocks) == -(-plan.nnz // (2**31 - 1))
    # a block that fits gets int32 indices, on the narrow backend, and equals the scipy block
    small = conv_plan((4, 2, 3, 3), (9, 9), padding=1)
    wb = np.random.default_rng(0).standard_normal(small.weight_shape)
    got = small.build(wb, rows=(10, 200), backend=be)
    assert got.indices.dtype == np.int32
    ref = small.build(wb, rows=(10, 200))
    assert (got != ref).nnz == 0


def test_row_blocks_errors():
    plan = conv_plan((2, 2, 3, 3), (5, 5), padding=1)
    with pytest.raises(ValueError, match=r"row 0 alone has 8 non-zeros, more than max_nnz=5"):
        list(plan.row_blocks(max_nnz=5))
    with pytest.raises(ValueError, match=r"max_nnz and max_rows must be >= 1"):
        list(plan.row_blocks(max_nnz=0))
    assert list(plan.row_blocks(max_rows=20)) == [(0, 20), (20, 40), (40, 50)]


# --------------------------------------------------------------------------- #
# the shared array code holds no NumPy-only call
# --------------------------------------------------------------------------- #
def test_builder_runs_without_numpy_on_device_arrays(torch, monkeypatch):
    """Torch tensors that refuse ``__array__`` (as CuPy arrays do) through the whole device path."""

    def refuse(self, *args, **kwargs):
        raise TypeError("implicit conversion of a device array to NumPy")

    results = {}
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "__array__", refuse)
        with pytest.raises(TypeError, match="implicit conversion"):
            np.asarray(torch.ones(2))  # the guard is on
        be = get_backend("torch")
        rng = np.random.default_rng(8)
        for i, (shape, n, kw) in enumerate(FORWARD_CASES):
            w = rng.standard_normal(shape)
            results[("fwd", i)] = (conv_matrix(w, n, backend="torch", **kw), conv_matrix(w, n, **kw))
        for i, (shape, n, kw) in enumerate(TRANSPOSE_CASES):
            w = rng.standard_normal(shape).astype(np.float32)
            results[("tr", i)] = (
                conv_transpose_matrix(w, n, backend="torch", rows=slice(3, -2), **kw),
                conv_transpose_matrix(w, n, rows=slice(3, -2), **kw),
            )
        results["pad"] = (
            padding_matrix((5, 6), 2, mode="reflect", channels=2, backend="torch"),
            padding_matrix((5, 6), 2, mode="reflect", channels=2),
        )
        for case in range(len(OPERATOR_CASES)):
            B = _operator(case, "torch")
            x = torch.from_numpy(rng.standard_normal((2, *B.in_shape)).astype(B.dtype))
            y = torch.from_numpy(rng.standard_normal((2, *B.out_shape)).astype(B.dtype))
            results[("op", case)] = (B(x), B.apply_adjoint(y), B.H.matrix, adjoint_test(B).passed, x, y)
    for key, (got, ref) in ((k, v) for k, v in results.items() if k[0] != "op"):
        assert_same_csr(be, got, ref)
    for case in range(len(OPERATOR_CASES)):
        fx, ay, _, passed, x, y = results[("op", case)]
        A = _operator(case)
        assert passed
        np.testing.assert_allclose(fx.numpy(), A(x.numpy()), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ay.numpy(), A.apply_adjoint(y.numpy()), rtol=1e-12, atol=1e-12)


def test_nothing_imports_a_library_nobody_asked_for():
    code = (
        "import sys, numpy as np, convmat\n"
        "A = convmat.ConvOperator(np.ones((2, 1, 3, 3)), (8, 8), padding=1)\n"
        "A(np.ones((1, 8, 8))); A.apply_adjoint(np.ones((2, 8, 8))); convmat.adjoint_test(A)\n"
        "convmat.transpose_by_recipe(np.ones((1, 1, 3)), (4,), stride=2)\n"
        "convmat.backends.backend_of(np.ones(2)); convmat.backends.array_library(object())\n"
        "bad = [m for m in ('torch', 'cupy', 'cupyx', 'matplotlib', 'PIL') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names():
    assert convmat.ConvPlan.row_blocks and convmat.ConvPlan.transpose
    assert ConvOperator.to and ConvOperator.backend

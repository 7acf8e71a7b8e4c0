"""PyTorch autograd through ConvOperator on the 'torch' backend.

Oracles: ``torch.autograd.gradcheck`` (finite differences, float64) and the
gradients of ``torch.nn.functional.convNd`` / ``conv_transposeNd`` (with
``F.pad`` for the padding modes).  Each test skips alone when torch is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from convmat import ConvOperator, conv_matrix

MODES = ("zeros", "reflect", "replicate", "circular")


def _torch():
    return pytest.importorskip("torch")


def _tensor(torch, rng, shape, grad=True):
    return torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=grad)


CASES = [
    # transposed, weight shape, spatial, stride, padding, dilation, groups, mode
    (False, (4, 2, 3, 3), (5, 4), 1, 1, 1, 1, "zeros"),
    (False, (4, 1, 3, 2), (5, 4), (2, 1), ((1, 2), (0, 1)), (1, 2), 2, "reflect"),
    (False, (3, 2, 3), (7,), 2, 2, 2, 1, "replicate"),
    (False, (2, 2, 2, 2, 3), (3, 3, 4), 1, 1, 1, 1, "circular"),
    (True, (4, 1, 3, 3), (3, 4), 2, 1, 1, 2, "zeros"),
    (True, (2, 3, 3), (4,), 3, 1, 2, 1, "zeros"),
]


def _build(case, w, backend="torch"):
    transposed, _ws, spatial, stride, padding, dilation, groups, mode = case
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, backend=backend)
    if transposed:
        out_pad = 1 if (isinstance(stride, int) and stride > 1) else 0
        return ConvOperator(w, spatial, transposed=True, output_padding=out_pad, **kw)
    return ConvOperator(w, spatial, padding_mode=mode, **kw)


@pytest.mark.parametrize("adjoint", [False, True], ids=["C", "C^H"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'T' if c[0] else 'F'}-w{c[1]}-{c[7]}")
def test_gradcheck_input_and_weight(case, adjoint):
    torch = _torch()
    rng = np.random.default_rng(17 + 2 * len(case[2]) + int(adjoint))
    w = _tensor(torch, rng, case[1])
    op = _build(case, w)
    side = op.H if adjoint else op
    x = _tensor(torch, rng, (2,) + side.in_shape)

    def f(x, w):
        A = _build(case, w)
        return (A.H if adjoint else A).apply(x)

    # fast mode: the Jacobian along random directions (each call of f builds an operator)
    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)


def test_gradcheck_full_jacobian_on_a_small_layer():
    torch = _torch()
    rng = np.random.default_rng(2)
    w = _tensor(torch, rng, (2, 2, 2, 2))
    x = _tensor(torch, rng, (1, 2, 4, 3))

    def f(x, w):
        return ConvOperator(w, (4, 3), stride=(2, 1), padding=1, padding_mode="reflect", backend="torch")(x)

    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_torch_conv_with_bias(mode):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    w, b = _tensor(torch, rng, (4, 1, 3, 3)), _tensor(torch, rng, (4,))
    x = _tensor(torch, rng, (3, 2, 8, 9))
    A = ConvOperator(w, (8, 9), stride=2, padding=1, dilation=1, groups=2, padding_mode=mode, bias=b, backend="torch")
    y = A(x)
    assert y.requires_grad
    v = torch.tensor(rng.standard_normal(tuple(y.shape)))
    gx, gw, gb = torch.autograd.grad((y * v).sum(), (x, w, b))
    xp = x if mode == "zeros" else F.pad(x, [1, 1, 1, 1], mode=mode)
    ref = F.conv2d(xp, w, b, stride=2, padding=1 if mode == "zeros" else 0, groups=2)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    rx, rw, rb = torch.autograd.grad((ref * v).sum(), (x, w, b))
    for got, want in [(gx, rx), (gw, rw), (gb, rb)]:
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


def test_transposed_gradients_match_torch_conv_transpose():
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    w = _tensor(torch, rng, (4, 3, 3, 3))
    y = _tensor(torch, rng, (2, 4, 5, 5))
    A = ConvOperator(w, (5, 5), stride=2, padding=1, output_padding=1, dilation=2, transposed=True, backend="torch")
    z = A(y)
    ref = F.conv_transpose2d(y, w, stride=2, padding=1, output_padding=1, dilation=2)
    torch.testing.assert_close(z, ref, rtol=1e-12, atol=1e-12)
    v = torch.tensor(rng.standard_normal(tuple(z.shape)))
    got = torch.autograd.grad((z * v).sum(), (y, w))
    want = torch.autograd.grad((ref * v).sum(), (y, w))
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11)


def test_flat_products_and_float32_follow_autograd():
    torch = _torch()
    rng = np.random.default_rng(5)
    w = torch.tensor(rng.standard_normal((2, 1, 3)), dtype=torch.float32, requires_grad=True)
    A = ConvOperator(w, (7,), padding=1, backend="torch")
    x = torch.tensor(rng.standard_normal(7), dtype=torch.float32, requires_grad=True)
    y = A @ x
    assert y.requires_grad and y.dtype == torch.float32
    (A.H @ y).sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    C = torch.tensor(A.matrix.to_dense().numpy(), dtype=torch.float64)
    ref_x = (C.T @ C).sum(0)  # d/dx sum(C^T C x) = (C^T C)^T 1
    torch.testing.assert_close(x.grad.double(), ref_x, rtol=1e-5, atol=1e-5)


def test_constant_operator_and_no_grad_give_plain_tensors():
    torch = _torch()
    rng = np.random.default_rng(6)
    A = ConvOperator(rng.standard_normal((2, 1, 3)), (7,), backend="torch")
    x = torch.ones(1, 7, dtype=torch.float64)
    assert not A(x).requires_grad
    xg = x.clone().requires_grad_(True)
    A(xg).sum().backward()  # the input alone may require grad
    torch.testing.assert_close(xg.grad, A.apply_adjoint(torch.ones(2, 5, dtype=torch.float64)))
    w = _tensor(torch, rng, (2, 1, 3))
    B = ConvOperator(w, (7,), backend="torch")
    with torch.no_grad():
        assert not B(x).requires_grad


def test_graph_kept_never_silently_detached():
    torch = _torch()
    rng = np.random.default_rng(7)
    w = _tensor(torch, rng, (2, 1, 3))
    with pytest.raises(TypeError, match=r"weight requires grad, and backend 'scipy' cannot carry PyTorch's autograd"):
        ConvOperator(w, (7,))
    with pytest.raises(TypeError, match=r"weight requires grad, and a sparse matrix cannot carry PyTorch's autograd"):
        conv_matrix(w, (7,), backend="torch")
    A = ConvOperator(w, (7,), backend="torch")
    assert "weight requires grad" in repr(A)
    with torch.no_grad():
        w.mul_(2.0)  # an optimizer step: the matrix holds the old values
    with pytest.raises(RuntimeError, match=r"modified in place after the operator was built.*build a new ConvOperator"):
        A(torch.ones(1, 7, dtype=torch.float64))
    wc = torch.tensor(rng.standard_normal((2, 1, 3)) + 1j, dtype=torch.complex128, requires_grad=True)
    with pytest.raises(TypeError, match=r"gradients with respect to a complex weight are not supported"):
        ConvOperator(wc, (7,), backend="torch")


def test_moving_keeps_the_graph_on_torch_and_drops_it_on_scipy():
    torch = _torch()
    rng = np.random.default_rng(8)
    w = _tensor(torch, rng, (2, 1, 3))
    A = ConvOperator(w, (7,), backend="torch")
    host = A.to("scipy")
    out = host(np.ones((1, 7)))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, A(torch.ones(1, 7, dtype=torch.float64)).detach().numpy(), rtol=1e-15)


def test_module_trains_like_torch_conv2d():
    """Three SGD steps of ConvMatLayer and of nn.Conv2d from the same start give the same parameters."""
    torch = _torch()
    from convmat import conv_plan
    from convmat.torch_autograd import ConvMatLayer

    gen = torch.Generator().manual_seed(9)
    ref = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect", dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(ref.weight.shape, generator=gen, dtype=torch.float64))
        ref.bias.copy_(torch.randn(3, generator=gen, dtype=torch.float64))
    layer = ConvMatLayer(conv_plan((3, 2, 3, 3), (8, 7), stride=2, padding=1, padding_mode="reflect"),
                         ref.weight, ref.bias)
    x = torch.randn(4, 2, 8, 7, generator=gen, dtype=torch.float64)
    target = torch.randn(4, 3, 4, 4, generator=gen, dtype=torch.float64)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (ref, layer)]
    w0 = layer.weight.detach().clone()
    for _ in range(3):
        for m, opt in zip((ref, layer), opts):
            opt.zero_grad()
            ((m(x) - target) ** 2).mean().backward()
            opt.step()
    torch.testing.assert_close(layer.weight, ref.weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias, ref.bias, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(layer.weight, w0, atol=1e-3)  # it trained: the operator followed every step

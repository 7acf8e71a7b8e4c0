"""ConvOperator.to_pylops: image-shaped PyLops operators, dottest, composition, regularised inversion.

Oracles: PyLops' own ``Convolve2D`` (a true convolution with an ``offset``),
``pylops.utils.dottest`` and the explicit matrix.  The deblurring test inverts
a blurred, noisy copy of scikit-image's ``camera()`` (downsampled so the suite
stays fast) with ``regularized_inversion`` and a Laplacian, once with convmat's
operator and once with ``Convolve2D``, and compares the PSNRs.  Each test skips
alone when PyLops (or scikit-image) is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from convmat import ConvOperator


def _pylops():
    return pytest.importorskip("pylops")


def pylops_as_convmat(h, dims, offset):
    """The ConvOperator equal to ``pylops.signalprocessing.Convolve2D(dims, h, offset)``.

    Convolve2D convolves (flipped kernel) with the kernel's sample ``offset`` at the
    output sample: as a cross-correlation, the flipped kernel with padding
    ``(k - 1 - offset, offset)`` on each axis.
    """
    pads = tuple((k - 1 - o, o) for k, o in zip(h.shape, offset))
    return ConvOperator(np.flip(h)[None, None], dims, padding=pads)


def test_image_shaped_dims_and_convmat_products():
    pylops = _pylops()
    rng = np.random.default_rng(1)
    A = ConvOperator(rng.standard_normal((3, 2, 3, 3)), (7, 6), stride=2, padding=1, padding_mode="reflect")
    P = A.to_pylops()
    assert isinstance(P, pylops.LinearOperator)
    assert P.dims == (2, 7, 6) and P.dimsd == (3, 4, 3) and P.shape == A.shape
    x = rng.standard_normal((2, 7, 6))
    y = rng.standard_normal((3, 4, 3))
    np.testing.assert_allclose(P @ x, A(x), rtol=1e-13, atol=1e-13)  # image in, image out
    np.testing.assert_allclose(P.H @ y, A.apply_adjoint(y), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(P.matvec(x.ravel()), A.matrix @ x.ravel(), rtol=1e-13, atol=1e-13)
    assert pylops.utils.dottest(P, *P.shape, rtol=1e-10, atol=1e-10)
    assert pylops.utils.dottest(A.H.to_pylops(), *A.H.shape, rtol=1e-10, atol=1e-10)
    # one channel: PyLops' (H, W) images
    S = ConvOperator(rng.standard_normal((1, 1, 3, 3)), (7, 6), padding=1).to_pylops()
    assert S.dims == (7, 6) and S.dimsd == (7, 6) and (S @ np.ones((7, 6))).shape == (7, 6)


@pytest.mark.parametrize("offset", [(0, 0), (2, 1), (4, 2), (1, 2)])
def test_equals_pylops_convolve2d(offset):
    pylops = _pylops()
    rng = np.random.default_rng(2)
    h = rng.standard_normal((5, 3))
    A = pylops_as_convmat(h, (12, 10), offset).to_pylops()
    B = pylops.signalprocessing.Convolve2D((12, 10), h, offset=offset, method="direct")
    x = rng.standard_normal((12, 10))
    np.testing.assert_allclose(A @ x, B @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A.H @ x, B.H @ x, rtol=1e-12, atol=1e-12)


def test_composes_with_laplacian_and_stacks():
    pylops = _pylops()
    rng = np.random.default_rng(3)
    A = ConvOperator(rng.standard_normal((1, 1, 3, 3)), (9, 8), padding=1, padding_mode="replicate")
    P = A.to_pylops()
    L = pylops.Laplacian(dims=(9, 8), dtype=np.float64)
    x = rng.standard_normal((9, 8))
    np.testing.assert_allclose((L @ P) @ x, L @ (P @ x), rtol=1e-12, atol=1e-12)
    N = P.H @ P + 0.5 * L.H @ L
    np.testing.assert_allclose(N @ x.ravel(), A.H @ (A @ x.ravel()) + 0.5 * (L.H @ (L @ x.ravel())),
                               rtol=1e-12, atol=1e-12)
    V = pylops.VStack([P, L])
    assert V.shape == (2 * 72, 72) and pylops.utils.dottest(V, *V.shape, rtol=1e-10, atol=1e-10)


def _psnr(x, ref):
    return 10 * np.log10(float(ref.max() - ref.min()) ** 2 / np.mean((x - ref) ** 2))


def test_regularized_inversion_deblurs_camera_like_convolve2d():
    pylops = _pylops()
    data = pytest.importorskip("skimage.data")
    from pylops.optimization.leastsquares import regularized_inversion

    img = data.camera().astype(np.float64) / 255.0
    x = img.reshape(64, 8, 64, 8).mean(axis=(1, 3))  # 512 x 512 -> 64 x 64 (block means)
    n = x.shape
    yy, xx = np.mgrid[-3:4, -3:4]
    h = np.exp(-(yy**2 + (xx - 0.5) ** 2) / (2 * 1.5**2))  # an off-centre Gaussian: not symmetric
    h /= h.sum()
    offset = (3, 3)
    rng = np.random.default_rng(4)
    B = pylops.signalprocessing.Convolve2D(n, h, offset=offset, method="direct")
    y = B @ x + 0.01 * rng.standard_normal(n)
    A = pylops_as_convmat(h, n, offset).to_pylops()
    np.testing.assert_allclose(A @ x, B @ x, rtol=1e-12, atol=1e-12)
    L = pylops.Laplacian(dims=n, dtype=np.float64)
    kw = dict(epsRs=[0.05], iter_lim=60, atol=0.0, btol=0.0)
    x_convmat = regularized_inversion(A, y.ravel(), [L], **kw)[0].reshape(n)
    x_pylops = regularized_inversion(B, y.ravel(), [L], **kw)[0].reshape(n)
    p_blur, p_convmat, p_pylops = _psnr(y, x), _psnr(x_convmat, x), _psnr(x_pylops, x)
    assert p_convmat > p_blur + 1.0  # the inversion deblurs
    assert abs(p_convmat - p_pylops) < 0.05

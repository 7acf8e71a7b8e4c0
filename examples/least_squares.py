"""The transposed convolution is not the inverse: recover an image by least squares.

A strided convolution ``y = C x`` with more outputs than inputs (8 filters,
stride 2, on one channel: 8 * (n/2)^2 = 2 n^2 outputs for n^2 inputs) loses
nothing, so ``x`` can be recovered from ``y`` -- but not by the transposed
convolution ``C^T y``, which is the adjoint, not the inverse (not even after
the best rescaling).  ``scipy.sparse.linalg.lsqr`` on the operator recovers
``x`` to solver precision.

Run::

    python examples/least_squares.py --out out

It prints a table and writes ``x.png``, ``y.png`` (the 8 feature maps),
``transpose.png`` (``C^T y``, rescaled) and ``lsqr.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.sparse.linalg import lsqr

from convmat.imagefiles import write_image
from convmat.operator import ConvOperator


def test_image(n: int = 128) -> np.ndarray:
    """A synthetic grayscale image ``(1, n, n)`` in ``[0, 1]``: a disc, a ramp, stripes and a square."""
    u = (np.arange(n) + 0.5) / n
    Y, X = np.meshgrid(u, u, indexing="ij")
    img = 0.25 + 0.2 * X
    img = np.where((X - 0.35) ** 2 + (Y - 0.4) ** 2 < 0.2**2, 0.9, img)
    img = np.where((abs(X - 0.75) < 0.12) & (abs(Y - 0.7) < 0.12), 0.05, img)
    stripes = (Y > 0.8) & (X < 0.5)
    img = np.where(stripes, 0.5 + 0.4 * np.sign(np.sin(2 * np.pi * 12 * X)), img)
    return img[None]


def recover(x, *, out_channels=8, kernel_size=4, stride=2, padding=1, seed=0, tol=1e-12, iter_lim=2000):
    """Convolve ``x``, then try to get it back with ``C^T`` and with least squares.

    Parameters
    ----------
    x : ndarray, shape (C_in, H, W)
    out_channels, kernel_size, stride, padding : int
        The layer (random normal weights from ``seed``).
    tol : float
        ``atol`` and ``btol`` of lsqr.
    iter_lim : int

    Returns
    -------
    dict
        ``operator``; images ``y``, ``transpose`` (``C^T y``), ``scaled``
        (``alpha C^T y`` with the least-squares best ``alpha``) and ``lsqr``;
        relative errors ``err_transpose``, ``err_scaled``, ``err_lsqr``
        (``||z - x|| / ||x||``); relative residuals ``res_*`` (``||C z - y|| / ||y||``);
        ``iterations`` and ``seconds`` of lsqr.
    """
    rng = np.random.default_rng(seed)
    c_in = x.shape[0]
    weight = rng.standard_normal((out_channels, c_in, kernel_size, kernel_size)) / kernel_size
    A = ConvOperator(weight, x.shape[1:], stride=stride, padding=padding)
    y = A(x)
    back = A.apply_adjoint(y)
    alpha = np.vdot(back, x) / np.vdot(back, back)  # the best multiple of C^T y (uses x: an oracle)
    t0 = time.perf_counter()
    sol, _istop, itn, *_ = lsqr(A, y.ravel(), atol=tol, btol=tol, iter_lim=iter_lim)
    seconds = time.perf_counter() - t0
    sol = sol.reshape(x.shape)

    def err(z):
        return float(np.linalg.norm(z - x) / np.linalg.norm(x))

    def res(z):
        return float(np.linalg.norm(A(z) - y) / np.linalg.norm(y))

    images = {"transpose": back, "scaled": alpha * back, "lsqr": sol}
    out = {"operator": A, "y": y, **images, "iterations": int(itn), "seconds": seconds}
    for name, z in images.items():
        out[f"err_{name}"] = err(z)
        out[f"res_{name}"] = res(z)
    return out


def table(result) -> str:
    """The comparison as a text table."""
    A = result["operator"]
    lines = [
        f"C: {A.shape[0]} x {A.shape[1]} (more outputs than inputs), nnz {A.nnz:,}",
        f"{'estimate of x':<28} {'||z - x|| / ||x||':>18} {'||C z - y|| / ||y||':>20} {'iterations':>11}",
        f"{'C^T y (transposed conv)':<28} {result['err_transpose']:>18.3e} {result['res_transpose']:>20.3e} {'-':>11}",
        f"{'alpha C^T y (best alpha)':<28} {result['err_scaled']:>18.3e} {result['res_scaled']:>20.3e} {'-':>11}",
        f"{'lsqr(C, y)':<28} {result['err_lsqr']:>18.3e} {result['res_lsqr']:>20.3e} {result['iterations']:>11d}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="directory for the PNG files (default: out/)")
    parser.add_argument("--size", type=int, default=128, help="image size n (n x n), even")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x = test_image(args.size)
    result = recover(x, seed=args.seed)
    print(table(result))
    print(f"lsqr took {result['seconds']:.2f} s")

    os.makedirs(args.out, exist_ok=True)
    y = result["y"]  # (8, n/2, n/2): tile the feature maps 2 x 4
    tiles = np.concatenate([np.concatenate(list(y[r * 4 : r * 4 + 4]), axis=1) for r in range(2)], axis=0)
    files = {
        "x.png": (x, {}),
        "y.png": (tiles[None], {"normalize": True}),
        "transpose.png": (result["transpose"], {"normalize": True}),
        "lsqr.png": (result["lsqr"], {}),
    }
    for name, (img, options) in files.items():
        write_image(os.path.join(args.out, name), img, **options)
    print(f"wrote {', '.join(files)} to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""operator_norm on a convolution layer: today's default against the svds it replaced.

Times, on the 16 -> 16 channel 3 x 3 layer on 64 x 64 images (float32,
padding 1) by default,

* ``now``: ``operator_norm(A)`` (ARPACK's Lanczos on ``A^H A`` with the
  ConvOperator's threaded products, ``LANCZOS_VECTORS`` Lanczos vectors and
  ``tol`` for ``sigma^2``; timed on a LinearOperator around ``A`` that counts
  the products, which takes the same path),
* ``svds20``: ``svds(A, k=1)`` on the same threaded operator with ARPACK's
  default 20 Lanczos vectors (svds asks ARPACK for ``tol**2``),
* ``before``: ``svds`` on the explicit SciPy matrix (single-threaded SciPy
  products, 20 Lanczos vectors), which ``operator_norm`` ran before,

each with the default ``tol`` (1e-10) and the same starting vector, in
alternating rounds (the best of ``--rounds`` is printed), with the number of
products of ``A^H A`` each needed and the norms (they agree to float32 rounding).
``now / before`` is the speed-up.

    python benchmarks/norm.py                  # about 2-5 minutes on 2 cores
    python benchmarks/norm.py --size 32 --rounds 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.sparse.linalg import LinearOperator, svds

from convmat import ConvOperator
from convmat.spectrum import _start, operator_norm


def counted(A, products):
    """``A`` as a LinearOperator that counts its forward products."""

    def mv(v):
        products[0] += 1
        return A @ v

    return LinearOperator(A.shape, matvec=mv, rmatvec=A.rmatvec, dtype=A.dtype)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    c = args.channels
    weight = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    A = ConvOperator(weight, (args.size, args.size), padding=1)
    M = A.matrix
    v0 = _start(np.random.default_rng(0), A.shape[1], A.dtype)
    print(f"{c} -> {c}, 3 x 3, {args.size} x {args.size}: A {A.shape[0]} x {A.shape[1]}, nnz {M.nnz:,}", flush=True)
    A @ v0.astype(np.float32)  # compile or load the kernels before timing

    def now():
        n = [0]
        return operator_norm(counted(A, n)), n[0]  # the path operator_norm(A) takes, counted

    def svds20():
        n = [0]
        return float(svds(counted(A, n), k=1, tol=1e-10, v0=v0, return_singular_vectors=False)[0]), n[0]

    def before():
        n = [0]
        L = LinearOperator(M.shape, matvec=lambda v: (n.__setitem__(0, n[0] + 1), M @ v)[1],
                           rmatvec=lambda v: M.T @ v, dtype=M.dtype)
        return float(svds(L, k=1, tol=1e-10, v0=v0, return_singular_vectors=False)[0]), n[0]

    best = {}
    for r in range(args.rounds):
        for name, fn in (("now", now), ("svds20", svds20), ("before", before)):
            t0 = time.perf_counter()
            value, products = fn()
            t = time.perf_counter() - t0
            best[name] = min(best.get(name, (np.inf,))[0], t), value, products
            print(f"  round {r}: {name:7s} {t:6.1f} s  norm {value:.7g}  products {products}", flush=True)
    print("\nbest of the rounds (s): " + "  ".join(f"{k} {v[0]:.1f}" for k, v in best.items()))
    print(f"before / now = {best['before'][0] / best['now'][0]:.2f}   svds20 / now = "
          f"{best['svds20'][0] / best['now'][0]:.2f}")


if __name__ == "__main__":
    main()

"""How often adjoint tests fail correct operators, and how often they catch wrong ones.

A zoo of operators on an n x n image -- a 5 x 5 convolution with random
weights ('same' zero padding; complex weights for complex dtypes) -- each
paired with its correct adjoint and with wrong ones:

=====================  ===================================================================
scale 1e-2 ... 1e-10   the adjoint times ``1 + d``
tap 1e-3               one weight tap of the adjoint off by 1e-3 of the largest weight
flipped kernel         the adjoint built from the spatially flipped kernel
missing row            stride-2 convolution; its transposed conv without output_padding
                       (the last image row and column of the adjoint's output are zero)
last entry dropped     the last stored entry of the adjoint's CSR matrix removed
missing conjugate      (complex) the transpose instead of the conjugate transpose
=====================  ===================================================================

in four forms -- the explicit sparse adjoint matrix (``adjoint_test(C, W)``),
a SciPy ``LinearOperator`` black box, a pair of NumPy functions on images,
and a pair of torch functions (``conv2d`` / ``conv_transpose2d``, real dtypes)
-- and runs ``convmat.adjoint_test`` (defaults) and ``pylops.utils.dottest``
(default ``rtol=1e-6``, on the black box, seeded through ``np.random.seed``)
on each, ``--seeds`` seeds for the correct cases and ``--wrong-seeds`` for
the wrong ones.  It prints false-failure rates (correct operators) and
detection rates (wrong ones).  Other checkers (scico's ``valid_adjoint``)
run when they import.

    python benchmarks/adjoint_power.py --seeds 20 --wrong-seeds 5 --sizes 64    # a quick look, ~1 minute
    python benchmarks/adjoint_power.py                                         # the full table (hours)
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from convmat import conv_matrix
from convmat.adjoint import AdjointTestWarning, adjoint_test

WRONG = ["scale 1e-2", "scale 1e-3", "scale 1e-4", "scale 1e-6", "scale 1e-10", "tap 1e-3", "flipped kernel", "missing row",
         "last entry dropped", "missing conjugate"]
FORMS = ["matrix", "black box", "functions", "torch"]


def weights(dtype, rng):
    w = rng.standard_normal((1, 1, 5, 5))
    if np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(w.shape)
    return w


def case(name, n, dtype, seed=0):
    """(C, W, image shapes, torch pair or None): the operator, the claimed adjoint as a CSR matrix."""
    rng = np.random.default_rng(seed)
    w = weights(dtype, rng)
    stride = 2 if name == "missing row" else 1
    C = conv_matrix(w, (n, n), padding=2, stride=stride, dtype=dtype).tocsr()
    W = C.conj().T.tocsr()
    if name.startswith("scale"):
        W = (W * (1 + float(name.split()[1]))).astype(dtype)
    elif name == "tap 1e-3":
        w2 = w.copy()
        w2[0, 0, 1, 3] += 1e-3 * np.abs(w).max()
        W = conv_matrix(w2, (n, n), padding=2, dtype=dtype).conj().T.tocsr()
    elif name == "flipped kernel":
        W = conv_matrix(w[..., ::-1, ::-1].copy(), (n, n), padding=2, dtype=dtype).conj().T.tocsr()
    elif name == "missing row":
        keep = np.ones((n, n))
        keep[-1, :] = keep[:, -1] = 0
        W = (sp.diags(keep.ravel().astype(dtype)) @ W).tocsr()
        W.eliminate_zeros()
    elif name == "last entry dropped":
        W = W.copy()
        W.data[-1] = 0
        W.eliminate_zeros()
    elif name == "missing conjugate":
        W = C.T.tocsr()
    out = (1, n // stride, n // stride) if stride == 2 else (1, n, n)
    return C, W, (1, n, n), out, w, stride


def torch_pair(name, w, stride, n, dtype):
    import torch
    import torch.nn.functional as F

    wt = torch.from_numpy(w.astype(dtype))
    pad = 2
    op = 1 if stride == 2 else 0

    def f(x):
        return F.conv2d(x[None], wt, stride=stride, padding=pad)[0]

    wg, scale, crop = wt, 1.0, False
    if name.startswith("scale"):
        scale = 1 + float(name.split()[1])
    elif name == "tap 1e-3":
        wg = wt.clone()
        wg[0, 0, 1, 3] += 1e-3 * wt.abs().max()
    elif name == "flipped kernel":
        wg = wt.flip(-1, -2)
    elif name == "missing row":
        crop = True

    def g(y):
        if crop:  # conv_transpose without output_padding: (n - 1) x (n - 1), zero-padded
            return F.pad(F.conv_transpose2d(y[None], wg, stride=stride, padding=pad)[0], (0, 1, 0, 1))
        return F.conv_transpose2d(y[None], wg, stride=stride, padding=pad, output_padding=op)[0] * scale

    return f, g, getattr(torch, np.dtype(dtype).name)


def black_box(C, W):
    return LinearOperator(C.shape, matvec=lambda v: C @ v, rmatvec=lambda v: W @ v, dtype=C.dtype)


def run_convmat(form, C, W, ins, outs, extra, seed):
    if form == "matrix":
        return adjoint_test(C, W, rng=seed).passed
    if form == "black box":
        return adjoint_test(black_box(C, W), rng=seed).passed
    if form == "functions":
        f = lambda x: (C @ x.ravel()).reshape(outs)  # noqa: E731
        g = lambda y: (W @ y.ravel()).reshape(ins)  # noqa: E731
        return adjoint_test(f, g, in_shape=ins, out_shape=outs, dtype=C.dtype, rng=seed).passed
    f, g, tdtype = extra
    return adjoint_test(f, g, in_shape=ins, out_shape=outs, dtype=tdtype, rng=seed).passed


def run_pylops(C, W, seed):
    import pylops

    np.random.seed(seed)
    Op = pylops.aslinearoperator(black_box(C, W))
    return bool(pylops.utils.dottest(Op, complexflag=3 if C.dtype.kind == "c" else 0, raiseerror=False))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000, help="seeds per correct case (default 1000)")
    ap.add_argument("--wrong-seeds", type=int, default=100, help="seeds per wrong case (default 100)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64", "complex64", "complex128"])
    ap.add_argument("--forms", nargs="+", default=FORMS, choices=FORMS)
    ap.add_argument("--cases", nargs="+", default=["correct"] + WRONG, choices=["correct"] + WRONG)
    ap.add_argument("--no-pylops", action="store_true",
                    help="convmat only (PyLops' dottest takes about 5 s a seed at 1024^2 here)")
    args = ap.parse_args(argv)
    have_torch = importlib.util.find_spec("torch") is not None
    if have_torch:
        import torch

        torch.set_num_threads(1)  # one thread per process: the numbers are rates, not times
    have_pylops = importlib.util.find_spec("pylops") is not None and not args.no_pylops
    print(f"checkers: convmat.adjoint_test (defaults), pylops.utils.dottest (rtol=1e-6): "
          f"{'yes' if have_pylops else 'skipped (--no-pylops)' if args.no_pylops else 'not installed'}; "
          f"scico valid_adjoint: "
          f"{'yes' if importlib.util.find_spec('scico') else 'not installed'}")
    print(f"{'size':>6} {'dtype':>10} {'case':>19} {'form':>10} {'seeds':>6} {'convmat':>8} {'pylops':>8}  "
          f"(correct: false-failure rate; wrong: detection rate)")
    warnings.simplefilter("ignore", AdjointTestWarning)
    for n in args.sizes:
        for dtype in args.dtypes:
            for name in args.cases:
                if name == "missing conjugate" and np.dtype(dtype).kind != "c":
                    continue
                C, W, ins, outs, w, stride = case(name, n, dtype)
                seeds = args.seeds if name == "correct" else args.wrong_seeds
                for form in args.forms:
                    extra = None
                    if form == "torch":
                        if not have_torch or np.dtype(dtype).kind == "c" or name == "last entry dropped":
                            continue
                        extra = torch_pair(name, w, stride, n, dtype)
                    t = time.perf_counter()
                    fails = sum(not run_convmat(form, C, W, ins, outs, extra, s) for s in range(seeds))
                    py = "-"
                    if form == "black box" and have_pylops:
                        py = f"{sum(not run_pylops(C, W, s) for s in range(seeds)) / seeds:8.3f}"
                    print(f"{n:>4}^2 {dtype:>10} {name:>19} {form:>10} {seeds:>6} {fails / seeds:8.3f} {py:>8}"
                          f"   ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

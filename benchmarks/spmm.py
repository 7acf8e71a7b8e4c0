"""Sparse products with convolution matrices: convmat.spmm.csr_matmul against SciPy, torch and the memory bound.

For a few layers (float32) and batch sizes, times ``Y = C @ X`` and
``Z = C.T @ Y`` with

* SciPy (``C @ X``, ``C.T @ Y``; one thread),
* ``convmat.spmm.csr_matmul`` (``--threads``, default 2, and 1 thread), the
  transposed product on ``C``'s own arrays, and also on a cached CSR copy of
  ``C.T`` (``Tc``; its build time is printed once per layer),
* the transposed product as it ran before it was made reproducible
  (``Td``: blocks of rows handed to whichever thread is free, so which rows
  add into which partial sum changed from run to run), timed alternately with
  today's fixed assignment (``T``); ``T/Td`` is the cost of determinism, and
  the number of distinct results of ``--distinct`` runs of each is printed,
* for one vector, the NumPy twins of the kernels (``tw``, ``twT``): what a
  product costs in a process before Numba is loaded (the same bits),
* convmat's ``'torch'`` backend: the matrix as a torch sparse CSR tensor
  (``torch.sparse.mm``), the transposed product on ``C.T`` built directly in
  CSR by ``ConvPlan.transpose()``, as ``ConvOperator`` does on that backend
  (multiplying by ``C_csr.t()``, a CSC tensor, takes seconds even for the
  smallest layer),
* torch dense ``conv2d`` / ``conv_transpose2d`` (NCHW) on the same data,

and, for one vector, the bandwidth bound ``bytes(C) + bytes(x) + bytes(y)``
over the copy bandwidth measured with a 1 GiB ``np.copyto`` (1 thread, and 2
threads each copying half).  On a shared machine the load changes between
that measurement and a layer's, so for one vector ``cm/copyA`` also times the
product in alternation with a 2-thread copy of the same bytes (read + write),
``cm/readA`` in alternation with a 2-thread read of the same bytes (NumPy's
``bitwise_or.reduce`` over them as ``uint64``: what streaming the matrix
costs without a product, a bound no reading product can beat),
and ``T/fwd A`` the transposed product in alternation with the forward one
(best of 5 rounds each).  Torch runs with the same number of threads.
Times are medians of ``--repeat`` runs after a warm-up run (which also
compiles the Numba kernels, and lets torch's OpenMP threads, which spin for a
while after each torch call, go idle); slow products are repeated fewer
times (at most about ``--budget`` seconds each).

    python benchmarks/spmm.py                 # 4 layers x batch 1, 8, 64 (about 3 minutes)
    python benchmarks/spmm.py --quick         # 2 small layers, batch 1 and 64 (under 30 s)
    python benchmarks/spmm.py --batch 64 --no-scipy
    python benchmarks/spmm.py --threads-crossover   # where a second thread starts to pay

A CUDA section (cuSPARSE through CuPy against torch conv2d on the GPU) runs
when CuPy imports and sees a device; otherwise it prints why it is skipped.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from convmat import conv_matrix, conv_plan
from convmat.spmm import _threads, csr_matmul

#: (C_in, C_out, kernel, size, stride, padding)
LAYERS = {
    "16-16 3x3 64": (16, 16, 3, 64, 1, 1),
    "64-64 3x3 56": (64, 64, 3, 56, 1, 1),
    "128-128 3x3 28": (128, 128, 3, 28, 1, 1),
    "3-64 7x7/2 112": (3, 64, 7, 112, 2, 3),
}
QUICK = ("16-16 3x3 64", "3-64 7x7/2 112")


def median_time(fn, repeat, budget):
    """Median seconds of ``fn()`` after one warm-up call; fewer runs if they are slow."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = max(1, min(repeat, int(budget / max(first, 1e-9))))
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(repeat, threads):
    """Bytes read + written per second by np.copyto of 1 GiB float32 arrays, on ``threads`` threads."""
    a = np.ones(1 << 28, dtype=np.float32)
    b = np.empty_like(a)
    b.fill(0)
    if threads == 1:
        t = median_time(lambda: np.copyto(b, a), repeat, 10)
    else:
        parts = [slice(i * a.size // threads, (i + 1) * a.size // threads) for i in range(threads)]
        with ThreadPoolExecutor(threads) as pool:  # np.copyto releases the GIL
            t = median_time(lambda: list(pool.map(lambda s: np.copyto(b[s], a[s]), parts)), repeat, 10)
    return 2 * a.nbytes / t


def fmt(seconds):
    if seconds is None or seconds != seconds:
        return "-"
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds:.0f}s"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def dynamic_transposed(C, Y, threads):
    """``C.T @ Y`` as before the fixed assignment: blocks to whichever worker is free (not reproducible).

    The same kernels, row order and blocks as convmat's product then; kept here only to measure
    what the fixed assignment costs.
    """
    from convmat.spmm import _products as P
    from convmat.spmm import _threads as TH

    K = TH.load()
    indptr, indices, data = C.indptr, C.indices, C.data
    ncols, zero = C.shape[1], np.float32(0)
    if Y.ndim == 1:
        b = P._cost_bounds(indptr, P._nchunks(threads))
        out, name, args, extra = np.empty(ncols, np.float32), "tr_vec", (indptr, indices, data, Y), ()
    else:
        Yc = P._rowmajor(K, Y, np.dtype(np.float32), False, threads)
        order = P._row_order(K, indptr, indices, ncols, Yc.shape[1], threads)
        b = P._cost_bounds(indptr, P._nchunks(threads), order)
        out, name, args, extra = np.empty((ncols, Yc.shape[1]), np.float32), "tr_mat", (indptr, indices, data, Yc), (order,)
    workers = min(threads, len(b) - 1)
    part = np.empty((workers - 1,) + out.shape, np.float32)
    accs, cleared, fn = [out, *part], [False] * workers, K[name]

    def task(w, c):
        clear = not cleared[w]
        cleared[w] = True
        fn(*args, accs[w], *extra, b[c], b[c + 1], zero, clear)

    TH.parallel(task, len(b) - 1, workers)
    for acc, done in zip(accs, cleared):
        if not done:
            acc.fill(0)
    if len(part):
        P._reduce(K, out.reshape(-1), part.reshape(len(part), -1), workers)
    return out


def twin_product(C, v, transpose, threads):
    """``C @ v`` (``C.T @ v``) by the NumPy twins, as ``csr_matmul`` computes it before Numba is loaded."""
    from convmat.spmm import _products

    out = np.empty(C.shape[1] if transpose else C.shape[0], np.float32)
    _products._product_vec(None, C.indptr, C.indices, C.data, v, out, C.shape[1], transpose, threads, np.float32(0))
    return out


def alternating(fa, fb, repeat, budget, rounds=3):
    """Medians of ``fa`` and ``fb`` timed in alternation (ABAB...), the best round of each: drift cancels."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(median_time(fa, repeat, budget / rounds))
        tb.append(median_time(fb, repeat, budget / rounds))
    return min(ta), min(tb)


def distinct(fn, runs):
    return len({fn().tobytes() for _ in range(runs)})


def run_layer(name, spec, batches, args, torch, bw1, bw2, rows):
    cin, cout, k, size, stride, pad = spec
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    C = conv_matrix(weight, (size, size), padding=pad, stride=stride, dtype=np.float32)
    cbytes = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    t0 = time.perf_counter()
    CT = C.T.tocsr()  # the cached transposed copy (scipy, one thread)
    t_ct = time.perf_counter() - t0
    print(f"{name}: C {C.shape[0]} x {C.shape[1]}, nnz {C.nnz:,}, {cbytes / 1e6:.0f} MB; "
          f"C.T.tocsr() {t_ct * 1e3:.0f} ms", flush=True)
    T = args.threads
    rep, bud = args.repeat, args.budget
    sparse_t = sparse_tt = None
    if torch is not None:
        # convmat's 'torch' backend: C, and C^T built directly in CSR (what ConvOperator's adjoint uses)
        plan = conv_plan(weight.shape, (size, size), padding=pad, stride=stride)
        sparse_t = plan.build(weight, backend="torch")
        sparse_tt = plan.transpose().build(weight, backend="torch")
        F = torch.nn.functional
        wt = torch.from_numpy(weight)
    osz = (size + 2 * pad - k) // stride + 1
    for N in batches:
        x = rng.standard_normal((N, cin, size, size)).astype(np.float32)
        y = rng.standard_normal((N, cout, osz, osz)).astype(np.float32)
        # columns of images, as ConvOperator passes them (F-contiguous views); one vector for N = 1
        X = x.reshape(N, -1).T if N > 1 else x.reshape(-1)
        Y = y.reshape(N, -1).T if N > 1 else y.reshape(-1)
        r = {"layer": name, "N": N}
        r["cm"] = median_time(lambda: csr_matmul(C, X, threads=T), rep, bud)
        r["cmT"], r["cmTd"] = alternating(lambda: csr_matmul(C, Y, transpose=True, threads=T),
                                          lambda: dynamic_transposed(C, Y, T), rep, bud)
        if args.distinct:
            r["distinct"] = (distinct(lambda: csr_matmul(C, Y, transpose=True, threads=T), args.distinct),
                             distinct(lambda: dynamic_transposed(C, Y, T), args.distinct))
        r["cmTc"] = median_time(lambda: csr_matmul(CT, Y, threads=T), rep, bud)
        if N == 1:
            r["tw"] = median_time(lambda: twin_product(C, X, False, T), rep, bud)
            r["twT"] = median_time(lambda: twin_product(C, Y, True, T), rep, bud)
        if T != 1:
            r["cm1"] = median_time(lambda: csr_matmul(C, X, threads=1), rep, bud)
            r["cmT1"] = median_time(lambda: csr_matmul(C, Y, transpose=True, threads=1), rep, bud)
        if not args.no_scipy:
            r["sp"] = median_time(lambda: C @ X, rep, bud)
            r["spT"] = median_time(lambda: C.T @ Y, rep, bud)
        if torch is not None:
            Xt = torch.from_numpy(np.ascontiguousarray(X.reshape(X.shape[0], -1)))
            Yt = torch.from_numpy(np.ascontiguousarray(Y.reshape(Y.shape[0], -1)))
            r["ts"] = median_time(lambda: torch.sparse.mm(sparse_t, Xt), rep, bud)
            r["tsT"] = median_time(lambda: torch.sparse.mm(sparse_tt, Yt), rep, bud)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            r["conv"] = median_time(lambda: F.conv2d(xt, wt, stride=stride, padding=pad), rep, bud)
            r["convT"] = median_time(
                lambda: F.conv_transpose2d(yt, wt, stride=stride, padding=pad,
                                           output_padding=size - ((osz - 1) * stride - 2 * pad + k)),
                rep, bud)
        if N == 1:
            moved = cbytes + X.nbytes + Y.nbytes
            r["bound1"], r["bound2"] = moved / bw1, moved / bw2
            # The same ratios measured in alternation (ABAB..., best round of each: on a shared machine
            # the load changes between the start of the run and this layer): a 2-thread copy of half
            # the bytes (read + write = the bytes the product moves), and C^H y against C x.
            copy_in = np.ones(moved // 8, dtype=np.float32)
            copy_out = np.zeros_like(copy_in)
            halves = [slice(0, copy_in.size // 2), slice(copy_in.size // 2, None)]
            with ThreadPoolExecutor(2) as pool:
                r["cmA"], r["copyA"] = alternating(
                    lambda: csr_matmul(C, X, threads=T),
                    lambda: list(pool.map(lambda h: np.copyto(copy_out[h], copy_in[h]), halves)), rep, bud, rounds=5)
            del copy_in, copy_out
            words = np.ones(moved // 8, dtype=np.uint64)  # the product's bytes, read by two threads
            parts = [words[: words.size // 2], words[words.size // 2 :]]
            with ThreadPoolExecutor(2) as pool:
                r["cmR"], r["readA"] = alternating(
                    lambda: csr_matmul(C, X, threads=T),
                    lambda: list(pool.map(np.bitwise_or.reduce, parts)), rep, bud, rounds=5)
            del words, parts
            r["cmTA"], r["cmA2"] = alternating(lambda: csr_matmul(C, Y, transpose=True, threads=T),
                                               lambda: csr_matmul(C, X, threads=T), rep, bud, rounds=5)
        rows.append(r)
        print("  " + "  ".join(f"{key} {fmt(v)}" for key, v in r.items() if key not in ("layer", "N", "distinct"))
              + f"  (N={N})", flush=True)


def print_tables(rows, threads):
    g = lambda r, key: r.get(key)  # noqa: E731
    print(f"\nTimes in ms (median); cm = convmat.spmm.csr_matmul on {threads} thread(s), cm1 on 1; "
          "T = transposed product; Tc = on a cached CSR copy of C.T; sp = SciPy; ts = convmat's 'torch' backend (torch sparse CSR; tsT on C^T built by ConvPlan.transpose); "
          "conv = torch dense conv2d / conv_transpose2d; tw = NumPy twins (before Numba is loaded).")
    cols = ["sp", "spT", "cm", "cmT", "cmTd", "cmTc", "cm1", "cmT1", "tw", "twT", "ts", "tsT", "conv", "convT", "bound2",
            "bound1"]
    head = f"{'layer':16s} {'N':>3s} " + " ".join(f"{c:>7s}" for c in cols)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['layer']:16s} {r['N']:3d} " + " ".join(f"{fmt(g(r, c)):>7s}" for c in cols))
    print("\nRatios: cm/bound2 and cmT/bound2 (the targets: bound from the 2-thread copy bandwidth, N = 1 "
          "only; cm/bound1 from the 1-thread one, which flatters a 2-thread product); "
          "cm/conv and cmT/convT (to torch conv); T/fwd = cmT/cm; Tc/fwd = cmTc/cm; sp/cm = scipy/convmat "
          "(forward, transposed); ts/cm = torch sparse/convmat; 1t/2t = cm1/cm; "
          "tw/cm, twT/cmT = NumPy twins / kernels; cm/copyA = cm against a 2-thread copy of the same bytes, "
          "cm/readA against a 2-thread read of them (no product), "
          "and T/fwd A = cmT/cm, each pair timed in alternation (best of 5 rounds each: robust to a "
          "changing load).")
    cols2 = [("cm/bound2", "cm", "bound2"), ("cmT/bound2", "cmT", "bound2"), ("cm/copyA", "cmA", "copyA"),
             ("cm/readA", "cmR", "readA"),
             ("T/fwd A", "cmTA", "cmA2"), ("cm/bound1", "cm", "bound1"),
             ("cm/conv", "cm", "conv"), ("cmT/convT", "cmT", "convT"), ("T/fwd", "cmT", "cm"),
             ("Tc/fwd", "cmTc", "cm"), ("sp/cm", "sp", "cm"), ("spT/cmT", "spT", "cmT"), ("ts/cm", "ts", "cm"),
             ("1t/2t", "cm1", "cm"), ("T/Td", "cmT", "cmTd"), ("tw/cm", "tw", "cm"), ("twT/cmT", "twT", "cmT")]
    head = f"{'layer':16s} {'N':>3s} " + " ".join(f"{c[0]:>10s}" for c in cols2)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['layer']:16s} {r['N']:3d} " + " ".join(f"{ratio(g(r, a), g(r, b)):>10s}" for _, a, b in cols2))
    if any("distinct" in r for r in rows):
        print("\nDistinct results (bytes) of the transposed product in repeated runs: fixed assignment (T) / "
              "dynamic, as before (Td).")
        for r in rows:
            if "distinct" in r:
                print(f"{r['layer']:16s} {r['N']:3d} T {r['distinct'][0]}  Td {r['distinct'][1]}")


def cuda_section(args):
    print("\nCUDA (cuSPARSE via CuPy against torch conv2d on the GPU):")
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # noqa: BLE001 - any reason to skip is printed
        print(f"  skipped: {type(exc).__name__}: {exc}")
        return
    try:
        import torch

        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False

    def gpu_time(fn):
        fn()
        cupy.cuda.Device().synchronize()
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            cupy.cuda.Device().synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    for name in (QUICK if args.quick else LAYERS):
        cin, cout, k, size, stride, pad = LAYERS[name]
        rng = np.random.default_rng(0)
        weight = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        plan = conv_plan(weight.shape, (size, size), padding=pad, stride=stride)
        Cg = plan.build(weight, backend="cupy")  # built on the device
        CTg = plan.transpose().build(weight, backend="cupy")
        for N in args.batch:
            x = rng.standard_normal((N, cin, size, size)).astype(np.float32)
            Xg = cupy.asarray(x.reshape(N, -1).T)
            Yg = cupy.asarray(rng.standard_normal((Cg.shape[0], N)).astype(np.float32))
            t_sp = gpu_time(lambda: Cg @ Xg)
            t_spT = gpu_time(lambda: CTg @ Yg)
            line = f"  {name:16s} N={N:3d}  cuSPARSE C@X {t_sp * 1e3:8.2f} ms  C^T@Y {t_spT * 1e3:8.2f} ms"
            if have_torch:
                xt = torch.from_numpy(x).cuda()
                wt = torch.from_numpy(weight).cuda()

                def conv():
                    torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad)
                    torch.cuda.synchronize()

                t_c = gpu_time(conv)
                line += f"  torch conv2d {t_c * 1e3:8.2f} ms  ratio {t_sp / t_c:6.2f}"
            else:
                line += "  (torch CUDA not available)"
            print(line, flush=True)


def threads_crossover(args):
    """``threads`` against one thread on small and mid-sized convolutions (float32, the pool forced on):
    where a second thread starts to pay, which ``THREADS_MIN_NNZ`` and ``THREADS_MIN_WORK`` encode."""
    from convmat.spmm import _products

    print(f"{args.threads} threads against one, products forced onto the pool (THREADS_MIN_* = 0); best of 5 "
          f"rounds of alternated runs, times in microseconds; the defaults: THREADS_MIN_NNZ {_products.THREADS_MIN_NNZ:,}, "
          f"THREADS_MIN_WORK {_products.THREADS_MIN_WORK:,}")
    saved = _products.THREADS_MIN_NNZ, _products.THREADS_MIN_WORK
    _products.THREADS_MIN_NNZ = _products.THREADS_MIN_WORK = 0
    rng = np.random.default_rng(0)
    print(f"{'layer':<18}{'k':>4}{'nnz x k':>14}{'C@X 1t':>10}{'2t':>9}{'2t/1t':>7}{'C^T@Y 1t':>11}{'2t':>9}{'2t/1t':>7}")
    try:
        for cin, size in ((8, 16), (8, 32), (16, 32), (16, 64), (32, 64)):
            C = conv_matrix(rng.standard_normal((cin, cin, 3, 3)).astype(np.float32), (size, size), padding=1,
                            dtype=np.float32)
            for k in (1, 8, 64):
                X = rng.standard_normal((C.shape[1], k)).astype(np.float32)
                Y = rng.standard_normal((C.shape[0], k)).astype(np.float32)
                X, Y = (X[:, 0].copy(), Y[:, 0].copy()) if k == 1 else (np.asfortranarray(X), np.asfortranarray(Y))
                calls = max(1, int(2e7 / (C.nnz * k)))

                def timed(fn):
                    return lambda: [fn() for _ in range(calls)]

                f1, f2 = alternating(timed(lambda: csr_matmul(C, X, threads=1)),
                                     timed(lambda: csr_matmul(C, X, threads=args.threads)), 5, args.budget, rounds=5)
                b1, b2 = alternating(timed(lambda: csr_matmul(C, Y, transpose=True, threads=1)),
                                     timed(lambda: csr_matmul(C, Y, transpose=True, threads=args.threads)), 5,
                                     args.budget, rounds=5)
                us = lambda v: f"{v / calls * 1e6:.0f}"  # noqa: E731
                print(f"{f'{cin}-{cin} 3x3 {size}':<18}{k:>4}{C.nnz * k:>14,}{us(f1):>10}{us(f2):>9}{f2 / f1:>7.2f}"
                      f"{us(b1):>11}{us(b2):>9}{b2 / b1:>7.2f}", flush=True)
    finally:
        _products.THREADS_MIN_NNZ, _products.THREADS_MIN_WORK = saved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per product (default 5)")
    ap.add_argument("--budget", type=float, default=2.0,
                    help="seconds per product above which fewer runs are timed (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads for convmat and torch (default 2)")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 1 8 64)")
    ap.add_argument("--layers", nargs="+", choices=list(LAYERS), default=None, help="layers (default: all)")
    ap.add_argument("--quick", action="store_true", help=f"layers {', '.join(QUICK)}, batch 1 and 64, 3 runs")
    ap.add_argument("--no-scipy", action="store_true", help="skip SciPy (slow for large batches)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch")
    ap.add_argument("--distinct", type=int, default=20,
                    help="count distinct results of this many transposed products, fixed and dynamic (0: skip)")
    ap.add_argument("--threads-crossover", action="store_true",
                    help="only time two threads against one on small and mid-sized products (about 1 minute)")
    args = ap.parse_args(argv)
    if args.threads_crossover:
        threads_crossover(args)
        return
    if args.quick:
        args.repeat = min(args.repeat, 3)
        args.budget = min(args.budget, 0.5)
    args.batch = args.batch or ([1, 64] if args.quick else [1, 8, 64])
    layers = args.layers or (list(QUICK) if args.quick else list(LAYERS))

    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            print("torch not importable: torch columns skipped")
    t0 = time.perf_counter()
    bw1 = copy_bandwidth(args.repeat, 1)
    bw2 = copy_bandwidth(args.repeat, 2)
    print(f"copy bandwidth (read + write, 1 GiB np.copyto): 1 thread {bw1 / 1e9:.1f} GB/s, "
          f"2 threads {bw2 / 1e9:.1f} GB/s; bound1 / bound2 use them")
    # Compile the kernels (or load them from Numba's cache) before timing anything.
    t1 = time.perf_counter()
    A = sp.csr_array((np.random.default_rng(0).random((64, 64)) < 0.2).astype(np.float32))
    for v in (np.ones(64, np.float32), np.ones((64, 3), np.float32)):
        csr_matmul(A, v)
        csr_matmul(A, v, transpose=True)
    _threads.LOADER.settle()  # the first products ran on the compiled library and started Numba's loader: wait for it
    print(f"first products (Numba import + kernel compilation or cache load): {time.perf_counter() - t1:.1f} s\n")

    rows = []
    for name in layers:
        run_layer(name, LAYERS[name], args.batch, args, torch, bw1, bw2, rows)
    print_tables(rows, args.threads)
    cuda_section(args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

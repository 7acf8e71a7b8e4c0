"""Build time and peak memory of conv_matrix against the memory bound (and a COO peer).

The memory bound is the time to allocate and fill arrays of the same total
bytes as the CSR matrix (data + indices + indptr), measured in the same run.
Peak memory is traced with tracemalloc (NumPy reports its buffers to it) and
divided by the final matrix's bytes.

    python benchmarks/build.py                      # the geometry suite (table below), float32
    python benchmarks/build.py --only 3x3 1-D       # the suite's geometries whose name holds a word
    python benchmarks/build.py --layer --size 28 --peer   # one layer: 64->64, 3x3, 28x28; a COO peer
    python benchmarks/build.py --layer --backends torch   # one layer, also on torch (and cupy)

The suite prints, per geometry: nnz, the first build of it in the process
("cold"; the first geometry also pays the process's first-use costs, and runs
the array path while the compiled fill is not loaded yet) and the median of
the next builds ("warm", the compiled fill of :mod:`convmat.fill`), the fill
of the same bytes with 1 and 2 threads, build / fill (both with the backend's
default threads), the array path's warm build / fill ("arrays": what the GPU
backends run, and the host without Numba) and the traced peak / final bytes.
Rounds alternate builds and fills so all see the same load.

It also times plans (shape, nnz, bytes, a row block) on 10**9-sample
geometries, which are computed in closed form, against the 10 ms target.

On a device backend the matrix is built by that library (torch on its CPU
threads, CuPy on the GPU); the ratio is to the same host memory bound, and
for a GPU it is only a point of reference.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np

from convmat import conv_plan, conv_transpose_plan, fill
from convmat.backends import default_threads

HUGE = {
    "conv_plan (1, 1, 3) on (10**9,)": lambda: conv_plan((1, 1, 3), (10**9,), padding=1),
    "conv_plan (1, 1, 3, 3) on (10**9, 10**9)": lambda: conv_plan((1, 1, 3, 3), (10**9, 10**9), padding=1),
    "conv_transpose_plan (1, 1, 3) stride 2, (10**9,)": lambda: conv_transpose_plan(
        (1, 1, 3), (10**9,), stride=2, padding=1, output_padding=1),
    "conv_plan k=10**6, dilation 7, 'same', (10**9,)": lambda: conv_plan((1, 1, 10**6), (10**9,), dilation=7,
                                                                       padding="same"),
}


def plan_cost(repeat):
    """Time and traced memory of a plan and its sizes on 10**9-sample geometries (target: 10 ms, 10 MB)."""
    for name, make in HUGE.items():
        def sizes():
            plan = make()
            return plan.nnz, plan.nbytes("float32"), plan.row_nnz(10**6, 10**6 + 10**3), next(plan.row_blocks(10**6))

        t = median_time(sizes, repeat)
        tracemalloc.start()
        sizes()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:52s} {t * 1e3:8.3f} ms   {t / 0.010:6.4f}x the 10 ms target, traced peak {peak / 1e3:.0f} kB")


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


def fill_baseline(plan, dtype, threads=1):
    """Allocate and fill arrays of the matrix's exact sizes (the memory bound)."""
    nnz, rows = plan.nnz, plan.shape[0]
    idt = plan.index_dtype

    def run():
        data = np.empty(nnz, dtype=dtype)
        indices = np.empty(nnz, dtype=idt)
        indptr = np.empty(rows + 1, dtype=idt)
        if threads == 1:
            data.fill(1)
            indices.fill(1)
        else:
            from concurrent.futures import ThreadPoolExecutor

            chunks = [(a, slice(i * nnz // threads, (i + 1) * nnz // threads)) for a in (data, indices)
                      for i in range(threads)]
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda c: c[0][c[1]].fill(1), chunks))
        indptr.fill(1)
        return data, indices, indptr

    return run


def coo_peer(plan, weight):
    """A straightforward vectorised COO builder (scipy.sparse.coo_array -> CSR), as many write it."""
    import scipy.sparse as sp

    g = plan.geometry
    (n0, n1), (o0, o1), (k0, k1) = g.in_shape, g.out_shape, g.kernel_size
    (s0, s1), (d0, d1) = g.stride, g.dilation
    (lo0, _), (lo1, _) = g.padding
    cout, cin = weight.shape[:2]
    co, ci, j0, j1, t0, t1 = np.meshgrid(
        np.arange(cout), np.arange(cin), np.arange(o0), np.arange(o1), np.arange(k0), np.arange(k1),
        indexing="ij", sparse=True,
    )
    u0 = j0 * s0 - lo0 + t0 * d0
    u1 = j1 * s1 - lo1 + t1 * d1
    keep = (u0 >= 0) & (u0 < n0) & (u1 >= 0) & (u1 < n1)
    shape = np.broadcast_shapes(co.shape, ci.shape, u0.shape, u1.shape)
    keep = np.broadcast_to(keep, shape)
    rows = np.broadcast_to((co * o0 + j0) * o1 + j1, shape)[keep]
    cols = np.broadcast_to((ci * n0 + u0) * n1 + u1, shape)[keep]
    vals = np.broadcast_to(weight[co, ci, t0, t1], shape)[keep]
    return sp.coo_array((vals, (rows, cols)), shape=plan.shape).tocsr()


SUITE = {
    "1->1 3x3 2048^2": lambda: conv_plan((1, 1, 3, 3), (2048, 2048), padding=1),
    "1->1 9x9 512^2": lambda: conv_plan((1, 1, 9, 9), (512, 512), padding=4),
    "1->1 25x25 256^2": lambda: conv_plan((1, 1, 25, 25), (256, 256), padding=12),
    "64->64 3x3 56^2": lambda: conv_plan((64, 64, 3, 3), (56, 56), padding=1),
    "3->64 7x7/2 112^2": lambda: conv_plan((64, 3, 7, 7), (224, 224), stride=2, padding=3),
    "1-D 1->1 k=9 10^7": lambda: conv_plan((1, 1, 9), (10**7,), padding=4),
    "3-D 1->1 3x3x3 128^3": lambda: conv_plan((1, 1, 3, 3, 3), (128, 128, 128), padding=1),
    "3-D 4->4 3x3x3 48^3": lambda: conv_plan((4, 4, 3, 3, 3), (48, 48, 48), padding=1),
    "transposed 1->1 4x4/2 1024^2": lambda: conv_transpose_plan((1, 1, 4, 4), (1024, 1024), stride=2, padding=1),
    "transposed 16->16 3x3/2 128^2": lambda: conv_transpose_plan((16, 16, 3, 3), (128, 128), stride=2, padding=1,
                                                                 output_padding=1),
    "dilation 4 1->1 3x3 2048^2": lambda: conv_plan((1, 1, 3, 3), (2048, 2048), padding=4, dilation=4),
    "depthwise 32 3x3 256^2": lambda: conv_plan((32, 1, 3, 3), (256, 256), padding=1, groups=32),
    "groups 4 64->64 3x3 56^2": lambda: conv_plan((64, 16, 3, 3), (56, 56), padding=1, groups=4),
    "reflect 1->1 3x3 2048^2": lambda: conv_plan((1, 1, 3, 3), (2048, 2048), padding=1, padding_mode="reflect"),
    "replicate 1->1 3x3 2048^2": lambda: conv_plan((1, 1, 3, 3), (2048, 2048), padding=1,
                                                   padding_mode="replicate"),
    "circular 1->1 3x3 2048^2": lambda: conv_plan((1, 1, 3, 3), (2048, 2048), padding=1, padding_mode="circular"),
    "reflect 1->1 9x9 512^2": lambda: conv_plan((1, 1, 9, 9), (512, 512), padding=4, padding_mode="reflect"),
}


def array_path_build(plan, weight):
    """A build by the array path (what the GPU backends run; the compiled fill switched off)."""
    fill.USE_FILL_KERNEL = False
    try:
        return plan.build(weight)
    finally:
        fill.USE_FILL_KERNEL = True


def run_suite(names, repeat):
    """One line per geometry: nnz, cold and warm build, fill (1 and 2 threads), ratio, peak / final."""
    print(f"{'geometry':30s} {'nnz':>7s} {'cold':>8s} {'warm':>8s} {'fill 1t':>8s} {'fill 2t':>8s} "
          f"{'build/fill':>10s} {'arrays':>8s} {'peak/final':>10s}")
    rng = np.random.default_rng(0)
    worst = 0.0
    for name in names:
        plan = SUITE[name]()
        weight = rng.standard_normal(plan.weight_shape).astype(np.float32)
        final = plan.nbytes(np.float32)
        gc.collect()
        t0 = time.perf_counter()
        C = plan.build(weight)
        cold = time.perf_counter() - t0
        del C
        fill.kernel(weight.dtype, plan.index_dtype, wait=True)  # warm builds run the compiled fill
        gc.collect()
        tracemalloc.start()
        C = plan.build(weight)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del C
        fills = {1: fill_baseline(plan, np.float32, 1), 2: fill_baseline(plan, np.float32, 2)}
        times = {"build": [], "arrays": [], 1: [], 2: []}
        for _ in range(repeat):  # alternating rounds
            times["build"].append(median_time(lambda: plan.build(weight), 1))
            times["arrays"].append(median_time(lambda: array_path_build(plan, weight), 1))
            for th, fill_fn in fills.items():
                times[th].append(median_time(fill_fn, 1))
        warm, arrays, f1, f2 = (statistics.median(times[key]) for key in ("build", "arrays", 1, 2))
        bound = f2 if default_threads() > 1 else f1
        ratio = warm / bound
        worst = max(worst, ratio)
        print(f"{name:30s} {plan.nnz / 1e6:6.1f}M {cold * 1e3:6.0f}ms {warm * 1e3:6.0f}ms {f1 * 1e3:6.0f}ms "
              f"{f2 * 1e3:6.0f}ms {ratio:9.2f}x {arrays / bound:7.2f}x {peak / final:9.3f}x", flush=True)
    print(f"worst build / fill: {worst:.2f}x (fill with the backend's default threads, {default_threads()})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="suite geometries whose name holds one of these")
    ap.add_argument("--layer", action="store_true", help="one layer (--channels, --size, --kernel) instead")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--peer", action="store_true", help="also time a COO-based builder")
    ap.add_argument("--backends", nargs="*", default=[], choices=["torch", "cupy"],
                    help="also build with these backends (torch on the CPU; cupy needs a CUDA device)")
    args = ap.parse_args(argv)
    if not (args.layer or args.backends or args.peer):  # --backends and --peer time the one layer
        names = [n for n in SUITE if args.only is None or any(w in n for w in args.only)]
        run_suite(names, args.repeat)
        return

    rng = np.random.default_rng(0)
    c, n, k = args.channels, args.size, args.kernel
    weight = rng.standard_normal((c, c, k, k)).astype(np.float32)
    plan = conv_plan(weight.shape, (n, n), padding=k // 2)
    final = plan.nbytes(np.float32)
    print(plan)
    print()
    plan_cost(args.repeat)
    print()

    bound = median_time(fill_baseline(plan, np.float32, 1), args.repeat)
    bound2 = median_time(fill_baseline(plan, np.float32, 2), args.repeat)
    print(f"{'memory bound: allocate + fill, 1 thread':44s} {bound * 1e3:9.1f} ms   "
          f"({final / bound / 1e9:.2f} GB/s)")
    print(f"{'memory bound: allocate + fill, 2 threads':44s} {bound2 * 1e3:9.1f} ms")
    for th in args.threads:
        t = median_time(lambda: plan.build(weight, threads=th), args.repeat)
        same = "" if th == 1 else f"   to {th}-thread bound {t / bound2:5.2f}x"
        print(f"{f'conv_matrix build, {th} thread(s)':44s} {t * 1e3:9.1f} ms   "
              f"ratio to 1-thread bound {t / bound:5.2f}x{same}")

    for name in args.backends:
        from convmat.backends import get_backend

        try:
            be = get_backend(name)
        except (ImportError, RuntimeError) as exc:
            print(f"backend {name!r} skipped: {exc}")
            continue

        def build_on(be=be):
            M = plan.build(weight, backend=be)
            be.to_host(be.csr_arrays(M)[0][:1])  # wait for the device
            return M

        build_on()  # warm-up
        t = median_time(build_on, args.repeat)
        print(f"{f'conv_matrix build, backend {name!r}':44s} {t * 1e3:9.1f} ms   ratio to 1-thread bound {t / bound:5.2f}x")

    gc.collect()
    tracemalloc.start()
    C = plan.build(weight, threads=max(args.threads))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    built = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    assert built == final, (built, final)
    print(f"{'peak memory while building / final bytes':44s} {peak / final:9.3f}   "
          f"(peak {peak / 1e9:.3f} GB, matrix {final / 1e9:.3f} GB)")
    del C

    if args.peer:
        t0 = time.perf_counter()
        P = coo_peer(plan, weight)
        tp = time.perf_counter() - t0
        t = median_time(lambda: plan.build(weight), 1)
        same = (P != plan.build(weight)).nnz == 0
        print(f"{'COO peer (coo_array -> tocsr), 1 run':44s} {tp * 1e3:9.1f} ms   "
              f"{tp / t:5.1f}x slower than convmat; equal matrices: {same}")


if __name__ == "__main__":
    main()

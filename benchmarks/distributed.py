"""A layer whose matrix is 4x what one Dask worker may hold: stored, streamed and distributed products.

Builds a 64 -> 64 channel 3x3 convolution whose float32 matrix is
``--factor`` (default 4) times the workers' ``memory_limit`` and measures,
in one run and on one machine:

* the stored operator (:class:`convmat.ConvOperator`): build time, product time;
* the streamed operator (:class:`convmat.StreamedConvOperator`, slabs of
  ``--block-mb``): product time, and the streamed-to-stored ratio (targets:
  <= 2.5 for one vector, <= 1.3 at batch 64), forward and adjoint (the
  adjoint checked bit for bit against the stored operator's);
* the distributed operator (:class:`convmat.dask.DaskConvOperator`) on a
  ``LocalCluster`` of ``--workers`` processes with one thread each: it cannot
  keep the matrix, so the slabs are rebuilt on the workers at every product;
  build time of all slabs, forward and adjoint product times and each worker's
  peak memory; one
  vector's product fused on the workers (the default once their compiled fill
  is loaded) against building and multiplying each slab, alternated.

Per-worker rates (GB of matrix built or applied per second and per worker)
are printed for the estimates of ``docs/beyond.rst``.  Timings are the best of
``--repeat`` runs; every figure is measured in this run.

Run: ``.venv/bin/python benchmarks/distributed.py [--memory-limit-mb 512] [--factor 4]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

# This file is named like the ``distributed`` package: keep its directory off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _peak_rss(dask_worker):
    """The largest RSS the worker's own system monitor sampled (every 0.5 s, the last hour)."""
    return max(dask_worker.monitor.quantities["memory"])


def _fused_on_workers(on):
    """Let the workers' one-vector products run fused (``on``) or build and multiply each slab (the peer)."""
    import convmat.assemble
    import convmat.dask

    convmat.dask.fused_matvec = convmat.assemble.fused_matvec if on else (lambda *args, **kwargs: None)


def _load_fill():
    from convmat import fill

    return fill.kernel(np.float32, np.int32, wait=True) is not None


def _build_all(plan, w, slab, threads):
    from convmat.blocks import build_slab

    B = build_slab(plan, w, slab, w.dtype, threads=threads)
    return B.nnz


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory-limit-mb", type=int, default=512, help="memory_limit of each worker")
    ap.add_argument("--factor", type=float, default=4.0, help="matrix bytes / memory_limit")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-mb", type=int, default=64, help="block_bytes of the streamed and distributed operators")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)

    import distributed

    import convmat
    from convmat.dask import DaskConvOperator

    limit = args.memory_limit_mb << 20
    target = args.factor * limit
    per_pixel = convmat.conv_plan((64, 64, 3, 3), (64, 64), padding=1).nbytes(np.float32) / 64**2
    side = math.ceil(math.sqrt(target / per_pixel))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    plan = convmat.conv_plan(w.shape, (side, side), padding=1)
    matrix = plan.nbytes(np.float32)
    block = args.block_mb << 20
    print(f"layer: conv2d 64 -> 64, 3x3, padding 1, on {side}x{side}; {plan.nnz:,} non-zeros, "
          f"{matrix / 1e9:.2f} GB as float32 = {matrix / limit:.2f} x the worker memory_limit ({limit / 1e6:.0f} MB)")
    x1 = rng.standard_normal((1, 64, side, side)).astype(np.float32)
    xb = rng.standard_normal((args.batch, 64, side, side)).astype(np.float32)
    yb = rng.standard_normal((args.batch, 64, side, side)).astype(np.float32)  # the output has the input's shape
    rows = []

    # ---- one machine: stored and streamed ----
    t = time.perf_counter()
    A = convmat.ConvOperator(w, (side, side), padding=1)
    t_build = time.perf_counter() - t
    A(x1)
    s1, sb = best(lambda: A(x1), args.repeat), best(lambda: A(xb), args.repeat)
    A.apply_adjoint(yb[:1])
    sa1, sab = best(lambda: A.apply_adjoint(yb[:1]), args.repeat), best(lambda: A.apply_adjoint(yb), args.repeat)
    adjoints = A.apply_adjoint(yb[:1]), A.apply_adjoint(yb[:4])
    S = convmat.StreamedConvOperator(w, (side, side), padding=1, block_bytes=block)
    S(x1)
    r1, rb = best(lambda: S(x1), args.repeat), best(lambda: S(xb), args.repeat)
    assert np.array_equal(S(x1), A(x1))
    S.apply_adjoint(yb[:1])
    ra1, rab = best(lambda: S.apply_adjoint(yb[:1]), args.repeat), best(lambda: S.apply_adjoint(yb), args.repeat)
    same_adjoint = all(np.array_equal(S.apply_adjoint(v), a) for v, a in zip((yb[:1], yb[:4]), adjoints))
    del A, adjoints
    rows.append(("stored (one process)", f"{t_build:.2f}", f"{s1:.3f}", f"{sb:.3f}", "-"))
    rows.append((f"streamed ({len(S.slabs)} slabs)", "-", f"{r1:.3f}", f"{rb:.3f}", "-"))
    print(rows[0], rows[1], flush=True)

    # ---- the cluster ----
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None, memory_limit=limit)
    client = distributed.Client(cluster)
    try:
        D = DaskConvOperator(w, (side, side), padding=1, client=client, block_bytes=block)
        assert not D.keep, "the matrix should not fit in the cluster"
        D(x1)  # compile the kernels on the workers
        assert all(client.run(_load_fill).values()), "the compiled fill did not load on the workers"
        base = client.run(_peak_rss)
        t = time.perf_counter()
        client.gather(client.map(_build_all, [plan] * len(D.slabs), [w] * len(D.slabs), D.slabs,
                                 [1] * len(D.slabs), pure=False))
        d_build = time.perf_counter() - t
        db = best(lambda: D(xb), args.repeat)
        D.apply_adjoint(yb[:1])
        da1, dab = best(lambda: D.apply_adjoint(yb[:1]), args.repeat), best(lambda: D.apply_adjoint(yb), args.repeat)
        ok = np.array_equal(D(x1), S(x1)) and np.array_equal(D(xb[:2]), S(xb[:2]))
        one = {True: [], False: []}  # one vector fused on the workers, or (the peer) slabs built and multiplied
        for fused in [True, False] * args.repeat:  # alternated, for the noise of a shared machine
            client.run(_fused_on_workers, fused)
            one[fused].append(best(lambda: D(x1), 1))
            ok = ok and np.array_equal(D(x1), S(x1))
        client.run(_fused_on_workers, True)
        d1, d1_built = min(one[True]), min(one[False])
        peaks = client.run(_peak_rss)
    finally:
        client.close()
        cluster.close()
    rows.append((f"dask, {args.workers} workers ({len(D.slabs)} slabs, rebuilt per product)", f"{d_build:.2f}",
                 f"{d1:.3f}", f"{db:.3f}",
                 ", ".join(f"{p / 1e6:.0f} MB" for p in peaks.values())))

    head = ("operator", "build s", "product s (N=1)", f"product s (N={args.batch})", "worker peak RSS (sampled)")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)))
    print(f"streamed / stored product time: {r1 / s1:.2f} (N=1, target <= 2.5), {rb / sb:.2f} (N={args.batch}, "
          f"target <= 1.3)")
    print(f"dask / stored product time: {d1 / s1:.2f} (N=1), {db / sb:.2f} (N={args.batch}); "
          f"dask products equal the streamed operator's bits: {ok}")
    print(f"adjoint products: stored {sa1:.3f} s (N=1), {sab:.3f} s (N={args.batch}); streamed {ra1:.3f} s, "
          f"{rab:.3f} s = {ra1 / sa1:.2f}, {rab / sab:.2f} x stored (the stored adjoint's bits: {same_adjoint}); "
          f"dask {da1:.3f} s, {dab:.3f} s = {da1 / sa1:.2f}, {dab / sab:.2f} x stored")
    print(f"dask N=1, fused on the workers / slabs built and multiplied (best of {args.repeat}, alternated): "
          f"{d1:.3f} s / {d1_built:.3f} s = {d1 / d1_built:.2f}; each run: "
          + ", ".join(f"{a:.3f} / {b:.3f}" for a, b in zip(one[True], one[False])))
    print("worker peak RSS / memory_limit: " + ", ".join(f"{p / limit:.2f}" for p in peaks.values())
          + " (before the timed products: " + ", ".join(f"{p / 1e6:.0f} MB" for p in base.values()) + ")")
    gb = matrix / 1e9
    print(f"per-worker rates: build {gb / d_build / args.workers:.2f} GB/s, streamed product "
          f"{gb / d1 / args.workers:.2f} GB/s (N=1), {gb / db / args.workers:.2f} GB/s of matrix (N={args.batch}); "
          f"one process, {S.threads or 'all'} threads: stored product {gb / s1:.2f} GB/s (N=1), build {gb / t_build:.2f} GB/s")


if __name__ == "__main__":
    main()

"""First use: the cost of the first build and the first products in a fresh process.

Starts ``--rounds`` fresh Python processes per case and, in each, times

* ``import convmat`` (Numba is not imported by it),
* the first ``conv_matrix`` of a layer (cold) and a second one of the same
  layer (warm),
* the first ``csr_matmul(C, x)`` (one vector, float32, or ``--batch``
  columns) and a second one, then the first and a second transposed product
  ``csr_matmul(C, y, transpose=True)``: while Numba loads in the background
  these run on the kernels compiled ahead of time in C
  (``convmat/spmm/_native.c``, built when convmat is installed) or, in the
  ``twins`` cases, on the NumPy twins of the kernels (the same bits; for
  several columns there are no twins: the product waits for Numba),
* ``ready``: the time from the start of the process until the background
  loader has imported Numba and loaded (or compiled) the kernels (products
  of several columns of a real dtype never start it: they stay on the
  compiled kernels),
* then one forward and one transposed product on the kernels (``fwdK``,
  ``trK``: Numba's, or for a float32 batch the compiled ones again), and the
  check that every product gave the same bits before and after the kernels
  were loaded (``same``).

Cases: ``cache`` uses Numba's cache where convmat's kernels normally keep it
(next to ``convmat/spmm/_kernels.py`` in ``__pycache__``, or Numba's user
cache directory when that is read-only; the location is printed); ``empty``
points ``NUMBA_CACHE_DIR`` at a new empty directory for every process (the
first run after installing); ``npz`` and ``npz-empty`` read the matrix from a
file (``scipy.sparse.load_npz``) instead of building it, so that nothing has
imported Numba before the first product (the build may use Numba itself);
``prefetch`` is ``cache`` with
``convmat.spmm.prefetch(np.float32)`` called right before the first build
(Numba loads during the build and the first products); ``twins`` and
``npz-twins`` are ``cache`` and ``npz`` without the compiled kernels
(``CONVMAT_NATIVE=0``, as where convmat was installed without a C
compiler): the first products run on the NumPy twins, or, from
``TWIN_MAX_NNZ`` non-zeros, wait for Numba.  A separate fresh
process per round times ``import numba`` alone.  The cases alternate;
medians and ranges are printed, with ratios measured in the same processes.

    python benchmarks/cold_start.py                 # about a minute
    python benchmarks/cold_start.py --rounds 7 --layer 64
    python benchmarks/cold_start.py --shape 3 64 7 112 2 3   # the 3 -> 64 7x7/2 layer of spmm.py
    python benchmarks/cold_start.py --batch 64      # products of a batch of 64 images
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np
import convmat
from convmat import conv_matrix
from convmat.spmm import _threads, csr_matmul, prefetch
t = dict(import_convmat=time.perf_counter() - start)
cin, cout, k, size, stride, pad = map(int, sys.argv[1].split(","))
case = sys.argv[3]
w = np.random.default_rng(0).standard_normal((cout, cin, k, k)).astype(np.float32)
geometry = dict(padding=pad, stride=stride, dtype=np.float32)
def timed(name, fn):
    t0 = time.perf_counter(); r = fn(); t[name] = time.perf_counter() - t0
    return r
if case == "prefetch":
    timed("prefetch", lambda: prefetch(np.float32))
if case == "npz":  # a matrix read from a file: nothing has imported Numba before the first product
    import scipy.sparse as sp
    C = timed("build1", lambda: sp.load_npz(sys.argv[4]))
    t["build2"] = float("nan")
else:
    C = timed("build1", lambda: conv_matrix(w, (size, size), **geometry))
    timed("build2", lambda: conv_matrix(w, (size, size), **geometry))
t["numba_before_fwd1"] = float("numba" in sys.modules)
rng = np.random.default_rng(1)
nb = int(sys.argv[5])  # columns: one vector, or a batch of images (F-ordered columns, as ConvOperator passes them)
x = rng.standard_normal((nb, C.shape[1])).astype(np.float32).T; y = rng.standard_normal((nb, C.shape[0])).astype(np.float32).T
if nb == 1:
    x, y = x[:, 0].copy(), y[:, 0].copy()
first = [timed("fwd1", lambda: csr_matmul(C, x)), timed("fwd2", lambda: csr_matmul(C, x)),
         timed("tr1", lambda: csr_matmul(C, y, transpose=True)), timed("tr2", lambda: csr_matmul(C, y, transpose=True))]
loader = _threads.LOADER.thread
if loader is not None:
    loader.join()
t["ready"] = time.perf_counter() - start
kern = [timed("fwdK", lambda: csr_matmul(C, x)), timed("trK", lambda: csr_matmul(C, y, transpose=True))]
t["same"] = float(all(a.tobytes() == kern[i // 2].tobytes() for i, a in enumerate(first)))
disp = _threads.load()["fwd_vec"]
t["cache"] = getattr(getattr(disp, "_cache", None), "_cache_path", None)
print(json.dumps(t))
"""

NUMBA = "import time; t0 = time.perf_counter(); import numba; print(time.perf_counter() - t0)"

KEYS = ("import_convmat", "build1", "build2", "fwd1", "fwd2", "tr1", "tr2", "ready", "fwdK", "trK")
CASES = ("cache", "empty", "prefetch", "npz", "npz-empty", "twins", "npz-twins")
#: The issue's target for the first product after install (the cases with the compiled kernels).
TARGET = 0.3


def run(case, spec, npz, batch):
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as d:
        if case.endswith("empty"):
            env["NUMBA_CACHE_DIR"] = d
        if case.endswith("twins"):
            env["CONVMAT_NATIVE"] = "0"
        mode = "npz" if case.startswith("npz") else "cache" if case == "twins" else case
        out = subprocess.run([sys.executable, "-c", CHILD, ",".join(map(str, spec)), "-", mode, npz, str(batch)],
                             env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_matrix(spec, path):
    """The benchmark's matrix, written to ``path`` (the ``npz`` cases read it instead of building it)."""
    import numpy as np
    import scipy.sparse as sp

    from convmat import conv_matrix

    cin, cout, k, size, stride, pad = spec
    w = np.random.default_rng(0).standard_normal((cout, cin, k, k)).astype(np.float32)
    sp.save_npz(path, conv_matrix(w, (size, size), padding=pad, stride=stride, dtype=np.float32), compressed=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="fresh processes per case (default 5)")
    ap.add_argument("--channels", type=int, default=16, help="channels in and out (default 16)")
    ap.add_argument("--layer", type=int, default=64, help="image size (default 64)")
    ap.add_argument("--shape", type=int, nargs=6, metavar=("CIN", "COUT", "K", "SIZE", "STRIDE", "PAD"),
                    help="another layer, e.g. 3 64 7 112 2 3 (instead of --channels and --layer)")
    ap.add_argument("--batch", type=int, default=1,
                    help="columns of the products (default 1: one vector; e.g. 64 for a batch of images)")
    args = ap.parse_args(argv)
    spec = tuple(args.shape) if args.shape else (args.channels, args.channels, 3, args.layer, 1, 1)
    print(f"layer {spec[0]} -> {spec[1]}, {spec[2]} x {spec[2]}/{spec[4]}, {spec[3]} x {spec[3]}, float32; "
          f"products of {args.batch} column(s); {args.rounds} fresh processes per case, medians in ms [min-max]",
          flush=True)
    tmp = tempfile.TemporaryDirectory()
    npz = os.path.join(tmp.name, "C.npz")
    save_matrix(spec, npz)
    run("cache", spec, npz, args.batch)  # fill the cache if it is empty
    results = {case: [] for case in CASES}
    numba_times = []
    for _ in range(args.rounds):
        for case in CASES:
            results[case].append(run(case, spec, npz, args.batch))
        out = subprocess.run([sys.executable, "-c", NUMBA], capture_output=True, text=True, check=True)
        numba_times.append(float(out.stdout.strip()))
    print(f"kernel cache: {results['cache'][0]['cache']}")
    print(f"import numba alone (fresh process): {statistics.median(numba_times) * 1e3:.0f} ms "
          f"[{min(numba_times) * 1e3:.0f}-{max(numba_times) * 1e3:.0f}]\n")
    print(f"{'case':9s} " + " ".join(f"{k:>15s}" for k in KEYS) + f" {'fwd1/fwdK':>9s} {'same':>5s} numba")
    for case, rs in results.items():
        cells = []
        for k in KEYS:
            v = [r[k] * 1e3 for r in rs]
            cell = "-" if v[0] != v[0] else f"{statistics.median(v):6.0f} [{min(v):.0f}-{max(v):.0f}]"
            cells.append(cell.rjust(15))
        ratio = statistics.median(r["fwd1"] / r["fwdK"] for r in rs)
        same = all(r["same"] == 1.0 for r in rs)
        numba = sum(r["numba_before_fwd1"] == 1.0 for r in rs)
        print(f"{case:9s} " + " ".join(cells) + f" {ratio:9.1f} {str(same):>5s} {numba:>3d}/{len(rs)}")
    tmp.cleanup()
    native = [r[k] for case, rs in results.items() if not case.endswith("twins") for r in rs for k in ("fwd1", "tr1")]
    print(f"\nslowest first product (fwd1, tr1) with the compiled kernels, over every process: "
          f"{max(native) * 1e3:.0f} ms; target {TARGET * 1e3:.0f} ms: {'met' if max(native) < TARGET else 'NOT met'}")
    if args.batch > 1:  # a batch product may itself take longer than the target: its first-use cost is the excess
        extra = [r[a] - r[b] for case, rs in results.items() if not case.endswith("twins") for r in rs
                 for a, b in (("fwd1", "fwdK"), ("tr1", "trK"))]
        print(f"slowest excess of a first product over the same product once the loader is done (fwd1 - fwdK, "
              f"tr1 - trK): {max(extra) * 1e3:.0f} ms; target {TARGET * 1e3:.0f} ms: "
              f"{'met' if max(extra) < TARGET else 'NOT met'}")
    print("\nfwd1 / tr1: first product / first transposed product in a process (compiled kernels, or NumPy twins in "
          "the twins cases, while Numba loads); "
          "fwd2 / tr2: the next ones; ready: process start until the kernels are loaded; fwdK / trK: the first "
          "products on the kernels; same: every product gave the same bits before and after; numba: processes in which "
          "Numba was imported before the first product (by the build).  npz: the matrix read from a file "
          "(scipy.sparse.load_npz, in build1), no build.")


if __name__ == "__main__":
    main()

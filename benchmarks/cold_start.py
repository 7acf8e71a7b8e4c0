"""First use: the cost of the first build and the first product in a fresh process.

Starts ``--rounds`` fresh Python processes per case and, in each, times

* ``import convmat`` (Numba is not imported by it),
* the first ``conv_matrix`` of a layer (cold) and a second one of the same
  layer (warm),
* the first ``csr_matmul(C, x)`` (one vector, float32): it imports Numba
  (timed alone, ``numba``) and loads the kernels from Numba's on-disk cache,
  or compiles them when the cache is empty; then a second product (warm),
* the first transposed product ``csr_matmul(C, y, transpose=True)`` (another
  kernel: another cache load or compilation) and a warm one.

Cases: ``cache`` uses Numba's cache where convmat's kernels normally keep it
(next to ``convmat/spmm/_kernels.py`` in ``__pycache__``, or Numba's user
cache directory when that is read-only; the location is printed); ``empty``
points ``NUMBA_CACHE_DIR`` at a new empty directory for every process (the
first run after installing).  The cases alternate; medians are printed, with
``first / warm`` ratios measured in the same processes.

    python benchmarks/cold_start.py                 # about a minute
    python benchmarks/cold_start.py --rounds 5 --layer 64
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
t0 = time.perf_counter()
import numpy as np
import convmat
from convmat import conv_matrix
from convmat.spmm import csr_matmul
t_import = time.perf_counter() - t0
c, size = int(sys.argv[1]), int(sys.argv[2])
w = np.random.default_rng(0).standard_normal((c, c, 3, 3)).astype(np.float32)
t0 = time.perf_counter()
C = conv_matrix(w, (size, size), padding=1, dtype=np.float32)
t_build1 = time.perf_counter() - t0
t0 = time.perf_counter(); conv_matrix(w, (size, size), padding=1, dtype=np.float32); t_build2 = time.perf_counter() - t0
x = np.ones(C.shape[1], np.float32); y = np.ones(C.shape[0], np.float32)
t0 = time.perf_counter(); import numba; t_numba = time.perf_counter() - t0
t0 = time.perf_counter(); csr_matmul(C, x); t_fwd1 = time.perf_counter() - t0
t0 = time.perf_counter(); csr_matmul(C, x); t_fwd2 = time.perf_counter() - t0
t0 = time.perf_counter(); csr_matmul(C, y, transpose=True); t_tr1 = time.perf_counter() - t0
t0 = time.perf_counter(); csr_matmul(C, y, transpose=True); t_tr2 = time.perf_counter() - t0
from convmat.spmm import _threads
disp = _threads.load()["fwd_vec"]
cache = getattr(getattr(disp, "_cache", None), "_cache_path", None)
print(json.dumps(dict(import_convmat=t_import, build1=t_build1, build2=t_build2, numba=t_numba,
                      fwd1=t_fwd1, fwd2=t_fwd2, tr1=t_tr1, tr2=t_tr2, cache=cache)))
"""

KEYS = ("import_convmat", "build1", "build2", "numba", "fwd1", "fwd2", "tr1", "tr2")


def run(case, channels, size):
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as d:
        if case == "empty":
            env["NUMBA_CACHE_DIR"] = d
        out = subprocess.run([sys.executable, "-c", CHILD, str(channels), str(size)], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per case (default 3)")
    ap.add_argument("--channels", type=int, default=16, help="channels in and out (default 16)")
    ap.add_argument("--layer", type=int, default=64, help="image size (default 64)")
    args = ap.parse_args(argv)
    print(f"layer {args.channels} -> {args.channels}, 3 x 3, {args.layer} x {args.layer}, float32; "
          f"{args.rounds} fresh processes per case, medians in ms", flush=True)
    run("cache", args.channels, args.layer)  # fill the cache if it is empty
    results = {"cache": [], "empty": []}
    for _ in range(args.rounds):
        for case in results:
            results[case].append(run(case, args.channels, args.layer))
    print(f"kernel cache: {results['cache'][0]['cache']}\n")
    print(f"{'case':6s} " + " ".join(f"{k:>14s}" for k in KEYS) + f" {'build1/2':>9s} {'fwd1/2':>8s}")
    for case, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in KEYS}
        print(f"{case:6s} " + " ".join(f"{med[k] * 1e3:14.1f}" for k in KEYS)
              + f" {med['build1'] / med['build2']:9.2f} {med['fwd1'] / med['fwd2']:8.1f}")
    print("\nfwd1 / tr1: first product / first transposed product in a process (numba: its import alone, "
          "before fwd1; fwd1 includes loading or compiling the kernel); fwd2 / tr2: the next ones.")


if __name__ == "__main__":
    main()

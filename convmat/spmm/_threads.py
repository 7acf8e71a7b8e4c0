"""The thread pool of :mod:`convmat.spmm` and the compiled kernels (Numba loaded on first use).

A product runs its blocks on the calling thread and on one process-wide
:class:`~concurrent.futures.ThreadPoolExecutor` (grown on demand, remade in a
forked child).  Workers take the next block when free (:func:`parallel`), so
the *tasks* must not depend on which worker runs them: every block writes its
own rows of the result, or its own partial result.

Loading Numba (its import alone takes about a quarter of a second) happens on
a background daemon thread (:data:`LOADER`, a :class:`convmat._loader.Loader`,
the mechanism the compiled fill shares), started by :func:`prefetch` or by the
first product.  Until the kernels of a product's signature are loaded
(:func:`ready`), products are computed by the kernels compiled ahead of time
(:mod:`convmat.spmm._native`), or for one vector by their NumPy twins
(:mod:`convmat.spmm._twins`), the same bits, and start the loader when
they are done (the loader holds the GIL most of the time: a product running
next to it waits for the interpreter at each NumPy call); other products
wait for Numba (:func:`wait`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._loader import Loader

__all__ = ["load", "ready", "wait", "prefetch", "default_threads", "parallel", "parallel_blocks"]

_LOCK = threading.Lock()
_STATE = {"pool": None, "pool_pid": None, "pool_size": 0}


def _make():
    """Import Numba and make the dispatchers of the kernels (compiled per signature on first call)."""
    import numba

    from ._kernels import compile_kernels

    return compile_kernels(numba)


def _like(desc):
    """A small array of the dtype, contiguity and writeability described (Numba types it as the original)."""
    dtype, contiguous, writeable, ndim = desc
    a = np.zeros((4,) * ndim, dtype=dtype)
    if not contiguous:
        a = a[::2]
    a.flags.writeable = writeable
    return a


def _warm(kernels, key):
    """Load (or compile) the kernels of signature ``key`` (one vector, or several columns) by calling them on empty ranges."""
    transpose, indptr, indices, data, x, y = (key[0], *map(_like, key[1:]))
    zero = y.dtype.type(0)
    if x.ndim == 2:  # several columns: the kernels and helpers of convmat.spmm._products._product_mat
        order = np.zeros(4, dtype=np.int64)
        kernels["row_keys"](indptr, indices, np.int64(1), np.zeros(4, dtype=np.int64), 0, 0)
        kernels["transpose_into"](x, y, 0, 0)
        if transpose:
            kernels["tr_mat"](indptr, indices, data, x, y, order, 0, 0, zero, False)
            kernels["reduce"](y.reshape(-1), np.zeros((1, y.size), y.dtype), 0, 0)
        else:
            kernels["fwd_mat"](indptr, indices, data, x, y, order, 0, 0, zero)
        return
    if transpose:
        kernels["tr_vec"](indptr, indices, data, x, y, 0, 0, zero, False)
        kernels["tr_vec4"](indptr, indices, data, x, y, 1, 0, 0, zero, False)
        kernels["reduce"](y, np.zeros((1, y.size), y.dtype), 0, 0)
    else:
        kernels["fwd_vec"](indptr, indices, data, x, y, 0, 0, zero)


#: The background loader of the products' kernels (signatures warmed by :func:`_warm`).
LOADER = Loader("spmm", _make, _warm)


def signature(transpose, indptr, indices, data, x, y):
    """The key of a product's kernels: direction and (dtype, contiguous, writeable, ndim) of each array.

    ``x`` and ``y`` are the vector and the result of a one-vector product, or, for several columns,
    arrays like the row-major operand and result (:func:`convmat.spmm._products._rowmajor`).
    """
    arrays = (indptr, indices, data, x, y)
    return (bool(transpose),) + tuple((a.dtype.str, bool(a.flags.c_contiguous), bool(a.flags.writeable), a.ndim)
                                      for a in arrays)


def ready(key):
    """The kernels if those of signature ``key`` are loaded, else None (the caller computes with the compiled or NumPy twins).

    Never waits, and starts nothing: the caller calls :func:`prefetch` with ``key`` once its product is
    done, so that the first product does not share the interpreter with the loader.
    """
    return LOADER.ready(key)


def prefetch(key=None):
    """Start loading Numba (and the kernels of signature ``key``) in the background; returns at once."""
    LOADER.start(key)


def wait(key):
    """The kernels of signature ``key``, loaded by the loader while this thread waits (None without Numba)."""
    return LOADER.wait(key)


def load():
    """The compiled kernels (a dict by name), or None when Numba cannot be imported; waits for the loader."""
    return LOADER.load()


def default_threads() -> int:
    """The number of usable cores, ``len(os.sched_getaffinity(0))``.

    Examples
    --------
    >>> from convmat.spmm import default_threads
    >>> default_threads() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _pool(workers):
    """The worker threads (one process-wide pool, grown on demand, remade after fork)."""
    with _LOCK:
        pid = os.getpid()
        if _STATE["pool_pid"] != pid or _STATE["pool_size"] < workers:
            old = _STATE["pool"] if _STATE["pool_pid"] == pid else None
            _STATE["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convmat-spmm")
            _STATE["pool_pid"], _STATE["pool_size"] = pid, workers
            if old is not None:
                old.shutdown(wait=False)
        return _STATE["pool"]


def _after_fork_in_child():
    # The parent's pool threads do not exist here, and another thread may have held the lock (the
    # loader's own fork handling is in convmat._loader).
    global _LOCK
    _LOCK = threading.Lock()
    _STATE.update(pool=None, pool_pid=None, pool_size=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run(work, threads):
    """``work(w)`` for ``w`` in ``range(threads)``; worker 0 is the calling thread."""
    if threads == 1:
        work(0)
        return
    futures = [_pool(threads - 1).submit(work, w) for w in range(1, threads)]
    try:
        work(0)
    finally:
        for f in futures:  # wait for every worker (they write into our arrays) before returning or raising
            f.result()


def parallel_blocks(task, bounds, threads, smallest=4):
    """``task(b, r0, r1, first)`` over consecutive pieces ``[r0, r1)`` of every block ``[bounds[b], bounds[b+1])``.

    The pieces of a block run in order and never two at once, whichever worker runs them, so a
    task that adds a block's rows into the block's own result gives the bits of one call over
    the block (``first`` marks its first piece).  A free worker takes the next piece of the free
    block with the most rows left, half of them, at least ``1 / smallest`` of the block: the
    blocks end nearly together instead of one worker finishing the last block alone.  An empty
    block runs once too, ``task(b, r, r, True)``: it may have a result to clear.
    """
    nb = len(bounds) - 1
    threads = max(1, min(threads, nb))
    if threads == 1:
        for b in range(nb):
            task(b, bounds[b], bounds[b + 1], True)
        return
    for b in range(nb):
        if bounds[b + 1] == bounds[b]:
            task(b, bounds[b], bounds[b], True)
    nxt = list(bounds[:-1])
    least = [max(1, (bounds[b + 1] - bounds[b]) // smallest) for b in range(nb)]
    busy = [False] * nb
    lock = threading.Lock()

    def work(w):
        b = None
        while True:
            with lock:
                if b is not None:
                    busy[b] = False
                b, left = None, 0
                for c in range(nb):
                    if not busy[c] and bounds[c + 1] - nxt[c] > left:
                        b, left = c, bounds[c + 1] - nxt[c]
                if b is None:
                    return
                busy[b] = True
                r0 = nxt[b]
                r1 = nxt[b] = r0 + min(left, max(least[b], left // 2))
            task(b, r0, r1, r0 == bounds[b])

    _run(work, threads)


def parallel(task, nchunks, threads):
    """``task(worker, chunk)`` for every chunk, on ``threads`` workers (worker 0 is the calling thread).

    Workers take the next chunk as they become free, so a thread slowed down by another
    process does not hold the others up.  Only for tasks whose result does not depend on
    the worker that runs them (``worker`` is for per-worker scratch space).
    """
    threads = max(1, min(threads, nchunks))
    chunks = iter(range(nchunks))  # next() on it is atomic under the GIL

    def work(w):
        for c in chunks:
            task(w, c)

    _run(work, threads)

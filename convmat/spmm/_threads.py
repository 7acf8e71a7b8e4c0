"""The thread pool of :mod:`convmat.spmm` and the compiled kernels (Numba imported on first use).

A product runs its blocks on the calling thread and on one process-wide
:class:`~concurrent.futures.ThreadPoolExecutor` (grown on demand, remade in a
forked child).  Workers take the next block when free (:func:`parallel`), so
the *tasks* must not depend on which worker runs them: every block writes its
own rows of the result, or its own partial result.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["load", "default_threads", "parallel"]

_LOCK = threading.Lock()
_STATE = {"kernels": None, "error": None, "pool": None, "pool_pid": None, "pool_size": 0}


def load():
    """The compiled kernels (a dict by name), or None when Numba cannot be imported."""
    if _STATE["kernels"] is None and _STATE["error"] is None:
        with _LOCK:
            if _STATE["kernels"] is None and _STATE["error"] is None:
                try:
                    import numba
                except ImportError as exc:
                    _STATE["error"] = exc
                    return None
                from ._kernels import compile_kernels

                _STATE["kernels"] = compile_kernels(numba)
    return _STATE["kernels"]


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
    # The parent's pool threads do not exist here, and another thread may have held the lock.
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

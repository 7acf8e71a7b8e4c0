"""Running a product's tasks on a Dask cluster through the loss of workers (used by :mod:`convmat.dask`).

A product sends its operands (halos of ``x``, slabs of ``y``) with
``Client.scatter``: the data goes to the worker that holds or builds the
slab, once.  Scattered data has no recipe, so the scheduler cannot recompute
it: when a worker dies, the operands it held are gone, and every task that
reads them -- running, waiting or already finished there -- is cancelled
("lost scattered data, which can't be recovered"; Dask's ``retries=`` does
not apply: it reruns tasks that raised, not tasks whose inputs are lost).
Kept slabs are tasks, and the scheduler rebuilds them from the plan by
itself.  So the client, which holds the operands, sends again what was lost
and submits those tasks again: :func:`run` does it for each task of a
product, at most :data:`RESUBMITS` times, so a worker killed during a product
costs time, never the product, and every task computes the same bits
wherever it runs.

A product does not hang on a cluster without workers: after
``no_workers_timeout`` seconds with none, it raises ``RuntimeError``; a
closed client raises at once.
"""

from __future__ import annotations

import collections
import queue
import time
from concurrent.futures import CancelledError

__all__ = ["check_client", "workers", "run", "RESUBMITS", "POLL"]

#: How many times one task of a product is submitted again after losing its operands with a worker.
RESUBMITS = 3
#: Seconds between two looks at the cluster while a product waits for its tasks.
POLL = 0.5

_LOST = object()


def check_client(client):
    """Refuse a client that is not running (closed, or cut from its scheduler)."""
    status = getattr(client, "status", None)
    if status != "running":
        raise RuntimeError(
            f"the dask client is not running (status {status!r}); DaskConvOperator needs a connected "
            f"distributed.Client: create a new one and a new operator"
        )


def workers(client):
    """``{address: memory limit in bytes or None}`` of the cluster's workers (may be empty)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before 2025.x: every worker, always
        info = client.scheduler_info()
    return {a: (int(v.get("memory_limit") or 0) or None) for a, v in info["workers"].items()}


def _still_running(client, since, timeout, what):
    """Raise when the client stopped, or the cluster has had no workers for ``timeout`` s; the new ``since``."""
    check_client(client)
    if workers(client):
        return None
    now = time.monotonic()
    since = now if since is None else since
    if now - since > timeout:
        raise RuntimeError(
            f"the dask cluster has had no workers for {timeout:g} s (no_workers_timeout): {what} cannot run; "
            f"start workers, or make a new client and operator"
        )
    return since


def _values(client, futures):
    """The results of finished futures (``_LOST`` for those whose data was lost meanwhile)."""
    try:
        return client.gather(futures)
    except CancelledError:
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except CancelledError:
                out.append(_LOST)
        return out


def run(client, n, submit, done, *, gather, timeout, what, order=None, window=None):
    """Run tasks ``0 .. n-1`` until each is done, submitting again those whose operands a dead worker took.

    Parameters
    ----------
    client : distributed.Client
    n : int
    submit : callable
        ``submit(indices)`` sends the operands of those tasks and returns their futures (in order); it
        may raise ``KeyError``, ``OSError`` or ``TimeoutError`` when a worker dies under it (it is called
        again).
    done : callable
        ``done(i, value)`` for each task, once: its result (``gather=True``, fetched to this process
        ``window`` results per call) or its finished future (once all have finished).
    timeout : float
        Seconds to wait while the cluster has no workers.
    what : str
        The product, for messages.
    order : sequence of int, optional
        The order to submit the tasks in (default ``0 .. n-1``).
    window : int, optional
        The most tasks submitted and not finished at once (default ``n``): bounds the operands
        (and, with ``gather``, the results) that the workers hold.

    Raises
    ------
    RuntimeError
        The client stopped; no workers for ``timeout`` s; a task lost its operands more than
        :data:`RESUBMITS` times.
    Exception
        A task's own error, as the worker raised it.
    """
    arrived = queue.SimpleQueue()
    tries = [0] * n
    since = None
    waiting = collections.deque(range(n) if order is None else order)  # not submitted yet, or lost
    window = n if window is None else max(1, int(window))
    finished = {}  # finished, not handed to ``done`` yet
    flying, left = 0, n

    def start(indices):
        nonlocal since
        while True:
            since = _still_running(client, since, timeout, what)
            if since is None:  # workers are there
                try:
                    futures = submit(indices)
                    break
                except (KeyError, OSError, TimeoutError):  # a worker named in the placement died: place again
                    pass
            time.sleep(POLL)
        for i, f in zip(indices, futures):
            f.add_done_callback(lambda f, i=i: arrived.put((i, f)))

    def lose(i):
        tries[i] += 1
        if tries[i] > RESUBMITS:
            raise RuntimeError(f"{what}: task {i} lost its operands with a worker {tries[i]} times; giving up")
        waiting.appendleft(i)

    def hand_on():
        nonlocal left
        idx = sorted(finished)
        futures = [finished.pop(i) for i in idx]
        for i, v in zip(idx, _values(client, futures) if gather else futures):
            if v is _LOST:  # its data went with a worker after it finished
                lose(i)
            else:
                done(i, v)
                left -= 1

    while left:
        if waiting and flying < window:
            indices = [waiting.popleft() for _ in range(min(window - flying, len(waiting)))]
            start(indices)
            flying += len(indices)
        if not flying:
            hand_on()
            continue
        try:
            batch = [arrived.get(timeout=POLL)]
        except queue.Empty:
            since = _still_running(client, since, timeout, what)
            continue
        while not arrived.empty():
            batch.append(arrived.get())
        for i, f in batch:
            flying -= 1
            if f.status == "finished":
                finished[i] = f
            elif f.status == "error":
                f.result()  # the task's own exception
            else:
                lose(i)
        if gather and len(finished) >= window:  # results fetched a window at a time, not piled up on the workers
            hand_on()

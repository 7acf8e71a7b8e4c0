"""DaskConvOperator: a convolution layer whose matrix lives on the workers of a Dask cluster.

Needs ``dask.distributed`` (``pip install "convmat[dask]"``); ``import convmat``
does not import it.

The matrix is cut into *slabs* (:func:`convmat.blocks.slabs`): the rows of
every output channel at a range of output positions, with columns
renumbered onto the input positions they read.  Each slab is built on a
worker from the plan and the weight -- the weight travels, the matrix never
does -- and kept there (``keep=True``), or rebuilt on the workers at every
product when the cluster's memory is smaller than the matrix
(``keep=False``; each worker thread then builds its slabs into one buffer of
at most ``block_bytes`` that it keeps between products, so rebuilding costs no
page faults; a product is fused instead, rows built into a
cache-sized scratch and multiplied there, :func:`convmat.assemble.fused_matvec`
(one vector) and :func:`convmat.assemble.fused_matmat` (a batch),
once the worker has loaded the compiled fill).

A worker may die at any time: a kept slab lost with it is rebuilt from the
plan by the scheduler, and the operands of a product it held (scattered,
so not recomputable) are sent again by this process, which submits those
slabs' tasks again (:mod:`convmat._dask_run`): the product completes, with
the same bits.  A closed client, or a cluster without workers for
``no_workers_timeout`` seconds, is a ``RuntimeError``, not a hang.

Forward ``y = C x``: each slab receives only its *halo* of ``x`` (every input
channel at the positions ``[f0, f1)`` it reads) and returns its rows; each
row is one row kernel of :func:`convmat.spmm.csr_matmul`, so ``y`` has the
bits of the stored operator's product.  Adjoint ``x = C^H y``: each slab
returns its partial sum on its own input range, and the partial sums are
added along a fixed tree (:func:`convmat.blocks.tree_order`), whatever worker
finishes first: on the workers within groups of consecutive slabs (subtrees
of about ``block_bytes``), in this process above them -- the same bits as
:func:`convmat.blocks.reduce_partials` computes in one process, on every run.
A forward product sends its halos a few slabs per worker at a time (about
``block_bytes`` of them per worker), so the workers' memory holds a
product's operands whatever the batch.

Communication per product, ``N`` columns of ``itemsize`` bytes: forward, the
halos ``sum_slabs C_in (f1 - f0) N itemsize`` to the workers and ``y`` back;
adjoint, the slabs of ``y`` out and the groups' partial sums back
(``sum_groups C_in (f1 - f0) N itemsize``, about ``x``).
"""

from __future__ import annotations

import itertools
import threading
import uuid

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import blocks as _b
from . import fill
from ._dask_run import check_client as _check_client
from ._dask_run import run as _run
from ._dask_run import workers as _alive
from .assemble import fused_matmat, fused_matvec
from .memory import MatrixTooLargeError, human
from ._operator_parts import plan_from_keywords
from .streamed import host_weight

__all__ = ["DaskConvOperator", "BLOCK_FRACTION", "KEEP_FRACTION", "NO_WORKERS_TIMEOUT"]

#: Default ``block_bytes``: this fraction of the smallest worker memory limit (room for the
#: building temporaries, the halo, the result and Dask's own use).
BLOCK_FRACTION = 0.125
#: ``keep=None`` keeps the slabs when each worker's share is at most this fraction of its memory limit.
KEEP_FRACTION = 0.5
#: ``block_bytes`` when the workers have no memory limit.
DEFAULT_BLOCK_BYTES = 256 << 20
#: Default ``no_workers_timeout``: seconds a product waits for a cluster that has no workers.
NO_WORKERS_TIMEOUT = 60.0

_COUNTER = itertools.count()


def _distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ImportError('convmat.dask needs dask.distributed: pip install "convmat[dask]"') from exc
    return distributed


def _recipe(plan, w):
    """What a worker builds slabs from: a task (recomputed if lost), fetched once by each worker."""
    return plan, w


def _build(recipe, slab, threads):
    plan, w = recipe
    return _b.build_slab(plan, w, slab, w.dtype, threads=threads)


def _forward(B, halo, R, threads):
    return _b.slab_forward(B, halo, R, threads)


_LOCAL = threading.local()  # each worker thread's slab buffer (streamed slabs are built into it)


def _build_streamed(plan, w, slab, threads):
    """A slab built into this worker thread's buffer (no page faults after the first): used and dropped."""
    need = _b.slab_buffer_nbytes(plan, [slab], w.dtype)
    buffer = getattr(_LOCAL, "buffer", None)
    if buffer is None or buffer.nbytes < need:
        _LOCAL.buffer = buffer = None
        _LOCAL.buffer = buffer = np.empty(need, dtype=np.uint8)
    return _b.build_slab(plan, w, slab, w.dtype, threads=threads, buffer=buffer)


def _forward_streamed(recipe, slab, halo, threads, max_bytes):
    """A rebuilt slab's forward product, fused (rows built in a cache-sized scratch and multiplied there,
    the slab never stored) once this worker has loaded the compiled fill, the same bits."""
    plan, w = recipe
    N, R = halo.shape[0], plan.output_shape[0]
    fill.kernel(w.dtype, np.int32)  # start loading the compiled fill on this worker (never waits)
    dtype = np.result_type(w.dtype, halo.dtype)
    H = np.ascontiguousarray(np.transpose(halo, (1, 2, 0)), dtype=dtype).reshape(-1 if N else 0, N)  # (C_in L, N)
    Y = None if N == 0 else (fused_matvec if N == 1 else fused_matmat)(plan, w, H.reshape(-1) if N == 1 else H,
                                                                       threads, max_bytes, slab=slab)
    if Y is not None:
        return np.ascontiguousarray(Y.reshape(-1, N).T).reshape(N, R, -1)
    return _b.slab_forward(_build_streamed(plan, w, slab, threads), halo, R, threads)


def _adjoint(B, slab, y_part, threads):
    return _b.slab_adjoint(B, slab, y_part, threads)


def _adjoint_streamed(recipe, slab, y_part, threads):
    plan, w = recipe
    return _b.slab_adjoint(_build_streamed(plan, w, slab, threads), slab, y_part, threads)


def _tree(parts, n, combine):
    """The pairs of :func:`convmat.blocks.tree_order` ``(n)`` with both sides in ``parts`` (``{slab: partial sum}``),
    each ``parts[i] = combine(parts[i], parts[j])``, in its order: a subtree's (or the tree above them) share of it."""
    for level in _b.tree_order(n):
        for i, j in level:
            if i in parts and j in parts:
                parts[i] = combine(parts[i], parts.pop(j))
    return parts


def _on(worker):
    """Placement keywords: prefer ``worker`` (None: anywhere), never require it."""
    return {} if worker is None else {"workers": [worker], "allow_other_workers": True}


def _send(c, parts, where, timeout):
    """Operands to the workers: NumPy arrays scattered to ``where`` (one call per worker), Dask arrays computed there."""
    out = [None] * len(parts)
    groups = {}
    for i, (p, w) in enumerate(zip(parts, where)):
        if hasattr(p, "dask"):
            out[i] = c.compute(p, **_on(w))
        else:
            groups.setdefault(w, []).append(i)
    for w, idx in groups.items():
        futures = c.scatter([np.ascontiguousarray(parts[i]) for i in idx], hash=False, timeout=timeout,
                            **({} if w is None else {"workers": [w]}))
        for i, f in zip(idx, futures):
            out[i] = f
    return out


def _kind(x, out):
    if out is None:
        return "dask" if hasattr(x, "dask") else "numpy"
    if out not in ("numpy", "dask"):
        raise ValueError(f"out must be 'numpy', 'dask' or None (the input's kind), got {out!r}")
    return out


def _as_images(x, shape, name):
    """``x`` as ``(N, C, F)`` (NumPy or Dask), and whether it was batched."""
    if not hasattr(x, "dask"):
        x = np.asarray(x)
    if tuple(x.shape) == tuple(shape):
        return x.reshape((1, shape[0], -1)), False
    if len(x.shape) == len(shape) + 1 and tuple(x.shape[1:]) == tuple(shape):
        return x.reshape((x.shape[0], shape[0], int(np.prod(shape[1:])))), True
    raise ValueError(f"{name} must have shape {tuple(shape)} or (N, {', '.join(map(str, shape))}), "
                     f"got {tuple(x.shape)}")


def _layout(client, plan, dtype, block_bytes, keep):
    """Slabs, the worker each is built on, whether they are kept, and ``block_bytes``; refusals before building."""
    workers = _alive(client)
    if not workers:
        raise RuntimeError("the dask cluster has no workers")
    limits = [v for v in workers.values() if v]
    limit = min(limits) if limits else None
    if block_bytes is None:
        block_bytes = DEFAULT_BLOCK_BYTES if limit is None else max(1, int(limit * BLOCK_FRACTION))
    slabs = _b.slabs(plan, dtype, block_bytes)
    sizes = [_b.slab_nbytes(plan, dtype, j0, j1, (f0, f1)) for j0, j1, f0, f1 in slabs]
    if limit is not None:
        _b.check_block_fits(max(sizes), limit, "the smallest worker memory limit", int(limit * BLOCK_FRACTION))
    addrs = sorted(workers)
    S, W = len(slabs), len(addrs)
    home = [addrs[i * W // S] for i in range(S)]  # neighbouring slabs on one worker
    share = max(sum(s for s, h in zip(sizes, home) if h == a) for a in addrs)
    fits = limit is None or share <= KEEP_FRACTION * limit
    if keep and not fits:
        raise MatrixTooLargeError(
            f"keep=True needs {human(share)} of slabs on one worker, more than {KEEP_FRACTION} of its memory "
            f"limit ({human(limit)}); use keep=False (slabs rebuilt at every product) or more workers"
        )
    return slabs, home, (fits if keep is None else bool(keep)), int(block_bytes)


class DaskConvOperator(LinearOperator):
    """A convolution layer as a SciPy ``LinearOperator`` whose matrix is built and applied on a Dask cluster.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size) or (C_in, C_out/groups, *kernel_size)
        As :class:`~convmat.ConvOperator`; NumPy or array-like (it is sent to the workers).
    in_shape : tuple of int
    client : distributed.Client
        A running client of the cluster.
    block_bytes : int, optional
        The most bytes of one slab; default ``BLOCK_FRACTION`` of the smallest
        worker memory limit (256 MiB without limits).
    keep : bool, optional
        Keep the slabs on the workers (built once), or rebuild them at every
        product.  Default: keep when each worker's share of the matrix is at
        most ``KEEP_FRACTION`` of its memory limit.
    threads : int
        Threads of each slab's build and product on its worker.  The
        adjoint's bits depend on it (the forward's do not).
    stride, padding, dilation, groups, padding_mode, transposed, output_padding, output_size, dtype, bias
        As :class:`~convmat.ConvOperator`.
    no_workers_timeout : float
        Seconds a product waits while the cluster has no workers before it
        raises ``RuntimeError`` (default ``NO_WORKERS_TIMEOUT``).

    Attributes
    ----------
    plan : ConvPlan
    slabs : list of (j0, j1, f0, f1)
        Output positions ``[j0, j1)`` (every output channel) and the input positions ``[f0, f1)`` they read.
    keep : bool
    in_shape, out_shape, shape, dtype, bias

    Raises
    ------
    TypeError
        ``client`` is not a ``distributed.Client``.
    RuntimeError
        The client is closed (here and at every product); the cluster has had
        no workers for ``no_workers_timeout`` seconds during a product.
    MatrixTooLargeError
        A slab would be larger than a worker's memory limit (before anything
        is built); ``keep=True`` for a matrix larger than the cluster holds.

    Notes
    -----
    :meth:`apply` and :meth:`apply_adjoint` take NumPy or Dask arrays of
    images and return the same kind (``out='numpy'`` or ``out='dask'`` to
    choose); ``matvec``/``matmat``/``rmatvec``/``rmatmat`` take NumPy columns,
    so ``scipy.sparse.linalg.lsqr`` and :func:`convmat.adjoint_test` run on it.
    A forward product's Dask array for NumPy input holds results on the
    workers computed from scattered operands: a worker lost after the
    product returned takes its pieces with it (``out='numpy'`` is safe from
    that).  The adjoint's result is made in this process (its Dask array
    wraps it).
    The client process holds halos and results, never a slab.
    """

    def __init__(self, weight, in_shape, *, client, block_bytes=None, keep=None, threads=1, stride=1, padding=0,
                 dilation=1, groups=1, padding_mode="zeros", transposed=False, output_padding=0, output_size=None,
                 dtype=None, bias=None, no_workers_timeout=NO_WORKERS_TIMEOUT):
        dist = _distributed()
        if not isinstance(client, dist.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}: {client!r:.80}")
        self.client = client
        _check_client(self.client)
        if keep is not None and not isinstance(keep, (bool, np.bool_)):
            raise TypeError(f"keep must be True, False or None, got {keep!r}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if isinstance(no_workers_timeout, bool) or not isinstance(no_workers_timeout, (int, float, np.integer, np.floating)) \
                or not no_workers_timeout > 0:
            raise ValueError(f"no_workers_timeout must be a number of seconds > 0, got {no_workers_timeout!r}")
        self.no_workers_timeout = float(no_workers_timeout)
        w = host_weight(weight, dtype)
        plan = plan_from_keywords(w, in_shape, transposed=transposed, stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, padding_mode=padding_mode,
                                  output_padding=output_padding, output_size=output_size)
        if tuple(w.shape) != tuple(plan.weight_shape):
            raise ValueError(f"weight must have shape {plan.weight_shape} for this plan, got {tuple(w.shape)}")
        self.plan, self._w, self.threads = plan, w, int(threads)
        self.in_shape, self.out_shape = tuple(plan.input_shape), tuple(plan.output_shape)
        if bias is not None:
            bias = np.array(bias, dtype=w.dtype)
            if bias.shape != (self.out_shape[0],):
                raise ValueError(f"bias must have shape ({self.out_shape[0]},), got {bias.shape}")
        self.bias = bias
        super().__init__(w.dtype, plan.shape)

        self.slabs, self._home, self.keep, self.block_bytes = _layout(client, plan, w.dtype, block_bytes, keep)
        self._tag = f"convmat-{uuid.uuid4().hex[:8]}-{next(_COUNTER)}"
        self._blocks = None
        self._recipe = client.submit(_recipe, plan, w, key=f"{self._tag}-recipe")  # the weight travels once
        if self.keep:
            self._blocks = [
                client.submit(_build, self._recipe, slab, self.threads, key=f"{self._tag}-slab-{i}",
                              workers=[self._home[i]], allow_other_workers=True)
                for i, slab in enumerate(self.slabs)
            ]

    # ------------------------------------------------------------------ #
    @property
    def nnz(self) -> int:
        return int(self.plan.nnz)

    @property
    def blocks(self):
        """The futures of the kept slabs (None with ``keep=False``); never gathered to this process."""
        return self._blocks

    def _where(self):
        """The worker to send each slab's operand to: where the slab is now (or will be built); None: anywhere."""
        if not self.keep:
            alive = set(_alive(self.client))
            return [h if h in alive else None for h in self._home]
        who = self.client.who_has(self._blocks)
        return [(sorted(who.get(f.key, ())) or [None])[0] for f in self._blocks]

    def _tasks(self, operands, task):
        """``submit(indices)`` for :func:`convmat._dask_run.run`: each slab's operand sent where the slab is,
        then ``fn(*args)`` for ``fn, args = task(i, operand future)``, one ``Client.map`` per worker."""

        def submit(indices):
            where = self._where()
            sent = _send(self.client, [operands[i] for i in indices], [where[i] for i in indices],
                         self.no_workers_timeout)
            groups, out = {}, {}
            for i, op in zip(indices, sent):
                fn, args = task(i, op)
                groups.setdefault((fn, where[i]), []).append((i, args))
            for (fn, w), items in groups.items():
                futures = self.client.map(fn, *zip(*[args for _, args in items]), pure=False, **_on(w))
                out.update(zip([i for i, _ in items], futures))
            return [out[i] for i in indices]

        return submit

    def _run(self, n, submit, done, gather, what, home=None, per_worker=None):
        """Run a product's tasks; with ``home`` (each task's worker), at most ``per_worker`` tasks of
        each worker submitted and not finished at once, the workers' tasks interleaved."""
        order = window = None
        if home is not None:
            homes = sorted(set(home))
            first = {h: home.index(h) for h in homes}
            order = sorted(range(n), key=lambda i: (i - first[home[i]], homes.index(home[i])))
            window = len(homes) * per_worker
        _run(self.client, n, submit, done, gather=gather, timeout=self.no_workers_timeout,
             what=f"the {what} product ({len(self.slabs)} slabs)", order=order, window=window)

    # ------------------------------------------------------------------ #
    # products on images (N, C, F): NumPy or Dask in, NumPy or Dask out
    # ------------------------------------------------------------------ #
    def _forward_task(self, i, halo):
        if self.keep:
            return _forward, (self._blocks[i], halo, self.out_shape[0], self.threads)
        return _forward_streamed, (self._recipe, self.slabs[i], halo, self.threads, self.block_bytes)

    def _forward_images(self, x3, kind, dtype):
        """``C x3``: images ``(N, R, O)``, NumPy (gathered once all slabs finished) or Dask (their futures)."""
        _check_client(self.client)
        N, R, O = x3.shape[0], self.out_shape[0], int(np.prod(self.out_shape[1:]))
        submit = self._tasks([x3[:, :, f0:f1] for _, _, f0, f1 in self.slabs], self._forward_task)
        if kind == "dask":
            import dask.array as da

            futures = [None] * len(self.slabs)
            self._run(len(self.slabs), submit, futures.__setitem__, False, "forward")
            return da.concatenate([da.from_delayed(f, shape=(N, R, j1 - j0), dtype=dtype)
                                   for f, (j0, j1, _, _) in zip(futures, self.slabs)], axis=2)
        out = np.empty((N, R, O), dtype=dtype)

        def done(i, y):
            out[:, :, self.slabs[i][0] : self.slabs[i][1]] = y

        halo = [N * x3.shape[1] * (f1 - f0) * x3.dtype.itemsize for _, _, f0, f1 in self.slabs]
        self._run(len(self.slabs), submit, done, True, "forward", self._home, max(2, self.block_bytes // max(1, *halo)))
        return out

    def _adjoint_task(self, i, y_part):
        if self.keep:
            return _adjoint, (self._blocks[i], self.slabs[i], y_part, self.threads)
        return _adjoint_streamed, (self._recipe, self.slabs[i], y_part, self.threads)

    def _adjoint_images(self, y3, kind):
        """``C^H y3``: images ``(N, C_in, F)``, NumPy (or a Dask array of it).

        The partial sums are added along the fixed tree
        (:func:`convmat.blocks.tree_order`): on the workers within groups of
        ``G`` consecutive slabs (``G`` a power of two: each group is a subtree),
        sized so that a group's slabs of ``y`` and partial sums take about
        ``block_bytes``, one group per worker at a time; the groups' sums are
        gathered and added up the rest of the tree here, where ``x`` is made
        anyway.  The same pairs, in the same order: the bits of
        :func:`convmat.blocks.reduce_partials`.  A group lost with a worker is
        submitted again."""
        _check_client(self.client)
        c, S, F = self.client, len(self.slabs), int(np.prod(self.in_shape[1:]))
        leaves = self._tasks([y3[:, :, j0:j1] for j0, j1, _, _ in self.slabs], self._adjoint_task)
        item = np.result_type(self.dtype, y3.dtype).itemsize
        held = max(1, *(y3.shape[0] * item * (self.out_shape[0] * (j1 - j0) + self.in_shape[0] * (f1 - f0))
                        for j0, j1, f0, f1 in self.slabs))
        G = 1 << (max(1, self.block_bytes // held).bit_length() - 1)
        groups = [list(range(g, min(g + G, S))) for g in range(0, S, G)]

        def on_workers(a, b):
            return c.submit(_b.combine, a, b, pure=False)

        def subtrees(ks):
            return [_tree(dict(zip(groups[k], leaves(groups[k]))), S, on_workers)[groups[k][0]] for k in ks]

        sums = [None] * len(groups)
        self._run(len(groups), subtrees, sums.__setitem__, True, "adjoint", [self._home[g[0]] for g in groups], 1)
        x = _b.embed(_tree({g[0]: v for g, v in zip(groups, sums)}, S, _b.combine)[0], F)
        if kind != "dask":
            return x
        import dask.array as da

        return da.from_array(x, chunks=x.shape)

    def apply(self, x, *, out=None):
        """``C @ x`` plus the bias, for images ``(N, *in_shape)`` or ``in_shape`` (NumPy or Dask)."""
        kind = _kind(x, out)
        x3, batched = _as_images(x, self.in_shape, "x")
        dtype = np.result_type(self.dtype, x3.dtype)
        y = self._forward_images(x3, kind, dtype).reshape((x3.shape[0],) + self.out_shape)
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * (len(self.out_shape) - 1))
        return y if batched else y[0]

    __call__ = apply

    def apply_adjoint(self, y, *, out=None):
        """``C^H @ y`` for images ``(N, *out_shape)`` or ``out_shape`` (NumPy or Dask)."""
        kind = _kind(y, out)
        y3, batched = _as_images(y, self.out_shape, "y")
        x = self._adjoint_images(y3, kind).reshape((y3.shape[0],) + self.in_shape)
        return x if batched else x[0]

    # ------------------------------------------------------------------ #
    # SciPy's LinearOperator: NumPy columns
    # ------------------------------------------------------------------ #
    def _columns(self, X, shape, adjoint):
        X = np.asarray(X)
        k = 1 if X.ndim == 1 else X.shape[1]
        x3 = X.reshape(shape[0], -1, k).transpose(2, 0, 1)  # (k, C, F)
        if adjoint:
            out = self._adjoint_images(x3, "numpy")
        else:
            out = self._forward_images(x3, "numpy", np.result_type(self.dtype, X.dtype))
        cols = out.reshape(k, -1).T
        return np.ascontiguousarray(cols[:, 0] if X.ndim == 1 else cols)

    def _matvec(self, x):
        return self._columns(x, self.in_shape, False)

    def _matmat(self, X):
        return self._columns(X, self.in_shape, False)

    def _rmatvec(self, y):
        return self._columns(y, self.out_shape, True)

    def _rmatmat(self, Y):
        return self._columns(Y, self.out_shape, True)

    def close(self):
        """Release the kept slabs on the workers."""
        if self._blocks is not None:
            for f in self._blocks:
                f.release()
            self._blocks = None

    def __repr__(self) -> str:
        head = repr(self.plan).splitlines()[0].replace("ConvPlan(", "", 1)
        how = "kept on the workers" if self.keep else "rebuilt on the workers at every product"
        return (
            f"DaskConvOperator({head}\n  matrix {self.shape[0]} x {self.shape[1]}, nnz {self.nnz:,}, {self.dtype}, "
            f"{human(self.plan.nbytes(self.dtype))} if stored whole; {len(self.slabs)} slabs of at most "
            f"{human(self.block_bytes)}, {how})"
        )

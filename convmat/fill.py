"""The compiled fill: a chunk's rows written in one pass by a Numba kernel (host arrays only).

:mod:`convmat.assemble` builds a chunk of spatial rows either with array
operations, which every backend runs (NumPy, CuPy, torch), or -- for host
arrays when Numba imports -- with :func:`fill_rows`, which writes each entry's
column index and value once, in row order, straight from the per-axis tables
of the chunk.  Both give the same bits: the entries of a row are ``(ci, p_1,
..., p_D)`` in that order (the in-group input channel, then one entry of each
axis table), the column is ``col_offset + ci * N + sum_a col_a * N_a``, and
the value sums the gathered weights of the slot combinations in
``itertools.product`` order, first one assigned, the others added (the array
path's ``take`` then ``+=``), without fast-math.

A table row is described by three numbers (:func:`table_arrays`): where its
entries are stored, how many it has, and the shift of its columns -- the
interior rows of a table (``AxisPattern.copies``) are its first interior row,
shifted, and forward tables make no other interior row at all
(:func:`forward_table`).  Tables of fewer than three axes are padded in front
with a trivial axis (one row, one entry, column 0, tap 0).  Interior rows are
written as copies of the row before them (of the row a stride before, for a
transposed axis), doubled in long loops; the output channels of a chunk
share one structure, written once and copied.  The kernels' source and the
tables are in :mod:`convmat._fill_kernels`; :func:`mul_rows` is the fused
one-vector product of the streamed operator (rows built into a cache-sized
scratch and multiplied by :mod:`convmat.spmm`'s row kernel).

Nothing here imports Numba until a kernel is asked for.  A build never waits
for it (:func:`for_build`): large builds run the array path and
the third one starts loading the kernel of its dtypes on a daemon thread
(:func:`after_build`, :func:`kernel`; a build or two followed by products
never load it); a build that comes while it loads waits
up to ``FILL_KERNEL_PATIENCE`` for it; a fork waits for the loader.  The
kernel source runs (slowly) as plain Python too, which the tests use.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._fill_kernels import (  # noqa: F401  (re-exported: the kernels' source and the tables)
    NO_SHIFT,
    TRIVIAL,
    _b_fwd_vec,
    _b_tr_vec,
    _b_tr_vec4,
    _fill_piece,
    _row,
    fill_rows,
    forward_table,
    mul_rows,
    period_key,
    scatter_rows,
    table_arrays,
)
from ._loader import Loader
from .pattern import axis_table

__all__ = [
    "after_build", "fill_rows", "for_build", "forward_table", "kernel", "load", "loaded", "loading", "mul_rows",
    "multiplier", "multiply", "multiply_batch", "period_key", "ready", "run", "scatter", "scatter_rows", "scatterer",
    "scratch", "scratch_rows", "settle", "table_arrays", "NO_SHIFT", "TRIVIAL",
]

#: Whether host builds may run the compiled fill (tests turn it off to run the array path).
USE_FILL_KERNEL = True
#: Host builds run the compiled fill once Numba is loaded, and load it for builds of this many non-zeros.
FILL_KERNEL_NNZ = 1 << 20
#: Whether a build waits for the compiled fill to load (tests do) rather than run the array path meanwhile.
FILL_KERNEL_WAIT = False
#: Seconds a build waits for a background load of the compiled fill before it runs the array path.
FILL_KERNEL_PATIENCE = 1.0


#: Tables of at most this many rows are kept (:func:`_kernel_table`'s cache) for the next chunk or build.
_CACHED_TABLE_ROWS = 4096


@functools.lru_cache(maxsize=64)
def _kernel_table(ax, r0, r1, T, last):
    """:func:`table_arrays` of rows ``[r0, r1)`` of an axis, and for the last axis
    ``(P, key)``: a transposed axis's rows are shifted copies of the row a stride ``P`` before."""
    if not T:
        out = forward_table(ax, r0, r1)
        return out + (0, np.zeros(0, dtype=np.int64)) if last else out
    p = axis_table(ax, r0, r1, transposed=True)
    out = table_arrays(p)
    if last:
        P = ax.s if ax.s < p.n_rows else 0
        out += (P, period_key(p, P) if P else np.zeros(0, dtype=np.int64))
    return out


def for_build(be, nnz, vdtype, idt):
    """The compiled fill for this build, or None for the array path (same bits either way).

    Until the kernel of its dtypes is loaded a build runs the array path; the third large build
    starts loading it when it is done (:func:`after_build`), so the load overlaps whatever the
    caller does next; a build that
    comes while it is loading waits for it (up to FILL_KERNEL_PATIENCE) rather than run beside it
    (the import holds the GIL: both would crawl).  FILL_KERNEL_WAIT: always load first.
    """
    if not (USE_FILL_KERNEL and be.host_arrays) or (nnz < FILL_KERNEL_NNZ and loaded() is None
                                                    and not loading()):
        return None
    found = ready(vdtype, idt)
    if found is None and FILL_KERNEL_WAIT:
        found = kernel(vdtype, idt, wait=True)
    elif found is None and loading():  # loading from Numba's cache takes well under a second;
        settle(timeout=FILL_KERNEL_PATIENCE)  # compiling (an empty cache) takes seconds: then go on
        found = ready(vdtype, idt)
    return found


#: The large host builds (of FILL_KERNEL_NNZ entries or more) in a process before one starts loading the
#: compiled fill.
FILL_KERNEL_AFTER = 3


def after_build(be, nnz, vdtype, idt):
    """After an array-path build: the FILL_KERNEL_AFTER-th large host build starts loading the compiled fill.

    Not the first ones: a process that builds a matrix or two and then multiplies (a solver) would
    only have the loader compete with its first products for the GIL (first product 0.32 s instead
    of 0.07 s, ``benchmarks/cold_start.py``); a process that keeps building gets the kernel.
    """
    if USE_FILL_KERNEL and be.host_arrays and nnz >= FILL_KERNEL_NNZ:
        _STATE["large_builds"] += 1
        if _STATE["large_builds"] >= FILL_KERNEL_AFTER:
            kernel(vdtype, idt)


def _kernel_layout(plan, chunks):
    """``(g1, g2, Cg, Rg, KP, tables)``: the arguments every kernel call of ``plan`` shares, and
    ``tables(aligned start)``, the per-axis table arguments of a chunk (three axes, padded in front)."""
    axes, T = plan.geometry.axes, plan.transposed
    pad = 3 - len(axes)
    g = (1,) * pad + tuple(plan.grid)
    n_cols = (1,) * pad + tuple(ax.o if T else ax.n for ax in axes)
    kp = (1,) * pad + tuple(ax.k + 1 for ax in axes)
    cs = [math.prod(n_cols[i + 1 :]) for i in range(3)]
    ts = [math.prod(kp[i + 1 :]) for i in range(3)]

    def tables(ca):
        per_axis = [TRIVIAL] * pad
        for i, (ax, rng) in enumerate(zip(axes, chunks.ranges(ca))):
            small = rng[1] - rng[0] <= _CACHED_TABLE_ROWS
            per_axis.append((_kernel_table if small else _kernel_table.__wrapped__)(ax, *rng, T, i == len(axes) - 1))
        return [v for i, t in enumerate(per_axis) for v in t[:7] + (cs[i], ts[i])] + list(per_axis[-1][7:])

    return g[1], g[2], plan.cols_per_group, plan.row_channels // plan.groups, math.prod(kp), tables


def run(plan, chunks, by_range, compiled, W, threads, threaded, out, cols):
    """The pieces of :func:`convmat.assemble._assemble` written by the compiled fill ``compiled``: same bits.

    ``by_range`` maps chunks ``(aligned start, a, b)`` to their pieces ``(channel, entry, row)``;
    ``out`` is ``(indptr, indices, data)``; ``cols`` is ``(N, f0)``, the column numbering.
    """
    g1, g2, Cg, Rg, KP, tables = _kernel_layout(plan, chunks)
    N, f0 = cols

    def one(key, group, tabs):
        _, a, b = key
        compiled(W, _pieces(group, Rg, Cg, N, f0), a, b, g1, g2, N, Cg, KP, *tabs, *out)

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and threaded else None
    try:
        if pool is not None and chunks.parallel(threads):  # chunks on the threads, each its own tables
            list(pool.map(lambda item: one(item[0], item[1], tables(item[0][0])), by_range.items()))
        else:  # the output channels of a chunk on the threads, a contiguous share each
            for key, group in by_range.items():
                tabs = tables(key[0])
                shares = [group[i * len(group) // threads : (i + 1) * len(group) // threads] for i in range(threads)]
                if pool is not None and len(group) > 1:
                    list(pool.map(lambda share: one(key, share, tabs), [sh for sh in shares if sh]))
                else:
                    one(key, group, tabs)
    finally:
        if pool is not None:
            pool.shutdown()


#: Rows a fused product writes into its scratch at a time (fewer if ``block_bytes`` asks).
MUL_BLOCK_ROWS = 64


def _pieces(group, Rg, Cg, N, f0=0):
    """The kernels' pieces ``(channel, first column, entry, row)`` of ``group`` ``[(channel, entry, row)]``:
    channel ``c`` reads the input channels of its group, from column ``(c // Rg) Cg N`` less ``f0``."""
    return np.array([(c, (c // Rg) * Cg * N - f0, dst, row) for c, dst, row in group], dtype=np.int64).reshape(-1, 4)


def scratch_rows(max_bytes, per_row):
    """Rows a fused product writes into its scratch at a time: MUL_BLOCK_ROWS, fewer within ``max_bytes``
    at ``per_row`` bytes a row, at least one."""
    return max(1, min(MUL_BLOCK_ROWS, max_bytes // per_row))


def scratch(rows, row_bound, idt, vdtype):
    """CSR arrays ``(indptr, indices, data)`` for ``rows`` rows of at most ``row_bound`` entries."""
    return (np.zeros(rows + 1, dtype=idt), np.empty(rows * row_bound, dtype=idt),
            np.empty(rows * row_bound, dtype=vdtype))


def _map(fn, tasks, threads):
    """``fn(task)`` for every task, on ``threads`` threads when there are several tasks."""
    if threads > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fn, tasks))
    else:
        for task in tasks:
            fn(task)


def multiply(plan, chunks, by_range, compiled_mul, W, threads, x, y, block_rows, cols):
    """``y = C @ x`` for the rows of ``by_range`` (as :func:`run`, columns numbered by ``cols``), never
    storing more than a scratch of ``block_rows`` rows per thread (``chunks.row_bound`` entries a row
    at most): :func:`mul_rows`."""
    g1, g2, Cg, Rg, KP, tables = _kernel_layout(plan, chunks)
    N, f0 = cols
    zero = y.dtype.type(0)
    idt = np.int32 if max(block_rows * chunks.row_bound, plan.shape[1]) <= np.iinfo(np.int32).max else np.int64

    def one(task):
        (_, a, b), group = task
        compiled_mul(W, _pieces(group, Rg, Cg, N, f0), a, b, g1, g2, N, Cg, KP, *tables(task[0][0]), x, y, zero,
                     *scratch(block_rows, chunks.row_bound, idt, W.dtype), block_rows)

    tasks = []
    for key, group in by_range.items():
        share = max(1, -(-len(group) // threads))
        tasks += [(key, group[i : i + share]) for i in range(0, len(group), share)]
    _map(one, tasks, threads)


def multiply_batch(plan, chunks, compiled_fill, fwd_mat, W, threads, X, Y, block_rows, slab=None):
    """``Y = C @ X`` for columns ``X`` ``(n, k)``, never storing ``C``: spatial rows ``block_rows`` at a time
    of four output channels at once are written into a scratch by :func:`fill_rows` and multiplied there
    by spmm's ``fwd_mat`` (the compiled kernel the stored product runs), visiting the four channels'
    rows at each position together, as the stored product's row order does.  Each row of ``Y`` has
    the bits of the same row of ``csr_matmul(C, X)`` (a row's sum does not depend on the rows beside it).
    With ``slab`` ``(j0, j1, f0, f1)``: the rows of that slab (``Y`` ``(R (j1 - j0), k)``) times its
    halo ``X`` (every input channel at positions ``[f0, f1)``).
    """
    g1, g2, Cg, Rg, KP, tables = _kernel_layout(plan, chunks)
    R = plan.row_channels
    j0, j1, f0, f1 = (0, math.prod(plan.grid), 0, plan.shape[1] // plan.col_channels) if slab is None else slab
    N, O = f1 - f0, j1 - j0  # columns per input channel, rows per output channel of Y
    zero = Y.dtype.type(0)
    idt = np.int32 if max(4 * block_rows * chunks.row_bound, plan.shape[1]) <= np.iinfo(np.int32).max else np.int64
    quads = [tuple(range(c, min(c + 4, R))) for c in range(0, R, 4)]
    per = max(1, -(-len(quads) // threads))  # quads of a chunk per task
    tasks = [(a, b, ca, quads[i : i + per]) for a, b, ca in chunks.chunks(j0, j1) for i in range(0, len(quads), per)]
    local = threading.local()
    orders = {}  # (channels, rows): the rows position-major, the channels' rows at a position together

    def one(task):
        a, b, ca, group = task
        if not hasattr(local, "scratch"):
            local.scratch = (*scratch(4 * block_rows, chunks.row_bound, idt, W.dtype),
                             np.empty((4 * block_rows, X.shape[1]), dtype=Y.dtype))
        sptr, sidx, sdat, Ys = local.scratch
        tabs = tables(ca)
        for r in range(a, b, block_rows):
            e = min(b, r + block_rows)
            n, E = e - r, plan.row_nnz(r, e)
            for quad in group:
                G = len(quad)
                if (G, n) not in orders:
                    orders[G, n] = np.arange(G * n, dtype=np.int64).reshape(G, n).T.reshape(-1)
                compiled_fill(W, _pieces([(c, q * E, q * n) for q, c in enumerate(quad)], Rg, Cg, N, f0), r, e,
                              g1, g2, N, Cg, KP, *tabs, sptr, sidx, sdat)
                fwd_mat(sptr, sidx, sdat, X, Ys, orders[G, n], 0, G * n, zero)
                for q, c in enumerate(quad):
                    Y[c * O + r - j0 : c * O + e - j0] = Ys[q * n : (q + 1) * n]

    _map(one, tasks, threads)


#: Chunks whose tables :func:`scatter` keeps (the rows of a block are visited channel after channel).
SCATTER_TABLES = 32


def scatter(plan, chunks, ranges, compiled_scatter, W, y, acc, buffers, quarter=0):
    """``acc += R^T y`` for the rows ``R`` of ``ranges`` ``[(channel, a, b), ...]``, visited in that order,
    never storing them (:func:`scatter_rows`; ``buffers`` is ``(sptr, sidx, sdat, ys, block rows)``).

    With ``quarter``, each range stands for its rows and those of channels ``c + quarter``,
    ``c + 2 quarter``, ``c + 3 quarter`` at the same positions, visited slot by slot (``tr_vec4``).
    """
    g1, g2, Cg, Rg, KP, tables = _kernel_layout(plan, chunks)
    N, O = plan.shape[1] // plan.col_channels, math.prod(plan.grid)
    zero = acc.dtype.type(0)
    cached = {}  # the tables of the last SCATTER_TABLES chunks: each channel visits its chunks again
    for c, a_c, b_c in ranges:
        channels = [c + q * quarter for q in range(4)] if quarter else [c]
        for a, b, ca in chunks.chunks(a_c, b_c):
            if ca not in cached:
                if len(cached) >= SCATTER_TABLES:
                    del cached[next(iter(cached))]
                cached[ca] = tables(ca)
            pieces = _pieces([(ch, 0, ch * O + a) for ch in channels], Rg, Cg, N)
            compiled_scatter(W, pieces, a, b, g1, g2, N, Cg, KP, *cached[ca], y, acc, zero, *buffers)


def _compiled(name, vdtype, idt):
    """The compiled kernel ``name`` once the fill of these dtypes is loaded, else None (never waits)."""
    kernels = LOADER.ready((np.dtype(vdtype), np.dtype(idt)))
    return None if kernels is None else kernels[name]


def multiplier(vdtype, idt):
    """The compiled :func:`mul_rows` once the fill of these dtypes is loaded, else None (never waits)."""
    return _compiled("mul", vdtype, idt)


def scatterer(vdtype, idt):
    """The compiled :func:`scatter_rows` once the fill of these dtypes is loaded, else None (never waits)."""
    return _compiled("scatter", vdtype, idt)


_STATE = {"large_builds": 0}


def _make():
    """Import Numba and make the dispatchers of :func:`fill_rows`, :func:`mul_rows` and :func:`scatter_rows`."""
    import numba
    from numba.extending import register_jitable

    from .spmm._kernels import register

    register(numba)  # the spmm kernels' helpers, which the fused products inline
    register_jitable(_row)
    register_jitable(_fill_piece)
    register_jitable(_b_fwd_vec)
    register_jitable(_b_tr_vec)
    register_jitable(_b_tr_vec4)
    opts = dict(nogil=True, error_model="numpy", boundscheck=False)

    def jit(fn):
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError:  # no writable cache location
            return numba.njit(**opts)(fn)

    mul, scatter_ = jit(mul_rows), jit(scatter_rows)
    _drop_stale_cache(mul, scatter_)
    return {"kernel": jit(fill_rows), "mul": mul, "scatter": scatter_}


def loaded():
    """The compiled :func:`fill_rows` once Numba is imported for it, else None (never loads)."""
    return None if LOADER.kernels is None else LOADER.kernels["kernel"]


def load():
    """The compiled :func:`fill_rows` (cached on disk), or None when Numba cannot be imported; waits."""
    kernels = LOADER.load()
    return None if kernels is None else kernels["kernel"]


def _drop_stale_cache(*dispatchers):
    """Drop the disk cache of the fused kernels when ``convmat/spmm/_kernels.py`` has changed.

    Numba checks a cached function against its own source file only, and the fused products
    inline spmm's row kernels from that other file: a cache made before an edit there would give
    other bits than the stored product.  A digest of it is kept beside the cache.
    """
    from .spmm import _kernels

    try:
        digest = hashlib.sha256(pathlib.Path(_kernels.__file__).read_bytes()).hexdigest()
        stamp = pathlib.Path(dispatchers[0]._cache.cache_path) / "convmat-fill-inlined.sha256"
        if not stamp.is_file() or stamp.read_text() != digest:
            for dispatcher in dispatchers:
                dispatcher._cache.flush()
            stamp.write_text(digest)
    except (AttributeError, OSError):  # another Numba, or a read-only cache: nothing to compare with
        pass


def _prepare(kernels, key):
    """Load the machine code of the kernels for ``(value dtype, index dtype)`` (compiled or from the cache)."""
    vdtype, idt = key
    idx = np.zeros(1, dtype=idt)
    args = (np.zeros((1, 1), dtype=vdtype), np.zeros((1, 4), dtype=np.int64), 0, 0, 1, 1, 1, 1, 1,  # no rows
            *TRIVIAL, 0, 0, *TRIVIAL, 0, 0, *TRIVIAL, 0, 0, 0, np.zeros(0, dtype=np.int64))
    kernels["kernel"](*args, idx, idx, np.zeros(1, dtype=vdtype))
    vec = np.zeros(1, dtype=vdtype)  # the fused product of a vector of the same dtype (streamed operators)
    kernels["mul"](*args, vec, vec, vdtype.type(0), idx, idx, vec, 1)
    kernels["scatter"](*args, vec, vec, vdtype.type(0), idx, idx, vec, vec, 1)  # the fused adjoint's


#: The background loader of the compiled fill (:mod:`convmat._loader`, the mechanism the products share).
LOADER = Loader("fill", _make, _prepare)


def ready(vdtype, idt):
    """The compiled fill if its kernel for values ``vdtype`` and indices ``idt`` is loaded, else None."""
    return _compiled("kernel", vdtype, idt)


def kernel(vdtype, idt, *, wait=False):
    """The compiled fill for values ``vdtype`` and indices ``idt``, or None while it is not ready.

    With ``wait=False`` a build does not wait for Numba: the first call
    starts loading it (and the kernel of this signature) on a daemon thread
    and returns None, so that build runs the array path (the same bits);
    later builds get the kernel once it is ready.  ``wait=True`` waits for
    it.  None when Numba does not import (or failed to load).
    """
    key = (np.dtype(vdtype), np.dtype(idt))
    if wait:
        LOADER.wait(key)
    else:
        LOADER.start(key)
    return ready(*key)


def loading() -> bool:
    """Whether the background loader started by :func:`kernel` is still running."""
    return LOADER.loading()


def settle(timeout=None):
    """Wait for the background loader :func:`kernel` started (at most ``timeout`` seconds)."""
    LOADER.settle(timeout)

"""How a convolution matrix is built: chunks of rows, the value fill, the thread pool.

:func:`build_csr` is the one entry point.  The rows asked for are cut into
chunks of spatial rows (at most about ``_CHUNK_NNZ`` entries of one output
channel each).  For each chunk the per-axis tables of its rows only are made
(:func:`convmat.pattern.axis_table`; the last axis's compact, storing one of
its interior rows); the first output channel of each group gets its column
indices straight into the final index array and the tap numbers of the
entries that are not copies into a :class:`~convmat.structure.TapBuffer`
(:func:`convmat.structure.fill_structure`); every output channel gathers
the values of those entries from the packed weight (one gather per tap
slot) and copies them into the shifted copies (interior rows, blocks of
rows); the other output channels of the group copy the indices with an
offset (the array path, which every backend runs).  On the host, once
Numba is loaded, :func:`convmat.fill.run` writes the same bits in one pass
instead (the compiled fill).  With several output channels, the channels of
a chunk share a thread pool; with fewer channels than threads, the chunks do
(each thread making its own tables).  Row pointers come from the tables' row pointers
and the closed form offsets of :mod:`convmat.sizes`.  Nothing is allocated
in proportion to the matrix but the result, so :func:`peak_bytes` bounds
everything a build allocates, and the guard
(:func:`convmat.memory.check_fits`) refuses before allocating.
"""

from __future__ import annotations

import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import fill
from .errors import ParameterError, ParameterTypeError
from .backends import get_backend
from .geometry import positive_int
from .memory import MatrixTooLargeError, check_fits, human
from .pattern import axis_table, table_bytes
from .structure import TapBuffer, fill_structure, repeat_block, runs_bytes
from .plan import normalize_rows
from .sizes import axis_row_bound, axis_slot_bound
from .weights import backend_and_weight, check_weight_shape, matrix_weight, value_dtype

__all__ = ["build_csr", "build_slab_csr", "peak_bytes", "row_ranges"]

#: Below this many non-zeros a thread pool costs more than it saves.
_THREADED_NNZ = 1 << 20
#: The largest chunk, in entries of one output channel (bounds temporaries).
_CHUNK_NNZ = 1 << 20
#: The smallest chunk (smaller ones cost more in Python than they save in memory).
_MIN_CHUNK = 1 << 12


class _Chunks:
    """Spatial rows cut into aligned chunks, each reading few rows of each axis.

    A chunk is ``width`` consecutive spatial rows inside one "period" (the rows
    sharing the indices of the axes before ``split``): it reads one row of each
    axis before ``split``, ``width / slab`` rows of axis ``split`` and every row
    of the axes after it.
    """

    def __init__(self, plan, block_nnz: int):
        self.plan = plan
        self.axes, self.grid, self.T = plan.geometry.axes, plan.grid, plan.transposed
        D = len(self.grid)
        self.row_bound = plan.cols_per_group * math.prod(axis_row_bound(ax, self.T) for ax in self.axes)
        target = min(_CHUNK_NNZ, max(_MIN_CHUNK, block_nnz // 16))
        rows_c = max(1, target // self.row_bound)
        inner = [math.prod(self.grid[i + 1 :]) for i in range(D)]
        self.split = min(i for i in range(D) if inner[i] <= rows_c)
        self.slab = inner[self.split]
        self.step = max(1, min(rows_c // self.slab, self.grid[self.split]))
        self.width = self.step * self.slab
        self.period = self.grid[self.split] * self.slab
        self.entries = min(max(target, self.row_bound), plan.channel_nnz)
        self.slots = math.prod(axis_slot_bound(ax) for ax in self.axes)
        self._local = threading.local()  # each thread keeps the tables of its last chunk
        self.row_channels = plan.row_channels

    def parallel(self, threads: int) -> bool:
        """Whether chunks (rather than the output channels of a chunk) go to ``threads`` threads."""
        return threads > 1 and self.row_channels < threads

    def chunks(self, a: int, b: int):
        """``(a', b', aligned start)`` covering spatial rows ``[a, b)``."""
        r = a
        while r < b:
            base = (r // self.period) * self.period
            ca = base + ((r - base) // self.width) * self.width
            cb = min(ca + self.width, base + self.period)
            yield r, min(cb, b), ca
            r = min(cb, b)

    def ranges(self, ca: int):
        j = np.unravel_index(ca, self.grid)
        out = []
        for i, n in enumerate(self.grid):
            if i < self.split:
                out.append((int(j[i]), int(j[i]) + 1))
            elif i == self.split:
                out.append((int(j[i]), min(n, int(j[i]) + self.step)))
            else:
                out.append((0, n))
        return out

    def tables(self, ca: int, be):
        """Per axis ``(AxisPattern, cols, [taps per slot])`` on the backend, for the chunk at ``ca``."""
        out = []
        cache = self._local.__dict__.setdefault("cache", {})
        for i, (ax, rng) in enumerate(zip(self.axes, self.ranges(ca))):
            hit = cache.get(i)
            if hit is None or hit[0] != rng:
                hit = cache[i] = None  # drop the old table before making the new one
                p = axis_table(ax, *rng, transposed=self.T, compact=i == len(self.axes) - 1)
                taps = [be.asarray(np.ascontiguousarray(p.taps[:, s])) for s in range(p.slots)]
                hit = cache[i] = (rng, (p, be.asarray(p.cols), taps))
            out.append(hit[1])
        return out

    def table_bytes(self) -> int:
        """A bound on the memory of the tables of one chunk and their runs of copies (``shift_runs``)."""
        rows = [r1 - r0 for r0, r1 in self.ranges(0)]
        rows[self.split] = self.step
        tables = sum(table_bytes(ax, r, self.T) for ax, r in zip(self.axes, rows))
        return tables + sum(runs_bytes(ax, r, self.T) for ax, r in zip(self.axes[-2:], rows[-2:]))


def peak_bytes(plan, chunks: _Chunks, vdtype, idt, start: int, stop: int, nnz: int, threads: int, weight,
               result: bool = True) -> int:
    """An upper bound on everything building rows ``[start, stop)`` (``nnz`` entries) allocates, the result
    included unless ``result`` is False (built into given arrays)."""
    result = (nnz * (vdtype.itemsize + idt.itemsize) + (stop - start + 1) * idt.itemsize) if result else 0
    E = chunks.entries
    per_chunk = (
        E * 8 * (2 * chunks.slots + 4)  # tap numbers of the chunk, prefix products, scatter positions and values
        + chunks.width * 8 * 6  # row lengths, cumulative counts, row pointers of a chunk
        + chunks.table_bytes()
    )
    sums = threads * E * vdtype.itemsize if chunks.slots > 1 else 0  # per-thread value sums
    temporaries = per_chunk * (threads if chunks.parallel(threads) else 1) + sums
    packed = plan.row_channels * plan.cols_per_group * math.prod(k + 1 for k in plan.geometry.kernel_size)
    weights = 3 * packed * vdtype.itemsize + 2 * weight.nbytes
    pieces = (-(-(stop - start) // max(1, chunks.width)) + 2 * plan.row_channels) * 400
    return result + temporaries + weights + pieces + (1 << 16)


def _block_index_dtype(plan, start, stop, be):
    """The plan's index dtype if the backend takes it, else the narrowest it takes that fits."""
    if plan.index_dtype in be.index_dtypes:
        return plan.index_dtype
    nnz = plan.row_nnz(start, stop)
    idt = be.max_index_dtype_for(nnz, (stop - start, plan.shape[1]))
    if idt is None:
        limit = max(int(np.iinfo(t).max) for t in be.index_dtypes)
        raise MatrixTooLargeError(
            f"backend {be.name!r} takes {', '.join(str(t) for t in be.index_dtypes)} indices only, and the "
            f"matrix {'block ' if (start, stop) != (0, plan.shape[0]) else ''}of shape ({stop - start}, "
            f"{plan.shape[1]}) has {nnz:,} non-zeros, more than {limit:,}; build it in row blocks of at "
            f"most {limit:,} non-zeros: for start, stop in plan.row_blocks(max_nnz={limit}): "
            f"plan.build(weight, rows=(start, stop), backend={be.name!r})",
            parameter="rows",
        )
    return idt


def _row_pointers(be, tables, ca, a, b, Cg, group, indptr, idt) -> int:
    """Row pointers of spatial rows ``[a, b)`` (of the chunk at ``ca``) for each channel piece of ``group``.

    The chunk's rows are ``prefix x last-axis row``; row ``(p, l)`` ends at
    ``Cg * (starts[p] + pl[p] * ptr[l + 1])`` entries into the chunk, with
    ``pl`` the product of the other axes' row lengths and ``ptr`` the last
    axis table's.  Prefixes of equal ``pl`` are written by one broadcast add
    per channel.  Returns the entries of the rows of one channel.
    """
    last = tables[-1][0]
    nL = last.n_rows
    pl = np.ones(1, dtype=np.int64)
    for p, _, _ in tables[:-1]:
        pl = np.multiply.outer(pl, p.row_lengths).ravel()
    starts = np.zeros(pl.size + 1, dtype=np.int64)
    np.cumsum(pl * int(last.ptr[-1]), out=starts[1:])

    def at(i):  # entries of one channel before local row i
        p, l = divmod(i, nL)
        return Cg * int(starts[p] + (pl[p] * last.ptr[l] if p < pl.size else 0))

    i0, i1 = a - ca, b - ca
    first = at(i0)
    pieces, i = [], i0  # (local row, prefixes [pa, pb), last-axis rows [la, lb))
    while i < i1:
        p, l = divmod(i, nL)
        if l or i1 - i < nL:  # a partial prefix
            lb = min(nL, l + i1 - i)
            pieces.append((i, p, p + 1, l, lb))
            i += lb - l
            continue
        pb = min(pl.size, p + (i1 - i) // nL)
        change = np.flatnonzero(pl[p + 1 : pb] != pl[p])
        pb = p + 1 + int(change[0]) if change.size else pb
        pieces.append((i, p, pb, 0, nL))
        i += (pb - p) * nL
    for i, pa, pb, la, lb in pieces:
        head = be.asarray((Cg * starts[pa:pb] - first).astype(idt))
        tail = be.asarray(np.multiply(last.ptr[la + 1 : lb + 1], Cg * int(pl[pa]), dtype=idt, casting="same_kind"))
        for _, dst, row in group:
            out = indptr[row + 1 + i - i0 : row + 1 + i - i0 + (pb - pa) * (lb - la)]
            be.add((head + dst).reshape(pb - pa, 1), tail.reshape(1, lb - la), out=out.reshape(pb - pa, lb - la))
    return at(i1) - first


def build_csr(plan, weight, *, dtype=None, flip=False, rows=None, backend="scipy", device=None,
              max_bytes=None, threads=None, out=None):
    """Rows ``[start, stop)`` of ``plan``'s matrix filled with ``weight`` (see :meth:`ConvPlan.build`).

    ``out``, for the ``'scipy'`` backend only: ``(data, indices, indptr)``, 1-D
    host arrays long enough for the rows, of the value dtype and one index
    dtype that holds them; the result is a CSR array on views of them (which
    the next build into them overwrites), and the memory check counts no result.
    """
    be, weight = backend_and_weight(backend, device, weight)
    check_weight_shape(weight.shape, plan.weight_shape, plan.transposed)
    vdtype = value_dtype(weight.dtype, dtype)
    start, stop = normalize_rows(rows, plan.shape[0])
    if not isinstance(flip, (bool, np.bool_)):
        raise ParameterTypeError("flip", f"flip must be a bool, got {flip!r}")
    threads = be.threads if threads is None else positive_int(threads, "threads")
    nnz = plan.row_nnz(start, stop)
    idt = _block_index_dtype(plan, start, stop, be) if out is None else _out_index_dtype(out, plan, start, stop, nnz,
                                                                                         vdtype, be)
    chunks = _Chunks(plan, nnz)
    need = peak_bytes(plan, chunks, vdtype, idt, start, stop, nnz, threads, weight, result=out is None)

    def describe():
        block = "block " if (start, stop) != (0, plan.shape[0]) else ""
        final = plan.nbytes(vdtype, rows=(start, stop))
        return (f"the matrix {block}of shape ({stop - start}, {plan.shape[1]}) with {nnz:,} "
                f"non-zeros takes {human(final)} ({final:,} bytes as {vdtype})")

    check_fits(need, max_bytes, be, describe)
    return _assemble(plan, weight, vdtype, bool(flip), start, stop, nnz, be, threads, idt, chunks, out)


def build_slab_csr(plan, weight, slab, idt, *, dtype=None, threads=None, out=None):
    """The slab ``(j0, j1, f0, f1)`` of ``plan``'s matrix: spatial rows ``[j0, j1)`` of every output
    channel (channel-major), columns renumbered onto input positions ``[f0, f1)`` of every input channel.

    Host only; ``idt`` is the index dtype; ``out``: arrays to build into, as in
    :func:`build_csr`.  Every entry of those rows must lie in ``[f0, f1)``
    (:func:`convmat.blocks.slab_support`).  Rows keep their entries in order:
    the bits of the same rows of :meth:`ConvPlan.build`.
    """
    be, weight = backend_and_weight("scipy", None, weight)
    vdtype = value_dtype(weight.dtype, dtype)
    threads = be.threads if threads is None else positive_int(threads, "threads")
    spans, rows, nnz, cols = _slab_spans(plan, slab)
    chunks = _Chunks(plan, nnz)
    need = peak_bytes(plan, chunks, vdtype, np.dtype(idt), 0, rows, nnz, threads, weight, result=out is None)
    check_fits(need, None, be, lambda: f"the slab of {nnz:,} non-zeros takes {human(need)}")
    return _assemble(plan, weight, vdtype, False, 0, rows, nnz, be, threads, np.dtype(idt), chunks,
                     out=out, spans=spans, cols=cols)


def build_ranges_csr(plan, weight, ranges, out):
    """The rows of ``ranges`` ``[(channel, a, b), ...]`` (spatial rows ``[a, b)`` of that output channel), one
    range after the other, into the host arrays ``out`` (as :func:`build_csr`, unchecked: the caller
    sizes them), on the calling thread: the bits of the same rows of :meth:`ConvPlan.build`."""
    vdtype = np.dtype(weight.dtype)
    spans, nnz, rows = _spans(plan, ranges)
    return _assemble(plan, weight, vdtype, False, 0, rows, nnz, get_backend("scipy"), 1, out[1].dtype,
                     _Chunks(plan, nnz), out=out, spans=spans)


def _slab_spans(plan, slab):
    """``(spans, rows, nnz, cols)`` of the slab ``(j0, j1, f0, f1)``: its row spans (as :func:`_row_spans`),
    rows, entries and column numbering ``(N, f0)`` (see :func:`_assemble`)."""
    j0, j1, f0, f1 = (int(v) for v in slab)
    spans, nnz, rows = _spans(plan, [(c, j0, j1) for c in range(plan.row_channels)])
    return spans, rows, nnz, (f1 - f0, f0)


def row_ranges(plan, start, stop):
    """Rows ``[start, stop)`` of the matrix as ranges ``(channel, a, b)``: spatial rows ``[a, b)`` of an
    output channel, channel after channel."""
    O = math.prod(plan.grid)
    return [(c, max(start - c * O, 0), min(stop - c * O, O))
            for c in range(start // O, -(-stop // O) if stop > start else start // O)]


def _spans(plan, ranges):
    """``(spans, nnz, rows)`` of ``ranges`` laid out one after the other: spans ``(channel, a, b, entry,
    row)``, each range's first entry and row."""
    spans, nnz, rows, per = [], 0, 0, {}
    for c, a, b in ranges:
        spans.append((c, a, b, nnz, rows))
        if (a, b) not in per:
            per[a, b] = plan.row_nnz(a, b)  # the same for every output channel
        nnz += per[a, b]
        rows += b - a
    return spans, nnz, rows


def _out_index_dtype(out, plan, start, stop, nnz, vdtype, be):
    """The index dtype of the buffers ``out`` after checking them (see :func:`build_csr`)."""
    if not be.host_arrays:
        raise ParameterError("out", f"out is for host builds (backend 'scipy'), not backend {be.name!r}")
    if not (isinstance(out, tuple) and len(out) == 3 and all(isinstance(a, np.ndarray) and a.ndim == 1 for a in out)):
        raise ParameterTypeError("out", f"out must be a tuple (data, indices, indptr) of 1-D NumPy arrays, got {out!r}")
    data, indices, indptr = out
    idt = indices.dtype
    big = max(nnz, stop - start, plan.shape[1])
    if data.dtype != vdtype or indptr.dtype != idt or idt not in be.index_dtypes or big > np.iinfo(idt).max:
        allowed = ", ".join(map(str, be.index_dtypes))
        raise ParameterError("out", f"out must hold {vdtype} values and matching {allowed} "
                                    f"indices that fit {nnz:,} entries and {plan.shape[1]:,} columns, got "
                                    f"{data.dtype}, {indices.dtype}, {indptr.dtype}")
    if data.shape[0] < nnz or indices.shape[0] < nnz or indptr.shape[0] < stop - start + 1:
        raise ParameterError("out", f"out must have room for {nnz:,} entries and {stop - start + 1:,} row "
                                    f"pointers, got {data.shape[0]:,}, {indices.shape[0]:,}, {indptr.shape[0]:,}")
    if not all(a.flags.c_contiguous and a.flags.writeable for a in out):
        raise ParameterError("out", "out's arrays must be contiguous and writeable")
    return idt


def _by_range(plan, chunks, spans, spatial_before):
    """The pieces of ``spans``, by chunk: ``{(aligned start, a, b): [(channel, entry, row), ...]}``.

    A piece is spatial rows ``[a, b)`` of one output channel, written from entry ``entry`` and
    row pointer ``row``; the spans of the same rows share their cut into chunks.
    """
    pieces, cut = [], {}
    for c, a_c, b_c, dst, row in spans:
        if (a_c, b_c) not in cut:
            cut[a_c, b_c] = [(ca, a, b, spatial_before(a) - spatial_before(a_c), a - a_c)
                             for a, b, ca in chunks.chunks(a_c, b_c)]
        pieces += [(ca, a, b, c, dst + de, row + dr) for ca, a, b, de, dr in cut[a_c, b_c]]
    pieces.sort(key=lambda p: p[:4])
    by_range = {}
    for piece in pieces:
        by_range.setdefault(piece[:3], []).append(piece[3:])
    return by_range


def fused_matvec(plan, weight, x, threads, max_bytes, slab=None):
    """``C @ x`` for a vector ``x`` (of the result dtype) without storing ``C`` (:func:`convmat.fill.multiply`),
    with the bits of ``csr_matmul(plan.build(weight), x)``; None while the compiled kernel is not loaded.

    ``weight`` is a host array of the matrix's value dtype; the threads' scratch rows hold at most
    ``max_bytes`` together (at least one row each).  With ``slab`` ``(j0, j1, f0, f1)``, the product
    of that slab (:func:`build_slab_csr`) with its halo ``x`` (every input channel at positions
    ``[f0, f1)``): the bits of the same rows of ``C @ x``.
    """
    vdtype = np.dtype(weight.dtype)
    compiled = fill.multiplier(vdtype, np.int32)
    if compiled is None or x.dtype != np.result_type(vdtype, x.dtype):
        return None
    spans, rows, cols, chunks, W = _fused(plan, weight, slab)
    by_range = _by_range(plan, chunks, spans, plan.spatial_nnz_before)
    y = np.empty(rows, dtype=x.dtype)
    block = fill.scratch_rows(max_bytes, threads * chunks.row_bound * (vdtype.itemsize + 8) + 8)
    fill.multiply(plan, chunks, by_range, compiled, W, threads, x, y, block, cols)
    return y


def fused_matmat(plan, weight, X, threads, max_bytes, slab=None):
    """``C @ X`` for columns ``X`` ``(n, k)`` (of the result dtype, C-contiguous) without storing ``C``
    (:func:`convmat.fill.multiply_batch`), with the bits of ``csr_matmul(plan.build(weight), X)``; None
    while the compiled fill or spmm's kernels are not loaded.

    The threads' scratches hold at most ``max_bytes`` together (at least one spatial row each).
    With ``slab`` ``(j0, j1, f0, f1)``, the product of that slab (:func:`build_slab_csr`) with its halo
    ``X``: the bits of the same rows of ``C @ X``.
    """
    from .spmm import _load

    vdtype = np.dtype(weight.dtype)
    compiled = fill.ready(vdtype, np.int32)
    K = _load() if compiled is not None else None
    if K is None or X.dtype != np.result_type(vdtype, X.dtype) or not X.flags.c_contiguous:
        return None
    _, rows, _, chunks, W = _fused(plan, weight, slab)
    Y = np.empty((rows, X.shape[1]), dtype=X.dtype)
    per_row = 4 * (chunks.row_bound * (vdtype.itemsize + 8) + X.shape[1] * X.dtype.itemsize + 8)
    block = fill.scratch_rows(max_bytes, threads * per_row)
    fill.multiply_batch(plan, chunks, compiled, K["fwd_mat"], W, threads, X, Y, block,
                        None if slab is None else tuple(int(v) for v in slab))
    return Y


def _fused(plan, weight, slab):
    """``(spans, rows, cols, chunks, W)`` of a fused product of the matrix (or of ``slab``): its row spans,
    rows, column numbering, chunks and packed weight."""
    if slab is None:
        spans, nnz, rows = _spans(plan, row_ranges(plan, 0, plan.shape[0]))
        cols = (plan.shape[1] // plan.col_channels, 0)
    else:
        spans, rows, nnz, cols = _slab_spans(plan, slab)
    W = matrix_weight(weight, np.dtype(weight.dtype), False, plan.groups, plan.transposed)
    return spans, rows, cols, _Chunks(plan, nnz), W


def _row_spans(plan, start, stop):
    """Rows ``[start, stop)`` as spans ``(channel, a, b, entry, row)``: spatial rows ``[a, b)`` of an output
    channel, their first entry and row in the result."""
    return _spans(plan, row_ranges(plan, start, stop))[0]


def _assemble(plan, weight, vdtype, flip, start, stop, nnz, be, threads, idt, chunks, out=None, spans=None,
              cols=None):
    """The matrix's rows ``[start, stop)`` (or the row ``spans`` of a slab, its columns numbered ``cols =
    (N, f0)``: input position ``f`` of a channel at ``N`` columns per channel, less ``f0``)."""
    # Only ``be``'s methods create arrays or write into a given buffer; the rest is
    # slicing, reshape and broadcasting arithmetic, spelled alike by NumPy, CuPy and torch.
    n_rows = stop - start
    spans = _row_spans(plan, start, stop) if spans is None else spans
    N, f0 = (plan.shape[1] // plan.col_channels, 0) if cols is None else cols
    n_cols = plan.col_channels * N
    Cg, Rg = plan.cols_per_group, plan.row_channels // plan.groups
    before = {}

    def spatial_before(r):
        if r not in before:
            before[r] = plan.spatial_nnz_before(r)
        return before[r]

    if out is None:
        indptr = be.zeros(n_rows + 1, dtype=idt)
        indices = be.empty(nnz, dtype=idt)
        data = be.empty(nnz, dtype=vdtype)
    else:
        data, indices, indptr = out[0][:nnz], out[1][:nnz], out[2][: n_rows + 1]
        indptr[...] = 0
    if nnz == 0:
        return be.csr(data, indices, indptr, (n_rows, n_cols))

    W = be.asarray(matrix_weight(weight, vdtype, flip, plan.groups, plan.transposed))
    by_range = _by_range(plan, chunks, spans, spatial_before)
    kernel = fill.for_build(be, nnz, vdtype, idt)
    if kernel is not None:
        fill.run(plan, chunks, by_range, kernel, W, threads, nnz >= _THREADED_NNZ, (indptr, indices, data), (N, f0))
        return be.csr(data, indices, indptr, (n_rows, n_cols))

    def channel(piece, template):
        c, dst, _ = piece
        grp_t, src, taps, length, segments = template
        out_i = indices[dst : dst + length]
        if src != dst:
            shift = (c // Rg - grp_t) * Cg * N
            if shift:
                be.add(indices[src : src + length], shift, out=out_i)
            else:
                out_i[...] = indices[src : src + length]
        out_v = data[dst : dst + length]
        tmp = None
        for seg in segments:
            if seg[0] == "gather":
                _, p, n, tp = seg
                be.take(W[c], taps[0][tp : tp + n], out_v[p : p + n])
                if len(taps) > 1:
                    tmp = be.empty(n, dtype=vdtype) if tmp is None or tmp.shape[0] < n else tmp
                    for t in taps[1:]:
                        be.take(W[c], t[tp : tp + n], tmp[:n])
                        out_v[p : p + n] += tmp[:n]
            else:  # copies of values already written
                _, p, n, count = seg
                repeat_block(be, out_v, p, n, count)

    def one_range(key, group, pool=None):
        ca, a, b = key
        tables = chunks.tables(ca, be)
        length = _row_pointers(be, tables, ca, a, b, Cg, group, indptr, idt)
        if length == 0:
            return
        # The template: indices straight into the final array (for the first channel of this
        # range), tap numbers into temporaries; then every channel of the range.
        c, dst, _ = group[0]
        combos = list(itertools.product(*(range(p.slots) for p, _, _ in tables)))
        buffer = TapBuffer(be, len(combos), length)
        segments = fill_structure(be, tables, plan.grid, a, b, (c // Rg) * Cg * N - f0, N, Cg,
                                  indices[dst : dst + length], buffer, combos)
        template = (c // Rg, dst, buffer.arrays, length, segments)
        del buffer
        if pool is not None and len(group) > 1:
            list(pool.map(channel, group, itertools.repeat(template)))
        else:
            for piece in group:
                channel(piece, template)

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and nnz >= _THREADED_NNZ else None
    try:
        if pool is not None and chunks.parallel(threads):  # chunks on the threads, each its own tables
            list(pool.map(lambda item: one_range(*item), by_range.items()))
        else:  # channels on the threads; the tables of a chunk dropped before the next one's are made
            for key, group in by_range.items():
                one_range(key, group, pool)
    finally:
        if pool is not None:
            pool.shutdown()
    fill.after_build(be, nnz, vdtype, idt)
    return be.csr(data, indices, indptr, (n_rows, n_cols))

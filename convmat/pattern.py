"""The CSR structure of a convolution matrix: per-axis tables and their product.

Every convolution matrix convmat builds is a (ragged) Kronecker product of one
small table per spatial axis, times the channel structure.  An
:class:`AxisPattern` is that table for a range of rows of one axis: for each
row (an output sample; an input sample for a transposed axis) the sorted,
distinct columns it touches, and for each entry the kernel taps that land
there.  Tables are made for the rows being built only (:func:`axis_table`),
so a 1-D signal of 10**9 samples is built a chunk of rows at a time.

With zero padding each entry holds exactly one tap.  With reflect, replicate
or circular padding several taps may land on the same input sample; they are
kept in ``m`` "slots" per entry, unused slots holding the sentinel tap ``k``
(which points at a zero appended to the kernel), so that the value of an
entry is always a sum of ``m`` gathers and never needs a branch.

:func:`fill_structure` writes the column indices of a range of spatial rows of
one output channel (all in-group input channels) and their tap numbers: the
multi-axis CSR pattern.  Nothing here depends on weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import AxisGeometry
from .sizes import axis_row_bound, axis_slot_bound, interior_rows

__all__ = ["AxisPattern", "axis_pattern", "axis_table", "fill_structure", "TapBuffer", "repeat_block", "runs_bytes", "shift_runs", "table_bytes"]


@dataclass(frozen=True, eq=False)
class AxisPattern:
    """Sparse 1-D table of rows ``[row0, row0 + n_rows)`` of one axis, in CSR layout.

    Attributes
    ----------
    n_rows, n_cols : int
        Rows in the table and column positions of the axis.
    k : int
        Kernel taps on this axis; ``k`` itself is the sentinel "no tap".
    ptr : ndarray of int64, shape (n_rows + 1,)
    cols : ndarray of int64, shape (P,)
        Sorted within each row, no duplicates.
    taps : ndarray of int64, shape (P, m)
        The taps of each entry; unused slots hold ``k``.
    row0 : int
        The axis row of the table's first row.
    copies : tuple of (first, count, delta)
        Runs of local rows known by construction to be shifted copies of row
        ``first`` (same taps, columns plus ``i * delta``).
    skip : (int, int)
        ``(E0, n)``: a compact table (``axis_table(..., compact=True)``) holds
        no entries for the copies after the first row of its run: ``ptr``
        numbers every entry, and entry ``e >= E0`` sits at ``e - n`` in
        ``cols`` and ``taps`` (:meth:`entry`).
    """

    n_rows: int
    n_cols: int
    k: int
    ptr: np.ndarray
    cols: np.ndarray
    taps: np.ndarray
    row0: int = 0
    copies: tuple = ()
    skip: tuple = (0, 0)

    def entry(self, e):
        """Where entry ``e`` (numbered by ``ptr``) sits in ``cols`` and ``taps`` (an int or an array)."""
        e0, n = self.skip
        if n == 0:
            return e
        if isinstance(e, np.ndarray):
            return np.where(e >= e0, e - n, e)
        return e - n if e >= e0 else e

    @property
    def nnz(self) -> int:
        return int(self.ptr[-1])

    @property
    def slots(self) -> int:
        return int(self.taps.shape[1])

    @property
    def row_lengths(self) -> np.ndarray:
        return np.diff(self.ptr)

    def runs(self, start: int = 0, stop: int | None = None):
        """Maximal ranges ``(a, b)`` of consecutive local rows in ``[start, stop)`` of equal length."""
        stop = self.n_rows if stop is None else stop
        if stop <= start:
            return []
        lengths = self.row_lengths[start:stop]
        cuts = np.flatnonzero(lengths[1:] != lengths[:-1]) + 1
        edges = np.concatenate(([0], cuts, [stop - start])) + start
        return list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    def transpose(self) -> "AxisPattern":
        """The table with rows and columns swapped (taps kept); for a whole-axis table."""
        m = self.slots
        rows = np.repeat(np.arange(self.row0, self.row0 + self.n_rows, dtype=np.int64), self.row_lengths)
        rows = np.repeat(rows, m)
        cols = np.repeat(self.cols, m)
        taps = self.taps.ravel()
        keep = taps < self.k
        return _group(cols[keep], rows[keep], taps[keep], self.n_cols, self.row0 + self.n_rows, self.k)


def _group(rows, cols, taps, n_rows: int, n_cols: int, k: int, row0: int = 0) -> AxisPattern:
    """Group ``(row, col, tap)`` triples (rows local, in ``[0, n_rows)``) into an AxisPattern."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    taps = np.asarray(taps, dtype=np.int64)
    order = np.lexsort((taps, cols, rows))
    rows, cols, taps = rows[order], cols[order], taps[order]
    del order
    new = np.ones(rows.size, dtype=bool)
    new[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    starts = np.flatnonzero(new)
    entry = np.cumsum(new) - 1  # entry number of each triple
    slot = np.arange(rows.size) - starts[entry]
    m = int(slot.max()) + 1 if rows.size else 1
    table = np.full((starts.size, m), k, dtype=np.int64)
    table[entry, slot] = taps
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[starts], minlength=n_rows), out=ptr[1:])
    return AxisPattern(n_rows, n_cols, k, ptr, cols[starts].copy(), table, row0)


def _fold(u, n: int, mode: str):
    """Virtual inputs ``u`` mapped onto ``[0, n)`` by the padding mode (``'zeros'``: unchanged)."""
    if mode == "reflect":
        u = np.abs(u)
        return np.where(u >= n, 2 * (n - 1) - u, u)
    if mode == "replicate":
        return np.clip(u, 0, n - 1)
    if mode == "circular":
        return np.mod(u, n)
    return u


def _explicit_rows(ax: AxisGeometry, r0: int, r1: int):
    """``(lengths, cols, taps)`` of forward rows ``[r0, r1)`` read with zero padding."""
    j = np.arange(r0, r1, dtype=np.int64)
    b = j * ax.s - ax.lo
    t_lo = np.clip(-(b // ax.d), 0, ax.k)  # ceil(-b/d)
    t_hi = np.clip((ax.n - 1 - b) // ax.d + 1, 0, ax.k)
    lengths = np.maximum(t_hi - t_lo, 0)
    starts = np.cumsum(lengths) - lengths
    row = np.repeat(np.arange(r1 - r0, dtype=np.int64), lengths)
    taps = np.arange(row.size, dtype=np.int64)
    taps += (t_lo - starts)[row]
    cols = b[row]
    del row
    cols += taps * ax.d
    return lengths, cols, taps


def _unmerged_rows(ax: AxisGeometry, r0: int, r1: int, compact: bool = False) -> AxisPattern:
    """Forward rows ``[r0, r1)`` read with zero padding: each row a contiguous run of taps.

    The rows reading every tap (:func:`convmat.sizes.interior_rows`) are
    consecutive, and shifted copies of one another (``copies``); a
    ``compact`` table stores the entries of the first of them only, and
    costs time and memory in proportion to the other rows' entries.
    """
    i0, i1 = interior_rows(ax)
    i0 = min(max(i0, r0), r1)
    i1 = max(i0, min(i1, r1))
    copies = ((i0 - r0, i1 - i0, ax.s),) if i1 - i0 >= 2 else ()
    ptr = np.zeros(r1 - r0 + 1, dtype=np.int64)
    if not (compact and copies):
        lengths, cols, taps = _explicit_rows(ax, r0, r1)
        np.cumsum(lengths, out=ptr[1:])
        return AxisPattern(r1 - r0, ax.n, ax.k, ptr, cols, taps.reshape(-1, 1), r0, copies)
    lh, ch, th = _explicit_rows(ax, r0, i0 + 1)
    lt, ct, tt = _explicit_rows(ax, i1, r1)
    h, t = i0 + 1 - r0, i1 - r0  # local rows: [0, h) and [t, r1 - r0) stored
    np.cumsum(lh, out=ptr[1 : h + 1])
    ptr[h + 1 : t + 1] = ptr[h] + ax.k * np.arange(1, t - h + 1, dtype=np.int64)
    np.cumsum(lt, out=ptr[t + 1 :])
    ptr[t + 1 :] += ptr[t]
    skip = (int(ptr[h]), int(ptr[t] - ptr[h]))
    cols, taps = np.concatenate((ch, ct)), np.concatenate((th, tt)).reshape(-1, 1)
    return AxisPattern(r1 - r0, ax.n, ax.k, ptr, cols, taps, r0, copies, skip)


def _merged_rows(ax: AxisGeometry, r0: int, r1: int) -> AxisPattern:
    """Forward rows ``[r0, r1)`` with a padding mode: taps folded, merged where they meet."""
    j = np.arange(r0, r1, dtype=np.int64)[:, None]
    t = np.arange(ax.k, dtype=np.int64)[None, :]
    u = _fold((j * ax.s - ax.lo + t * ax.d).ravel(), ax.n, ax.mode)
    rows = np.broadcast_to(j - r0, (r1 - r0, ax.k)).ravel()
    taps = np.broadcast_to(t, (r1 - r0, ax.k)).ravel()
    return _group(rows, u, taps, r1 - r0, ax.n, ax.k, r0)


def _concat(parts, n_cols: int, k: int) -> AxisPattern:
    parts = [p for p in parts if p.n_rows]
    if len(parts) == 1:
        return parts[0]
    m = max(p.slots for p in parts)
    taps = np.full((sum(p.taps.shape[0] for p in parts), m), k, dtype=np.int64)
    ptr = [np.zeros(1, dtype=np.int64)]
    pos, rows, copies, skip = 0, 0, (), (0, 0)
    for p in parts:
        stored = p.taps.shape[0]
        taps[pos : pos + stored, : p.slots] = p.taps  # stored entries: pos never passes a skipped range
        if p.copies:
            copies = tuple((f + rows, c, dl) for f, c, dl in p.copies)
        if p.skip[1]:
            skip = (p.skip[0] + int(ptr[-1][-1]), p.skip[1])
        ptr.append(p.ptr[1:] + ptr[-1][-1])
        pos += stored
        rows += p.n_rows
    cols = np.concatenate([p.cols for p in parts])
    return AxisPattern(rows, n_cols, k, np.concatenate(ptr), cols, taps, parts[0].row0, copies, skip)


def _forward_table(ax: AxisGeometry, r0: int, r1: int, compact: bool = False) -> AxisPattern:
    if ax.mode == "zeros" or r1 <= r0:
        return _unmerged_rows(ax, r0, r1, compact)
    # Rows whose taps all land inside need no folding: the zero-padding fast path.
    i0, i1 = interior_rows(ax)
    i0 = min(max(r0, i0), r1)
    i1 = max(i0, min(r1, i1))
    parts = [_merged_rows(ax, r0, i0), _unmerged_rows(ax, i0, i1, compact), _merged_rows(ax, i1, r1)]
    return _concat(parts, ax.n, ax.k)


def _virtual_ranges(ax: AxisGeometry, u0: int, u1: int):
    """Disjoint ranges of virtual inputs that the padding mode maps into ``[u0, u1)``."""
    n, mode = ax.n, ax.mode
    if u1 <= u0:
        return []
    far = ax.o * ax.s + ax.extent + abs(ax.lo) + abs(ax.hi) + n  # beyond every virtual input
    out = [(u0, u1)]
    if mode == "reflect":
        out += [(-u1 + 1, min(-u0 + 1, 0)), (max(2 * (n - 1) - u1 + 1, n), 2 * (n - 1) - u0 + 1)]
    elif mode == "circular":
        out += [(u0 - n, u1 - n), (u0 + n, u1 + n)]
    elif mode == "replicate":
        out += [(-far, 0 if u0 == 0 else -far), (n, far if u1 == n else n)]
    return [(a, b) for a, b in out if a < b]


def _transposed_table(ax: AxisGeometry, u0: int, u1: int) -> AxisPattern:
    """Rows ``[u0, u1)`` of the transposed axis: for each input, the outputs that read it."""
    s, d, lo, o = ax.s, ax.d, ax.lo, ax.o
    t = np.arange(ax.k, dtype=np.int64)
    js, ts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for v0, v1 in _virtual_ranges(ax, u0, u1):
        # j with v0 <= j*s - lo + t*d < v1, for each tap t
        first = np.clip(-((t * d - lo - v0) // s), 0, o)  # ceil((v0 + lo - t d)/s)
        last = np.clip(-((t * d - lo - v1) // s), 0, o)
        count = np.maximum(last - first, 0)
        tap = np.repeat(t, count)
        starts = np.zeros(ax.k + 1, dtype=np.int64)
        np.cumsum(count, out=starts[1:])
        j = np.arange(int(starts[-1]), dtype=np.int64) + np.repeat(first - starts[:-1], count)
        js.append(j)
        ts.append(tap)
    j = np.concatenate(js)
    tap = np.concatenate(ts)
    u = _fold(j * s - lo + tap * d, ax.n, ax.mode)
    return _group(u - u0, j, tap, u1 - u0, o, ax.k, u0)


def axis_table(ax: AxisGeometry, start: int = 0, stop: int | None = None, *, transposed: bool = False,
               compact: bool = False):
    """The table of rows ``[start, stop)`` of one axis (outputs; inputs if ``transposed``).

    Output ``j`` and tap ``t`` read the virtual input ``u = j*s - lo + t*d``;
    the padding mode maps ``u`` onto ``[0, n)``: ``'zeros'`` drops it,
    ``'reflect'`` mirrors without repeating the edge, ``'replicate'`` clamps,
    ``'circular'`` wraps.  Taps landing on the same input are merged.  Time and
    memory are proportional to the entries of the rows asked for (to those
    stored: a ``compact`` table stores the first row of its ``copies`` only).

    Examples
    --------
    >>> p = axis_table(AxisGeometry(n=4, k=3, s=1, d=1, lo=0, hi=0, o=2))
    >>> p.ptr.tolist(), p.cols.tolist(), p.taps[:, 0].tolist()
    ([0, 3, 6], [0, 1, 2, 1, 2, 3], [0, 1, 2, 0, 1, 2])
    >>> axis_table(AxisGeometry(n=4, k=3, s=1, d=1, lo=0, hi=0, o=2), 1, 3, transposed=True).cols.tolist()
    [0, 1, 0, 1]
    """
    rows = ax.n if transposed else ax.o
    stop = rows if stop is None else stop
    if transposed:
        return _transposed_table(ax, start, stop)
    return _forward_table(ax, start, stop, compact)


def table_bytes(ax: AxisGeometry, rows: int, transposed: bool = False) -> int:
    """A bound on the bytes :func:`axis_table` allocates for ``rows`` rows (the table and its temporaries).

    The forward zero-padding path holds about five int64 arrays per entry at
    once; the grouping path (merged taps, transposed axes) sorts triples and
    holds about twenty int64 arrays per triple at its peak.
    """
    per = axis_row_bound(ax, transposed)
    m = axis_slot_bound(ax)
    if not transposed and ax.mode == "zeros":
        return 64 * rows * (per + 1) + 4096
    if transposed:
        triples = rows * per * (ax.k if ax.mode == "replicate" else 1)
    else:
        triples = rows * ax.k
    return (160 + 8 * m) * triples + 64 * rows + 256 * ax.k + 4096


def axis_pattern(ax: AxisGeometry) -> AxisPattern:
    """The whole table of a forward convolution along one axis (``axis_table(ax)``)."""
    return axis_table(ax)


# --------------------------------------------------------------------------- #
# the multi-axis structure
# --------------------------------------------------------------------------- #
def shift_runs(p: AxisPattern, c0: int, c1: int):
    """Local rows ``[c0, c1)`` of ``p`` as runs ``(first, count, delta, anchor)`` of "shifted copies".

    In a run with ``delta`` not None, row ``first + i`` has the taps of the
    stored row ``anchor`` and its columns plus ``(first + i - anchor) *
    delta`` (the interior rows of a forward axis, with ``delta = s``); rows
    with ``delta`` None are not known to be copies.  The table's ``copies``
    are taken as they are; the other rows are compared, in time and memory
    proportional to their entries.
    """
    out, r = [], c0
    for first, count, delta in p.copies:
        lo, hi = max(first, c0), min(first + count, c1)
        if hi > lo:
            out += _compared_runs(p, r, lo)
            out.append((lo, hi - lo, delta, first))
            r = hi
    return out + _compared_runs(p, r, c1)


def _compared_runs(p: AxisPattern, c0: int, c1: int):
    """:func:`shift_runs` of stored rows ``[c0, c1)``, found by comparing each row with the next."""
    n = c1 - c0
    if n <= 1:
        return [(c0, n, None, None)] if n == 1 else []
    key = _row_steps(p, c0, c1)
    same = key != _NO_SHIFT
    delta = key
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    edges = np.concatenate(([0], cuts, [n - 1])).tolist()
    runs, r = [], 0
    for i0, i1 in zip(edges[:-1], edges[1:]):  # pairs [i0, i1) join rows i0 .. i1
        if not same[i0]:
            continue
        first = max(r, i0)
        if i1 + 1 - first >= 2:
            if first > r:
                runs.append((c0 + r, first - r, None, None))
            runs.append((c0 + first, i1 + 1 - first, int(delta[i0]), c0 + first))
            r = i1 + 1
    if r < n:
        runs.append((c0 + r, n - r, None, None))
    return runs


_NO_SHIFT = np.iinfo(np.int64).min


def _row_steps(p: AxisPattern, c0: int, c1: int, period: int = 1):
    """For stored rows ``i`` in ``[c0, c1 - period)``: is row ``i + period`` row ``i`` shifted, and by what.

    Returns ``key``, the shift of each row, or ``_NO_SHIFT`` where the rows
    differ in length, taps, or by more than one shift.
    """
    n = c1 - c0
    if n <= period:
        return np.zeros(0, dtype=np.int64)
    L = p.row_lengths[c0:c1]
    width = int(L.max())
    if width == 0:
        return np.zeros(n - period, dtype=np.int64)
    valid = np.arange(width) < L[:, None]
    idx = np.minimum(p.entry(p.ptr[c0:c1, None] + np.arange(width)), p.cols.shape[0] - 1)
    cols = np.where(valid, p.cols[idx], 0)
    taps = np.where(valid[..., None], p.taps[idx], -1)
    del idx
    step = cols[period:] - cols[:-period]
    delta = step[:, 0]
    same = (L[period:] == L[:-period]) & np.all((step == delta[:, None]) | ~valid[period:], axis=1)
    same &= np.all(taps[period:] == taps[:-period], axis=(1, 2))
    return np.where(same, delta, _NO_SHIFT)


def _prefix_groups(p: AxisPattern, max_period: int = 8):
    """``(P, key, seg_end)``: rows ``r + P*u .. r + P*u + P - 1`` are the rows ``r .. r + P - 1`` shifted by ``u*key[r]``.

    ``seg_end[r]`` ends the run of equal keys holding ``r``, so the rows from
    ``r`` repeat with period ``P`` for ``(seg_end[r] - r) // P + 1`` periods.
    The period covering the most rows is chosen (1 for a forward axis; the
    stride for a transposed one).  None if no two rows are shifted copies.
    """
    best = None
    for P in range(1, min(max_period, p.n_rows - 1) + 1):
        key = _row_steps(p, 0, p.n_rows, P)
        hits = int(np.count_nonzero(key != _NO_SHIFT))
        if best is None or hits > best[0]:
            best = (hits, P, key)
        if 2 * hits >= p.n_rows:
            break
    if best is None or best[0] == 0:
        return None
    _, P, key = best
    ends = np.append(np.flatnonzero(key[1:] != key[:-1]) + 1, key.size)
    seg_end = ends[np.searchsorted(ends, np.arange(key.size), side="right")]
    return P, key, seg_end


def runs_bytes(ax: AxisGeometry, rows: int, transposed: bool = False) -> int:
    """A bound on the bytes :func:`shift_runs` allocates for ``rows`` rows of an axis table."""
    return 8 * rows * axis_row_bound(ax, transposed) * (3 * axis_slot_bound(ax) + 8) + 64 * rows + 4096


#: Blocks are doubled in place up to this many entries, then copied whole (a size that stays in cache).
_COPY_BLOCK = 1 << 14


def repeat_block(be, arr, pos: int, size: int, count: int, shift: int = 0) -> None:
    """``arr[pos + i*size : pos + (i+1)*size] = arr[pos : pos + size] + i*shift`` for ``0 < i < count``.

    The block is doubled in place until it holds about ``_COPY_BLOCK``
    entries, then written by one broadcast add (or assignment, for ``shift ==
    0``) of that cached block, so each entry is written once with long inner
    loops whatever ``size`` is.
    """
    if count <= 1 or size == 0:
        return
    done = 1
    while done < count and done * size < _COPY_BLOCK:
        m = min(done, count - done)
        src, dst = arr[pos : pos + m * size], arr[pos + done * size : pos + (done + m) * size]
        if shift:
            be.add(src, done * shift, out=dst)
        else:
            dst[...] = src
        done += m
    if done == count:
        return
    B = done * size
    reps = (count - done) // done
    src = arr[pos : pos + B]
    if reps:
        dst = arr[pos + B : pos + B + reps * B].reshape(reps, B)
        if shift:
            shifts = (be.arange(reps, dtype=be.dtype_of(arr)) + 1) * (done * shift)
            be.add(src[None, :], shifts.reshape(reps, 1), out=dst)
        else:
            dst[...] = src[None, :]
    rest = count - done * (reps + 1)
    if rest:
        src = arr[pos : pos + rest * size]
        dst = arr[pos + (count - rest) * size : pos + count * size]
        if shift:
            be.add(src, (count - rest) * shift, out=dst)
        else:
            dst[...] = src


class TapBuffer:
    """Tap numbers of the entries whose values are gathered, one array per slot combination.

    Written in order (:meth:`reserve`), grown by doubling up to ``limit``
    entries (the chunk's length), so only the entries that are not copies
    take memory.
    """

    def __init__(self, be, combos: int, limit: int, start: int = 1 << 16):
        self.be, self.limit, self.used = be, limit, 0
        self.arrays = [be.empty(min(limit, start), dtype=np.int64) for _ in range(combos)]

    def reserve(self, n: int) -> int:
        """The position of ``n`` new entries (the arrays grown to hold them)."""
        pos, cap = self.used, self.arrays[0].shape[0] if self.arrays else self.limit
        if pos + n > cap:
            cap = min(self.limit, max(2 * cap, pos + n))
            for i, old in enumerate(self.arrays):
                new = self.be.empty(cap, dtype=np.int64)
                new[:pos] = old[:pos]
                self.arrays[i] = new
                del old, new
        self.used = pos + n
        return pos


def _merge_gather(segments, pos, size, tpos):
    if segments and segments[-1][0] == "gather" and segments[-1][1] + segments[-1][2] == pos \
            and segments[-1][3] + segments[-1][2] == tpos:
        segments[-1] = ("gather", segments[-1][1], segments[-1][2] + size, segments[-1][3])
    elif size:
        segments.append(("gather", pos, size, tpos))


def fill_structure(be, tables, grid, a, b, col_offset, n_cols_ch, cols_per_group, out_idx, out_taps, combos):
    """Columns and tap numbers of spatial rows ``[a, b)`` of one output channel.

    Row ``(j_1, ..., j_D)`` holds the entries ``(ci, p_1, ..., p_D)`` in that
    order: the in-group input channel, then one entry of each axis table.  Its
    columns, ``col_offset + ci * N + sum_a col_a[p_a] * N_a``, are therefore
    sorted, because each axis table is.  The tap number of an entry is
    ``ci * prod(k + 1) + sum_a tap_a[p_a] * K_a`` for each combination of
    slots in ``combos``.

    ``tables`` holds, per axis, ``(AxisPattern, cols, [taps of each slot])``
    (the arrays on the backend) covering every axis row of ``[a, b)``;
    ``grid`` is the rows of each axis (spatial row numbers ravel it).

    Tap numbers are written only where the values cannot be copied, in
    order, into ``out_taps`` (a :class:`TapBuffer`): the result is the list
    of value segments, in order, ``("gather", pos, size, tpos)`` (values of
    entries ``[pos, pos + size)`` come from the taps at ``[tpos, tpos +
    size)``)
    and ``("repeat", pos, size, count)`` (entries ``[pos + size, pos +
    count * size)`` hold ``count - 1`` copies of the values at ``[pos, pos +
    size)``).  Interior rows are copies of one another: consecutive rows of
    the last axis with the same taps, and consecutive blocks of rows whose
    second-to-last axis rows have the same taps (their columns shifted).
    """
    pats = [t[0] for t in tables]
    D = len(pats)
    n_rows = list(grid)
    col_stride = [math.prod(p.n_cols for p in pats[i + 1 :]) for i in range(D)]
    kp = [p.k + 1 for p in pats]
    tap_stride = [math.prod(kp[i + 1 :]) for i in range(D)]
    ch = be.arange(cols_per_group, dtype=np.int64)
    ch_cols = ch * n_cols_ch + col_offset
    ch_taps = ch * math.prod(kp)
    last, (last_cols, last_taps) = pats[-1], tables[-1][1:]
    oL = n_rows[-1]
    prefix_combos = sorted({cmb[:-1] for cmb in combos})
    groups = _prefix_groups(pats[-2]) if D > 1 else None
    segments = []
    layouts = {}
    pos = 0
    p_first, p_last = a // oL, (b - 1) // oL
    full_first = p_first if a == p_first * oL else p_first + 1  # prefixes with every row of the last axis
    full_last = p_last if b == (p_last + 1) * oL else p_last - 1

    def write_prefix(prefix):
        nonlocal pos
        c0 = max(a - prefix * oL, 0) - last.row0
        c1 = min(b - prefix * oL, oL) - last.row0
        j = np.unravel_index(prefix, tuple(n_rows[:-1])) if D > 1 else ()
        q_cols = ch_cols
        q_taps = {pc: ch_taps for pc in prefix_combos}
        for axis in range(D - 1):
            p, (cols_a, taps_a) = pats[axis], tables[axis][1:]
            r = int(j[axis]) - p.row0
            lo = p.entry(int(p.ptr[r]))
            hi = lo + int(p.ptr[r + 1] - p.ptr[r])
            q_cols = (q_cols[:, None] + cols_a[lo:hi][None, :] * col_stride[axis]).ravel()
            q_taps = {
                pc: (q_taps[pc][:, None] + taps_a[pc[axis]][lo:hi][None, :] * tap_stride[axis]).ravel()
                for pc in prefix_combos
            }
        q = q_cols.shape[0]
        if q == 0:
            return
        layout = layouts.get((c0, c1))
        if layout is None:
            layout = layouts[(c0, c1)] = _last_axis_layout(last, c0, c1, be)
        block = pos
        if layout and layout[0][0] == "class":
            tpos = out_taps.reserve(q * int(last.ptr[c1] - last.ptr[c0]))
        for kind, nr, L, first, sel in layout:
            size = nr * q * L
            if kind == "run" and sel:  # rows [first, first + nr): copies of the stored row ``anchor``
                delta, anchor = sel
                e0 = last.entry(int(last.ptr[anchor]))
                base = q_cols[:, None] + (last_cols[e0 : e0 + L] + (first - anchor) * delta)[None, :]
                be.add(base, 0, out=out_idx[pos : pos + q * L].reshape(q, L))
                repeat_block(be, out_idx, pos, q * L, nr, delta)
                del base
            elif kind == "run":  # rows [first, first + nr) are consecutive: contiguous writes
                e0 = last.entry(int(last.ptr[first]))
                r_cols = last_cols[e0 : e0 + nr * L].reshape(nr, 1, L)
                be.add(q_cols[None, :, None], r_cols, out=out_idx[pos : pos + size].reshape(nr, q, L))
            if kind == "run":
                rows = 1 if sel else nr  # taps of the first row only, for copies
                tpos = out_taps.reserve(rows * q * L)
                for t_out, cmb in zip(out_taps.arrays, combos):
                    r_taps = last_taps[cmb[-1]][e0 : e0 + rows * L].reshape(rows, 1, L)
                    be.add(q_taps[cmb[:-1]][None, :, None], r_taps,
                           out=t_out[tpos : tpos + rows * q * L].reshape(rows, q, L))
                _merge_gather(segments, pos, rows * q * L, tpos)
                if rows < nr:
                    segments.append(("repeat", pos, q * L, nr))
                pos += size
            else:  # rows of one length scattered through the slab: one gather + one scatter
                entries, starts = sel  # (nr, L) entry numbers; (nr,) row starts in units of q
                where = (starts * q)[:, None, None] + be.arange(q * L, dtype=np.int64).reshape(1, q, L)
                be.put(out_idx, where + pos, q_cols[None, :, None] + last_cols[entries][:, None, :])
                for t_out, cmb in zip(out_taps.arrays, combos):
                    be.put(t_out, where + tpos,
                           q_taps[cmb[:-1]][None, :, None] + last_taps[cmb[-1]][entries][:, None, :])
                del where
        if layout and layout[0][0] == "class":
            _merge_gather(segments, pos, q * int(last.ptr[c1] - last.ptr[c0]), tpos)
            pos += q * int(last.ptr[c1] - last.ptr[c0])

    prefix = p_first
    while prefix <= p_last:
        units = 0
        if groups is not None and full_first <= prefix:
            P, key, seg_end = groups
            r = int(prefix % n_rows[-2]) - pats[-2].row0
            if r < key.size and key[r] != _NO_SHIFT:
                units = min((int(seg_end[r]) - r) // P + 1, (full_last - prefix + 1) // P)
        if units < 2:
            write_prefix(prefix)
            prefix += 1
            continue
        block = pos  # P prefixes, then units - 1 shifted copies of them
        for i in range(P):
            write_prefix(prefix + i)
        S = pos - block
        repeat_block(be, out_idx, block, S, units, int(key[r]) * col_stride[-2])
        segments.append(("repeat", block, S, units))
        pos = block + units * S
        prefix += P * units
    assert pos == out_idx.shape[0], (pos, out_idx.shape)
    return segments


def _last_axis_layout(last: AxisPattern, c0: int, c1: int, be):
    """How to write local rows ``[c0, c1)`` of the last axis: runs or length classes.

    Consecutive rows of equal length ("runs") are written as one contiguous
    block each.  When runs are short (a transposed convolution with stride s
    has rows whose lengths cycle with period s), rows are grouped by length
    instead, and each group is written by one scatter.
    """
    runs = [(r0, r1) for r0, r1 in last.runs(c0, c1) if last.ptr[r0 + 1] > last.ptr[r0]]
    lengths = last.row_lengths[c0:c1]
    classes = np.unique(lengths[lengths > 0]) if len(runs) > 4 else None
    if classes is None or len(runs) <= 2 * len(classes) + 2:  # each run cut into runs of copies
        return [("run", count, int(last.ptr[r0 + 1] - last.ptr[r0]), first,
                 (delta, anchor) if delta is not None else None)
                for r0, r1 in runs for first, count, delta, anchor in shift_runs(last, r0, r1)]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))  # row starts, in units of q
    layout = []
    for L in classes.tolist():
        rows = np.flatnonzero(lengths == L)
        entries = last.entry(last.ptr[c0 + rows][:, None] + np.arange(L))
        layout.append(("class", rows.size, L, None, (be.asarray(entries), be.asarray(starts[rows]))))
    return layout

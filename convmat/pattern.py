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

The multi-axis structure built from these tables is in
:mod:`convmat.structure`.  Nothing here depends on weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import AxisGeometry
from .sizes import axis_row_bound, axis_slot_bound, interior_rows

__all__ = ["AxisPattern", "axis_pattern", "axis_table", "table_bytes"]


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
        ``cols`` and ``taps`` (``entry(e)``).
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
    ptr[h + 1 : t + 1] = np.arange(int(ptr[h]) + ax.k, int(ptr[h]) + ax.k * (t - h) + 1, ax.k, dtype=np.int64)
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

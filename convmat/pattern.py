"""Integer index arithmetic on one axis: geometry -> a small sparse table.

Every convolution matrix convmat builds is a (ragged) Kronecker product of one
small table per spatial axis, times the channel structure.  An
:class:`AxisPattern` is that table: for each row position ``r`` (an output
sample) the sorted, distinct column positions ``c`` (input samples) it touches,
and for each ``(r, c)`` the kernel taps that land there.

With zero padding each ``(r, c)`` holds exactly one tap.  With reflect,
replicate or circular padding several taps may land on the same input sample;
they are kept in ``m`` "slots" per entry, unused slots holding the sentinel
tap ``k`` (which points at a zero appended to the kernel), so that the value
of an entry is always a sum of ``m`` gathers and never needs a branch.

The tables have ``O(o*k)`` entries: they are built with NumPy on the host and
are tiny next to the matrix.  Nothing here depends on weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import AxisGeometry

__all__ = ["AxisPattern", "axis_pattern"]


@dataclass(frozen=True, eq=False)
class AxisPattern:
    """Sparse 1-D table of one axis, in CSR layout.

    Attributes
    ----------
    n_rows, n_cols : int
        Row positions (outputs of this axis) and column positions (inputs).
    k : int
        Kernel taps on this axis; ``k`` itself is the sentinel "no tap".
    ptr : ndarray of int64, shape (n_rows + 1,)
    cols : ndarray of int64, shape (P,)
        Sorted within each row, no duplicates.
    taps : ndarray of int64, shape (P, m)
        The taps of each entry; unused slots hold ``k``.
    """

    n_rows: int
    n_cols: int
    k: int
    ptr: np.ndarray
    cols: np.ndarray
    taps: np.ndarray

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
        """Maximal ranges ``(a, b)`` of consecutive rows in ``[start, stop)`` of equal length."""
        stop = self.n_rows if stop is None else stop
        if stop <= start:
            return []
        lengths = self.row_lengths[start:stop]
        cuts = np.flatnonzero(lengths[1:] != lengths[:-1]) + 1
        edges = np.concatenate(([0], cuts, [stop - start])) + start
        return list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    def transpose(self) -> "AxisPattern":
        """The table with rows and columns swapped (taps kept)."""
        m = self.slots
        rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), self.row_lengths)
        rows = np.repeat(rows, m)
        cols = np.repeat(self.cols, m)
        taps = self.taps.ravel()
        keep = taps < self.k
        return _group(cols[keep], rows[keep], taps[keep], self.n_cols, self.n_rows, self.k)


def _group(rows, cols, taps, n_rows: int, n_cols: int, k: int) -> AxisPattern:
    """Group ``(row, col, tap)`` triples into an AxisPattern (sorted, merged)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    taps = np.asarray(taps, dtype=np.int64)
    order = np.lexsort((taps, cols, rows))
    rows, cols, taps = rows[order], cols[order], taps[order]
    if rows.size:
        new = np.empty(rows.size, dtype=bool)
        new[0] = True
        new[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    else:
        new = np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new)
    entry = np.cumsum(new) - 1  # entry number of each triple
    slot = np.arange(rows.size) - starts[entry] if rows.size else np.zeros(0, dtype=np.int64)
    m = int(slot.max()) + 1 if rows.size else 1
    table = np.full((starts.size, m), k, dtype=np.int64)
    table[entry, slot] = taps
    counts = np.bincount(rows[starts], minlength=n_rows)
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return AxisPattern(n_rows, n_cols, k, ptr, cols[starts].copy(), table)


def axis_pattern(ax: AxisGeometry) -> AxisPattern:
    """The table of a forward convolution along one axis.

    Output ``j`` and tap ``t`` read the virtual input ``u = j*s - lo + t*d``;
    the padding mode maps ``u`` onto ``[0, n)``: ``'zeros'`` drops it,
    ``'reflect'`` mirrors without repeating the edge, ``'replicate'`` clamps,
    ``'circular'`` wraps.  Taps landing on the same input are merged.

    Examples
    --------
    >>> from convmat.geometry import AxisGeometry
    >>> p = axis_pattern(AxisGeometry(n=4, k=3, s=1, d=1, lo=0, hi=0, o=2))
    >>> p.ptr.tolist(), p.cols.tolist(), p.taps[:, 0].tolist()
    ([0, 3, 6], [0, 1, 2, 1, 2, 3], [0, 1, 2, 0, 1, 2])
    """
    n, k = ax.n, ax.k
    j = np.arange(ax.o, dtype=np.int64)[:, None]
    t = np.arange(k, dtype=np.int64)[None, :]
    u = (j * ax.s - ax.lo + t * ax.d).ravel()
    rows = np.broadcast_to(j, (ax.o, k)).ravel()
    taps = np.broadcast_to(t, (ax.o, k)).ravel()
    if ax.mode == "zeros":
        keep = (u >= 0) & (u < n)
        rows, u, taps = rows[keep], u[keep], taps[keep]
    elif ax.mode == "reflect":
        u = np.abs(u)
        u = np.where(u >= n, 2 * (n - 1) - u, u)
    elif ax.mode == "replicate":
        u = np.clip(u, 0, n - 1)
    elif ax.mode == "circular":
        u = np.mod(u, n)
    else:  # pragma: no cover - geometry validated the mode
        raise ValueError(f"unknown padding mode {ax.mode!r}")
    return _group(rows, u, taps, ax.o, n, k)

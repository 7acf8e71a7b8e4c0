"""Per-axis sizes in closed form: entries per axis, prefix counts, row-length bounds.

Everything here is integer arithmetic on one :class:`~convmat.geometry.AxisGeometry`,
with memory independent of the axis length ``n`` and of the kernel size ``k``:
a plan on ``(10**9, 10**9)`` knows its nnz, bytes and row blocks at once.

The counting rests on one sum.  Let ``G(x) = #{t in [0, k) : t*d <= x}
= clip(floor(x/d) + 1, 0, k)``.  Output ``j`` of a zero-padded axis reads the
taps ``t`` with ``0 <= b_j + t*d <= n-1`` (``b_j = j*s - lo``), so it holds
``G(n-1+lo - j*s) - G(lo-1 - j*s)`` entries; and the rows of the transposed
axis before ``U`` (the inputs ``u < U``) hold every ``(j, t)`` with
``0 <= b_j + t*d < U``: the same sum with ``n`` replaced by ``U``.  A sum of
``G(c - j*s)`` over a range of ``j`` is ``k`` on a first part, ``0`` on a last
part and ``floor((c - j*s)/d) + 1`` between: a floor sum, computed by
:func:`floor_sum` in ``O(log)`` steps.

Padding modes merge the taps that land on one input (distinct columns per
row): ``'circular'`` rows all hold ``min(k, n / gcd(d, n))`` entries;
``'replicate'`` rows hold the taps strictly inside ``(0, n-1)`` plus one for
each clamped edge they reach (three more floor sums).  ``'reflect'`` rows hold
``k`` entries wherever every tap lands inside; its border rows (at most
``(lo + hi)/s + 2`` of them) are counted from their tables, in chunks:
``O(k)`` per border row, not closed form.  A transposed padding-mode axis
counts like a zero-padded one except on the inputs within the padding of
either end (``_band``), which are counted from their tables the same way.
"""

from __future__ import annotations

import functools
import math

from .geometry import AxisGeometry

__all__ = [
    "axis_max_row", "axis_nnz", "axis_nnz_before", "axis_row_bound", "axis_rows", "axis_slot_bound", "floor_sum",
    "interior_rows",
]

#: Rows per table chunk when a count is read off tables (bounds the memory of counting).
_COUNT_ROWS = 1 << 14


def floor_sum(count: int, m: int, a: int, b: int) -> int:
    """``sum_{i=0}^{count-1} floor((a*i + b) / m)`` for ``m >= 1`` and any integers ``a, b``.

    Examples
    --------
    >>> floor_sum(5, 3, 2, -4) == sum((2 * i - 4) // 3 for i in range(5))
    True
    """
    total = 0
    while count > 0:
        qa, a = divmod(a, m)
        qb, b = divmod(b, m)
        total += qa * count * (count - 1) // 2 + qb * count
        y = a * count + b  # the classic reduction (AtCoder Library's floor_sum)
        if y < m:
            break
        count, b, m, a = y // m, y % m, a, m
    return total


def _sum_g(j0: int, j1: int, c: int, s: int, d: int, k: int) -> int:
    """``sum_{j in [j0, j1)} G(c - j*s)`` with ``G(x) = clip(floor(x/d) + 1, 0, k)``."""
    if j1 <= j0:
        return 0
    full_end = min(j1, max(j0, (c - (k - 1) * d) // s + 1))  # j < full_end: all k taps
    zero_from = max(full_end, min(j1, c // s + 1))  # j >= zero_from: x < 0, none
    total = k * (full_end - j0)
    m0, m1 = full_end, zero_from
    if m1 > m0:  # floor((c - j s)/d) + 1 for j in [m0, m1); i = m1-1-j runs upwards
        total += floor_sum(m1 - m0, d, s, c - s * (m1 - 1)) + (m1 - m0)
    return total


def _zeros_before(ax: AxisGeometry, r: int, window: int) -> int:
    """``#{(j, t) : j < r, t < k, 0 <= j*s - lo + t*d < window}``."""
    if window <= 0 or r <= 0:
        return 0
    return _sum_g(0, r, window - 1 + ax.lo, ax.s, ax.d, ax.k) - _sum_g(0, r, ax.lo - 1, ax.s, ax.d, ax.k)


def _replicate_before(ax: AxisGeometry, r: int) -> int:
    n, s, d, k, lo = ax.n, ax.s, ax.d, ax.k, ax.lo
    if n == 1:
        return r
    inside = _sum_g(0, r, n - 2 + lo, s, d, k) - _sum_g(0, r, lo, s, d, k)  # taps in (0, n-1)
    low = min(r, lo // s + 1) if lo >= 0 else 0  # rows whose first tap is clamped to 0
    high = max(0, r - max(0, -((ax.extent - n - lo) // s)))  # rows whose last tap is clamped to n-1
    return inside + low + high


def interior_rows(ax: AxisGeometry) -> tuple[int, int]:
    """Rows ``[i0, i1)`` whose taps all land inside ``[0, n)`` (the mode changes nothing there)."""
    i0 = -(-ax.lo // ax.s) if ax.lo > 0 else 0
    i1 = (ax.n + ax.lo - ax.extent) // ax.s + 1
    i1 = max(i0, min(ax.o, i1))
    return min(i0, i1), i1


@functools.lru_cache(maxsize=1024)
def _table_rows(ax: AxisGeometry, r0: int, r1: int, transposed: bool) -> int:
    """Entries in rows ``[r0, r1)`` read off the axis table, a chunk of rows at a time (kept: builds ask again)."""
    from .pattern import axis_table

    total = 0
    for a in range(r0, r1, _COUNT_ROWS):
        total += axis_table(ax, a, min(r1, a + _COUNT_ROWS), transposed=transposed).nnz
    return total


def axis_nnz_before(ax: AxisGeometry, r: int, transposed: bool = False) -> int:
    """Entries of the axis matrix in its rows ``[0, r)`` (rows: outputs, or inputs if ``transposed``).

    Examples
    --------
    >>> ax = AxisGeometry(n=10**9, k=3, s=1, d=1, lo=1, hi=1, o=10**9)
    >>> axis_nnz_before(ax, 10**9)
    2999999998
    """
    if ax.mode == "zeros":
        return _zeros_before(ax, ax.o, r) if transposed else _zeros_before(ax, r, ax.n)
    if transposed:  # the padding's bands read off tables; between them, the zero-padding count
        w = min(_band(ax), ax.n)
        right = max(w, ax.n - w)
        if r <= w:
            return _table_rows(ax, 0, r, True)
        total = _table_rows(ax, 0, w, True) + _zeros_before(ax, ax.o, min(r, right)) - _zeros_before(ax, ax.o, w)
        return total + _table_rows(ax, right, max(r, right), True)
    if ax.mode == "circular":
        return r * min(ax.k, ax.n // math.gcd(ax.d, ax.n))
    if ax.mode == "replicate":
        return _replicate_before(ax, r)
    i0, i1 = interior_rows(ax)  # reflect
    inside = max(0, min(r, i1) - i0) * ax.k
    return inside + _table_rows(ax, 0, min(r, i0), False) + _table_rows(ax, i1, max(r, i1), False)


def _band(ax: AxisGeometry) -> int:
    """Inputs within this distance of either end are the only ones a padding mode folds taps onto.

    Virtual inputs run from ``-lo`` to ``n - 1 + over`` (``over`` past the end);
    reflect folds them onto ``[0, lo]`` and ``[n-1-over, n)``, circular onto
    ``[0, over]`` and ``[n-lo, n)``, replicate onto the two ends.
    """
    if ax.mode == "zeros":
        return 0
    over = (ax.o - 1) * ax.s - ax.lo + ax.extent - ax.n
    return max(ax.lo, over, 0) + 2


def axis_nnz(ax: AxisGeometry) -> int:
    """Entries of the axis matrix (the same for it and its transpose)."""
    return axis_nnz_before(ax, ax.o)


def axis_rows(ax: AxisGeometry, transposed: bool = False) -> int:
    """Rows of the axis matrix: ``o`` outputs, or ``n`` inputs if ``transposed``."""
    return ax.n if transposed else ax.o


def axis_row_bound(ax: AxisGeometry, transposed: bool = False) -> int:
    """An upper bound on the entries of one row of the axis matrix, in O(1).

    Forward: ``min(k, n)``.  Transposed: input ``u`` is read by the taps of
    one residue class mod ``s/gcd(s, d)``, at most ``ceil(k gcd(s, d)/s)`` of
    them per image of ``u`` (up to three with reflect or circular padding; the
    clamped edges of replicate padding gather every border row).
    """
    if not transposed:
        return max(1, min(ax.k, ax.n))
    per = -(-ax.k * math.gcd(ax.s, ax.d) // ax.s)
    if ax.mode == "zeros":
        bound = per
    elif ax.mode == "replicate":
        bound = per + (max(ax.lo, 0) + max(ax.hi, 0) + ax.extent) // ax.s + 2
    else:
        bound = 3 * per
    return max(1, min(ax.o, bound))


def axis_max_row(ax: AxisGeometry, transposed: bool = False) -> int:
    """The most entries in one row of the axis matrix.

    ``k`` for a forward axis with a row whose taps all land inside; otherwise
    read off the tables a chunk of rows at a time (bounded memory); for a
    transposed axis only the rows near the ends and one period of ``s`` rows
    between them, where every row reads all the taps of its residue class.
    """
    from .pattern import axis_table

    if not transposed:
        i0, i1 = interior_rows(ax)
        if i1 > i0:
            return ax.k
    rows = axis_rows(ax, transposed)
    ranges = [(0, rows)]
    if transposed:  # inputs [x, y) read every tap of their residue class mod s: one period suffices
        x = max(0, (ax.k - 1) * ax.d - ax.lo, _band(ax))
        y = min((ax.o - 1) * ax.s - ax.lo + 1, rows - _band(ax))
        if y - x > ax.s:
            ranges = [(0, x), (x, x + ax.s), (y, rows)]
    best = 0
    for r0, r1 in ranges:
        for a in range(r0, r1, _COUNT_ROWS):
            p = axis_table(ax, a, min(r1, a + _COUNT_ROWS), transposed=transposed)
            if p.n_rows:
                best = max(best, int(p.row_lengths.max()))
    return best


def axis_slot_bound(ax: AxisGeometry) -> int:
    """A bound on the taps merged into one entry (the slots of a table), in O(1).

    1 with zero padding; reflect and circular padding fold the virtual inputs
    (within ``[-n, 2n)``) at most three deep; a replicated edge gathers the
    taps beyond it, at most ``(lo + hi)/d + 1`` (both edges at once when ``n = 1``).
    """
    if ax.mode == "zeros":
        return 1
    if ax.mode == "replicate":
        return max(1, min(ax.k, (ax.lo + ax.hi) // ax.d + 1))
    return max(1, min(ax.k, 3))

"""The CSR structure of a range of rows: the per-axis tables multiplied out.

:func:`fill_structure` writes the column indices of a range of spatial rows
of one output channel (all its in-group input channels) and the tap numbers
of the entries whose values must be gathered: the multi-axis CSR pattern.
Interior rows are shifted copies of one another (:func:`shift_runs`, the
``copies`` of a table), so their indices are written as copies of one row
plus a shift, and their values as plain copies (:func:`repeat_block`): one
broadcast per run of rows, not a gather per entry.  Nothing here depends on
weights.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import AxisGeometry
from .pattern import AxisPattern
from .sizes import axis_row_bound, axis_slot_bound

__all__ = ["TapBuffer", "fill_structure", "repeat_block", "runs_bytes", "shift_runs"]


def shift_runs(p: AxisPattern, c0: int, c1: int):
    """Local rows ``[c0, c1)`` of ``p`` as runs ``(first, count, delta, anchor)`` of "shifted copies".

    In a run with ``delta`` not None, row ``first + i`` has the taps of the
    stored row ``anchor`` and its columns plus ``(first + i - anchor) *
    delta`` (the interior rows of a forward axis, with ``delta = s``); rows
    with ``delta`` None are not known to be copies.  The table's ``copies``
    are taken as they are; the other rows are compared, in time and memory
    proportional to their entries.

    Examples
    --------
    >>> from convmat.geometry import AxisGeometry
    >>> from convmat.pattern import axis_table
    >>> p = axis_table(AxisGeometry(n=6, k=3, s=1, d=1, lo=1, hi=1, o=6))
    >>> shift_runs(p, 0, 6)  # row 0 (left border), rows 1-4 copies of row 1, row 5
    [(0, 1, None, None), (1, 4, 1, 1), (5, 1, None, None)]
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
    """``(P, key, seg_end)``: rows ``r + P*u + t`` (``t < P``) are rows ``r + t`` shifted by ``u * key[r]``.

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

    Examples
    --------
    >>> from convmat.backends import get_backend
    >>> a = np.zeros(8, dtype=np.int32); a[:2] = [5, 7]
    >>> repeat_block(get_backend("scipy"), a, 0, 2, 4, shift=10)
    >>> a.tolist()
    [5, 7, 15, 17, 25, 27, 35, 37]
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
    runs, r = [], c0  # a table's copies are one run; only the other rows are compared
    for first, count, _ in last.copies:
        lo, hi = max(first, c0), min(first + count, c1)
        if hi > lo:
            runs += last.runs(r, lo) + [(lo, hi)]
            r = hi
    runs = [(r0, r1) for r0, r1 in runs + last.runs(r, c1) if last.ptr[r0 + 1] > last.ptr[r0]]
    lengths = last.row_lengths[c0:c1] if len(runs) > 4 else None
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

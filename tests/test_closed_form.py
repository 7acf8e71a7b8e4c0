"""Per-axis sizes in closed form (convmat.sizes) against a slow, obvious loop.

For every padding mode, forward and transposed, the prefix counts
``axis_nnz_before`` equal the row lengths counted by a Python loop straight
from DESIGN.md (virtual input ``u = j*s - lo + t*d``, mapped by the mode,
distinct columns per row); the row-length bound, the slot bound and the
range-limited tables (``axis_table(ax, start, stop)``) agree with the same
loop, and so do the rows of compact tables and the runs of rows the builder
copies (``convmat.structure``).  ``floor_sum`` and ``repeat_block`` are
checked against their definitions.  Plans on sizes near
10**9 give the values of the formulas worked by hand.
"""

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convmat import conv_plan, conv_transpose_plan
from convmat.geometry import ConvGeometry
from convmat.backends import get_backend
from convmat.pattern import axis_table
from convmat.structure import _NO_SHIFT, _prefix_groups, repeat_block, shift_runs
from convmat.sizes import axis_max_row, axis_nnz_before, axis_row_bound, axis_slot_bound, floor_sum


def slow_rows(ax, transposed):
    """{row: {col: [taps]}} by the definition (DESIGN.md), one entry at a time."""
    table = {}
    for j in range(ax.o):
        for t in range(ax.k):
            u = j * ax.s - ax.lo + t * ax.d
            if ax.mode == "zeros" and not 0 <= u < ax.n:
                continue
            if ax.mode == "reflect":
                u = abs(u)
                u = 2 * (ax.n - 1) - u if u >= ax.n else u
            elif ax.mode == "replicate":
                u = min(max(u, 0), ax.n - 1)
            elif ax.mode == "circular":
                u %= ax.n
            r, c = (u, j) if transposed else (j, u)
            table.setdefault(r, {}).setdefault(c, []).append(t)
    return table


@st.composite
def axes(draw):
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if mode == "zeros" and draw(st.booleans()):
        n = draw(st.integers(1, 8))
        pad = ((draw(st.integers(0, 3)), draw(st.integers(0, 3))),)
        a = draw(st.integers(0, max(s, d) - 1))
        try:
            geom = ConvGeometry.for_transpose((n,), (k,), stride=s, dilation=d, padding=pad, output_padding=a)
        except ValueError:
            return None
    else:
        n = draw(st.integers(1, 30))  # long enough for rows between the two padded ends
        pad = ((draw(st.integers(0, min(n + 1, 6))), draw(st.integers(0, min(n + 1, 6)))),)
        try:
            geom = ConvGeometry.forward((n,), (k,), stride=s, dilation=d, padding=pad, padding_mode=mode)
        except ValueError:
            return None
    return geom.axes[0]


@settings(max_examples=400, deadline=None)
@given(ax=axes(), transposed=st.booleans(), data=st.data())
def test_prefix_counts_bounds_and_tables_match_the_loop(ax, transposed, data):
    assume(ax is not None)
    rows = slow_rows(ax, transposed)
    n_rows = ax.n if transposed else ax.o
    lengths = [len(rows.get(r, {})) for r in range(n_rows)]
    prefix = np.concatenate(([0], np.cumsum(lengths))).tolist()
    assert [axis_nnz_before(ax, r, transposed) for r in range(n_rows + 1)] == prefix
    assert max(lengths) <= axis_row_bound(ax, transposed)
    assert axis_max_row(ax, transposed) == max(lengths)
    assert max((len(v) for row in rows.values() for v in row.values()), default=1) <= axis_slot_bound(ax)
    r0 = data.draw(st.integers(0, n_rows))
    r1 = data.draw(st.integers(r0, n_rows))
    p = axis_table(ax, r0, r1, transposed=transposed)
    assert p.row0 == r0 and p.n_rows == r1 - r0
    for i, r in enumerate(range(r0, r1)):
        cols = p.cols[p.ptr[i] : p.ptr[i + 1]].tolist()
        assert cols == sorted(rows.get(r, {}))
        for e, c in zip(range(p.ptr[i], p.ptr[i + 1]), cols):
            assert sorted(x for x in p.taps[e].tolist() if x < ax.k) == sorted(rows[r][c])


def rows_of(p, r, runs):
    """Columns and taps of local row ``r`` of ``p``, read through its runs of copies (as the builder does)."""
    for first, count, delta, anchor in runs:
        if delta is not None and first <= r < first + count:
            e = p.entry(int(p.ptr[anchor]))
            L = int(p.ptr[anchor + 1] - p.ptr[anchor])
            return (p.cols[e : e + L] + (r - anchor) * delta).tolist(), p.taps[e : e + L].tolist()
    e = p.entry(int(p.ptr[r]))
    L = int(p.ptr[r + 1] - p.ptr[r])
    return p.cols[e : e + L].tolist(), p.taps[e : e + L].tolist()


@settings(max_examples=300, deadline=None)
@given(ax=axes(), transposed=st.booleans(), data=st.data())
def test_compact_tables_and_runs_of_copies_match_the_loop(ax, transposed, data):
    """Rows claimed to be shifted copies (stored once in a compact table) are the loop's rows."""
    assume(ax is not None)
    rows = slow_rows(ax, transposed)
    n_rows = ax.n if transposed else ax.o
    r0 = data.draw(st.integers(0, n_rows))
    r1 = data.draw(st.integers(r0, n_rows))
    p = axis_table(ax, r0, r1, transposed=transposed, compact=True)
    full = axis_table(ax, r0, r1, transposed=transposed)
    assert p.ptr.tolist() == full.ptr.tolist() and p.cols.size <= full.cols.size
    c0 = data.draw(st.integers(0, r1 - r0))
    c1 = data.draw(st.integers(c0, r1 - r0))
    runs = shift_runs(p, c0, c1)
    assert [r for first, count, _, _ in runs for r in range(first, first + count)] == list(range(c0, c1))
    for r in range(c0, c1):
        cols, taps = rows_of(p, r, runs)
        assert cols == sorted(rows.get(r0 + r, {}))
        for c, t in zip(cols, taps):
            assert sorted(x for x in t if x < ax.k) == sorted(rows[r0 + r][c])
    groups = _prefix_groups(full)
    if groups is not None:  # rows r + P*u + t are rows r + t shifted by u * key[r], within a run of keys
        P, key, seg_end = groups
        r = data.draw(st.integers(0, key.size - 1))
        if key[r] != _NO_SHIFT:
            for u in range((int(seg_end[r]) - r) // P + 1):
                for t in range(P):
                    cols, taps = rows_of(full, r + t, [])
                    assert rows_of(full, r + P * u + t, []) == ([c + u * int(key[r]) for c in cols], taps)


@given(size=st.integers(1, 40), count=st.integers(1, 3000), shift=st.integers(-3, 3))
@settings(max_examples=60, deadline=None)
def test_repeat_block_is_its_definition(size, count, shift):
    rng = np.random.default_rng(size * 7919 + count)
    a = np.full(size * count + 3, -1, dtype=np.int64)
    a[:size] = rng.integers(0, 100, size)
    expected = np.concatenate([a[:size] + i * shift for i in range(count)] + [a[size * count :]])
    repeat_block(get_backend("scipy"), a, 0, size, count, shift)
    assert a.tolist() == expected.tolist()


@settings(max_examples=300)
@given(count=st.integers(0, 60), m=st.integers(1, 50), a=st.integers(-100, 100), b=st.integers(-10**6, 10**6))
def test_floor_sum_is_its_definition(count, m, a, b):
    assert floor_sum(count, m, a, b) == sum((a * i + b) // m for i in range(count))


def test_billion_sample_sizes_worked_by_hand():
    """k=3, padding 1 on 10**9 samples: every output but the two ends reads 3 inputs."""
    n = 10**9
    plan = conv_plan((2, 3, 3), (n,), padding=1)
    assert plan.nnz == 2 * 3 * (3 * n - 2)
    assert plan.row_nnz(0, 1) == 3 * 2 and plan.row_nnz(1, 2) == 3 * 3
    assert plan.row_nnz(n - 1, n + 1) == 3 * 2 + 3 * 2  # last row of channel 0, first of channel 1
    # 2-D: per axis 3n - 2 entries
    plan2 = conv_plan((1, 1, 3, 3), (n, n), padding=1)
    assert plan2.nnz == (3 * n - 2) ** 2
    assert plan2.nbytes(np.float32) == plan2.nnz * 12 + (n * n + 1) * 8
    # transposed, stride 2: every (j, t) lands once, minus the taps on the padding
    tplan = conv_transpose_plan((1, 1, 3), (n,), stride=2, padding=1, output_padding=1)
    assert tplan.output_shape == (1, 2 * n) and tplan.nnz == 3 * n - 1


def test_dilated_kernel_of_a_million_taps():
    """k = 10**6 taps, dilation 3, on 10**9 samples: o = n - 3(k-1), every row holds k entries."""
    n, k = 10**9, 10**6
    plan = conv_plan((1, 1, k), (n,), dilation=3)
    o = n - 3 * (k - 1)
    assert plan.shape == (o, n) and plan.nnz == o * k
    assert plan.max_row_nnz() == k
    # with 'same' padding the border rows lose the taps on the padding: sum over both ends
    same = conv_plan((1, 1, k), (n,), dilation=3, padding="same")
    lo = (3 * (k - 1)) // 2
    lost = sum(math.ceil((lo - j) / 3) for j in range(0, lo, 1) if lo - j > 0)  # left end, loop over rows
    hi = 3 * (k - 1) - lo
    lost += sum(math.ceil((hi - (n - 1 - j)) / 3) for j in range(n - hi, n))
    assert same.nnz == n * k - lost

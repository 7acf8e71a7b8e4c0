"""Per-axis sizes in closed form (convmat.sizes) against a slow, obvious loop.

For every padding mode, forward and transposed, the prefix counts
``axis_nnz_before`` equal the row lengths counted by a Python loop straight
from DESIGN.md (virtual input ``u = j*s - lo + t*d``, mapped by the mode,
distinct columns per row); the row-length bound, the slot bound and the
range-limited tables (``axis_table(ax, start, stop)``) agree with the same
loop.  ``floor_sum`` is checked against its definition.  Plans on sizes near
10**9 give the values of the formulas worked by hand.
"""

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convmat import conv_plan, conv_transpose_plan
from convmat.geometry import ConvGeometry
from convmat.pattern import axis_table
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

"""The compiled fill (convmat.fill) writes the same bits as the array path of convmat.assemble.

The array path is the one every backend runs and the one the oracles
(PyTorch, scipy.signal, hand-worked arrays) check on small layers; the
compiled fill takes over for host builds once Numba is loaded (a build of at
least ``fill.FILL_KERNEL_NNZ`` entries starts loading it).  Here both run
on the same plans, rows and threads, and must agree bit for bit (values
compared as bytes, so -0.0 and NaN payloads count).
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convmat
from convmat import assemble, fill
from convmat._loader import Loader

MODES = ("zeros", "reflect", "replicate", "circular")


def _same(A, B):
    assert A.shape == B.shape
    assert A.indptr.dtype == B.indptr.dtype and A.indices.dtype == B.indices.dtype
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)
    assert A.data.dtype == B.data.dtype
    assert A.data.tobytes() == B.data.tobytes()


def _build(plan, w, engine, monkeypatch, **kw):
    monkeypatch.setattr(fill, "FILL_KERNEL_NNZ", 0)
    monkeypatch.setattr(fill, "FILL_KERNEL_WAIT", True)
    monkeypatch.setattr(fill, "USE_FILL_KERNEL", engine == "compiled")
    return plan.build(w, **kw)


@st.composite
def plans(draw):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    size = tuple(draw(st.integers(1, {1: 40, 2: 12, 3: 6}[ndim])) for _ in range(ndim))
    if draw(st.booleans()):
        padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
        out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        try:
            plan = convmat.conv_transpose_plan((cin, cout // groups) + kernel, size, stride=stride,
                                               padding=padding, dilation=dilation, groups=groups,
                                               output_padding=out_pad)
        except ValueError:
            return None
    else:
        mode = draw(st.sampled_from(MODES))
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(ndim))
        try:
            plan = convmat.conv_plan((cout, cin // groups) + kernel, size, stride=stride, padding=padding,
                                     dilation=dilation, groups=groups, padding_mode=mode)
        except ValueError:
            return None
    return plan


@settings(max_examples=150, deadline=None)
@given(plan=plans(), dtype=st.sampled_from([np.float32, np.float64, np.complex64, np.complex128]),
       flip=st.booleans(), threads=st.integers(1, 2), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_compiled_fill_equals_the_array_path(plan, dtype, flip, threads, seed, data):
    assume(plan is not None and plan.nnz > 0)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(plan.weight_shape)
    if np.dtype(dtype).kind == "c":
        w = w + 1j * rng.standard_normal(plan.weight_shape)
    w = w.astype(dtype)
    m = plan.shape[0]
    start = data.draw(st.integers(0, m - 1))
    rows = data.draw(st.sampled_from([None, (start, data.draw(st.integers(start, m)))]))
    kw = dict(flip=flip, threads=threads, rows=rows)
    with pytest.MonkeyPatch.context() as mp:
        _same(_build(plan, w, "compiled", mp, **kw), _build(plan, w, "arrays", mp, **kw))


@pytest.mark.parametrize("case", [
    dict(weight=(1, 1, 3, 3), size=(300, 301), padding=1),
    dict(weight=(1, 1, 9), size=(200_000,), padding=4),
    dict(weight=(2, 2, 3, 3, 3), size=(20, 21, 22), padding=1),
    dict(weight=(4, 4, 3, 3), size=(64, 64), padding=2, dilation=2, padding_mode="reflect"),
    dict(weight=(8, 1, 3, 3), size=(128, 128), padding=1, groups=8),
])
def test_compiled_fill_on_threaded_builds_with_many_chunks(case, monkeypatch, rng):
    """Builds above the threading threshold, cut into many chunks: same bits on 1 and 2 threads."""
    case = dict(case)
    plan = convmat.conv_plan(case.pop("weight"), case.pop("size"), **case)
    w = rng.standard_normal(plan.weight_shape).astype(np.float32)
    ref = _build(plan, w, "arrays", monkeypatch)
    assert plan.nnz >= assemble._THREADED_NNZ // 2
    for threads in (1, 2):
        _same(_build(plan, w, "compiled", monkeypatch, threads=threads), ref)


def test_the_kernel_source_runs_as_plain_python(monkeypatch, rng):
    """The kernel's Python source (what Numba compiles) gives the same bits, run uncompiled."""
    plan = convmat.conv_plan((2, 3, 3, 2), (7, 6), padding=((2, 1), (1, 0)), stride=(2, 1), padding_mode="reflect")
    w = rng.standard_normal(plan.weight_shape)
    ref = _build(plan, w, "arrays", monkeypatch)
    monkeypatch.setattr(fill, "kernel", lambda *args, **kwargs: fill.fill_rows)
    _same(_build(plan, w, "compiled", monkeypatch), ref)


def test_without_numba_the_array_path_builds(monkeypatch, rng):
    """When Numba does not import, large builds run the array path (same matrix)."""
    plan = convmat.conv_plan((2, 2, 3, 3), (40, 40), padding=1)
    w = rng.standard_normal(plan.weight_shape)
    ref = _build(plan, w, "compiled", monkeypatch)
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("numba blocked by the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    monkeypatch.setattr(fill, "LOADER", Loader("fill", fill._make, fill._prepare))  # nothing loaded yet
    assert fill.kernel(np.float64, np.int32, wait=True) is None and fill.loaded() is None
    _same(_build(plan, w, "compiled", monkeypatch), ref)


def _rows_as_kernel_reads(table, n_rows):
    row0, ptr, cols, taps, first, count, delta = table
    out = []
    for l in range(n_rows):
        src, n, shift = fill._row(ptr, first, count, delta, l)
        out.append((cols[src : src + n] + shift, taps[src : src + n]))
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rows", [(0, 40), (3, 37), (0, 2), (19, 21), (30, 40)])
def test_kernel_tables_describe_every_row(mode, rows):
    """``table_arrays`` (any table) and ``forward_table`` (interior rows by formula) give each row's columns
    and taps as the full table holds them."""
    from convmat.geometry import ConvGeometry
    from convmat.pattern import axis_table

    ax = ConvGeometry.forward((43,), (4,), stride=1, dilation=2, padding=((3, 2),), padding_mode=mode).axes[0]
    r0, r1 = rows
    full = axis_table(ax, r0, r1)
    for table in (fill.table_arrays(axis_table(ax, r0, r1, compact=True)), fill.forward_table(ax, r0, r1)):
        assert table[0] == r0
        got = _rows_as_kernel_reads(table, r1 - r0)
        for l, (cols, taps) in enumerate(got):
            np.testing.assert_array_equal(cols, full.cols[full.ptr[l] : full.ptr[l + 1]])
            want = full.taps[full.ptr[l] : full.ptr[l + 1]]
            np.testing.assert_array_equal(taps[:, : want.shape[1]], want)
            assert (taps[:, want.shape[1] :] == ax.k).all()  # extra slots hold the sentinel


def test_a_fork_waits_for_the_loader_and_the_child_builds(rng):
    """A child forked while the compiled fill loads in the background does not inherit a half-held
    import or compiler lock: the fork waits for the loader, and the child builds (same matrix)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method")
    plan = convmat.conv_plan((2, 2, 3, 3), (24, 24), padding=1)
    w = rng.standard_normal(plan.weight_shape)
    ref = plan.build(w)
    fill.kernel(np.complex64, np.int64)  # a signature nothing else loads: a loader runs now (or has run)
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply(_build_in_child, (plan, w))
    assert not fill.loading()  # the fork waited for it
    _same(got, ref)


def _build_in_child(plan, w):
    return plan.build(w)


def test_fused_kernels_cache_is_dropped_when_spmm_kernels_change(tmp_path):
    """Numba checks a cached function against its own file only; the fused kernels inline spmm's
    row kernels, so their cache is flushed when convmat/spmm/_kernels.py differs from the last load."""

    class Cache:
        cache_path = str(tmp_path)
        flushed = 0

        def flush(self):
            self.flushed += 1

    class Dispatcher:
        _cache = Cache()

    d = Dispatcher()
    fill._drop_stale_cache(d)  # no digest yet: flushed, digest written
    assert d._cache.flushed == 1
    fill._drop_stale_cache(d)  # the same file: the cache is kept
    assert d._cache.flushed == 1
    (tmp_path / "convmat-fill-inlined.sha256").write_text("a digest of another _kernels.py")
    fill._drop_stale_cache(d)
    assert d._cache.flushed == 2

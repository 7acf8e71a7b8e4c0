"""Pictures: the cells a picture lights up are the matrix's non-zeros."""

import functools
import math
import subprocess
import sys

import numpy as np
import pytest

from convmat import conv_matrix, conv_plan, conv_transpose_matrix, viz
from convmat.viz import CellState
from convmat.viz._common import _STATE_COLORS


# Frames are NumPy only; drawing needs matplotlib (and Pillow for GIFs): skipped per test.
@pytest.fixture
def mpl():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    return matplotlib


@pytest.fixture
def pil(mpl):
    return pytest.importorskip("PIL.Image")

# Geometries that exercise every branch: stride 2, dilation 2, asymmetric pairs, every mode, 1-D.
CASES = {
    "zeros-s2-d2-asym": dict(in_shape=(5, 6), kernel_size=3, stride=2, padding=((1, 2), (0, 1)), dilation=2),
    "reflect-s2-d2-asym": dict(
        in_shape=(5, 6), kernel_size=3, stride=2, padding=((1, 2), (2, 1)), dilation=2, padding_mode="reflect"
    ),
    "reflect-mixed": dict(
        in_shape=(6, 5), kernel_size=(3, 2), stride=(2, 1), padding=((2, 1), (1, 0)), dilation=(1, 2),
        padding_mode="reflect",
    ),
    "replicate": dict(in_shape=(4, 4), kernel_size=3, stride=1, padding=2, padding_mode="replicate"),
    "circular-full": dict(in_shape=(3, 4), kernel_size=2, padding="full", padding_mode="circular"),
    "same-s2": dict(in_shape=(5, 7), kernel_size=4, stride=2, padding="same"),
    "1d-circular": dict(in_shape=(7,), kernel_size=3, stride=2, padding=((2, 1),), padding_mode="circular"),
}


def _plan_and_matrix(case):
    kernel = case["kernel_size"]
    ndim = len(case["in_shape"])
    kernel = (kernel,) * ndim if isinstance(kernel, int) else tuple(kernel)
    kw = {k: v for k, v in case.items() if k not in ("in_shape", "kernel_size")}
    w = np.ones((1, 1, *kernel))
    return conv_plan(w.shape, case["in_shape"], **kw), conv_matrix(w, case["in_shape"], **kw)


def _oracle_reads(geom, r):
    """Slow loop oracle: {input ravel index: taps} for output r, from the per-axis formula."""
    out = geom.out_shape
    j = np.unravel_index(r, out)
    reads = {}
    for t in np.ndindex(*geom.kernel_size):
        u = []
        for ax, jj, tt in zip(geom.axes, j, t):
            v = jj * ax.s - ax.lo + tt * ax.d
            if ax.mode == "zeros" and not 0 <= v < ax.n:
                break
            if ax.mode == "reflect":
                v = -v if v < 0 else (2 * (ax.n - 1) - v if v >= ax.n else v)
            elif ax.mode == "replicate":
                v = min(max(v, 0), ax.n - 1)
            elif ax.mode == "circular":
                v %= ax.n
            u.append(v)
        else:
            key = int(np.ravel_multi_index(u, geom.in_shape))
            reads[key] = reads.get(key, 0) + 1
    return reads


@pytest.mark.parametrize("name", list(CASES))
def test_frame_cells_are_the_rows_of_C(name):
    case = CASES[name]
    plan, C = _plan_and_matrix(case)
    frames = viz.conv_arithmetic_frames(**case)
    geom = plan.geometry
    assert len(frames) == math.prod(geom.out_shape) == C.shape[0]
    pads = geom.padding if len(geom.padding) == 2 else ((0, 0), *geom.padding)
    in2 = geom.in_shape if len(geom.in_shape) == 2 else (1, *geom.in_shape)
    for r, frame in enumerate(frames):
        cols = np.sort(C.indices[C.indptr[r] : C.indptr[r + 1]])
        # the frame's metadata is row r of C ...
        assert frame.index == r
        np.testing.assert_array_equal(frame.columns, cols)
        # ... and so is its explicit colour array: READ cells = column indices, shifted by the low padding
        read = np.argwhere(frame.input_state == CellState.READ) - [pads[0][0], pads[1][0]]
        np.testing.assert_array_equal(np.sort(np.ravel_multi_index(read.T, in2)), cols)
        assert frame.input_cells == tuple(tuple(int(v) for v in c) for c in np.argwhere(
            np.isin(np.arange(math.prod(in2)).reshape(in2), cols)))
        # the matrix agrees with a loop over the taps (an independent oracle)
        oracle = _oracle_reads(geom, r)
        assert sorted(oracle) == cols.tolist()
        np.testing.assert_array_equal(frame.weights, [oracle[c] for c in cols.tolist()])
        # every tap reads a cell the row reads; taps on real cells read themselves
        sources = {np.ravel_multi_index(t.source, in2) for t in frame.taps if t.source is not None}
        assert sources == set(cols.tolist())
        for tap in frame.taps:
            a, b = tap.padded_cell[0] - pads[0][0], tap.padded_cell[1] - pads[1][0]
            if 0 <= a < in2[0] and 0 <= b < in2[1]:
                assert tap.source == (a, b)
            elif geom.padding_mode == "zeros":
                assert tap.source is None
                assert frame.input_state[tap.padded_cell] == CellState.PADDING_TAP
        assert len(frame.taps) == math.prod(geom.kernel_size)
        # output grid: one current pixel, the earlier ones done
        out = frame.output_state.ravel()
        assert np.flatnonzero(out == CellState.CURRENT).tolist() == [r]
        assert np.all(out[:r] == CellState.DONE) and np.all(out[r + 1 :] == CellState.OUTPUT)


def test_frames_depend_on_geometry():
    a = viz.conv_arithmetic_frames((5, 5), 3, stride=2, padding=1)
    b = viz.conv_arithmetic_frames((5, 5), 3, stride=2, padding=1, dilation=2)
    c = viz.conv_arithmetic_frames((5, 5), 3, stride=2, padding=1, padding_mode="reflect")
    assert len(a) == 9 and len(b) == 4 and len(c) == 9
    assert a[0].columns.tolist() == [0, 1, 5, 6]
    assert b[0].columns.tolist() == [6, 8, 16, 18]  # dilation 2: taps 2 apart
    assert c[0].columns.tolist() == [0, 1, 5, 6] and c[0].weights.tolist() == [1, 2, 2, 4]  # reflect folds


def pil_sequence(gif):
    from PIL import ImageSequence

    return ImageSequence.Iterator(gif)


def _cell_rgb(fig, ax, cell, rgb):
    """The colour at the centre of a grid cell of a rendered figure."""
    x, y = ax.transData.transform((cell[1] + 0.3, cell[0] + 0.3))  # off-centre: avoid the label text
    height = rgb.shape[0]
    return rgb[int(round(height - y)), int(round(x))]


def test_rendered_frame_shows_the_rows_of_C(mpl):
    case = CASES["reflect-s2-d2-asym"]
    plan, C = _plan_and_matrix(case)
    frames = viz.conv_arithmetic_frames(**case)
    frame = frames[4]
    fig = viz.draw_frame(frame)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    ax_in, ax_out = fig.axes[:2]
    to_rgb = lambda s: np.round(np.array(mpl.colors.to_rgb(_STATE_COLORS[s])) * 255)  # noqa: E731
    lo = [p[0] for p in plan.geometry.padding]
    cols = set(C.indices[C.indptr[4] : C.indptr[5]].tolist())
    for idx in range(C.shape[1]):
        a, b = np.unravel_index(idx, plan.geometry.in_shape)
        want = CellState.READ if idx in cols else CellState.INPUT
        got = _cell_rgb(fig, ax_in, (a + lo[0], b + lo[1]), rgb)
        np.testing.assert_allclose(got, to_rgb(want), atol=2)
    oi, oj = frame.output_cell
    np.testing.assert_allclose(_cell_rgb(fig, ax_out, (oi, oj), rgb), to_rgb(CellState.CURRENT), atol=2)
    assert "reflect" in fig._suptitle.get_text() and "dilation 2" in fig._suptitle.get_text()
    # another frame renders other pixels
    fig2 = viz.draw_frame(frames[0])
    fig2.canvas.draw()
    assert not np.array_equal(np.asarray(fig2.canvas.buffer_rgba()), np.asarray(fig.canvas.buffer_rgba()))


def test_gif_has_one_frame_per_output_pixel(tmp_path, pil):
    path = tmp_path / "conv.gif"
    frames, images = viz.animate_conv((4, 5), 3, stride=2, padding=((1, 0), (1, 1)), path=path, dpi=50)
    n_out = math.prod(conv_plan((1, 1, 3, 3), (4, 5), stride=2, padding=((1, 0), (1, 1))).output_shape)
    assert len(frames) == len(images) == n_out == 6
    with pil.open(path) as gif:
        assert gif.format == "GIF"
        assert sum(1 for _ in pil_sequence(gif)) == n_out


def test_scatter_frames_are_the_columns_of_the_transpose(tmp_path, pil):
    kw = dict(stride=2, padding=1, output_padding=1, dilation=1)
    T = conv_transpose_matrix(np.ones((1, 1, 3, 3)), (3, 3), **kw).tocsc()
    frames, images = viz.animate_conv_transpose((3, 3), 3, **kw, path=tmp_path / "t.gif", dpi=40)
    assert len(frames) == len(images) == 9
    m = (6, 6)
    for j, frame in enumerate(frames):
        rows = np.sort(T.indices[T.indptr[j] : T.indptr[j + 1]])
        np.testing.assert_array_equal(frame.rows, rows)
        written = np.flatnonzero(frame.output_state.ravel() == CellState.WRITTEN)
        np.testing.assert_array_equal(written, rows)
        assert frame.output_cells == tuple(zip(*(v.tolist() for v in np.unravel_index(rows, m))))
        assert np.flatnonzero(frame.input_state.ravel() == CellState.CURRENT).tolist() == [j]
    with pil.open(tmp_path / "t.gif") as gif:
        assert sum(1 for _ in pil_sequence(gif)) == 9
    one_d = viz.conv_transpose_frames((4,), 3, stride=3, dilation=2)
    assert len(one_d) == 4 and one_d[1].rows.tolist() == [3, 5, 7]


def test_plot_matrix_small_labels_blocks_and_values(tmp_path, mpl):
    w = np.arange(1.0, 37.0).reshape(2, 2, 3, 3)
    plan = conv_plan(w.shape, (3, 3), padding=1, stride=2)
    C = conv_matrix(w, (3, 3), padding=1, stride=2)
    fig = viz.plot_matrix(C, in_shape=plan.input_shape, out_shape=plan.output_shape, path=tmp_path / "C.png")
    assert (tmp_path / "C.png").stat().st_size > 0
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heat map and colour bar
    assert ax.get_title() == f"C: 8 × 18, nnz {C.nnz} ({100 * C.nnz / 144:.3g}% dense)"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "0 (0,0,0)" and labels[5] == "5 (1,0,1)" and len(labels) == 8
    assert [t.get_text() for t in ax.get_xticklabels()][10] == "(1,0,1)"
    shown = ax.images[0].get_array()
    np.testing.assert_array_equal(shown.filled(0), C.toarray())
    np.testing.assert_array_equal(~shown.mask, C.toarray() != 0)  # not stored = masked
    texts = {t.get_text() for t in ax.texts}
    assert {"in ch 0", "in ch 1", "out ch 0", "out ch 1"} <= texts
    # the transpose, with the shapes swapped
    figT = viz.plot_matrix(C.T, in_shape=plan.output_shape, out_shape=plan.input_shape, title="Cᵀ")
    assert figT.axes[0].get_title().startswith("Cᵀ: 18 × 8")
    with pytest.raises(ValueError, match="swap in_shape and out_shape"):
        viz.plot_matrix(C.T, in_shape=plan.input_shape, out_shape=plan.output_shape)


def test_plot_matrix_summary_counts_blocks(mpl):
    w = np.ones((4, 1, 3, 3))  # groups=2: off-diagonal blocks are empty
    plan = conv_plan(w.shape, (12, 12), padding=1, groups=2)
    C = conv_matrix(w, (12, 12), padding=1, groups=2)
    fig = viz.plot_matrix(C, in_shape=plan.input_shape, out_shape=plan.output_shape, max_dense=100)
    assert len(fig.axes) == 3  # block heat map, row histogram, colour bar
    counts = np.asarray(fig.axes[0].images[0].get_array())
    coo = C.tocoo()
    want = np.zeros((4, 2), dtype=int)
    np.add.at(want, (coo.row // 144, coo.col // 144), 1)
    np.testing.assert_array_equal(counts, want)
    assert counts[0, 1] == counts[3, 0] == 0
    hist = fig.axes[1]
    assert hist.get_title().startswith("nnz per row: min 4, ")
    bars = hist.patches
    assert sum(p.get_height() for p in bars) == C.shape[0]
    # a transposed (CSC) matrix is summarised without conversion
    figT = viz.plot_matrix(C.T, in_shape=plan.output_shape, out_shape=plan.input_shape, max_dense=100)
    np.testing.assert_array_equal(np.asarray(figT.axes[0].images[0].get_array()), want.T)


@pytest.mark.parametrize(
    "args",
    [
        dict(in_shape=(3, 3), kernel_size=3, stride=2, padding=1, output_padding=1),
        dict(in_shape=(3, 4), kernel_size=(2, 3), stride=(3, 2), padding=((0, 1), (2, 1)), dilation=(1, 2)),
        dict(in_shape=(5, 5), kernel_size=2, stride=1, padding=2),  # p > e - 1: the recipe crops
        dict(in_shape=(5,), kernel_size=3, stride=2, padding=1, output_padding=1, dilation=2),
    ],
)
def test_transposed_two_ways_agree(args, mpl):
    fig = viz.transposed_two_ways(**args)
    assert fig.max_difference == 0
    assert len(fig.axes) == 8
    title = fig._suptitle.get_text()
    assert "max |Cᵀx − K_flip·P·Z·x| = 0" in title and "max |Cᵀ − K_flip·P·Z| = 0" in title
    scatter, recipe = fig.axes[3].images[0].get_array(), fig.axes[7].images[0].get_array()
    np.testing.assert_array_equal(scatter, recipe)
    assert fig.axes[3].images[0].get_clim() == fig.axes[7].images[0].get_clim()


def test_before_after_layout_and_scaling(mpl):
    rng = np.random.default_rng(0)
    x = rng.random((3, 8, 8))
    panels = [("x", x), ("C x", 2 * x[:1, ::2, ::2]), ("Cᵀ C x", x[0] - 1), ("16 ch", rng.random((16, 4, 4)))]
    fig = viz.before_after(panels)
    image_axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().splitlines()[0] for ax in image_axes] == ["x", "C x", "Cᵀ C x", "16 ch"]
    assert len(fig.axes) == 8  # four panels, four colour bars
    grey = [ax.images[0].get_clim() for ax in image_axes[1:]]
    assert len(set(grey)) == 1  # one colour scale
    each = viz.before_after(dict(panels[1:3]), scale="each")
    clims = [ax.images[0].get_clim() for ax in each.axes if ax.get_title()]
    assert clims[0] != clims[1]
    with pytest.raises(ValueError, match="scale must be"):
        viz.before_after(panels, scale="global")
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        viz.before_after([("bad", np.zeros((2, 2, 2, 2, 2)))])


def test_before_after_grid_title_and_caption(mpl):
    rng = np.random.default_rng(1)
    panels = [(f"p{i}", rng.random((6, 6))) for i in range(3)]
    caption = "why the picture looks like this: " + "a long sentence " * 20
    fig = viz.before_after(panels, ncols=2, title="a heading", caption=caption, scale="each")
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().splitlines()[0] for ax in shown] == ["p0", "p1", "p2"]
    assert sum(not ax.axison for ax in fig.axes) == 1  # the fourth cell of the 2 x 2 grid is empty
    assert fig._suptitle.get_text() == "a heading"
    text = fig._supxlabel.get_text()
    assert text.replace("\n", " ") == caption.strip() and text.count("\n") >= 2  # wrapped
    with pytest.raises(ValueError, match="ncols must be a positive int or None, got 0"):
        viz.before_after(panels, ncols=0)


def test_bad_geometry_is_refused_with_the_core_message():
    with pytest.raises(ValueError, match="1-D and 2-D"):
        viz.conv_arithmetic_frames((3, 3, 3), 2)
    with pytest.raises(ValueError, match="padding_mode='reflect' needs padding < input size"):
        viz.conv_arithmetic_frames((3, 3), 3, padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match="stride must be"):
        viz.animate_conv((3, 3), 2, stride=(1, 2, 3))


def test_importing_viz_loads_no_matplotlib():
    code = (
        "import sys, convmat, convmat.viz; "
        "bad = [m for m in ('matplotlib', 'PIL') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gif_frames_equal_single_frame_drawings(pil):
    # frame_images blits one figure; each image must be what draw_frame draws for that frame
    frames = viz.conv_arithmetic_frames((4, 4), 3, stride=2, padding=((1, 2), (2, 1)), padding_mode="reflect")
    images = viz.frame_images(frames, dpi=60)
    for k in (0, len(frames) - 1):
        fig = viz.draw_frame(frames[k], dpi=60)
        fig.canvas.draw()
        np.testing.assert_array_equal(np.asarray(images[k]), np.asarray(fig.canvas.buffer_rgba())[..., :3])


def test_frames_are_computed_without_matplotlib():
    """The frames are NumPy only: with matplotlib and Pillow blocked from import they are still computed."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['PIL'] = None\n"
        "from convmat import viz\n"
        "f = viz.conv_arithmetic_frames((5, 5), 3, stride=2, padding=1, padding_mode='reflect')\n"
        "t = viz.conv_transpose_frames((3, 3), 3, stride=2, padding=1, output_padding=1)\n"
        "assert len(f) == 9 and f[0].columns.tolist() == [0, 1, 5, 6], f[0].columns\n"
        "assert len(t) == 9 and t[4].rows.size == 9, t[4].rows\n"
        "try:\n"
        "    viz.draw_frame(f[0])\n"
        "except ImportError as exc:\n"
        "    print('blocked', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("blocked"), proc.stdout  # drawing does need matplotlib: the block held


# --------------------------------------------------------------------------- #
# outputs that nothing writes; output_padding side by side; the recipe with channels
# --------------------------------------------------------------------------- #
def _written_oracle(n, k, s, d, lo, m):
    """Per axis: the outputs u = j*s - lo + t*d that some input j and tap t reach (a loop)."""
    hit = np.zeros(m, bool)
    for j in range(n):
        for t in range(k):
            u = j * s - lo + t * d
            if 0 <= u < m:
                hit[u] = True
    return hit


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(in_shape=(4, 3), kernel_size=3, stride=2, padding=1, dilation=2), "share the factor 2"),
        (dict(in_shape=(5,), kernel_size=2, stride=3), "longer than the kernel's reach 2"),
        (dict(in_shape=(3,), kernel_size=1, stride=2, output_padding=1), "longer than the kernel's reach 1"),
        (dict(in_shape=(3, 3), kernel_size=(3, 2), stride=(2, 4), dilation=(2, 1)), "axis 0: stride 2"),
        (dict(in_shape=(4, 4), kernel_size=3, stride=2, padding=1, output_padding=1), None),
    ],
)
def test_unwritten_outputs_are_the_empty_rows(kw, reason):
    mask, note = viz.unwritten_outputs(**kw)
    ndim = len(kw["in_shape"])
    per = {k: ((v,) * ndim if isinstance(v, int) else v) for k, v in kw.items() if k != "in_shape"}
    per.setdefault("stride", (1,) * ndim)
    per.setdefault("dilation", (1,) * ndim)
    per.setdefault("padding", (0,) * ndim)
    hits = [_written_oracle(n, k, s, d, lo, m) for n, k, s, d, lo, m in zip(
        kw["in_shape"], per["kernel_size"], per["stride"], per["dilation"], per["padding"], mask.shape)]
    want = ~functools.reduce(np.logical_and.outer, hits)  # written iff written on every axis
    np.testing.assert_array_equal(mask, want)
    if reason is None:
        assert not mask.any() and note == ""
    else:
        assert note.startswith(f"{int(mask.sum())} of {mask.size} outputs are written by no input") and reason in note
    frames = viz.conv_transpose_frames(**kw) if ndim <= 2 else []
    for frame in frames:  # the scatter frames mark them and carry the note
        assert frame.scene.note == note
        np.testing.assert_array_equal(frame.output_state.reshape(mask.shape) == CellState.UNWRITTEN, mask)


def test_the_note_is_on_the_pictures(mpl):
    kw = dict(stride=2, padding=1, dilation=2)
    fig = viz.draw_frame(viz.conv_transpose_frames((3, 3), 3, **kw)[4])
    _, note = viz.unwritten_outputs((3, 3), 3, **kw)
    assert note and "note: " + note in [t.get_text() for t in fig.texts]
    two = viz.transposed_two_ways((3, 3), 3, **kw)
    assert "note: " + note in [t.get_text() for t in two.texts] and two.max_difference == 0
    plain = viz.transposed_two_ways((3, 3), 3, stride=2, padding=1, output_padding=1)
    assert not [t for t in plain.texts if t.get_text().startswith("note:")]


def test_output_padding_choices_side_by_side(mpl):
    fig = viz.output_padding_choices((4, 4), 3, stride=2, padding=1)
    assert fig.output_shapes == [(7, 7), (8, 8)]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("output_padding 0: output 7×7") and titles[1].startswith("output_padding 1: output 8×8")
    assert all("has 4×4 outputs" in t and "exact transpose" in t for t in titles)  # both restore the input size
    T = conv_transpose_matrix(np.ones((1, 1, 3, 3)), (4, 4), stride=2, padding=1, output_padding=1)
    shown = fig.axes[1].images[0].get_array()
    np.testing.assert_array_equal(shown.filled(0), np.diff(T.indptr).reshape(8, 8))
    dashed = [p for p in fig.axes[1].patches if p.get_linestyle() == "--"]
    assert len(dashed) == 2  # the added row and column
    assert viz.output_padding_choices((4,), 3, padding=1).output_shapes == [(4,)]  # stride 1: one choice
    with pytest.raises(ValueError, match=r"output_padding must be smaller than max\(stride, dilation\)"):
        viz.output_padding_choices((4,), 3, stride=2, choices=[0, 2])


def test_recipe_matrices_with_channels_and_groups(mpl, monkeypatch):
    w = np.random.default_rng(2).integers(-3, 4, size=(4, 3, 3, 2)).astype(float)  # C_in 4, C_out 6, groups 2
    fig = viz.recipe_matrices(w, (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), output_padding=(1, 0), groups=2)
    assert fig.max_difference == 0
    heads = [ax.get_title().splitlines()[0] for ax in fig.axes]
    assert heads == ["T (built directly)", "= K_flip", "· P", "· Z"]
    T = conv_transpose_matrix(w, (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), output_padding=(1, 0), groups=2)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array().filled(0), T.toarray())
    K = fig.axes[1].images[0].get_array()
    rows, cols = K.shape[0] // 6, K.shape[1] // 4
    assert K.mask[: 3 * rows, 2 * cols :].all() and K.mask[3 * rows :, : 2 * cols].all()  # groups: block diagonal
    with pytest.raises(ValueError) as want:
        conv_transpose_matrix(w, (3, 2), stride=2, output_padding=2, groups=2)
    with pytest.raises(ValueError) as got:
        viz.recipe_matrices(w, (3, 2), stride=2, output_padding=2, groups=2)
    assert str(got.value) == str(want.value)
    from convmat.viz import recipe as recipe_module

    def forbidden(*args, **kwargs):
        raise AssertionError("the factors were built before the size check")

    monkeypatch.setattr(recipe_module.F, "recipe_factors", forbidden)
    with pytest.raises(ValueError, match="more than max_dense=50"):  # refused from the plan alone
        viz.recipe_matrices(w, (3, 2), groups=2, max_dense=50)


def test_draw_writes_the_transposed_pictures(pil, tmp_path, capsys):
    """convmat draw: the scatter GIF (one frame per input pixel of the transposed convolution), two output
    paddings side by side and the recipe's matrices with channels and groups."""
    from PIL import ImageSequence

    from convmat.cli import main

    args = ["draw", "--in-shape", "5", "5", "--kernel", "3", "--stride", "2", "--padding", "1", "--dilation", "2",
            "--in-channels", "2", "--out-channels", "4", "--groups", "2", "--max-frames", "5", "-o", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("conv_transpose.gif", "output_padding.png", "recipe_matrices.png"):
        assert f"wrote {tmp_path / name}" in out and (tmp_path / name).stat().st_size > 0
    _, note = viz.unwritten_outputs((2, 2), 3, stride=2, padding=1, dilation=2)  # the transposed input is 2 x 2
    assert note.startswith("21 of 25 outputs") and f"note: transposed convolution: {note}" in out
    with pil.open(tmp_path / "conv_transpose.gif") as gif:  # the transposed input is 2 x 2: 4 frames (< 5)
        assert sum(1 for _ in ImageSequence.Iterator(gif)) == 4
    # grid 9 x 9 = 81 cells (n + e - 1 per axis) fits --max-dense 90; K_flip has 4 x 9 x 9 columns (2 x 2 input,
    # 1 zero inserted: 3 x 3, padded by e - 1 - p = 3 on each side)
    assert main(args[:-2] + ["--max-frames", "2", "--max-dense", "90", "-o", str(tmp_path / "small")]) == 0
    out = capsys.readouterr().out
    assert "conv_transpose.gif shows the first 2 of 4 input pixels (--max-frames)" in out
    assert "recipe_matrices.png: the recipe's matrices have 324 rows or columns, more than --max-dense 90" in out
    assert not (tmp_path / "small" / "recipe_matrices.png").exists()

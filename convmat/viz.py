"""Pictures of convolution matrices, drawn from the matrices themselves.

Dumoulin & Visin's convolution-arithmetic animations were drawn by hand for a
dozen cases.  This module draws them for any geometry convmat accepts, and
every highlighted cell comes from the sparse matrix, not from a second copy of
the formulas: the input cells lit up for output pixel ``r`` are the column
indices of row ``r`` of :func:`convmat.conv_matrix` (ones kernel, one
channel), the output cells lit up for input pixel ``j`` of a transposed
convolution are the row indices of column ``j`` of
:func:`convmat.conv_transpose_matrix`.  The picture is the truth about the
code.

Public functions
----------------
plot_matrix
    Heat map of a matrix with its channel blocks outlined and its rows and
    columns labelled ``(c, i, j)``; a summary (nnz per block, nnz per row) for
    matrices too large to draw.
conv_arithmetic_frames, animate_conv
    One frame per output pixel of a forward convolution (any padding, mode,
    stride, dilation); a GIF.
conv_transpose_frames, animate_conv_transpose
    One frame per input pixel of a transposed convolution: the scatter view.
draw_frame
    One frame as a matplotlib Figure.
transposed_two_ways
    The transposed convolution as scatter (columns of ``Cᵀ``) and as the
    classic recipe (zero insertion, padding ``e-1-p``, flipped kernel,
    stride-1 sweep) from :mod:`convmat.factors`, with the difference printed.
before_after
    A row of images (forward, transposed, inverse...) on one colour scale.

matplotlib (and Pillow, for GIFs) are imported inside the functions that need
them: ``import convmat.viz`` loads neither.  Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so they work headless and do not
accumulate in pyplot's figure list; they display in notebooks as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from .build import conv_matrix, conv_plan, conv_transpose_matrix, conv_transpose_plan
from .geometry import normalize_padding, normalize_per_axis, normalize_shape

__all__ = [
    "CellState",
    "ConvFrame",
    "ScatterFrame",
    "Tap",
    "animate_conv",
    "animate_conv_transpose",
    "before_after",
    "conv_arithmetic_frames",
    "conv_transpose_frames",
    "draw_frame",
    "frame_images",
    "plot_matrix",
    "save_gif",
    "transposed_two_ways",
]


# --------------------------------------------------------------------------- #
# cell states: the explicit colour array behind every frame
# --------------------------------------------------------------------------- #
class CellState(IntEnum):
    """What a cell of a frame shows; frames hold arrays of these codes.

    ``INPUT``/``PADDING`` idle input and padding cells; ``READ`` an input cell
    that the current matrix row reads (one of its column indices);
    ``PADDING_TAP`` a padding cell under a kernel tap; ``OUTPUT`` an idle
    output cell; ``DONE`` an output already computed (or, in the scatter view,
    an input already spread / an output already written to); ``CURRENT`` the
    current pixel; ``WRITTEN`` an output cell the current input pixel writes
    (one of the row indices of that column of ``Cᵀ``).
    """

    INPUT = 0
    PADDING = 1
    READ = 2
    PADDING_TAP = 3
    OUTPUT = 4
    DONE = 5
    CURRENT = 6
    WRITTEN = 7


_STATE_COLORS = {
    CellState.INPUT: "#deebf7",
    CellState.PADDING: "#eeeeee",
    CellState.READ: "#2171b5",
    CellState.PADDING_TAP: "#fdae6b",
    CellState.OUTPUT: "#f2f9ee",
    CellState.DONE: "#a1d99b",
    CellState.CURRENT: "#238b45",
    CellState.WRITTEN: "#2171b5",
}
_DARK_STATES = (CellState.READ, CellState.CURRENT, CellState.WRITTEN)
_TAP_COLOR = "#cb181d"
_REGION_COLOR = "#08306b"


def _state_cmap():
    from matplotlib.colors import BoundaryNorm, ListedColormap

    colors = [_STATE_COLORS[s] for s in CellState]
    cmap = ListedColormap(colors, name="convmat_states")
    norm = BoundaryNorm(np.arange(len(colors) + 1) - 0.5, len(colors))
    return cmap, norm


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #
def _new_figure(figsize, dpi=100, layout=None):
    """A pyplot-free Figure with an Agg canvas (headless, not tracked by pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi=None):
    if path is not None:
        fig.savefig(path, dpi=dpi if dpi is not None else fig.dpi, bbox_inches="tight")


def _fig_to_image(fig):
    """Render a Figure to an RGB PIL image."""
    from PIL import Image

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return Image.fromarray(np.ascontiguousarray(rgba[..., :3]))


def _check_picture_ndim(in_shape, what="in_shape"):
    if len(in_shape) not in (1, 2):
        raise ValueError(
            f"pictures are drawn for 1-D and 2-D convolutions, got {what} {tuple(in_shape)!r} with "
            f"{len(in_shape)} spatial axes; draw a 2-D slice instead"
        )


def _lift(values, fill):
    """Per-axis values of a 1-D geometry as 2-D ones (an axis of length 1 in front)."""
    values = tuple(values)
    return (fill, *values) if len(values) == 1 else values


def _times(shape) -> str:
    return "×".join(str(int(v)) for v in shape)


def _pad_text(pads) -> str:
    if all(lo == hi for lo, hi in pads):
        vals = [lo for lo, _ in pads]
        return str(vals[0]) if len(set(vals)) == 1 else str(tuple(vals))
    return str(tuple(tuple(p) for p in pads))


def _per_axis_text(values) -> str:
    values = tuple(values)
    return str(values[0]) if len(set(values)) == 1 else _times(values)


def _grid_axes(ax, shape, *, row_offset=0, col_offset=0, one_row=False, fontsize=7):
    """Cell grid lines and ticks (tick labels are coordinates minus the offsets)."""
    H, W = shape
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    from matplotlib.collections import LineCollection

    # Cell borders as one artist (not axis grid lines), so that frames can be blitted.
    edges = [((x, -0.5), (x, H - 0.5)) for x in np.arange(0.5, W - 1, 1.0)]
    edges += [((-0.5, y), (W - 0.5, y)) for y in np.arange(0.5, H - 1, 1.0)]
    grid = LineCollection(edges, colors="white", linewidths=1.5, zorder=2.5)
    ax.add_collection(grid, autolim=False)
    ax.tick_params(which="major", length=0, labelsize=fontsize, pad=2)
    step_x = max(1, math.ceil(W / 24))
    step_y = max(1, math.ceil(H / 24))
    xs = np.arange(0, W, step_x)
    ax.set_xticks(xs, [str(v - col_offset) for v in xs])
    if one_row:
        ax.set_yticks([])
    else:
        ys = np.arange(0, H, step_y)
        ax.set_yticks(ys, [str(v - row_offset) for v in ys])
    ax.xaxis.tick_top()
    for spine in ax.spines.values():
        spine.set_visible(False)
    return grid


# --------------------------------------------------------------------------- #
# frames
# --------------------------------------------------------------------------- #
class Tap(NamedTuple):
    """One kernel tap of one output pixel.

    ``tap`` is the kernel index, ``padded_cell`` where it lies on the padded
    input grid (row, column of the drawn canvas), ``source`` the real input
    cell it reads according to the matrix, or None (a zero from zero padding).
    """

    tap: tuple[int, int]
    padded_cell: tuple[int, int]
    source: tuple[int, int] | None


@dataclass(frozen=True, eq=False)
class _Scene:
    """What all frames of one picture share: grids, labels, titles."""

    kind: str  # 'conv' or 'scatter'
    ndim: int
    left_shape: tuple[int, int]
    right_shape: tuple[int, int]
    left_region: tuple[int, int, int, int]  # row0, col0, rows, cols of the real input
    left_labels: np.ndarray  # str per cell
    right_labels: np.ndarray
    left_offsets: tuple[int, int]
    left_title: str
    right_title: str
    suptitle: str
    legend: tuple[CellState, ...]
    legend_names: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ConvFrame:
    """One output pixel of a forward convolution, as the matrix says.

    Attributes
    ----------
    index : int
        The row ``r`` of ``C`` (the output pixel's ravel index).
    output_cell : (int, int)
        The output pixel on the drawn 2-D grid (a 1-D geometry is drawn as ``1×n``).
    columns : ndarray of int, shape (K,)
        Column indices of row ``r`` of ``conv_matrix(ones, ...)``: the input
        pixels it reads (sorted).
    weights : ndarray, shape (K,)
        The values of that row: how many kernel taps land on each input pixel
        (more than 1 where reflect/replicate/circular padding folds taps back).
    input_cells : tuple of (int, int)
        ``columns`` as cells of the (unpadded) input grid.
    taps : tuple of Tap
        Every kernel tap: where it lies on the padded grid and which input it
        reads (from a matrix with one output channel per tap).
    input_state, output_state : ndarray of int8
        The :class:`CellState` of every cell of the padded input grid (shape
        ``(H + lo + hi, W + lo + hi)``) and of the output grid.  ``READ``
        cells are exactly ``input_cells`` (shifted by the low padding).
    """

    index: int
    output_cell: tuple[int, int]
    columns: np.ndarray
    weights: np.ndarray
    input_cells: tuple[tuple[int, int], ...]
    taps: tuple[Tap, ...]
    input_state: np.ndarray
    output_state: np.ndarray
    scene: _Scene = field(repr=False)

    @property
    def subtitle(self) -> str:
        return (
            f"output {_cell_text(self.output_cell, self.scene.ndim)} = row {self.index} of C: "
            f"reads {len(self.columns)} input pixel{'s' if len(self.columns) != 1 else ''} "
            f"(columns {_list_text(self.columns)})"
        )


@dataclass(frozen=True, eq=False)
class ScatterFrame:
    """One input pixel of a transposed convolution: the column of ``Cᵀ`` it scatters along.

    Attributes
    ----------
    index : int
        The column ``j`` of ``Cᵀ`` (the input pixel's ravel index).
    input_cell : (int, int)
    rows : ndarray of int
        Row indices of column ``j`` of ``conv_transpose_matrix(ones, ...)``:
        the output pixels this input pixel writes to (sorted).
    weights : ndarray
        The values there (taps landing on each output pixel).
    output_cells : tuple of (int, int)
    input_state, output_state : ndarray of int8
        :class:`CellState` codes; ``WRITTEN`` cells are exactly ``output_cells``.
    """

    index: int
    input_cell: tuple[int, int]
    rows: np.ndarray
    weights: np.ndarray
    output_cells: tuple[tuple[int, int], ...]
    input_state: np.ndarray
    output_state: np.ndarray
    scene: _Scene = field(repr=False)

    @property
    def subtitle(self) -> str:
        return (
            f"input {_cell_text(self.input_cell, self.scene.ndim)} = column {self.index} of Cᵀ: "
            f"writes {len(self.rows)} output pixel{'s' if len(self.rows) != 1 else ''} "
            f"(rows {_list_text(self.rows)})"
        )


def _cell_text(cell, ndim) -> str:
    return f"({cell[1]})" if ndim == 1 else f"({cell[0]}, {cell[1]})"


def _list_text(values, limit=12) -> str:
    values = [int(v) for v in values]
    if len(values) <= limit:
        return ", ".join(map(str, values)) if values else "none"
    return ", ".join(map(str, values[:limit])) + ", …"


def _row_slices(A):
    """(indptr, indices, data) of a CSR matrix as NumPy arrays."""
    return np.asarray(A.indptr), np.asarray(A.indices), np.asarray(A.data)


def conv_arithmetic_frames(in_shape, kernel_size, *, stride=1, padding=0, dilation=1, padding_mode="zeros"):
    """One frame per output pixel of a single-channel forward convolution.

    Parameters
    ----------
    in_shape : int or tuple of int
        Spatial input shape, 1-D ``(n,)`` (drawn as ``1×n``) or 2-D ``(H, W)``.
    kernel_size, stride, dilation : int or tuple of int
    padding : int, tuple of int, tuple of (lo, hi) pairs, or {'valid', 'same', 'full'}
        Any form :func:`convmat.conv_matrix` accepts, asymmetric pairs included.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}

    Returns
    -------
    list of ConvFrame, length prod(out_shape)
        Frame ``r`` is row ``r`` of ``C``; draw it with :func:`draw_frame`,
        or all of them with :func:`animate_conv`.

    Notes
    -----
    Three matrices are built, all with convmat's own builder:

    * ``C = conv_matrix(ones)``: the highlighted (``READ``) input cells of
      frame ``r`` are the column indices of its row ``r``;
    * the same geometry with one output channel per kernel tap (a one-hot
      kernel each): the entry of row ``t*O + r`` holding the weight 1 is the
      input that tap ``t`` of output ``r`` reads (none: a zero of the padding);
    * the padding alone, a 1×1 kernel with the same padding and mode (the
      matrix ``P_mode`` of ``C = K·P_mode``): which real input each padded
      cell copies, written in the padding ring.

    Only where the kernel lies on the padded grid (``u = j*s - lo + t*d``
    per axis) is geometry rather than matrix.

    Examples
    --------
    >>> frames = conv_arithmetic_frames((4, 4), 3, stride=2, padding=1)
    >>> len(frames)
    4
    >>> frames[0].columns.tolist()
    [0, 1, 4, 5]
    >>> frames[0].input_cells
    ((0, 0), (0, 1), (1, 0), (1, 1))
    """
    in_shape = normalize_shape(in_shape, "in_shape")
    _check_picture_ndim(in_shape)
    ndim = len(in_shape)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    kw = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode)
    ones = np.ones((1, 1, *kernel_size))
    g = conv_plan(ones.shape, in_shape, **kw).geometry
    C = conv_matrix(ones, in_shape, **kw)
    K = math.prod(kernel_size)
    C_taps = conv_matrix(np.eye(K).reshape(K, 1, *kernel_size), in_shape, **kw)
    P = conv_matrix(np.ones((1, 1) + (1,) * ndim), in_shape, padding=g.padding, padding_mode=g.padding_mode)

    n2, o2, k2 = _lift(g.in_shape, 1), _lift(g.out_shape, 1), _lift(g.kernel_size, 1)
    s2, d2 = _lift(g.stride, 1), _lift(g.dilation, 1)
    pads2 = _lift(g.padding, (0, 0))
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(n2, pads2))
    O = math.prod(o2)

    # Which real input each padded cell copies (P has at most one entry per row).
    p_ptr, p_idx, _ = _row_slices(P)
    pad_source = np.full(math.prod(padded), -1, dtype=np.int64)
    has = np.diff(p_ptr) > 0
    pad_source[has] = p_idx[p_ptr[:-1][has]]
    pad_source = pad_source.reshape(padded)

    (lo0, _), (lo1, _) = pads2
    base = np.full(padded, CellState.PADDING, dtype=np.int8)
    base[lo0 : lo0 + n2[0], lo1 : lo1 + n2[1]] = CellState.INPUT

    left_labels = np.empty(padded, dtype=object)
    for a in range(padded[0]):
        for b in range(padded[1]):
            src = pad_source[a, b]
            inside = lo0 <= a < lo0 + n2[0] and lo1 <= b < lo1 + n2[1]
            if inside:
                left_labels[a, b] = str(src)
            elif g.padding_mode == "zeros":
                left_labels[a, b] = "0"
            else:
                left_labels[a, b] = f"→{src}"
    right_labels = np.array([str(v) for v in range(O)], dtype=object).reshape(o2)

    pads_text = _pad_text(g.padding)
    kind = f"conv{ndim}d"
    suptitle = (
        f"{kind}: input {_times(g.in_shape)} → output {_times(g.out_shape)}\n"
        f"kernel {_times(g.kernel_size)}, stride {_per_axis_text(g.stride)}, padding {pads_text} "
        f"({g.padding_mode}), dilation {_per_axis_text(g.dilation)}"
    )
    legend_names = {
        CellState.INPUT: "input (number = column of C)",
        CellState.PADDING: "padding (0)" if g.padding_mode == "zeros" else "padding (→ column it copies)",
        CellState.READ: "read by this output (row of C)",
        CellState.PADDING_TAP: "kernel tap on padding",
        CellState.CURRENT: "current output (number = row)",
        CellState.DONE: "outputs done",
    }
    scene = _Scene(
        kind="conv",
        ndim=ndim,
        left_shape=padded,
        right_shape=o2,
        left_region=(lo0, lo1, n2[0], n2[1]),
        left_labels=left_labels,
        right_labels=right_labels,
        left_offsets=(lo0, lo1),
        left_title="input, padded",
        right_title="output",
        suptitle=suptitle,
        legend=tuple(legend_names),
        legend_names=legend_names,
    )

    c_ptr, c_idx, c_val = _row_slices(C)
    t_ptr, t_idx, t_val = _row_slices(C_taps)
    frames = []
    for r in range(O):
        oi, oj = np.unravel_index(r, o2)
        cols = c_idx[c_ptr[r] : c_ptr[r + 1]].astype(np.int64)
        vals = c_val[c_ptr[r] : c_ptr[r + 1]]
        cells = tuple((int(a), int(b)) for a, b in zip(*np.unravel_index(cols, n2)))
        taps = []
        for t in range(K):
            ta, tb = np.unravel_index(t, k2)
            row = t * O + r
            # The pattern is structural (the other taps' zero weights are stored): the input
            # tap t reads is the one entry of the row holding its weight 1.
            hit = np.flatnonzero(t_val[t_ptr[row] : t_ptr[row + 1]])
            src = None
            if hit.size:
                sa, sb = np.unravel_index(int(t_idx[t_ptr[row] + hit[0]]), n2)
                src = (int(sa), int(sb))
            cell = (int(oi * s2[0] + ta * d2[0]), int(oj * s2[1] + tb * d2[1]))
            taps.append(Tap((int(ta), int(tb)), cell, src))
        state = base.copy()
        for tap in taps:
            if state[tap.padded_cell] == CellState.PADDING:
                state[tap.padded_cell] = CellState.PADDING_TAP
        for a, b in cells:
            state[a + lo0, b + lo1] = CellState.READ
        out_state = np.full(o2, CellState.OUTPUT, dtype=np.int8)
        out_state.ravel()[:r] = CellState.DONE
        out_state[oi, oj] = CellState.CURRENT
        frames.append(
            ConvFrame(r, (int(oi), int(oj)), cols, vals, cells, tuple(taps), state, out_state, scene)
        )
    return frames


def conv_transpose_frames(in_shape, kernel_size, *, stride=1, padding=0, output_padding=0, dilation=1):
    """One frame per input pixel of a single-channel transposed convolution (the scatter view).

    Parameters
    ----------
    in_shape : int or tuple of int
        Spatial shape of the transposed convolution's input, 1-D or 2-D.
    kernel_size, stride, padding, output_padding, dilation
        As :func:`convmat.conv_transpose_matrix`.

    Returns
    -------
    list of ScatterFrame, length prod(in_shape)
        Frame ``j`` shows input pixel ``j`` spreading the kernel onto the
        output; the ``WRITTEN`` cells are the row indices of column ``j`` of
        ``Cᵀ = conv_transpose_matrix(ones, ...)``.

    Examples
    --------
    >>> frames = conv_transpose_frames((2, 2), 3, stride=2)
    >>> len(frames), frames[0].output_cells[:3]
    (4, ((0, 0), (0, 1), (0, 2)))
    """
    in_shape = normalize_shape(in_shape, "in_shape")
    _check_picture_ndim(in_shape)
    ndim = len(in_shape)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    ones = np.ones((1, 1, *kernel_size))
    plan = conv_transpose_plan(ones.shape, in_shape, **kw)
    T = conv_transpose_matrix(ones, in_shape, **kw).tocsc()
    n2 = _lift(in_shape, 1)
    m = plan.output_shape[1:]
    m2 = _lift(m, 1)
    pads = normalize_padding(
        padding, ndim, in_shape=in_shape, kernel_size=kernel_size,
        stride=normalize_per_axis(stride, "stride", ndim), dilation=normalize_per_axis(dilation, "dilation", ndim),
        allow_strings=False,
    )
    out_pad = normalize_per_axis(output_padding, "output_padding", ndim, minimum=0)
    g = plan.geometry
    suptitle = (
        f"conv_transpose{ndim}d (scatter): input {_times(in_shape)} → output {_times(m)}\n"
        f"kernel {_times(kernel_size)}, stride {_per_axis_text(g.stride)}, padding {_pad_text(pads)}, "
        f"output_padding {_per_axis_text(out_pad)}, dilation {_per_axis_text(g.dilation)}"
    )
    N, M = math.prod(n2), math.prod(m2)
    legend_names = {
        CellState.CURRENT: "current input (number = column of Cᵀ)",
        CellState.DONE: "inputs done / outputs written",
        CellState.WRITTEN: "written now (rows of that column)",
        CellState.OUTPUT: "output (number = row of Cᵀ)",
    }
    scene = _Scene(
        kind="scatter",
        ndim=ndim,
        left_shape=n2,
        right_shape=m2,
        left_region=(0, 0, n2[0], n2[1]),
        left_labels=np.array([str(v) for v in range(N)], dtype=object).reshape(n2),
        right_labels=np.array([str(v) for v in range(M)], dtype=object).reshape(m2),
        left_offsets=(0, 0),
        left_title="input",
        right_title="output",
        suptitle=suptitle,
        legend=tuple(legend_names),
        legend_names=legend_names,
    )
    ptr, idx, val = np.asarray(T.indptr), np.asarray(T.indices), np.asarray(T.data)
    written = np.zeros(M, dtype=bool)
    frames = []
    for j in range(N):
        rows = np.sort(idx[ptr[j] : ptr[j + 1]].astype(np.int64))
        order = np.argsort(idx[ptr[j] : ptr[j + 1]], kind="stable")
        vals = val[ptr[j] : ptr[j + 1]][order]
        cell = tuple(int(v) for v in np.unravel_index(j, n2))
        out_cells = tuple((int(a), int(b)) for a, b in zip(*np.unravel_index(rows, m2)))
        in_state = np.full(n2, CellState.INPUT, dtype=np.int8)
        in_state.ravel()[:j] = CellState.DONE
        in_state[cell] = CellState.CURRENT
        out_state = np.where(written, CellState.DONE, CellState.OUTPUT).astype(np.int8)
        out_state[rows] = CellState.WRITTEN
        written[rows] = True
        frames.append(
            ScatterFrame(j, cell, rows, vals, out_cells, in_state, out_state.reshape(m2), scene)
        )
    return frames


# --------------------------------------------------------------------------- #
# drawing frames
# --------------------------------------------------------------------------- #
class _FrameCanvas:
    """A figure with the two grids of a scene, updated frame by frame (fast GIFs)."""

    def __init__(self, scene: _Scene, *, dpi=100, cell_inches=None, blit=False):
        from matplotlib.patches import Patch, Rectangle

        self.scene = scene
        self.blit = blit
        (Hl, Wl), (Hr, Wr) = scene.left_shape, scene.right_shape
        cols = Wl + Wr
        if cell_inches is None:
            cell_inches = min(0.42, 11.0 / max(cols, 1), 7.0 / max(Hl, Hr, 1))
        self.cell = cell_inches
        rows = max(Hl, Hr)
        # Axes placed in inches, so that cells have one size in both grids.
        top, bottom, gap, side = 1.05, 1.15, 0.9, 0.45
        grids = cell_inches * cols + gap
        width = max(grids + 2 * side, 6.6)
        height = cell_inches * rows + top + bottom
        fig = _new_figure((width, height), dpi=dpi)
        self.fig = fig
        x0 = (width - grids) / 2
        band = cell_inches * rows

        def place(x, shape):
            h, w = shape[0] * cell_inches, shape[1] * cell_inches
            y = bottom + (band - h) / 2
            return fig.add_axes((x / width, y / height, w / width, h / height))

        self.ax_l = place(x0, scene.left_shape)
        self.ax_r = place(x0 + Wl * cell_inches + gap, scene.right_shape)
        cmap, norm = _state_cmap()
        fontsize = max(4.5, min(7.5, cell_inches * 18))
        self.fontsize = fontsize
        self.im_l = self.ax_l.imshow(
            np.zeros(scene.left_shape), cmap=cmap, norm=norm, interpolation="nearest", aspect="equal"
        )
        self.im_r = self.ax_r.imshow(
            np.zeros(scene.right_shape), cmap=cmap, norm=norm, interpolation="nearest", aspect="equal"
        )
        one_row = scene.ndim == 1
        grid_l = _grid_axes(self.ax_l, scene.left_shape, row_offset=scene.left_offsets[0],
                            col_offset=scene.left_offsets[1], one_row=one_row, fontsize=fontsize)
        grid_r = _grid_axes(self.ax_r, scene.right_shape, one_row=one_row, fontsize=fontsize)
        self._dynamic = [self.im_l, self.im_r, grid_l, grid_r]
        r0, c0, nr, nc = scene.left_region
        if (nr, nc) != scene.left_shape:
            self._dynamic.append(self.ax_l.add_patch(
                Rectangle((c0 - 0.5, r0 - 0.5), nc, nr, fill=False, ec=_REGION_COLOR, lw=2.0, zorder=4)
            ))
        self.ax_l.set_title(scene.left_title, fontsize=9, pad=14)
        self.ax_r.set_title(scene.right_title, fontsize=9, pad=14)
        fig.suptitle(scene.suptitle, fontsize=9.5, y=1 - 0.08 / height, va="top")
        self.subtitle = fig.text(0.5, 0.62 / height, "", ha="center", va="center", fontsize=8.5)
        self.text_l = self._cell_texts(self.ax_l, scene.left_labels)
        self.text_r = self._cell_texts(self.ax_r, scene.right_labels)
        handles = [
            Patch(facecolor=_STATE_COLORS[s], edgecolor="#999999", label=scene.legend_names[s])
            for s in scene.legend
        ]
        if scene.kind == "conv":
            handles.append(Patch(facecolor="none", edgecolor=_TAP_COLOR, linewidth=1.5, label="kernel taps"))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=6.5,
                   frameon=False, bbox_to_anchor=(0.5, 0.02 / height), handlelength=1.2, columnspacing=1.0)
        # dynamic artists
        self.taps = self.ax_l.scatter(
            [], [], marker="s", s=(cell_inches * 72 * 0.78) ** 2, facecolors="none", edgecolors=_TAP_COLOR,
            linewidths=1.6, zorder=5,
        )
        self.window = Rectangle((0, 0), 0, 0, fill=False, ec=_TAP_COLOR, lw=1.0, ls="--", zorder=5,
                                visible=False)
        self.ax_l.add_patch(self.window)
        self.marks = []
        self._dynamic += [*self.text_l.ravel(), *self.text_r.ravel(), self.taps, self.window, self.subtitle]
        if blit:
            # Everything else (ticks, titles, legend) is drawn once and restored for every frame.
            for artist in self._dynamic:
                artist.set_animated(True)
            fig.canvas.draw()
            self._background = fig.canvas.copy_from_bbox(fig.bbox)

    def image(self, frame):
        """The frame as an RGB PIL image."""
        from PIL import Image

        self.update(frame)
        canvas = self.fig.canvas
        if not self.blit:
            return _fig_to_image(self.fig)
        canvas.restore_region(self._background)
        for artist in sorted(self._dynamic + self.marks, key=lambda a: a.get_zorder()):
            if artist.get_visible():
                self.fig.draw_artist(artist)
        rgba = np.asarray(canvas.buffer_rgba())
        return Image.fromarray(np.ascontiguousarray(rgba[..., :3]))

    def _cell_texts(self, ax, labels):
        texts = np.empty(labels.shape, dtype=object)
        for (a, b), label in np.ndenumerate(labels):
            texts[a, b] = ax.text(b, a, label, ha="center", va="center", fontsize=self.fontsize * 0.9,
                                  color="#333333", zorder=3)
        return texts

    @staticmethod
    def _color_texts(texts, state):
        for (a, b), txt in np.ndenumerate(texts):
            txt.set_color("white" if state[a, b] in _DARK_STATES else "#333333")

    def update(self, frame):
        from matplotlib.patches import FancyArrowPatch

        for artist in self.marks:
            artist.remove()
        self.marks = []
        self.im_l.set_data(frame.input_state)
        self.im_r.set_data(frame.output_state)
        self._color_texts(self.text_l, frame.input_state)
        self._color_texts(self.text_r, frame.output_state)
        self.subtitle.set_text(frame.subtitle)
        if isinstance(frame, ConvFrame):
            cells = np.array([t.padded_cell for t in frame.taps], dtype=float)
            self.taps.set_offsets(cells[:, ::-1])
            lo = cells.min(axis=0)
            hi = cells.max(axis=0)
            self.window.set_bounds(lo[1] - 0.5, lo[0] - 0.5, hi[1] - lo[1] + 1, hi[0] - lo[0] + 1)
            self.window.set_visible(True)
            r0, c0 = self.scene.left_offsets
            for col, w, (a, b) in zip(frame.columns, frame.weights, frame.input_cells):
                if w != 1:
                    self.marks.append(self.ax_l.text(
                        c0 + b + 0.45, r0 + a + 0.45, f"×{w:g}", ha="right", va="bottom",
                        fontsize=self.fontsize * 0.75, color="#fdd0a2", fontweight="bold", zorder=6,
                    ))
            if self.scene.legend_names.get(CellState.PADDING, "").startswith("padding (→"):
                for tap in frame.taps:
                    if tap.source is None:
                        continue
                    target = (tap.source[0] + r0, tap.source[1] + c0)
                    if target == tap.padded_cell:
                        continue
                    arrow = FancyArrowPatch(
                        (tap.padded_cell[1], tap.padded_cell[0]), (target[1], target[0]),
                        connectionstyle="arc3,rad=0.3", arrowstyle="-|>", mutation_scale=7, lw=0.8,
                        color="#e6550d", alpha=0.85, zorder=6, shrinkA=3, shrinkB=3,
                    )
                    self.ax_l.add_patch(arrow)
                    self.marks.append(arrow)
        else:
            self.taps.set_offsets(np.empty((0, 2)))
            self.window.set_visible(False)
            for row, w, (a, b) in zip(frame.rows, frame.weights, frame.output_cells):
                if w != 1:
                    self.marks.append(self.ax_r.text(
                        b + 0.45, a + 0.45, f"×{w:g}", ha="right", va="bottom", fontsize=self.fontsize * 0.75,
                        color="#fdd0a2", fontweight="bold", zorder=6,
                    ))
        for artist in self.marks:
            artist.set_animated(self.blit)
        return self.fig


def draw_frame(frame, *, dpi=100, path=None):
    """Draw one frame of :func:`conv_arithmetic_frames` or :func:`conv_transpose_frames`.

    Parameters
    ----------
    frame : ConvFrame or ScatterFrame
    dpi : int
    path : str or path-like, optional
        Save the figure there (any format matplotlib writes).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the (padded) input grid and the output grid.  Cells are
        coloured by ``frame.input_state`` / ``frame.output_state``; numbers in
        real cells are ravel indices (columns and rows of the matrix); padding
        cells show ``0`` (zeros) or ``→c``, the column they copy.

    Examples
    --------
    >>> fig = draw_frame(conv_arithmetic_frames((5,), 3, padding=1, padding_mode="reflect")[0])
    >>> len(fig.axes)
    2
    """
    canvas = _FrameCanvas(frame.scene, dpi=dpi)
    fig = canvas.update(frame)
    _save(fig, path)
    return fig


def frame_images(frames, *, dpi=100):
    """Render frames to RGB PIL images (one figure, updated frame by frame).

    Returns
    -------
    list of PIL.Image.Image, one per frame
    """
    frames = list(frames)
    if not frames:
        raise ValueError("frames must contain at least one frame, got an empty sequence")
    scenes = {id(f.scene) for f in frames}
    if len(scenes) != 1:
        raise ValueError("frames must all come from one call of conv_arithmetic_frames / conv_transpose_frames")
    canvas = _FrameCanvas(frames[0].scene, dpi=dpi, blit=True)
    return [canvas.image(f) for f in frames]


def save_gif(images, path, *, duration=700, loop=0):
    """Write PIL images as an animated GIF (Pillow); ``duration`` in ms per frame."""
    images = list(images)
    if not images:
        raise ValueError("images must contain at least one image, got an empty sequence")
    palette = [im.convert("P", palette=1, colors=255) if im.mode != "P" else im for im in images]
    # disposal=1 and optimize=False keep every frame, even two that look alike.
    palette[0].save(
        path, save_all=True, append_images=palette[1:], duration=duration, loop=loop, optimize=False,
        disposal=1,
    )


def animate_conv(in_shape, kernel_size, *, stride=1, padding=0, dilation=1, padding_mode="zeros", path=None,
                 duration=700, dpi=100):
    """Animate a forward convolution, one frame per output pixel; optionally write a GIF.

    Parameters are those of :func:`conv_arithmetic_frames`; ``path`` a ``.gif``
    file to write, ``duration`` milliseconds per frame.

    Returns
    -------
    frames : list of ConvFrame
        The per-frame metadata (``frames[r].input_cells`` are the inputs row
        ``r`` of C reads).
    images : list of PIL.Image.Image
        The rendered frames, ``len(images) == prod(out_shape)``.

    Examples
    --------
    >>> frames, images = animate_conv((3, 3), 2)
    >>> len(frames), len(images)
    (4, 4)
    """
    frames = conv_arithmetic_frames(
        in_shape, kernel_size, stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode
    )
    images = frame_images(frames, dpi=dpi)
    if path is not None:
        save_gif(images, path, duration=duration)
    return frames, images


def animate_conv_transpose(in_shape, kernel_size, *, stride=1, padding=0, output_padding=0, dilation=1,
                           path=None, duration=700, dpi=100):
    """Animate a transposed convolution as a scatter, one frame per input pixel; optionally write a GIF.

    Parameters are those of :func:`conv_transpose_frames`.

    Returns
    -------
    frames : list of ScatterFrame
    images : list of PIL.Image.Image, ``len(images) == prod(in_shape)``
    """
    frames = conv_transpose_frames(
        in_shape, kernel_size, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )
    images = frame_images(frames, dpi=dpi)
    if path is not None:
        save_gif(images, path, duration=duration)
    return frames, images


# --------------------------------------------------------------------------- #
# the matrix itself
# --------------------------------------------------------------------------- #
def _channel_shape(shape, dim, name):
    """``(C, *spatial)`` for one side of the matrix, checked against its dimension."""
    if shape is None:
        return (1, dim)
    shape = normalize_shape(shape, name)
    if len(shape) < 2:
        raise ValueError(f"{name} must be (C, *spatial), e.g. ConvPlan.input_shape, got {shape!r}")
    if math.prod(shape) != dim:
        raise ValueError(
            f"{name} {shape!r} has {math.prod(shape)} entries but the matrix has {dim} "
            f"{'columns' if name == 'in_shape' else 'rows'}; give (C, *spatial) of the "
            f"{'input' if name == 'in_shape' else 'output'} (for a transpose, swap in_shape and out_shape)"
        )
    return shape


def _ravel_label(index, shape, with_channel):
    parts = np.unravel_index(index, shape)
    parts = parts if with_channel else parts[1:]
    return "(" + ",".join(str(int(p)) for p in parts) + ")"


def _as_compressed(A):
    import scipy.sparse as sp

    if sp.issparse(A):
        if A.format not in ("csr", "csc"):
            A = A.tocsr()
        return A
    arr = np.asarray(A)
    if arr.ndim != 2:
        raise ValueError(f"A must be a 2-D matrix (sparse or dense), got shape {arr.shape}")
    return sp.csr_array(arr)


def _block_nnz(A, out_shape, in_shape):
    """nnz per (row channel, column channel) block and per row, without expanding to COO."""
    Cr, Cc = out_shape[0], in_shape[0]
    R, N = A.shape[0] // Cr, A.shape[1] // Cc
    ptr, idx = np.asarray(A.indptr), np.asarray(A.indices)
    counts = np.zeros((Cr, Cc), dtype=np.int64)
    if A.format == "csr":
        major, minor, blocks = R, N, Cr
        row_nnz = np.diff(ptr)
    else:  # csc: majors are columns
        major, minor, blocks = N, R, Cc
        row_nnz = np.bincount(idx, minlength=A.shape[0])
    for b in range(blocks):
        lo, hi = int(ptr[b * major]), int(ptr[(b + 1) * major])
        per = np.bincount(idx[lo:hi] // minor, minlength=Cc if A.format == "csr" else Cr)
        if A.format == "csr":
            counts[b, :] = per
        else:
            counts[:, b] = per
    return counts, row_nnz


def plot_matrix(A, *, in_shape=None, out_shape=None, ax=None, max_dense=400, label_max=48, title="C",
                path=None):
    """Draw a convolution matrix: every entry when small, a summary when large.

    Parameters
    ----------
    A : sparse matrix or array, shape (R, N)
        ``C`` (from :func:`convmat.conv_matrix`), ``C.T``, or any matrix.
    in_shape, out_shape : tuple of int, optional
        ``(C, *spatial)`` of the vectors ``A`` maps from (columns) and to
        (rows), as ``ConvPlan.input_shape`` / ``ConvPlan.output_shape``.  For
        ``C.T`` of a forward plan, pass ``in_shape=plan.output_shape,
        out_shape=plan.input_shape``.  Without them the matrix is one block.
    ax : matplotlib Axes, or a pair of Axes for the summary, optional
        Draw there instead of a new figure.
    max_dense : int
        Draw every entry when both dimensions are at most this; otherwise
        draw the summary.
    label_max : int
        Label rows (``r (c,i,j)``) and columns (``(c,i,j)``) when there are
        at most this many.
    title : str
        The matrix's name, shown with its shape and nnz (``"Cᵀ"``...).
    path : str or path-like, optional
        Save the figure there.

    Returns
    -------
    matplotlib.figure.Figure
        Small: one heat-map axes (plus a colour bar); entries that are not
        stored are left blank, channel blocks are outlined and labelled.
        Large: two axes, nnz per channel block (heat map) and the number of
        rows with each nnz (bar chart).

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_plan, conv_matrix
    >>> w = np.ones((2, 1, 3, 3))
    >>> plan = conv_plan(w.shape, (4, 4), padding=1)
    >>> C = conv_matrix(w, (4, 4), padding=1)
    >>> fig = plot_matrix(C, in_shape=plan.input_shape, out_shape=plan.output_shape)
    >>> fig.axes[0].get_title()
    'C: 32 × 16, nnz 200 (39.1% dense)'
    >>> fig = plot_matrix(C, in_shape=plan.input_shape, out_shape=plan.output_shape, max_dense=10)
    >>> len(fig.axes)
    3
    """
    A = _as_compressed(A)
    R, N = A.shape
    out_shape = _channel_shape(out_shape, R, "out_shape")
    in_shape = _channel_shape(in_shape, N, "in_shape")
    nnz = int(A.nnz)
    head = f"{title}: {R} × {N}, nnz {nnz:,} ({100 * nnz / max(1, R * N):.3g}% dense)"
    if max(R, N) <= max_dense:
        fig = _plot_dense(A, in_shape, out_shape, ax, label_max, head)
    else:
        fig = _plot_summary(A, in_shape, out_shape, ax, head, max_dense)
    _save(fig, path)
    return fig


def _plot_dense(A, in_shape, out_shape, ax, label_max, head):
    from matplotlib.transforms import blended_transform_factory

    R, N = A.shape
    coo = A.tocoo()
    dense = np.full((R, N), np.nan)
    dense[coo.row, coo.col] = 0
    np.add.at(dense, (coo.row, coo.col), np.real(coo.data))
    if ax is None:
        scale = min(0.16, 9.0 / max(R, N))
        w = max(4.0, N * scale + 2.6)
        h = max(3.2, R * scale + 1.8)
        fig = _new_figure((w, h), dpi=110)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    finite = dense[np.isfinite(dense)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin < 0 < vmax:
        lim = max(-vmin, vmax)
        cmap, vmin, vmax = "RdBu_r", -lim, lim
    else:
        cmap = "viridis"
        if vmin == vmax:
            vmin, vmax = (vmin - 1, vmax) if vmin > 0 else (vmin, vmin + 1)
    import matplotlib

    cm = matplotlib.colormaps[cmap].copy()
    cm = cm.with_extremes(bad="#d9d9d9")  # not stored: grey; a stored zero is drawn in the colour map
    im = ax.imshow(np.ma.masked_invalid(dense), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest",
                   aspect="equal" if max(R, N) <= 4 * min(R, N) else "auto")
    fig.colorbar(im, ax=ax, shrink=0.8, pad=0.05 if out_shape[0] > 1 else 0.02, label="value (grey: not stored)")
    if max(R, N) <= 80:
        ax.set_xticks(np.arange(-0.5, N, 1.0), minor=True)
        ax.set_yticks(np.arange(-0.5, R, 1.0), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    Cr, Cc = out_shape[0], in_shape[0]
    Ro, No = R // Cr, N // Cc
    for c in range(1, Cr):
        ax.axhline(c * Ro - 0.5, color="#252525", lw=1.4)
    for c in range(1, Cc):
        ax.axvline(c * No - 0.5, color="#252525", lw=1.4)
    if Cr > 1 or Cc > 1:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((-0.5, -0.5), N, R, fill=False, ec="#252525", lw=1.4))
        right = blended_transform_factory(ax.transAxes, ax.transData)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for c in range(Cr):
            ax.text(1.01, c * Ro + Ro / 2 - 0.5, f"out ch {c}", transform=right, rotation=-90, ha="left",
                    va="center", fontsize=8)
        for c in range(Cc):
            ax.text(c * No + No / 2 - 0.5, 1.01, f"in ch {c}", transform=top, ha="center", va="bottom",
                    fontsize=8)
    small = max(6.0, min(8.0, 300 / max(R, N, 1)))
    if R <= label_max:
        ax.set_yticks(np.arange(R), [f"{r} {_ravel_label(r, out_shape, Cr > 1)}" for r in range(R)],
                      fontsize=small)
        ax.set_ylabel("row  r (c, i, j)" if Cr > 1 else "row  r (i, j)" if len(out_shape) == 3 else "row  r")
    else:
        ax.set_ylabel("row (output pixel)")
    if N <= label_max:
        ax.set_xticks(np.arange(N), [_ravel_label(c, in_shape, Cc > 1) for c in range(N)], rotation=90,
                      fontsize=small)
        ax.set_xlabel("column (c, i, j)" if Cc > 1 else "column (i, j)" if len(in_shape) == 3 else "column")
    else:
        ax.set_xlabel("column (input pixel)")
    ax.tick_params(which="major", length=2)
    ax.set_title(head, fontsize=10, pad=16 if in_shape[0] > 1 else 6)
    return fig


def _plot_summary(A, in_shape, out_shape, ax, head, max_dense):
    counts, row_nnz = _block_nnz(A, out_shape, in_shape)
    if ax is None:
        fig = _new_figure((10.5, 4.2), dpi=110)
        ax_b, ax_h = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1, 1.3], wspace=0.35))
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != 2:
            raise ValueError(
                f"ax must be a pair of Axes for the summary of a matrix larger than max_dense={max_dense} "
                f"({A.shape[0]} × {A.shape[1]}), got {len(axes)} Axes"
            )
        ax_b, ax_h = axes
        fig = ax_b.figure
    Cr, Cc = counts.shape
    im = ax_b.imshow(counts, cmap="Blues", interpolation="nearest", aspect="auto",
                     vmin=0, vmax=max(1, int(counts.max())))
    fig.colorbar(im, ax=ax_b, shrink=0.85, label="nnz in block")
    ax_b.set_xlabel("input channel")
    ax_b.set_ylabel("output channel")
    ax_b.set_title(f"nnz per channel block ({Cr} × {Cc} blocks of {A.shape[0] // Cr} × {A.shape[1] // Cc})",
                   fontsize=9)
    if Cr * Cc <= 64:
        peak = max(1, int(counts.max()))
        for (a, b), v in np.ndenumerate(counts):
            ax_b.text(b, a, f"{v:,}", ha="center", va="center", fontsize=7,
                      color="white" if v > 0.6 * peak else "black")
    ax_b.set_xticks(np.arange(Cc) if Cc <= 16 else ax_b.get_xticks())
    ax_b.set_yticks(np.arange(Cr) if Cr <= 16 else ax_b.get_yticks())
    values, freq = np.unique(row_nnz, return_counts=True)
    ax_h.bar(values, freq, width=0.8, color="#3182bd", edgecolor="#08519c")
    ax_h.set_yscale("log")
    ax_h.set_xlabel("nnz in a row")
    ax_h.set_ylabel("rows")
    ax_h.set_title(f"nnz per row: min {row_nnz.min()}, mean {row_nnz.mean():.3g}, max {row_nnz.max()}",
                   fontsize=9)
    if values.size <= 20:
        ax_h.set_xticks(values)
    fig.suptitle(f"{head} — too large to draw every entry (max_dense={max_dense})", fontsize=10)
    return fig


# --------------------------------------------------------------------------- #
# the transposed convolution, two ways
# --------------------------------------------------------------------------- #
def _load_factors():
    try:
        from . import factors
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        raise ImportError(
            "transposed_two_ways needs convmat.factors (zero_insertion_matrix, padding_matrix, "
            f"flip_kernel) for the recipe view: {exc}"
        ) from exc
    return factors


def _value_grid(ax, values, *, mask=None, vmin=None, vmax=None, cmap="viridis", annotate=True, title="",
                one_row=False, region=None, marks=(), fmt="{:.3g}"):
    """A grid of numbers with cell lines; masked cells drawn as structural zeros."""
    import matplotlib
    from matplotlib.patches import Rectangle

    values = np.asarray(values, dtype=float)
    cm = matplotlib.colormaps[cmap].copy()
    cm = cm.with_extremes(bad="#ffffff")
    shown = np.ma.masked_array(values, mask=mask if mask is not None else np.zeros(values.shape, bool))
    im = ax.imshow(shown, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
    H, W = values.shape
    ax.set_xticks(np.arange(-0.5, W, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, H, 1.0), minor=True)
    ax.grid(which="minor", color="#bdbdbd", linewidth=0.6)
    ax.tick_params(which="both", length=0, labelsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    if annotate and H * W <= 400:
        cell_pt = ax.get_position().width * ax.figure.get_figwidth() * 72 / W
        fs = max(4.0, min(8.0, 0.4 * cell_pt))
        for (a, b), v in np.ndenumerate(values):
            masked = mask is not None and mask[a, b]
            r, g, b_, _ = im.cmap(im.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b_ < 0.5
            ax.text(b, a, "0" if masked else fmt.format(v), ha="center", va="center", fontsize=fs,
                    color="#bbbbbb" if masked else ("white" if dark else "black"))
    if region is not None:
        r0, c0, nr, nc = region
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), nc, nr, fill=False, ec=_REGION_COLOR, lw=1.8, zorder=4))
    for (a, b) in marks:
        ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, ec=_TAP_COLOR, lw=1.6, zorder=5))
    ax.set_title(title, fontsize=8.5)
    return im


def transposed_two_ways(in_shape, kernel_size, stride=1, padding=0, output_padding=0, dilation=1, *,
                        weight=None, x=None, path=None, dpi=110):
    """The transposed convolution as a scatter and as the zero-insertion recipe, side by side.

    Parameters
    ----------
    in_shape : int or tuple of int
        Spatial shape of the transposed convolution's input, 1-D or 2-D.
    kernel_size, stride, padding, output_padding, dilation
        As :func:`convmat.conv_transpose_matrix` (padding: an int per axis or
        ``(lo, hi)`` pairs).
    weight : array, shape (1, 1, *kernel_size), optional
        Default ``1, 2, ..., K`` (so that the flip is visible).
    x : array, shape in_shape, optional
        The input; default ``1, 2, ..., N``.
    path : str or path-like, optional
        Save the figure there.

    Returns
    -------
    matplotlib.figure.Figure
        Top row, the scatter view from ``Cᵀ = conv_transpose_matrix``: the
        input, one column of ``Cᵀ`` (the kernel stamped by the marked input
        pixel), how many inputs write each output (nnz per row of ``Cᵀ``),
        and ``Cᵀx``.  Bottom row, the recipe from :mod:`convmat.factors`:
        ``Z x`` (zeros inserted; blank cells are rows of ``Z`` with no entry),
        ``P Z x`` (padded by ``e-1-p``, ``+a`` at the high end, cropped where
        negative), the flipped kernel, and ``K_flip P Z x`` (stride 1).  The
        title gives ``max|Cᵀx - K_flip P Z x|`` and ``max|Cᵀ - K_flip P Z|``.
        The figure has the attribute ``max_difference`` (the larger of the two).

    Notes
    -----
    Per axis ``m = (n-1)s - lo - hi + e + a`` with ``e = d(k-1)+1``; the
    recipe's stride-1 convolution runs on ``(n-1)s + 1 + 2(e-1) - lo - hi + a``
    samples with the flipped kernel and the same dilation.
    """
    F = _load_factors()
    import scipy.sparse as sp

    in_shape = normalize_shape(in_shape, "in_shape")
    _check_picture_ndim(in_shape)
    ndim = len(in_shape)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    s = normalize_per_axis(stride, "stride", ndim, minimum=1)
    d = normalize_per_axis(dilation, "dilation", ndim, minimum=1)
    a = normalize_per_axis(output_padding, "output_padding", ndim, minimum=0)
    pads = normalize_padding(padding, ndim, in_shape=in_shape, kernel_size=kernel_size, stride=s, dilation=d,
                             allow_strings=False)
    K = math.prod(kernel_size)
    if weight is None:
        weight = np.arange(1.0, K + 1).reshape(1, 1, *kernel_size)
    weight = np.asarray(weight, dtype=float)
    if weight.shape != (1, 1, *kernel_size):
        raise ValueError(f"weight must have shape {(1, 1, *kernel_size)!r}, got {weight.shape!r}")
    if x is None:
        x = np.arange(1.0, math.prod(in_shape) + 1).reshape(in_shape)
    x = np.asarray(x, dtype=float)
    if x.shape != in_shape:
        raise ValueError(f"x must have shape in_shape {in_shape!r}, got {x.shape!r}")
    kw = dict(stride=s, padding=pads, output_padding=a, dilation=d)
    T = conv_transpose_matrix(weight, in_shape, **kw)
    m = conv_transpose_plan(weight.shape, in_shape, **kw).output_shape[1:]
    y_scatter = T @ x.ravel()

    # the recipe, as matrices
    e = tuple(dd * (kk - 1) + 1 for dd, kk in zip(d, kernel_size))
    z_shape = tuple((n - 1) * ss + 1 for n, ss in zip(in_shape, s))
    rpad = tuple((ee - 1 - lo, ee - 1 - hi + aa) for ee, (lo, hi), aa in zip(e, pads, a))
    p_shape = tuple(zz + lo + hi for zz, (lo, hi) in zip(z_shape, rpad))
    Z = sp.csr_array(F.zero_insertion_matrix(in_shape, s))
    P = sp.csr_array(F.padding_matrix(z_shape, rpad))
    w_flip = np.asarray(F.flip_kernel(weight))
    Kf = conv_matrix(w_flip, p_shape, dilation=d)
    zx = Z @ x.ravel()
    pzx = P @ zx
    y_recipe = Kf @ pzx
    diff_vec = float(np.max(np.abs(y_scatter - y_recipe))) if y_scatter.size else 0.0
    chain = (Kf @ P @ Z)
    diff_mat = float(abs(sp.csr_array(T) - chain).max()) if T.nnz or chain.nnz else 0.0

    lift = (lambda v: np.asarray(v).reshape(_lift(np.shape(v), 1))) if ndim == 1 else np.asarray
    z_mask = (np.diff(Z.indptr) == 0).reshape(z_shape)
    p_mask = (np.diff(sp.csr_array(P @ Z).indptr) == 0).reshape(p_shape)  # padding and inserted zeros
    coverage = np.diff(sp.csr_array(T).indptr).reshape(m)
    j_mark = math.prod(in_shape) // 2
    stamp = np.asarray(sp.csc_array(T)[:, [j_mark]].toarray()).reshape(m)
    stamp_mask = np.zeros(math.prod(m), bool)
    stamp_mask[:] = True
    stamp_mask[sp.csc_array(T)[:, [j_mark]].tocoo().row] = False
    mark_cell = np.unravel_index(j_mark, _lift(in_shape, 1))

    # Axes placed in inches: one cell size for every panel, rows as tall as their tallest grid.
    shapes = [[_lift(sh, 1) for sh in (in_shape, m, m, m)],
              [_lift(sh, 1) for sh in (z_shape, p_shape, kernel_size, m)]]
    col_w = [max(shapes[0][j][1], shapes[1][j][1], 3) for j in range(4)]
    row_h = [max(sh[0] for sh in row) for row in shapes]
    cell = min(0.36, 12.0 / sum(col_w), 3.6 / max(row_h))
    rot = 0 if max(row_h) * cell < 1.2 else 90  # short rows (1-D): horizontal row labels
    left, gap, right, top, title_h, bottom = (1.15 if rot == 0 else 0.75), 0.45, 0.2, 0.75, 0.55, 0.15
    slots = [max(w * cell, 1.9) for w in col_w]  # room for the panel titles
    fig_w = max(left + sum(slots) + 3 * gap + right, 9.0)
    fig_h = top + sum(title_h + cell * h for h in row_h) + bottom
    fig = _new_figure((fig_w, fig_h), dpi=dpi)
    x_pad = (fig_w - (left + sum(slots) + 3 * gap + right)) / 2
    axes = []
    y_top = fig_h - top
    for i in range(2):
        band = cell * row_h[i]
        y_top -= title_h
        row, x_pos = [], left + x_pad
        for j in range(4):
            h, w = shapes[i][j][0] * cell, shapes[i][j][1] * cell
            slot = slots[j]
            rect = ((x_pos + (slot - w) / 2) / fig_w, (y_top - band + (band - h) / 2) / fig_h, w / fig_w, h / fig_h)
            row.append(fig.add_axes(rect))
            x_pos += slot + gap
        axes.append(row)
        y_top -= band
    label_y = [(fig_h - top - title_h - cell * row_h[0] / 2) / fig_h,
               (bottom + cell * row_h[1] / 2) / fig_h]
    vmin = float(min(y_scatter.min(), y_recipe.min())) if y_scatter.size else 0.0
    vmax = float(max(y_scatter.max(), y_recipe.max())) if y_scatter.size else 1.0
    xmin, xmax = float(min(x.min(), 0.0)), float(x.max())
    ktxt = f"stride {_per_axis_text(s)}, dilation {_per_axis_text(d)}"
    _value_grid(axes[0][0], lift(x), vmin=xmin, vmax=xmax, title=f"input x {_times(in_shape)}",
                marks=[mark_cell], cmap="Blues")
    _value_grid(axes[0][1], lift(stamp), mask=lift(stamp_mask.reshape(m)), cmap="Oranges_r",
                title=f"column {j_mark} of Cᵀ\n(kernel stamped by the red input)")
    _value_grid(axes[0][2], lift(coverage), cmap="Greys", vmin=0, vmax=max(1, int(coverage.max())),
                title="inputs writing each output\n(nnz per row of Cᵀ)", fmt="{:.0f}")
    _value_grid(axes[0][3], lift(y_scatter.reshape(m)), vmin=vmin, vmax=vmax, title=f"Cᵀ x  {_times(m)}", cmap="viridis")
    _value_grid(axes[1][0], lift(zx.reshape(z_shape)), mask=lift(z_mask), vmin=xmin, vmax=xmax,
                cmap="Blues", title=f"Z x: {_per_axis_text(tuple(v - 1 for v in s))} zero(s) inserted")
    inner = tuple(max(lo, 0) for lo, _ in rpad)
    region = _lift(inner, 0) + _lift(tuple(min(zz, zz + min(lo, 0) + min(hi, 0)) for zz, (lo, hi) in
                                            zip(z_shape, rpad)), 1)
    region = (region[0], region[1], region[2], region[3])
    _value_grid(axes[1][1], lift(pzx.reshape(p_shape)), mask=lift(p_mask), vmin=xmin, vmax=xmax, cmap="Blues",
                title=f"P Z x: pad e−1−p = {_pad_text(rpad)}", region=region)
    _value_grid(axes[1][2], lift(w_flip.reshape(kernel_size)), cmap="Oranges_r",
                title=f"flipped kernel {_times(kernel_size)}\n(weight was 1…{K})" if K > 1 else "flipped kernel")
    _value_grid(axes[1][3], lift(y_recipe.reshape(m)), vmin=vmin, vmax=vmax, cmap="viridis",
                title=f"K_flip P Z x (stride 1)  {_times(m)}")
    fig.text(left / 2 / fig_w, label_y[0], "scatter\n(columns\nof Cᵀ)" if rot == 0 else "scatter\n(columns of Cᵀ)",
             rotation=rot, ha="center", va="center", fontsize=8.5, fontweight="bold")
    fig.text(left / 2 / fig_w, label_y[1], "recipe\n(K_flip·P·Z)", rotation=rot, ha="center", va="center",
             fontsize=8.5, fontweight="bold")
    fig.suptitle(
        f"conv_transpose{ndim}d: input {_times(in_shape)}, kernel {_times(kernel_size)}, {ktxt}, padding "
        f"{_pad_text(pads)}, output_padding {_per_axis_text(a)} → output {_times(m)}\n"
        f"max |Cᵀx − K_flip·P·Z·x| = {diff_vec:.3g},   max |Cᵀ − K_flip·P·Z| = {diff_mat:.3g}",
        fontsize=10, y=1 - 0.08 / fig_h, va="top",
    )
    fig.max_difference = max(diff_vec, diff_mat)
    _save(fig, path)
    return fig


# --------------------------------------------------------------------------- #
# before / after
# --------------------------------------------------------------------------- #
def _panel_array(title, img):
    arr = np.asarray(img)
    if np.iscomplexobj(arr):
        raise TypeError(f"image {title!r} is complex; pass its real part or modulus")
    arr = arr.astype(float, copy=False)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim == 2:
        return arr, False
    if arr.ndim != 3:
        raise ValueError(f"image {title!r} must be (H, W), (C, H, W) or (1, C, H, W), got shape {arr.shape}")
    C = arr.shape[0]
    if C == 1:
        return arr[0], False
    if C == 3:
        return np.moveaxis(arr, 0, -1), True
    # other channel counts: channels side by side, separated by a blank column
    H, W = arr.shape[1:]
    tiled = np.full((H, C * (W + 1) - 1), np.nan)
    for c in range(C):
        tiled[:, c * (W + 1) : c * (W + 1) + W] = arr[c]
    return tiled, False


def before_after(images, *, scale="shared", cmap="gray", colorbar=True, panel_inches=3.2, path=None, dpi=110):
    """A row of images (an input and what the matrices make of it) on one colour scale.

    Parameters
    ----------
    images : dict of {str: array} or sequence of (str, array)
        Title and image, each ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``.
        Three channels are drawn as RGB, one as a grey image, other counts as
        channels side by side.  The caller computes them (forward ``C x``,
        transposed ``Cᵀ y``, a least-squares inverse...).
    scale : {'shared', 'each'} or (vmin, vmax)
        One colour range for all panels (default: differences in brightness
        are real), one per panel, or a given range.
    cmap : str
    colorbar : bool
        A colour bar under each grey panel.
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image (plus the colour bars).  Titles carry the shape and
        the value range of each image.

    Examples
    --------
    >>> import numpy as np
    >>> fig = before_after({"x": np.eye(4), "C x": np.ones((1, 2, 2))})
    >>> [ax.get_title().splitlines()[0] for ax in fig.axes[:2]]
    ['x', 'C x']
    """
    items = list(images.items()) if isinstance(images, dict) else [tuple(item) for item in images]
    if not items:
        raise ValueError("images must hold at least one (title, image) pair, got none")
    for item in items:
        if len(item) != 2:
            raise ValueError(f"images must be a dict or a sequence of (title, image) pairs, got an item {item!r}")
    panels = [(str(t), img, *_panel_array(t, img)) for t, img in items]
    if isinstance(scale, str):
        if scale not in ("shared", "each"):
            raise ValueError(f"scale must be 'shared', 'each' or a (vmin, vmax) pair, got {scale!r}")
        shared = scale == "shared"
        lo = float(min(np.nanmin(p[2]) for p in panels))
        hi = float(max(np.nanmax(p[2]) for p in panels))
    else:
        try:
            lo, hi = (float(v) for v in scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be 'shared', 'each' or a (vmin, vmax) pair, got {scale!r}") from None
        shared = True
    n = len(panels)
    aspect = max(p[2].shape[1] / p[2].shape[0] for p in panels)
    fig = _new_figure((panel_inches * n * min(max(aspect, 0.6), 3.0), panel_inches + 1.1), dpi=dpi,
                      layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (title, raw, arr, rgb) in zip(axes, panels):
        vmin, vmax = (lo, hi) if shared else (float(np.nanmin(arr)), float(np.nanmax(arr)))
        if vmax <= vmin:
            vmax = vmin + 1.0
        if rgb:
            im = ax.imshow(np.clip((arr - vmin) / (vmax - vmin), 0, 1), interpolation="nearest")
        else:
            im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        shape = tuple(np.shape(raw))
        ax.set_title(f"{title}\n{_times(shape)}, range [{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if colorbar:
            if rgb:  # the scale each channel is drawn with, so that the panels line up
                from matplotlib.cm import ScalarMappable
                from matplotlib.colors import Normalize

                im = ScalarMappable(norm=Normalize(vmin, vmax), cmap="gray")
            bar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
            if rgb:
                bar.set_label("each RGB channel", fontsize=7)
    if shared:
        fig.suptitle(f"one colour scale: [{lo:.3g}, {hi:.3g}]", fontsize=9)
    return _finish(fig, path)


def _finish(fig, path):
    _save(fig, path)
    return fig

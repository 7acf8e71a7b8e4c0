"""Convolution-arithmetic frames, computed from the matrices (NumPy only, no matplotlib).

A frame is plain data: which cells of the (padded) input and of the output a
picture lights up, each one read off a row of ``C`` (forward) or a column of
``Cᵀ`` (transposed).  :mod:`convmat.viz.animation` draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..build import conv_matrix, conv_plan, conv_transpose_matrix, conv_transpose_plan
from ..geometry import normalize_per_axis, normalize_shape
from ._common import (
    CellState,
    _cell_text,
    _check_picture_ndim,
    _lift,
    _list_text,
    _pad_text,
    _per_axis_text,
    _row_slices,
    _times,
)

__all__ = ["ConvFrame", "ScatterFrame", "Tap", "conv_arithmetic_frames", "conv_transpose_frames", "unwritten_outputs"]


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
    note: str = ""  # drawn on the picture when not empty (outputs that nothing writes)


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
    g = plan.geometry
    suptitle = (
        f"conv_transpose{ndim}d (scatter): input {_times(in_shape)} → output {_times(m)}\n"
        f"kernel {_times(kernel_size)}, stride {_per_axis_text(g.stride)}, padding {_pad_text(g.padding)}, "
        f"output_padding {_per_axis_text(g.output_padding)}, dilation {_per_axis_text(g.dilation)}"
    )
    never, note = _unwritten(T, g)
    N, M = math.prod(n2), math.prod(m2)
    legend_names = {
        CellState.CURRENT: "current input (number = column of Cᵀ)",
        CellState.DONE: "inputs done / outputs written",
        CellState.WRITTEN: "written now (rows of that column)",
        CellState.OUTPUT: "output (number = row of Cᵀ)",
    }
    if note:
        legend_names[CellState.UNWRITTEN] = "written by no input (stays 0)"
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
        note=note,
    )
    ptr, idx, val = np.asarray(T.indptr), np.asarray(T.indices), np.asarray(T.data)
    written = np.zeros(M, dtype=bool)
    never = never.ravel()
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
        out_state[never] = CellState.UNWRITTEN
        out_state[rows] = CellState.WRITTEN
        written[rows] = True
        frames.append(
            ScatterFrame(j, cell, rows, vals, out_cells, in_state, out_state.reshape(m2), scene)
        )
    return frames


def _unwritten(T, geometry):
    """``(mask over the output grid, note)``: outputs whose row of ``T`` (one channel) is empty, and why."""
    m = geometry.in_shape  # the transposed output is the forward geometry's input
    never = (np.diff(np.asarray(T.tocsr().indptr)) == 0).reshape(m)
    if not never.any():
        return never, ""
    reasons = {}
    for axis, ax in enumerate(geometry.axes):
        common = math.gcd(ax.s, ax.d)
        if common > 1 and ax.k > 1:
            reasons[axis] = (f"stride {ax.s} and dilation {ax.d} share the factor {common}: every write lands "
                             f"on an output u ≡ {(-ax.lo) % common} (mod {common})")
        elif ax.s > ax.extent:
            reasons[axis] = f"stride {ax.s} is longer than the kernel's reach {ax.extent}"
    if not reasons:
        why = "the output padding adds outputs past the last patch"
    elif len(m) == 1:
        why = reasons[0]
    elif len(reasons) == len(m) and len(set(reasons.values())) == 1:
        why = f"{reasons[0]}, on every axis"
    else:
        why = "; ".join(f"axis {axis}: {text}" for axis, text in reasons.items())
    count, total = int(never.sum()), never.size
    return never, f"{count} of {total} outputs are written by no input and stay 0 ({why})"


def unwritten_outputs(in_shape, kernel_size, *, stride=1, padding=0, output_padding=0, dilation=1):
    """The outputs of a transposed convolution that no input writes, read off the matrix, with a note.

    Parameters
    ----------
    in_shape, kernel_size, stride, padding, output_padding, dilation
        As :func:`convmat.conv_transpose_matrix` (any number of axes).

    Returns
    -------
    mask : ndarray of bool, shape m
        True where the row of ``Cᵀ = conv_transpose_matrix(ones, ...)`` is
        empty: that output is 0 whatever the input.
    note : str
        ``''`` when every output is written; else the count and the reason
        (stride and dilation sharing a factor ``g``, so every write lands on
        one residue mod ``g``; a stride longer than the kernel's reach; or an
        output padding past the last patch), as the pictures print it.

    Examples
    --------
    >>> mask, note = unwritten_outputs((4,), 3, stride=2, dilation=2)
    >>> mask.astype(int).tolist()
    [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    >>> head, why = note.split(" (", 1)
    >>> head
    '5 of 11 outputs are written by no input and stay 0'
    >>> why[:-1]
    'stride 2 and dilation 2 share the factor 2: every write lands on an output u ≡ 0 (mod 2)'
    """
    in_shape = normalize_shape(in_shape, "in_shape")
    ndim = len(in_shape)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    ones = np.ones((1, 1, *kernel_size))
    geometry = conv_transpose_plan(ones.shape, in_shape, **kw).geometry
    return _unwritten(conv_transpose_matrix(ones, in_shape, **kw), geometry)


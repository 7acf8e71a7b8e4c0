"""Two output paddings side by side: one transposed-convolution input, outputs of different sizes."""

from __future__ import annotations

import numpy as np

from ..build import conv_transpose_matrix, conv_transpose_plan
from ..geometry import conv_output_shape, normalize_per_axis, normalize_shape
from ._common import (
    _REGION_COLOR,
    _TAP_COLOR,
    _check_picture_ndim,
    _lift,
    _new_figure,
    _pad_text,
    _per_axis_text,
    _save,
    _times,
)
from .frames import _unwritten
from .recipe import _value_grid

__all__ = ["output_padding_choices"]


def output_padding_choices(in_shape, kernel_size, *, stride=1, padding=0, dilation=1, choices=None, path=None,
                           dpi=110):
    """The same transposed convolution with two (or more) output paddings, side by side.

    Parameters
    ----------
    in_shape : int or tuple of int
        Spatial shape of the transposed convolution's input, 1-D or 2-D.
    kernel_size, stride, padding, dilation
        As :func:`convmat.conv_transpose_matrix`.
    choices : sequence of (int or tuple of int), optional
        The output paddings to draw; default ``0`` and the largest allowed,
        ``max(stride, dilation) - 1`` per axis (only ``0`` when that is 0).
        Each is validated by :func:`convmat.conv_transpose_plan` (same messages).
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        One panel per choice: the output grid of size
        ``m = (n-1)s - lo - hi + e + a`` with, in every cell, how many inputs
        write it (nnz per row of ``Cᵀ``, ones kernel); the ``a`` extra samples
        at the high end are outlined, and outputs that no input writes are
        noted.  Titles say which forward input size each choice restores.
        The figure has the attribute ``output_shapes`` (one per choice).

    Notes
    -----
    A forward convolution with stride ``s`` maps ``s`` consecutive input sizes
    to one output size ``n``; the transposed convolution of that ``n`` must be
    told which of them to give back, and ``output_padding`` ``a`` (``0 <= a <
    max(s, d)``) adds ``a`` samples at the high end to pick it.  The forward
    convolution of every ``m`` drawn here has ``n`` outputs again when
    ``a < s``.

    Examples
    --------
    >>> fig = output_padding_choices((4,), 3, stride=2, padding=1)
    >>> fig.output_shapes
    [(7,), (8,)]
    """
    in_shape = normalize_shape(in_shape, "in_shape")
    _check_picture_ndim(in_shape)
    ndim = len(in_shape)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    ones = np.ones((1, 1, *kernel_size))
    base = conv_transpose_plan(ones.shape, in_shape, stride=stride, padding=padding, dilation=dilation).geometry
    if choices is None:
        top = tuple(max(s, d) - 1 for s, d in zip(base.stride, base.dilation))
        choices = [0] if not any(top) else [0, top]
    choices = list(choices)
    if not choices:
        raise ValueError("choices must hold at least one output_padding, got none")
    kw = dict(stride=base.stride, padding=base.padding, dilation=base.dilation)
    panels = []
    for a in choices:
        geometry = conv_transpose_plan(ones.shape, in_shape, output_padding=a, **kw).geometry
        T = conv_transpose_matrix(ones, in_shape, output_padding=a, **kw)
        never, note = _unwritten(T, geometry)
        m = geometry.in_shape
        coverage = np.diff(np.asarray(T.indptr)).reshape(m)
        back = conv_output_shape(m, kernel_size, **kw)
        panels.append((geometry.output_padding, m, coverage, never, note, back))

    rows = max(_lift(m, 1)[0] for _, m, *_ in panels)
    cols = [_lift(m, 1)[1] for _, m, *_ in panels]
    cell = min(0.42, 11.0 / sum(cols), 5.0 / rows)
    notes = [p[4] for p in panels if p[4]]
    gap, side, top, bottom = 0.8, 0.5, 1.3, 0.5 + 0.3 * len(notes)
    slots = [max(c * cell, 2.8) for c in cols]
    width = max(side * 2 + sum(slots) + gap * (len(panels) - 1), 7.0)
    height = top + rows * cell + bottom
    fig = _new_figure((width, height), dpi=dpi)
    x = (width - (sum(slots) + gap * (len(panels) - 1))) / 2
    for (a, m, coverage, never, note, back), slot in zip(panels, slots):
        h, w = _lift(m, 1)
        ax = fig.add_axes(((x + (slot - w * cell) / 2) / width, (height - top - h * cell) / height,
                           w * cell / width, h * cell / height))
        grid = coverage.reshape(_lift(m, 1))
        restores = ("this transposed conv is its exact transpose" if back == base.out_shape else
                    f"this transposed conv is its first {_times(base.out_shape)} rows, transposed")
        _value_grid(ax, grid, mask=never.reshape(grid.shape), cmap="Greys", vmin=0, vmax=max(1, int(grid.max())),
                    fmt="{:.0f}", title=f"output_padding {_per_axis_text(a)}: output {_times(m)}\n"
                    f"(a forward conv on {_times(m)} has {_times(back)} outputs:\n{restores})")
        ax.title.set_fontsize(9)
        extra = _lift(a, 0)
        if any(extra):  # the a samples added at the high end, per axis
            from matplotlib.patches import Rectangle

            for axis, (n_ax, a_ax) in enumerate(zip((h, w), extra)):
                if a_ax:
                    box = ((w - a_ax - 0.5, -0.5), a_ax, h) if axis == 1 else ((-0.5, h - a_ax - 0.5), w, a_ax)
                    ax.add_patch(Rectangle(*box, fill=False, ec=_REGION_COLOR, lw=2.0, ls="--", zorder=6))
        x += slot + gap
    fig.suptitle(
        f"conv_transpose{ndim}d of a {_times(in_shape)} input: kernel {_times(kernel_size)}, stride "
        f"{_per_axis_text(base.stride)}, padding {_pad_text(base.padding)}, dilation {_per_axis_text(base.dilation)}"
        f"\nnumbers: inputs writing each output (nnz per row of Cᵀ); dashed: the samples output_padding adds",
        fontsize=9.5, y=1 - 0.1 / height, va="top",
    )
    for i, note in enumerate(notes):
        fig.text(0.5, (0.15 + 0.3 * (len(notes) - 1 - i)) / height, "note: " + note, ha="center", va="bottom",
                 fontsize=8, color=_TAP_COLOR, wrap=True)
    fig.output_shapes = [m for _, m, *_ in panels]
    _save(fig, path)
    return fig

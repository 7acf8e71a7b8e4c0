"""The transposed convolution two ways: the scatter (columns of ``Cᵀ``) and the recipe ``K_flip·P·Z``, as grids
of numbers (one channel) and as matrices (channels and groups)."""

from __future__ import annotations

import math

import numpy as np

from .. import factors as F
from ..build import conv_transpose_matrix, conv_transpose_plan
from ..geometry import conv_transpose_output_shape, extent, normalize_per_axis, normalize_shape
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
from .matrix import plot_matrix

__all__ = ["recipe_matrices", "transposed_two_ways"]


# --------------------------------------------------------------------------- #
# the transposed convolution, two ways
# --------------------------------------------------------------------------- #
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
    import scipy.sparse as sp

    in_shape = normalize_shape(in_shape, "in_shape")
    _check_picture_ndim(in_shape)
    ndim = len(in_shape)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    # Validation and wording are the transposed convolution's own (conv_transpose_plan).
    geometry = conv_transpose_plan((1, 1, *kernel_size), in_shape, stride=stride, padding=padding,
                                   output_padding=output_padding, dilation=dilation).geometry
    s, d, a, pads = geometry.stride, geometry.dilation, geometry.output_padding, geometry.padding
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
    m = geometry.in_shape  # the transposed output
    y_scatter = T @ x.ravel()
    _, note = _unwritten(T, geometry)

    # the recipe, as matrices (convmat.recipe_factors)
    Kf, P, Z = (sp.csr_array(f) for f in F.recipe_factors(weight, in_shape, **kw))
    z_shape = tuple((n - 1) * ss + 1 for n, ss in zip(in_shape, s))
    rpad = geometry.recipe_padding
    p_shape = tuple(zz + lo + hi for zz, (lo, hi) in zip(z_shape, rpad))
    w_flip = np.asarray(F.flip_kernel(weight))
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
    top = 0.75 + (0.4 if note else 0.0)
    left, gap, right, title_h, bottom = (1.15 if rot == 0 else 0.75), 0.45, 0.2, 0.55, 0.15
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
    if note:  # outputs that nothing writes: the zeros of the coverage panel, said in words
        fig.text(0.5, 1 - 0.62 / fig_h, "note: " + note, ha="center", va="top", fontsize=8.5, color=_TAP_COLOR,
                 wrap=True)
    fig.max_difference = max(diff_vec, diff_mat)
    _save(fig, path)
    return fig



def recipe_matrices(weight, in_shape, *, stride=1, padding=0, output_padding=0, output_size=None, dilation=1,
                    groups=1, max_dense=600, path=None, dpi=100):
    """The transposed convolution and its three recipe factors as matrices, channels and groups included.

    Parameters
    ----------
    weight : array, shape (C_in, C_out/groups, *kernel_size)
        ConvTranspose layout, any number of channels.
    in_shape, stride, padding, output_padding, output_size, dilation, groups
        As :func:`convmat.recipe_factors` (the same validation and messages).
    max_dense : int
        Largest matrix side drawn (every entry is drawn); larger is a ValueError.
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        Four heat maps, ``T = conv_transpose_matrix`` then ``K_flip``, ``P``
        and ``Z`` of :func:`convmat.recipe_factors`, each with its channel
        blocks outlined (``K_flip`` is block diagonal over the groups, ``P``
        and ``Z`` over the channels); the title gives ``max|T - K_flip·P·Z|``
        (the attribute ``max_difference``).

    Examples
    --------
    >>> import numpy as np
    >>> fig = recipe_matrices(np.ones((2, 2, 3)), (3,), stride=2, groups=2)
    >>> [ax.get_title().splitlines()[0] for ax in fig.axes]
    ['T (built directly)', '= K_flip', '· P', '· Z']
    >>> fig.max_difference
    0.0
    """
    import scipy.sparse as sp

    kw = dict(stride=stride, padding=padding, output_padding=output_padding, output_size=output_size,
              dilation=dilation, groups=groups)
    if isinstance(max_dense, bool) or not isinstance(max_dense, (int, np.integer)) or max_dense < 1:
        raise ValueError(f"max_dense must be a positive int, got {max_dense!r}")
    w = np.asarray(weight)
    plan = conv_transpose_plan(w.shape, in_shape, **kw)  # the transposed convolution's validation and messages
    g = plan.geometry
    c_in, c_out = plan.input_shape[0], plan.output_shape[0]
    z = conv_transpose_output_shape(g.out_shape, (1,) * g.ndim, stride=g.stride)  # zeros inserted
    padded = tuple(v + lo + hi for v, (lo, hi) in zip(z, g.recipe_padding))
    biggest = max(*plan.shape, c_in * math.prod(padded), c_in * math.prod(z))  # every side of T, K_flip, P, Z
    if biggest > max_dense:  # refused before anything is built
        raise ValueError(
            f"the recipe's matrices have up to {biggest} rows or columns, more than max_dense={max_dense}; "
            f"draw a smaller geometry (fewer channels or pixels) or raise max_dense"
        )
    K, P, Z = (sp.csr_array(f) for f in F.recipe_factors(weight, in_shape, **kw))
    T = sp.csr_array(conv_transpose_matrix(w, in_shape, **kw))
    diff = float(abs(T - K @ (P @ Z)).max()) if T.nnz else 0.0
    sides = [  # (matrix, title, (C, *spatial) of its columns, of its rows)
        (T, "T (built directly)", plan.input_shape, plan.output_shape),
        (K, "= K_flip", (c_in, *padded), plan.output_shape),
        (P, "· P", (c_in, *z), (c_in, *padded)),
        (Z, "· Z", plan.input_shape, (c_in, *z)),
    ]
    # One cell size for all four, top-aligned: the shapes of a matrix product (rows of T = rows of K_flip,
    # columns of K_flip = rows of P, columns of P = rows of Z).
    cols = [m.shape[1] for m, *_ in sides]
    rows = max(m.shape[0] for m, *_ in sides)
    cell = min(0.06, 14.0 / sum(cols), 6.5 / rows)
    gap, left, top, bottom = 1.0, 0.9, 1.5, 0.6
    slots = [max(c * cell, 1.6) for c in cols]
    width, height = left + sum(slots) + gap * 4, top + rows * cell + bottom
    fig = _new_figure((width, height), dpi=dpi)
    x = left
    for (matrix, title, cols_shape, rows_shape), slot in zip(sides, slots):
        w_in, h_in = matrix.shape[1] * cell, matrix.shape[0] * cell
        ax = fig.add_axes(((x + (slot - w_in) / 2) / width, (height - top - h_in) / height, w_in / width,
                           h_in / height))
        plot_matrix(matrix, in_shape=cols_shape, out_shape=rows_shape, ax=ax, title=title, max_dense=max_dense,
                    label_max=0, colorbar=False)
        ax.set_title(ax.get_title().replace(": ", "\n", 1), fontsize=9, pad=18)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("")
        ax.set_ylabel("")
        x += slot + gap
    e = tuple(extent(k, d) for k, d in zip(g.kernel_size, g.dilation))
    fig.suptitle(
        f"conv_transpose{g.ndim}d {c_in} → {c_out} channels, groups {g.groups}: input {_times(g.out_shape)} → "
        f"output {_times(g.in_shape)}, kernel {_times(g.kernel_size)}, stride {_per_axis_text(g.stride)}, "
        f"padding {_pad_text(g.padding)}, output_padding {_per_axis_text(g.output_padding)}, dilation "
        f"{_per_axis_text(g.dilation)}\n"
        f"Z inserts stride−1 zeros ({_times(g.out_shape)} → {_times(z)}); P pads (e−1−lo, e−1−hi+a) = "
        f"{_pad_text(g.recipe_padding)} with e = {_per_axis_text(e)} (→ {_times(padded)}); K_flip: stride 1, "
        f"flipped kernel, channel axes swapped within each group\n"
        f"max |T − K_flip·P·Z| = {diff:.3g}   (red/blue: weights; grey: not stored)",
        fontsize=9.5, y=1 - 0.1 / height, va="top",
    )
    fig.max_difference = diff
    _save(fig, path)
    return fig

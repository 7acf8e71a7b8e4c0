"""Pictures of a matrix itself: every entry with channel blocks labelled, or a summary."""

from __future__ import annotations

import math

import numpy as np

from ..geometry import normalize_shape
from ._common import _new_figure, _save

__all__ = ["plot_matrix"]


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
                colorbar=True, path=None):
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
    colorbar : bool
        A colour bar beside the heat map (small matrices).
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
        fig = _plot_dense(A, in_shape, out_shape, ax, label_max, head, colorbar)
    else:
        fig = _plot_summary(A, in_shape, out_shape, ax, head, max_dense)
    _save(fig, path)
    return fig


def _plot_dense(A, in_shape, out_shape, ax, label_max, head, colorbar=True):
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
    if colorbar:
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
        box = ax.get_position()  # narrow blocks (in inches) get the channel number only
        wide = box.width * fig.get_figwidth() * No / N > 0.55
        tall = box.height * fig.get_figheight() * Ro / R > 0.6
        for c in range(Cr):
            ax.text(1.01, c * Ro + Ro / 2 - 0.5, f"out ch {c}" if tall else str(c), transform=right,
                    rotation=-90 if tall else 0, ha="left", va="center", fontsize=8)
        for c in range(Cc):
            ax.text(c * No + No / 2 - 0.5, 1.01, f"in ch {c}" if wide else str(c), transform=top, ha="center",
                    va="bottom", fontsize=8)
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


"""What every picture shares: cell states and their colours, figure helpers, labels.

NumPy only at import; the figure helpers import matplotlib (and Pillow)
inside the functions that need them.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

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
    (one of the row indices of that column of ``Cᵀ``); ``UNWRITTEN`` an
    output cell that no input writes (an empty row of ``Cᵀ``: it stays 0).
    """

    INPUT = 0
    PADDING = 1
    READ = 2
    PADDING_TAP = 3
    OUTPUT = 4
    DONE = 5
    CURRENT = 6
    WRITTEN = 7
    UNWRITTEN = 8


_STATE_COLORS = {
    CellState.INPUT: "#deebf7",
    CellState.PADDING: "#eeeeee",
    CellState.READ: "#2171b5",
    CellState.PADDING_TAP: "#fdae6b",
    CellState.OUTPUT: "#f2f9ee",
    CellState.DONE: "#a1d99b",
    CellState.CURRENT: "#238b45",
    CellState.WRITTEN: "#2171b5",
    CellState.UNWRITTEN: "#fde0dd",
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



def _finish(fig, path):
    _save(fig, path)
    return fig

"""A row of images on one colour scale: an input and what the matrices make of it."""

from __future__ import annotations

import textwrap

import numpy as np

from ._common import _finish, _new_figure, _times

__all__ = ["before_after"]


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


def before_after(images, *, scale="shared", cmap="gray", colorbar=True, panel_inches=3.2, ncols=None, title=None,
                 caption=None, path=None, dpi=110):
    """A row (or grid) of images (an input and what the matrices make of it) on one colour scale.

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
    panel_inches : float
        Height of one panel (a 96-pixel image at the default 3.2 inches and
        110 dpi is drawn about 3.5 screen pixels per pixel).
    ncols : int, optional
        Panels per row (default: all in one row).
    title : str, optional
        A heading above the panels (default: the shared colour range, if any).
    caption : str, optional
        Text under the panels, wrapped to the figure's width: say what the
        picture shows and why.
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
    if ncols is None:
        ncols = n
    elif isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive int or None, got {ncols!r}")
    ncols = min(int(ncols), n)
    nrows = -(-n // ncols)
    aspect = max(p[2].shape[1] / p[2].shape[0] for p in panels)
    width = panel_inches * ncols * min(max(aspect, 0.6), 3.0)
    lines = textwrap.wrap(caption, width=max(40, int(width * 72 / 6.2))) if caption else []
    height = (panel_inches + 1.1) * nrows + (0.18 * len(lines) + 0.2 if lines else 0) + (0.3 if title else 0)
    fig = _new_figure((width, height), dpi=dpi, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = grid.ravel()[:n]
    for ax in grid.ravel()[n:]:
        ax.set_axis_off()
    for ax, (name, raw, arr, rgb) in zip(axes, panels):
        vmin, vmax = (lo, hi) if shared else (float(np.nanmin(arr)), float(np.nanmax(arr)))
        if vmax <= vmin:
            vmax = vmin + 1.0
        if rgb:
            im = ax.imshow(np.clip((arr - vmin) / (vmax - vmin), 0, 1), interpolation="nearest")
        else:
            im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        shape = tuple(np.shape(raw))
        ax.set_title(f"{name}\n{_times(shape)}, range [{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]", fontsize=9)
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
    heading = [title] if title else []
    if shared:
        heading.append(f"one colour scale: [{lo:.3g}, {hi:.3g}]")
    if heading:
        fig.suptitle("\n".join(heading), fontsize=10 if title else 9)
    if lines:
        fig.supxlabel("\n".join(lines), fontsize=9, ha="left", x=0.01, multialignment="left")
    return _finish(fig, path)


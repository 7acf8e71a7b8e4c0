"""Drawing frames: one figure per frame, or a GIF rendered from one figure updated frame by frame."""

from __future__ import annotations

import numpy as np

from ._common import (
    _DARK_STATES,
    _REGION_COLOR,
    _STATE_COLORS,
    _TAP_COLOR,
    CellState,
    _fig_to_image,
    _grid_axes,
    _new_figure,
    _save,
    _state_cmap,
)
from .frames import ConvFrame, _Scene, conv_arithmetic_frames, conv_transpose_frames

__all__ = ["animate_conv", "animate_conv_transpose", "draw_frame", "frame_images", "save_gif"]


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
        top, bottom, gap, side = 1.05 + (0.3 if scene.note else 0.0), 1.15, 0.9, 0.45
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
        if scene.note:  # outputs that nothing writes: say so on the picture
            fig.text(0.5, 1 - 0.5 / height, "note: " + scene.note, ha="center", va="top", fontsize=8,
                     color=_TAP_COLOR, wrap=True)
        self.subtitle = fig.text(0.5, 0.62 / height, "", ha="center", va="center", fontsize=8.5)
        self.text_l = self._cell_texts(self.ax_l, scene.left_labels)
        self.text_r = self._cell_texts(self.ax_r, scene.right_labels)
        handles = [
            Patch(facecolor=_STATE_COLORS[s], edgecolor="#999999", label=scene.legend_names[s])
            for s in scene.legend
        ]
        if scene.kind == "conv":
            handles.append(Patch(facecolor="none", edgecolor=_TAP_COLOR, linewidth=1.5, label="kernel taps"))
        ncol = 3 if scene.kind == "scatter" else 4  # the scatter's labels are longer
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), ncol), fontsize=6.5,
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


"""Pictures of convolution matrices, drawn from the matrices themselves.

Dumoulin & Visin's convolution-arithmetic animations were drawn by hand for a
dozen cases.  This package draws them for any geometry convmat accepts, and
every highlighted cell comes from the sparse matrix, not from a second copy of
the formulas: the input cells lit up for output pixel ``r`` are the column
indices of row ``r`` of :func:`convmat.conv_matrix` (ones kernel, one
channel), the output cells lit up for input pixel ``j`` of a transposed
convolution are the row indices of column ``j`` of
:func:`convmat.conv_transpose_matrix`.  The picture is the truth about the
code.

Modules
-------
frames (NumPy only)
    :func:`conv_arithmetic_frames` (one frame per output pixel of a forward
    convolution, any padding, mode, stride, dilation) and
    :func:`conv_transpose_frames` (one frame per input pixel of a transposed
    convolution: the scatter view), as plain data; :func:`unwritten_outputs`
    (outputs that no input writes, with a note saying why).
animation
    :func:`draw_frame` (one frame as a Figure), :func:`frame_images`,
    :func:`save_gif`, :func:`animate_conv`, :func:`animate_conv_transpose`.
matrix
    :func:`plot_matrix`: a heat map with channel blocks outlined and rows and
    columns labelled ``(c, i, j)``; a summary (nnz per block, nnz per row)
    for matrices too large to draw.
recipe
    :func:`transposed_two_ways` (scatter against the zero-insertion recipe,
    one channel) and :func:`recipe_matrices` (the factors ``K_flip``, ``P``,
    ``Z`` of :func:`convmat.recipe_factors` with channels and groups).
output_padding
    :func:`output_padding_choices`: two output paddings side by side.
panels
    :func:`before_after`: a row of images on one colour scale.

matplotlib (and Pillow, for GIFs) are imported inside the functions that need
them: ``import convmat.viz`` loads neither, and the frames are computed
without them.  Figures are created with ``matplotlib.figure.Figure`` (not
pyplot), so they work headless and do not accumulate in pyplot's figure list;
they display in notebooks as usual.
"""

from __future__ import annotations

from ._common import CellState
from .animation import animate_conv, animate_conv_transpose, draw_frame, frame_images, save_gif
from .frames import ConvFrame, ScatterFrame, Tap, conv_arithmetic_frames, conv_transpose_frames, unwritten_outputs
from .matrix import plot_matrix
from .output_padding import output_padding_choices
from .panels import before_after
from .recipe import recipe_matrices, transposed_two_ways

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
    "output_padding_choices",
    "plot_matrix",
    "recipe_matrices",
    "save_gif",
    "transposed_two_ways",
    "unwritten_outputs",
]

"""The subcommand ``draw``: pictures of one geometry, with a stated size limit (``--max-dense``)."""

from __future__ import annotations

import math
import os

from .commands import plans, random_weight
from .parser import CommandError

__all__ = ["cmd_draw", "grid_cells", "recipe_matrix_sides"]

#: The pictures drawn from one-channel grids (1-D and 2-D, at most --max-dense cells).
GRID_PICTURES = "conv_frame.png, conv.gif, recipe.png, conv_transpose.gif, output_padding.png, recipe_matrices.png"


def grid_cells(geometry) -> int:
    """Cells of the largest one-channel grid that ``draw`` puts on a picture.

    The frames show the padded input, ``n + lo + hi`` per axis; the recipe
    figure the zero-inserted, padded input of the stride-1 convolution, which
    has ``n + e - 1`` cells per axis (its stride-1 output has ``n``), with
    ``e = d(k-1)+1``.
    """
    from convmat.geometry import extent

    g = geometry
    return math.prod(
        max(n + lo + hi, n + extent(k, d) - 1)
        for n, (lo, hi), k, d in zip(g.in_shape, g.padding, g.kernel_size, g.dilation)
    )


def recipe_matrix_sides(trans) -> int:
    """The largest side of the matrices ``recipe_matrices.png`` draws: ``T``, ``K_flip``, ``P``, ``Z``.

    Per axis the transposed convolution's input ``n`` becomes ``(n-1)s + 1``
    samples by zero insertion (``Z``'s rows, ``P``'s columns), then
    ``m + e - 1`` by the recipe's padding or cropping (``P``'s rows,
    ``K_flip``'s columns; the stride-1 output has ``m``); both for every
    input channel of ``T``.
    """
    from convmat.geometry import extent

    tg = trans.geometry
    channels, inputs, outputs = trans.input_shape[0], trans.input_shape[1:], trans.output_shape[1:]
    inserted = math.prod((n - 1) * s + 1 for n, s in zip(inputs, tg.stride))
    padded = math.prod(m + extent(k, d) - 1 for m, k, d in zip(outputs, tg.kernel_size, tg.dilation))
    return max(*trans.shape, channels * inserted, channels * padded)


def _output_folder(path):
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise CommandError("--out", f"{path!r} exists and is not a directory") from None
    except OSError as exc:
        raise CommandError("--out", f"cannot create the directory {path!r}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError("--out", f"cannot write in the directory {path!r}: permission denied")


def cmd_draw(args) -> int:
    fwd, trans, out_pad, _ = plans(args)
    g = fwd.geometry
    cells = grid_cells(g)
    frames_too_big = g.ndim <= 2 and cells > args.max_dense
    _output_folder(args.out)
    try:
        written, skipped, notes = _draw(args, fwd, trans, out_pad, frames_too_big)
    except OSError as exc:
        where = exc.filename or args.out
        raise CommandError("--out", f"cannot write {where!r}: {exc.strerror or exc}") from None
    if frames_too_big:
        skipped.append(f"{GRID_PICTURES}: the grid has {cells:,} cells, more than "
                       f"--max-dense {args.max_dense} (frames are drawn for grids of at most that many cells)")
    for path in written:
        print(f"wrote {path}")
    for note in skipped:
        print(f"not drawn: {note}")
    for note in notes:
        print(f"note: {note}")
    return 0


def _draw(args, fwd, trans, out_pad, frames_too_big):
    import numpy as np

    from convmat import conv_matrix, conv_transpose_matrix, viz

    g = fwd.geometry
    written, skipped, notes = [], [], []

    def out(name):
        path = os.path.join(args.out, name)
        written.append(path)
        return path

    dense = dict(max_dense=args.max_dense)
    weight = random_weight(fwd.weight_shape, np.float64, args.seed)
    kw = dict(stride=g.stride, dilation=g.dilation, groups=g.groups)
    C = conv_matrix(weight, g.in_shape, padding=g.padding, padding_mode=g.padding_mode, **kw)
    viz.plot_matrix(C, in_shape=fwd.input_shape, out_shape=fwd.output_shape, title="C", path=out("matrix.png"),
                    **dense)
    if g.padding_mode == "zeros":
        T = conv_transpose_matrix(weight, g.out_shape, padding=g.padding, output_padding=out_pad, **kw)
        viz.plot_matrix(T, in_shape=trans.input_shape, out_shape=trans.output_shape, title="transposed",
                        path=out("matrix_T.png"), **dense)
    else:  # PyTorch's ConvTranspose pads with zeros only; the exact adjoint is C.T
        viz.plot_matrix(C.T.tocsr(), in_shape=fwd.output_shape, out_shape=fwd.input_shape, title="C.T",
                        path=out("matrix_T.png"), **dense)
    if g.ndim > 2:
        skipped.append(f"{GRID_PICTURES}: frames are drawn for 1-D and 2-D, this is {g.ndim}-D")
        return written, skipped, notes
    if frames_too_big:
        return written, skipped, notes
    frame_kw = dict(stride=g.stride, padding=g.padding, dilation=g.dilation, padding_mode=g.padding_mode)
    frames = viz.conv_arithmetic_frames(g.in_shape, g.kernel_size, **frame_kw)
    viz.draw_frame(frames[len(frames) // 2], path=out("conv_frame.png"))
    shown = frames[: args.max_frames]
    viz.save_gif(viz.frame_images(shown), out("conv.gif"))
    if len(shown) < len(frames):
        skipped.append(f"conv.gif shows the first {len(shown)} of {len(frames)} output pixels (--max-frames)")
    if g.padding_mode == "zeros":
        viz.transposed_two_ways(g.out_shape, g.kernel_size, stride=g.stride, padding=g.padding,
                                output_padding=out_pad, dilation=g.dilation, path=out("recipe.png"))
        _draw_transposed(args, viz, weight, g, trans, out_pad, out, skipped, notes)
    else:
        skipped.append("recipe.png, conv_transpose.gif, output_padding.png, recipe_matrices.png: the transposed "
                       "convolution and its zero-insertion recipe are the transpose of zero padding only")
    return written, skipped, notes


def _draw_transposed(args, viz, weight, g, trans, out_pad, out, skipped, notes):
    """conv_transpose.gif (the scatter, one frame per input pixel), output_padding.png, recipe_matrices.png.

    ``g`` is the forward geometry (the transposed convolution's input is ``g.out_shape``), ``trans`` the
    transposed plan.
    """
    tkw = dict(stride=g.stride, padding=g.padding, dilation=g.dilation)
    frames = viz.conv_transpose_frames(g.out_shape, g.kernel_size, output_padding=out_pad, **tkw)
    shown = frames[: args.max_frames]
    viz.save_gif(viz.frame_images(shown), out("conv_transpose.gif"))
    if len(shown) < len(frames):
        skipped.append(f"conv_transpose.gif shows the first {len(shown)} of {len(frames)} input pixels (--max-frames)")
    viz.output_padding_choices(g.out_shape, g.kernel_size, path=out("output_padding.png"), **tkw)
    side = recipe_matrix_sides(trans)  # from the plan: nothing is built before the refusal
    if side <= args.max_dense:
        viz.recipe_matrices(weight, g.out_shape, output_padding=out_pad, groups=g.groups, max_dense=args.max_dense,
                            path=out("recipe_matrices.png"), **tkw)
    else:
        skipped.append(f"recipe_matrices.png: the recipe's matrices have {side:,} rows or columns, more than "
                       f"--max-dense {args.max_dense}")
    _, note = viz.unwritten_outputs(g.out_shape, g.kernel_size, output_padding=out_pad, **tkw)
    if note:
        notes.append(f"transposed convolution: {note}")

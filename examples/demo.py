"""A convolution layer as a sparse matrix, on a picture.

Draws a 96x96 RGB test scene (no downloads), builds the CSR matrix C of a
3 -> 8 channel, 3x3, stride-2, padding-1 convolution whose filters are edge
detectors and blurs, and applies ``Y = C @ X`` and the transposed convolution
``T @ Y`` (``T = conv_transpose_matrix`` with the same weight, output size
restoring the input, which makes ``T = C.T``).  Compares both with a reference
(PyTorch if installed, else a NumPy loop over kernel taps written below),
checks the adjoint identity ``<Cx, y> = <x, T y>``, and writes

    OUT/input.png        the scene (96 x 96 pixels, the array itself)
    OUT/forward.png      the 8 output channels of the first image (48 x 48 each), 2 rows x 4,
                         each panel titled with its channel and filter, on its own colour scale
    OUT/transposed.png   the scene, T @ Y of the first image and, zoomed, the checkerboard: how
                         many input pixels write each output pixel, with a caption saying why

Run:  python examples/demo.py --out out      (``make demo``)
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import scipy.sparse  # noqa: F401  (convmat imports it at the first build; here, so build times exclude it)

from convmat import columns_to_images, conv_matrix, conv_transpose_matrix, images_to_columns
from convmat.imagefiles import write_image

SIZE = 96
STRIDE, PADDING = 2, 1
CHANNEL_NAMES = (
    "sobel x (luma)", "sobel y (luma)", "laplacian (luma)", "diagonal edge (luma)",
    "blur R", "blur G", "blur B", "blur R - blur B",
)


# --------------------------------------------------------------------------- #
# the scene
# --------------------------------------------------------------------------- #
def _segment_mask(yy, xx, p, q, width):
    """Pixels within width/2 of the segment p -> q ((row, col) points)."""
    (y0, x0), (y1, x1) = p, q
    dy, dx = y1 - y0, x1 - x0
    t = ((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2 <= (width / 2) ** 2


# Letters as strokes on a 4 (wide) x 6 (high) grid, (row, col) end points.
_STROKES = {
    "C": [((0, 4), (0, 0)), ((0, 0), (6, 0)), ((6, 0), (6, 4))],
    "O": [((0, 0), (0, 4)), ((0, 4), (6, 4)), ((6, 4), (6, 0)), ((6, 0), (0, 0))],
    "N": [((6, 0), (0, 0)), ((0, 0), (6, 4)), ((6, 4), (0, 4))],
    "V": [((0, 0), (6, 2)), ((6, 2), (0, 4))],
}


def make_scene(size: int = SIZE) -> np.ndarray:
    """A deterministic RGB test picture, shape (3, size, size), values in [0, 1].

    A colour gradient, a checkerboard, a filled disc, a ring and the word
    "CONV" drawn in strokes: smooth areas, straight and curved edges, fine texture.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u, v = xx / (size - 1), yy / (size - 1)
    img = np.stack([0.15 + 0.6 * u, 0.2 + 0.5 * v, 0.75 - 0.5 * u * v])
    # checkerboard in the lower right quadrant, 6-pixel squares
    h = size // 2
    board = ((yy // 6 + xx // 6) % 2 == 0) & (yy >= h + 4) & (xx >= h + 4) & (yy < size - 4) & (xx < size - 4)
    img[:, board] = 0.95
    img[:, ((yy >= h + 4) & (xx >= h + 4) & (yy < size - 4) & (xx < size - 4)) & ~board] = 0.05
    # a red disc and a dark-blue ring in the lower left quadrant
    r = np.hypot(yy - 0.72 * size, xx - 0.27 * size)
    img[:, r < 0.14 * size] = np.array([0.9, 0.15, 0.1])[:, None]
    ring = np.abs(np.hypot(yy - 0.72 * size, xx - 0.27 * size) - 0.19 * size) < 1.5
    img[:, ring] = np.array([0.05, 0.1, 0.45])[:, None]
    # "CONV" in white strokes along the top
    scale, left, top = 4.0, 0.1 * size, 0.1 * size
    text = np.zeros((size, size), dtype=bool)
    for i, letter in enumerate("CONV"):
        x0 = left + i * 5.5 * scale
        for (r0, c0), (r1, c1) in _STROKES[letter]:
            p = (top + r0 * scale, x0 + c0 * scale)
            q = (top + r1 * scale, x0 + c1 * scale)
            text |= _segment_mask(yy, xx, p, q, width=2.5)
    img[:, text] = 1.0
    return np.clip(img, 0.0, 1.0)


# --------------------------------------------------------------------------- #
# the layer
# --------------------------------------------------------------------------- #
def make_weight() -> np.ndarray:
    """Weight (8, 3, 3, 3) of a 3 -> 8 convolution: four edge detectors on luma, four blurs."""
    luma = np.array([0.299, 0.587, 0.114])
    sobel_x = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    laplace = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    diagonal = np.array([[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]]) / 4
    blur = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16
    w = np.zeros((8, 3, 3, 3))
    for c, k in enumerate((sobel_x, sobel_x.T, laplace, diagonal)):
        w[c] = luma[:, None, None] * k
    for c in range(3):
        w[4 + c, c] = blur
    w[7, 0], w[7, 2] = blur, -blur
    return w


# --------------------------------------------------------------------------- #
# references
# --------------------------------------------------------------------------- #
def reference_conv2d(x, w, stride, padding):
    """Cross-correlation, zero padding, one loop over kernel taps: (N, Ci, H, W) -> (N, Co, Ho, Wo)."""
    n, _, H, W = x.shape
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho = (H + 2 * padding - kh) // stride + 1
    Wo = (W + 2 * padding - kw) // stride + 1
    y = np.zeros((n, w.shape[0], Ho, Wo), dtype=np.result_type(x, w))
    for p in range(kh):
        for q in range(kw):
            patch = xp[:, :, p : p + stride * (Ho - 1) + 1 : stride, q : q + stride * (Wo - 1) + 1 : stride]
            y += np.einsum("oc,nchw->nohw", w[:, :, p, q], patch)
    return y


def reference_conv_transpose2d(y, w, stride, padding, output_padding):
    """Transposed convolution by scatter: output u receives w * y[j] for u = j*s - p + t."""
    n, _, Hi, Wi = y.shape
    kh, kw = w.shape[2:]
    full_h = (Hi - 1) * stride + kh + output_padding
    full_w = (Wi - 1) * stride + kw + output_padding
    out = np.zeros((n, w.shape[1], full_h, full_w), dtype=np.result_type(y, w))
    for p in range(kh):
        for q in range(kw):
            out[:, :, p : p + stride * (Hi - 1) + 1 : stride, q : q + stride * (Wi - 1) + 1 : stride] += np.einsum(
                "co,nchw->nohw", w[:, :, p, q], y
            )
    return out[:, :, padding : full_h - padding, padding : full_w - padding]


def references(x, y, w, output_padding, which="auto"):
    """(forward, transposed, name): PyTorch (``'torch'``, or ``'auto'`` when importable) or the NumPy loops."""
    if which == "torch" or (which == "auto" and importlib.util.find_spec("torch") is not None):
        import torch
        import torch.nn.functional as F

        tx, ty, tw = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y, w))
        fwd = F.conv2d(tx, tw, stride=STRIDE, padding=PADDING).numpy()
        trans = F.conv_transpose2d(ty, tw, stride=STRIDE, padding=PADDING, output_padding=output_padding).numpy()
        return fwd, trans, f"torch {torch.__version__} conv2d / conv_transpose2d"
    fwd = reference_conv2d(x, w, STRIDE, PADDING)
    trans = reference_conv_transpose2d(y, w, STRIDE, PADDING, output_padding)
    why = "requested" if which == "numpy" else "torch not installed"
    return fwd, trans, f"NumPy loop over kernel taps ({why})"


# --------------------------------------------------------------------------- #
# pictures
# --------------------------------------------------------------------------- #
def write_png(path: Path, img: np.ndarray) -> Path:
    """Write (H, W) grey or (3, H, W) RGB values in [0, 1] as an 8-bit PNG (Pillow, via convmat.imagefiles)."""
    img = np.asarray(img)
    write_image(path, img[None] if img.ndim == 2 else img, clip=True)
    return path


def forward_figure(y0: np.ndarray):
    """The 8 output channels of one image, 2 rows x 4, each titled with its channel number and filter."""
    from convmat import viz

    panels = [(f"channel {c}: {name}", y0[c]) for c, name in enumerate(CHANNEL_NAMES)]
    return viz.before_after(
        panels, scale="each", ncols=4, panel_inches=2.6,
        title=f"forward y = C @ x: 3 -> 8 channels, 3x3 kernel, stride {STRIDE}, padding {PADDING} "
              f"(each channel on its own grey scale)",
    )


def coverage(T, channels_in: int, shape) -> np.ndarray:
    """How many input pixels write each output pixel of the transposed convolution (one output channel).

    Row ``u`` of ``T`` (output channel 0) holds one entry per (input channel, tap) that writes ``u``:
    nnz per row over the number of input channels.
    """
    per_row = np.diff(T.indptr)[: int(np.prod(shape))]
    return (per_row // channels_in).reshape(shape)


def transposed_figure(x0: np.ndarray, z0: np.ndarray, cover: np.ndarray, corner: int = 8, zoom: int = 12):
    """The scene, T @ (C @ x) and the checkerboard of how many inputs write each output, with a caption."""
    from convmat import viz

    counts = ", ".join(str(int(v)) for v in np.unique(cover)[:-1]) + f" or {int(cover.max())}"
    crop = (slice(corner, corner + zoom),) * 2
    where = f"rows, cols {corner}-{corner + zoom - 1}"
    caption = (
        f"The checkerboard: with stride {STRIDE} the transposed convolution scatters every one of the 48 x 48 "
        f"input pixels onto a 3 x 3 patch of the output, and the patches start {STRIDE} pixels apart, so "
        f"they overlap on every other row and column. An output pixel therefore receives {counts} "
        f"contributions depending on the parity of its row and column (right: the number of non-zeros in "
        f"its row of T per input channel), and T @ y inherits that period-{STRIDE} pattern (third panel, "
        f"the corner of the letter C) -- the checkerboard artefact of strided transposed convolutions "
        f"(Odena, Dumoulin & Olah, 2016). A kernel size divisible by the stride would write every pixel "
        f"equally often."
    )
    fig = viz.before_after(
        [("input x (first image)", x0), ("transposed T @ (C @ x)", z0),
         (f"zoom on T @ (C @ x), {where}", z0[(slice(None), *crop)]),
         (f"inputs writing each pixel, {where}", cover[crop].astype(float))],
        scale="each", panel_inches=3.0, title="the transposed convolution T = C.T (same weight, output size 96 x 96)",
        caption=caption,
    )
    cells = fig.axes[3]  # the coverage panel: its numbers written in
    for (i, j), v in np.ndenumerate(cover[crop]):
        cells.text(j, i, str(int(v)), ha="center", va="center", fontsize=8,
                   color="black" if v > (cover.min() + cover.max()) / 2 else "white")
    return fig


# --------------------------------------------------------------------------- #
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out", help="directory for the PNGs (default: out)")
    parser.add_argument("--reference", choices=("auto", "torch", "numpy"), default="auto",
                        help="what to compare with: PyTorch, the NumPy loop in this file, or "
                        "auto (PyTorch when installed; default)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    scene = make_scene()
    # a batch of two: the scene and the scene turned by 90 degrees
    x = np.ascontiguousarray(np.stack([scene, np.rot90(scene, axes=(1, 2))])).astype(np.float32)
    w = make_weight().astype(np.float32)
    in_shape = x.shape[2:]

    t0 = time.perf_counter()
    C = conv_matrix(w, in_shape, stride=STRIDE, padding=PADDING)
    t_fwd = time.perf_counter() - t0
    out_shape = (w.shape[0],) + tuple((n + 2 * PADDING - 3) // STRIDE + 1 for n in in_shape)
    t0 = time.perf_counter()
    T = conv_transpose_matrix(w, out_shape[1:], stride=STRIDE, padding=PADDING, output_size=in_shape)
    t_trans = time.perf_counter() - t0
    output_padding = (in_shape[0] + 2 * PADDING - 3) % STRIDE  # the one output_size implies

    X = images_to_columns(x)                       # (3*96*96, 2): X[:, i] = x[i].ravel()
    y = columns_to_images(C @ X, out_shape)        # (2, 8, 48, 48)
    z = columns_to_images(T @ images_to_columns(y), x.shape[1:])  # (2, 3, 96, 96)

    ref_y, ref_z, ref_name = references(x, y, w, output_padding, args.reference)
    err_fwd = float(np.abs(y - ref_y).max())
    err_trans = float(np.abs(z - ref_z).max())

    # adjoint identity <C a, b> = <a, T b> in float64, T built directly (not by transposing C)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(C.shape[1])
    b = rng.standard_normal(C.shape[0])
    C64, T64 = C.astype(np.float64), T.astype(np.float64)
    lhs, rhs = float((C64 @ a) @ b), float(a @ (T64 @ b))
    adjoint = abs(lhs - rhs) / max(abs(lhs), abs(rhs))
    same = C.T.tocsr() != T
    exact_transpose = same.nnz == 0

    nbytes = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    rows = [
        ("input x", f"{x.shape} {x.dtype}"),
        ("forward y = C @ X", f"{y.shape}"),
        ("transposed z = T @ Y", f"{z.shape}"),
        ("matrix C", f"{C.shape[0]:,} x {C.shape[1]:,}, {C.dtype}, {C.indices.dtype} indices"),
        ("nnz", f"{C.nnz:,} ({100 * C.nnz / (C.shape[0] * C.shape[1]):.3f}% dense; "
                f"{int((C.data == 0).sum()):,} stored zeros from zero weights: the pattern is structural)"),
        ("bytes", f"{nbytes:,} ({nbytes / 1e6:.2f} MB)"),
        ("build time", f"C {1e3 * t_fwd:.1f} ms, T {1e3 * t_trans:.1f} ms"),
        ("reference", ref_name),
        ("max |C@X - ref|", f"{err_fwd:.3e}  (max |y| {float(np.abs(ref_y).max()):.3g})"),
        ("max |T@Y - ref|", f"{err_trans:.3e}  (max |z| {float(np.abs(ref_z).max()):.3g})"),
        ("adjoint <Ca,b> vs <a,Tb>", f"{lhs:.12g} vs {rhs:.12g}, relative difference {adjoint:.2e}"),
        ("T == C.T exactly", "yes" if exact_transpose else f"no ({same.nnz} entries differ)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"conv2d 3 -> 8, kernel 3x3, stride {STRIDE}, padding {PADDING}; batch of {x.shape[0]} images")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("  channels: " + ", ".join(f"{i} {n}" for i, n in enumerate(CHANNEL_NAMES)))

    cover = coverage(T, w.shape[0], in_shape)
    written = [write_png(out / "input.png", x[0])]
    for name, fig in (("forward.png", forward_figure(y[0])),
                      ("transposed.png", transposed_figure(x[0], z[0], cover))):
        fig.savefig(out / name, dpi=fig.dpi)
        written.append(out / name)
    for path in written:
        print(f"wrote {path}")
    ok = err_fwd < 1e-4 and err_trans < 1e-4 and adjoint < 1e-12 and exact_transpose
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

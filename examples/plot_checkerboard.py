"""
Checkerboard artifacts are an uneven overlap map, Cᵀ·1
======================================================

Transposed convolutions are known to paint checkerboard patterns into
generated images (Odena, Dumoulin & Olah, *Deconvolution and Checkerboard
Artifacts*, Distill 2016).  The cause is visible without any training: each
input sample stamps a ``k × k`` kernel at stride ``s``, and when ``k`` is not
divisible by ``s`` the stamps overlap unevenly — some output pixels receive
more stamps than their neighbours.

With the explicit matrix the overlap map is one product: ``Cᵀ · 1`` for a
kernel of ones counts, for every output pixel, how many (input, tap) pairs
reach it.  Away from the border it is constant exactly when ``s`` divides ``k``.
"""

# %%
# k = 3 vs k = 4 at stride 2
# --------------------------
import numpy as np
import matplotlib.pyplot as plt

import convmat


def overlap_map(k, s, n=8):
    """Cᵀ·1 of a k×k kernel of ones at stride s, on an n×n input (padding 0)."""
    T = convmat.conv_transpose_matrix(np.ones((1, 1, k, k)), (n, n), stride=s)
    (m, _) = convmat.conv_transpose_output_shape((n, n), k, stride=s)
    return (T @ np.ones(n * n)).reshape(m, m)


def interior(img, k):
    """Drop the k-pixel frame, where fewer stamps reach any kernel size."""
    return img[k:-k, k:-k]


maps = {k: overlap_map(k, 2) for k in (3, 4)}
for k, img in maps.items():
    inner = interior(img, k)
    print(f"k={k}, s=2: interior overlap counts {sorted(set(inner.ravel().astype(int).tolist()))}, "
          f"max/min = {inner.max() / inner.min():g}")
assert interior(maps[3], 3).max() / interior(maps[3], 3).min() == 4.0  # 1, 2 and 4 stamps
assert interior(maps[4], 4).max() / interior(maps[4], 4).min() == 1.0  # 4 stamps everywhere

# %%
# The rule, on a grid of kernel sizes and strides
# -----------------------------------------------
# In one dimension the interior counts are ``⌊k/s⌋`` and ``⌈k/s⌉``; in two
# dimensions their products.  The ratio is 1 exactly when ``k mod s = 0``.
print(f"{'k':>3} {'s':>3} {'k mod s':>8} {'interior max/min':>17}")
for s in (2, 3):
    for k in range(s, 3 * s + 1):
        inner = interior(overlap_map(k, s, n=10), k)
        ratio = inner.max() / inner.min()
        print(f"{k:>3} {s:>3} {k % s:>8} {ratio:>17.3f}")
        assert (ratio == 1.0) == (k % s == 0)

# %%
# Pictures
# --------
# The overlap map is what a layer with constant weights paints on a constant
# input; a trained layer can learn to cancel it, but it starts from here.  k = 3 gives the checkerboard, k = 4 a flat
# interior (only the frame is darker).
fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
for ax, (k, img) in zip(axes, maps.items()):
    im = ax.imshow(img, cmap="magma", vmin=0, vmax=4)
    ratio = interior(img, k).max() / interior(img, k).min()
    ax.set_title(f"k = {k}, s = 2: Cᵀ·1, {img.shape[0]}×{img.shape[1]}\ninterior max/min = {ratio:g}",
                 fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes, shrink=0.8, label="stamps reaching the pixel")

# sphinx_gallery_start_ignore
# As a script, ``--out DIR`` also saves the figures there as PNG files.
import argparse
from pathlib import Path

_parser = argparse.ArgumentParser()
_parser.add_argument("--out", type=Path, help="directory for the PNG files")
_out = _parser.parse_known_args()[0].out
if _out is not None:
    _out.mkdir(parents=True, exist_ok=True)
    for _i, _num in enumerate(plt.get_fignums()):
        plt.figure(_num).savefig(_out / f"{Path(__file__).stem}_{_i}.png", dpi=100)
# sphinx_gallery_end_ignore
plt.show()

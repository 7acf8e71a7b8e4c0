"""
2× bilinear upsampling as a transposed convolution (the FCN initialisation)
===========================================================================

Fully convolutional networks (Long, Shelhamer & Darrell, 2015) initialise
their upsampling layers as bilinear interpolation: a transposed convolution
with kernel ``k = 2f``, stride ``s = f`` and padding ``p = f/2`` whose kernel
is the outer product of a "tent".  For ``f = 2`` the tent is
``[1/4, 3/4, 3/4, 1/4]``, and every output sample is ``3/4`` of its nearest
input sample plus ``1/4`` of the next nearest — bilinear interpolation with
half-pixel centres.

Each colour channel is upsampled on its own: ``groups = C`` (a depthwise
layer), weight shape ``(C, 1, 4, 4)``.  The matrix is block diagonal, one
block per channel.  Only the one-pixel frame differs from interpolation with
replicated edges: there zero padding leaves out a quarter of the weight.
"""

# %%
# A small synthetic photograph
# ----------------------------
# A seeded 48×64 RGB scene (sky, sun, hills, grass texture), so the example
# needs no image file.
import numpy as np
import matplotlib.pyplot as plt

import convmat

rng = np.random.default_rng(0)
H, W = 48, 64
yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
sky = np.stack([0.35 + 0.4 * yy, 0.55 + 0.3 * yy, 0.95 - 0.1 * yy])
sun = ((xx - 0.75) ** 2 + ((yy - 0.25) * H / W) ** 2 < 0.006)
hill = yy > 0.62 + 0.1 * np.sin(7 * xx) - 0.08 * xx
grass = np.stack([0.2 + 0.1 * xx, 0.55 - 0.15 * yy, 0.15 + 0 * xx]) + 0.06 * rng.standard_normal((3, H, W))
image = np.where(hill, grass, np.where(sun, np.array([1.0, 0.9, 0.4])[:, None, None], sky))
image = np.clip(image, 0, 1)  # (C, H, W)

# %%
# The bilinear kernel and the depthwise transposed convolution
# ------------------------------------------------------------
f = 2
k = 2 * f
center = f - 0.5  # FCN's get_upsampling_filter, for even k
tent = 1 - np.abs(np.arange(k) - center) / f
kernel = np.outer(tent, tent)
print("tent:", tent)
weight = np.broadcast_to(kernel, (3, 1, k, k)).copy()  # (C_in, C_out/groups, k, k), groups = C = 3
U = convmat.conv_transpose_matrix(weight, (H, W), stride=f, padding=f // 2, groups=3)
print(convmat.conv_transpose_plan(weight, (H, W), stride=f, padding=f // 2, groups=3))
up = (U @ image.ravel()).reshape(3, 2 * H, 2 * W)

# %%
# Compare with bilinear interpolation
# -----------------------------------
# Along one axis, output ``2i`` is ``¼·x[i−1] + ¾·x[i]`` and output ``2i+1`` is
# ``¾·x[i] + ¼·x[i+1]``.  With edge samples replicated, that is the
# interpolation of ``torch.nn.functional.interpolate(mode='bilinear',
# align_corners=False)``; the transposed convolution differs only on the
# one-pixel frame, where its zero padding drops the ``¼`` that falls outside.


def upsample_axis(x, axis):
    x = np.moveaxis(x, axis, -1)
    left = np.concatenate([x[..., :1], x[..., :-1]], axis=-1)
    right = np.concatenate([x[..., 1:], x[..., -1:]], axis=-1)
    out = np.empty(x.shape[:-1] + (2 * x.shape[-1],))
    out[..., 0::2] = 0.25 * left + 0.75 * x
    out[..., 1::2] = 0.75 * x + 0.25 * right
    return np.moveaxis(out, -1, axis)


reference = upsample_axis(upsample_axis(image, 1), 2)
frame = np.ones((2 * H, 2 * W), dtype=bool)
frame[1:-1, 1:-1] = False
print(f"max |U·x − bilinear| inside the 1-pixel frame: {np.abs(up - reference)[:, ~frame].max():.1e}")
print(f"max |U·x − bilinear| on the frame:             {np.abs(up - reference)[:, frame].max():.3f}")
print(f"block diagonal: U is {U.shape}, nnz {U.nnz} = 3 channels × {U.nnz // 3}")
assert np.abs(up - reference)[:, ~frame].max() < 1e-12

# %%
# Pictures
# --------
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
axes[0].imshow(image.transpose(1, 2, 0), interpolation="nearest")
axes[0].set_title(f"input {H}×{W}", fontsize=10)
axes[1].imshow(np.clip(up, 0, 1).transpose(1, 2, 0), interpolation="nearest")
axes[1].set_title(f"U·x: transposed conv k=4, s=2, p=1, groups=3 ({2 * H}×{2 * W})", fontsize=10)
axes[2].imshow(kernel, cmap="magma")
for (r, c), v in np.ndenumerate(kernel):
    axes[2].text(c, r, f"{v * 16:.0f}/16", ha="center", va="center", color="w" if v < 0.4 else "k", fontsize=9)
axes[2].set_title("bilinear kernel (outer product of the tent)", fontsize=10)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])

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

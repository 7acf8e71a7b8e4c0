"""
A transposed convolution, step by step: 2×2 → 5×5
=================================================

A transposed convolution with kernel 3×3 and stride 2 takes a 2×2 input to a
``(2 − 1)·2 + 3 = 5`` × 5 output.  Two equivalent ways to compute it:

* **scatter view** (the definition): every input pixel ``y[j]`` stamps a copy of
  the kernel, scaled by ``y[j]``, at output offset ``j·s``; overlapping stamps
  add up.  As a matrix this is ``Cᵀ``, the transpose of the forward convolution
  5×5 → 2×2.
* **recipe view** (how frameworks used to describe it): insert ``s − 1`` zeros
  between input samples, pad ``e − 1 − p`` on every side, flip the kernel, and run
  an ordinary stride-1 convolution.  As matrices, ``T = K_flip · P · Z``.

Both give the same 5×5 image, exactly.
"""

# %%
# The matrix of the transposed convolution
# ----------------------------------------
import numpy as np
import matplotlib.pyplot as plt

import convmat

w = np.array([[1.0, 2.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 2.0]]).reshape(1, 1, 3, 3)
y = np.array([[1.0, 2.0], [3.0, -1.0]])  # the 2×2 input of the transposed convolution
T = convmat.conv_transpose_matrix(w, (2, 2), stride=2)
C = convmat.conv_matrix(w, (5, 5), stride=2)  # the forward convolution 5×5 -> 2×2
print(f"T: {T.shape}, nnz {T.nnz};  C: {C.shape}, nnz {C.nnz}")
print("T equals C.T exactly:", (T != C.T).nnz == 0)
assert (T != C.T).nnz == 0
out = (T @ y.ravel()).reshape(5, 5)
print("T @ y =\n", out)

# %%
# Scatter view: one stamp per input pixel
# ---------------------------------------
# Column ``j`` of ``T`` is the stamp of input pixel ``j``: the kernel placed at
# ``(2·j_row, 2·j_col)``.  The output is the sum of the four scaled stamps.
stamps = [(T[:, [j]].toarray().ravel() * y.ravel()[j]).reshape(5, 5) + 0.0 for j in range(4)]  # + 0.0: no -0
assert np.array_equal(sum(stamps), out)

# %%
# Recipe view: zero insertion, padding, flipped kernel, stride-1 convolution
# --------------------------------------------------------------------------
# Each step is a sparse matrix from :mod:`convmat.factors`.  The effective
# kernel extent is ``e = 3`` and the padding ``p = 0``, so the zero-inserted
# 3×3 image is padded by ``e − 1 − p = 2`` on each side (7×7), and a stride-1
# 'valid' convolution with the flipped kernel gives 5×5.
from convmat import factors

Z = factors.zero_insertion_matrix((2, 2), 2)  # s - 1 = 1 zero between samples: 2×2 -> 3×3
P = factors.padding_matrix((3, 3), 2)  # e - 1 - p = 2 zeros on every side: 3×3 -> 7×7
w_flip = factors.flip_kernel(w)  # spatially flipped (and channel axes swapped)
K_flip = convmat.conv_matrix(w_flip, (7, 7))  # stride-1 'valid' convolution: 7×7 -> 5×5
z = (Z @ y.ravel()).reshape(3, 3)
padded = (P @ z.ravel()).reshape(7, 7)
recipe = (K_flip @ padded.ravel()).reshape(5, 5)
print("recipe == scatter:", np.array_equal(recipe, out))
assert np.array_equal(recipe, out)

# %%
# As matrices the recipe is one product, ``T = K_flip · P · Z``, and it equals
# the directly built ``T`` entry for entry.
# :func:`convmat.factors.transpose_by_recipe` does the same for any stride,
# padding, output padding, dilation and groups.
T_recipe = K_flip @ P @ Z
print("max |K_flip·P·Z - T| =", abs(T_recipe - T).max())
assert abs(T_recipe - T).max() == 0
T_auto = factors.transpose_by_recipe(w, (2, 2), stride=2)
assert abs(T_auto - T).max() == 0

# %%
# Pictures
# --------
lim = np.abs(out).max()
kw = dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
fig, axes = plt.subplots(2, 5, figsize=(12, 5.4), layout="constrained")
for j, (ax, stamp) in enumerate(zip(axes[0], stamps)):
    ax.imshow(stamp, **kw)
    ax.set_title(f"y[{j // 2},{j % 2}] = {y.ravel()[j]:g} · w\nat offset ({2 * (j // 2)},{2 * (j % 2)})",
                 fontsize=9)
axes[0, 4].imshow(out, **kw)
axes[0, 4].set_title("sum of the stamps = T @ y\n(5×5)", fontsize=9)
steps = [(y, "input y (2×2)"), (z, "Z: zeros inserted (3×3)"), (padded, "P: padded by 2 (7×7)"),
         (w_flip[0, 0], "K_flip: flipped kernel"), (recipe, "stride-1 conv (5×5)")]
for ax, (img, title) in zip(axes[1], steps):
    ax.imshow(img, **kw)
    ax.set_title(title, fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    for (r, c), v in np.ndenumerate(ax.images[0].get_array()):
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=7)
axes[0, 0].set_ylabel("scatter view")
axes[1, 0].set_ylabel("recipe view")
fig.suptitle("Transposed convolution 2×2 → 5×5 (k = 3, s = 2): two views, one result")

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

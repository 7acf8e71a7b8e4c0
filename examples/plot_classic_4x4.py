"""
The classic 4×16 matrix: a 3×3 kernel on a 4×4 input
=====================================================

The textbook picture of "convolution as a matrix" (Dumoulin & Visin, *A guide
to convolution arithmetic for deep learning*, 2016): a 3×3 kernel slides over
a 4×4 input with no padding and stride 1, giving a 2×2 output.  Flatten the
input (C order) into 16 numbers and the output into 4; the convolution is then
a 4×16 matrix ``C`` with ``Y = C @ X``.

Each row of ``C`` is the kernel laid onto the flattened input at one output
position, so it holds 9 non-zeros, and ``C`` has ``4 · 9 = 36`` of them.  The
nnz formula of the concepts page gives the same number without building:
``Σ_j #{t : 0 ≤ j·s − lo + t·d < n}`` is ``3 + 3 = 6`` per axis, ``6 · 6 = 36``.
"""

# %%
# Build the matrix
# ----------------
# The weight has PyTorch's layout ``(C_out, C_in, kH, kW)``.  The entries
# 1…9 make every tap recognisable in the printout.
import numpy as np
import matplotlib.pyplot as plt
from scipy.signal import correlate2d

import convmat

weight = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
C = convmat.conv_matrix(weight, (4, 4))
print(convmat.conv_plan(weight, (4, 4)))
print()
print(f"C.shape = {C.shape}, C.nnz = {C.nnz}")
assert C.shape == (4, 16) and C.nnz == 36

with np.printoptions(linewidth=120, formatter={"float": lambda v: f"{v:2.0f}" if v else " ."}):
    print(C.toarray())

# %%
# It is the cross-correlation
# ---------------------------
# ``Y = C @ X`` on the flattened image equals a 'valid' cross-correlation
# (what PyTorch's ``conv2d`` computes), here checked against
# :func:`scipy.signal.correlate2d`.
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 4))
y = (C @ x.ravel()).reshape(2, 2)
reference = correlate2d(x, weight[0, 0], mode="valid")
print("max |C @ x - correlate2d(x, w)| =", np.abs(y - reference).max())
assert np.allclose(y, reference)

# %%
# Draw it
# -------
# Left: the matrix, one row per output pixel, its 16 columns the input
# pixels.  Right: each row folded back onto the 4×4 input grid — the kernel's
# footprint at that output position.
dense = C.toarray()
fig = plt.figure(figsize=(11, 4.2), layout="constrained")
grid = fig.add_gridspec(2, 5, width_ratios=[4, 0.15, 1, 1, 0.01])
ax = fig.add_subplot(grid[:, 0])
ax.imshow(np.where(dense == 0, np.nan, dense), cmap="viridis", vmin=0, vmax=9)
for (r, c), v in np.ndenumerate(dense):
    if v:
        ax.text(c, r, f"{v:.0f}", ha="center", va="center", color="w", fontsize=9)
ax.set_xticks(range(16), [f"{u // 4},{u % 4}" for u in range(16)], rotation=90, fontsize=7)
ax.set_yticks(range(4), [f"out {r // 2},{r % 2}" for r in range(4)])
ax.set_xlabel("column = input pixel (row, col)")
ax.set_title(f"C: 4 × 16, nnz = {C.nnz}")
ax.set_xticks(np.arange(-0.5, 16, 1), minor=True)
ax.set_yticks(np.arange(-0.5, 4, 1), minor=True)
ax.grid(which="minor", color="0.85", linewidth=0.5)
ax.tick_params(which="minor", length=0)
for r in range(4):
    sub = fig.add_subplot(grid[r // 2, 2 + r % 2])
    footprint = dense[r].reshape(4, 4)
    sub.imshow(np.where(footprint == 0, np.nan, footprint), cmap="viridis", vmin=0, vmax=9)
    sub.set_xticks([])
    sub.set_yticks([])
    sub.set_title(f"row {r}", fontsize=9)
fig.suptitle("A 3×3 kernel on a 4×4 input as a sparse matrix")

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

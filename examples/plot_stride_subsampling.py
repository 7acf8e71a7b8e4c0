"""
Stride is subsampling: C_s = S_s · C_1
======================================

A strided convolution computes the stride-1 convolution and keeps every
``s``-th output on every axis.  As matrices: ``C_s = S_s · C_1``, where
``S_s`` is a 0/1 selection matrix (one 1 per row).  Its transpose ``S_sᵀ``
inserts ``s − 1`` zeros between samples — which is why the transposed
convolution of a strided layer starts with zero insertion.

Both identities are checked here exactly (integer-valued entries, no
tolerance) on an 8×8 input with a 3×3 kernel, padding 1 and stride 2.
"""

# %%
# The three matrices
# ------------------
import numpy as np
import matplotlib.pyplot as plt

import convmat
from convmat import factors

rng = np.random.default_rng(0)
# C_out=2, C_in=3; integer taps, none zero (scipy's product drops exact zeros, convmat stores them)
w = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=(2, 3, 3, 3))
n, s = (8, 8), 2
C1 = convmat.conv_matrix(w, n, padding=1)  # stride 1: 2·8·8 × 3·8·8
Cs = convmat.conv_matrix(w, n, padding=1, stride=s)  # stride 2: 2·4·4 × 3·8·8
o1 = convmat.conv_output_shape(n, 3, padding=1)
S = factors.stride_matrix(o1, s, channels=2)  # keep every 2nd output, per channel
print(f"C_1: {C1.shape}, nnz {C1.nnz}")
print(f"S_s: {S.shape}, nnz {S.nnz}")
print(f"C_s: {Cs.shape}, nnz {Cs.nnz}")

# %%
# Exact equality
# --------------
# The product has the same shape, the same sparsity pattern and the same
# values as the directly built strided matrix.
SC = (S @ C1).tocsr()
SC.sort_indices()
print("shape equal:  ", SC.shape == Cs.shape)
print("pattern equal:", np.array_equal(SC.indptr, Cs.indptr) and np.array_equal(SC.indices, Cs.indices))
print("max |S_s·C_1 − C_s| =", abs(SC - Cs).max())
assert SC.shape == Cs.shape and abs(SC - Cs).max() == 0

# %%
# The transpose of subsampling is zero insertion
# ----------------------------------------------
# ``S_sᵀ`` puts each sample back at every ``s``-th position and zeros
# between: it is :func:`convmat.factors.zero_insertion_matrix`.
Z = factors.zero_insertion_matrix((4, 4), s, out_shape=o1, channels=2)
print("max |S_sᵀ − Z| =", abs(S.T - Z).max())
assert abs(S.T - Z).max() == 0
print("S_sᵀ on a 4×4 ramp (channel 0):")
print((S.T @ np.arange(1.0, 33.0))[:64].reshape(8, 8).astype(int))

# %%
# Spy plots
# ---------
# ``C_1`` is banded within each channel block; ``S_s`` picks a quarter of its
# rows; the result is ``C_s``.
fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), layout="constrained",
                         gridspec_kw={"width_ratios": [C1.shape[1], S.shape[1], Cs.shape[1]]})
for ax, M, title in [(axes[0], C1, "C_1 (stride 1)"), (axes[1], S, "S_s (keep every 2nd row/col)"),
                     (axes[2], Cs, "C_s = S_s · C_1 (stride 2)")]:
    ax.spy(M, markersize=0.6 if M is not S else 2.0, aspect="auto")
    ax.set_title(f"{title}\n{M.shape[0]} × {M.shape[1]}, nnz {M.nnz}", fontsize=10)
    ax.tick_params(labelsize=7)
fig.suptitle("Stride is subsampling (3×3 kernel, 3 → 2 channels, 8×8 input, padding 1)")

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

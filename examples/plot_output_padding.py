"""
output_padding: several input sizes, one output size
====================================================

A stride-2 convolution cannot tell a 7-pixel input from an 8-pixel one: with
kernel 3 and padding 1 both give ``⌊(n + 2 − 3)/2⌋ + 1 = 4`` outputs.  Its
transpose must therefore be told which size to give back.  That is what
``output_padding`` ``a`` does: the transposed output length is

    m = (n − 1)·s − 2p + d·(k − 1) + a + 1,   0 ≤ a < max(s, d),

and the ``a`` that restores a forward input of length ``i`` is
``a = (i + 2p − d(k − 1) − 1) mod s``.  Passing ``output_size=`` (as in
``nn.ConvTranspose2d(...)(y, output_size=...)``) lets convmat derive ``a``,
and a size that no ``a`` can produce is an error that names the valid range.
"""

# %%
# The table
# ---------
# For inputs of 5 to 12 pixels (k = 3, s = 2, p = 1): the forward output size,
# the output padding that restores the input, and the transposed matrix built
# with ``output_size=`` — its shape is the transpose of the forward matrix.
import numpy as np
import matplotlib.pyplot as plt

import convmat
from convmat.geometry import restoring_output_padding

k, s, p = 3, 2, 1
w = np.ones((1, 1, k))
print(f"kernel {k}, stride {s}, padding {p}")
print(f"{'input i':>8} {'forward o':>10} {'a restores i':>13} {'ConvT(o, a) size':>17} {'C.T == T':>9}")
rows = []
for i in range(5, 13):
    (o,) = convmat.conv_output_shape((i,), k, stride=s, padding=p)
    (a,) = restoring_output_padding((i,), (k,), stride=(s,), padding=((p, p),), dilation=(1,))
    (m,) = convmat.conv_transpose_output_shape((o,), k, stride=s, padding=p, output_padding=a)
    C = convmat.conv_matrix(w, (i,), stride=s, padding=p)
    T = convmat.conv_transpose_matrix(w, (o,), stride=s, padding=p, output_size=(i,))
    same = T.shape == C.T.shape and abs(T - C.T).max() == 0
    assert m == i and same
    rows.append((i, o, a))
    print(f"{i:>8} {o:>10} {a:>13} {m:>17} {str(same):>9}")

# %%
# Every forward output size ``o`` is reached from exactly ``s = 2`` input
# sizes, and ``a ∈ {0, 1}`` picks one of them.

# %%
# An impossible size
# ------------------
# From 4 samples the transposed convolution can produce 7 (``a = 0``) or 8
# (``a = 1``) samples, nothing else.  Asking for 10 is refused before anything
# is built, with the range in the message.
try:
    convmat.conv_transpose_matrix(np.ones((1, 1, 3, 3)), (4, 4), stride=2, padding=1, output_size=(10, 10))
except ValueError as err:
    print("ValueError:", err)
else:  # pragma: no cover - the call above must fail
    raise AssertionError("output_size=(10, 10) should have been refused")

# %%
# The picture
# -----------
# Inputs of 7 and 8 samples (top) map onto the same 4 outputs; the
# transposed convolution with ``a = 0`` and ``a = 1`` (bottom) gives 7 or 8
# samples back.  Shown is the overlap count ``Cᵀ·1`` for a kernel of ones:
# the extra sample for ``a = 1`` is only touched by the last output.
fig, axes = plt.subplots(2, 2, figsize=(9, 3.6), layout="constrained", sharex=True)
for col, i in enumerate((7, 8)):
    (o,) = convmat.conv_output_shape((i,), k, stride=s, padding=p)
    C = convmat.conv_matrix(w, (i,), stride=s, padding=p)
    axes[0, col].imshow(C.toarray(), cmap="Greys", vmin=0, vmax=1.5, aspect="equal")
    axes[0, col].set_title(f"forward C: {i} inputs → {o} outputs", fontsize=10)
    axes[0, col].set_ylabel("output")
    T = convmat.conv_transpose_matrix(w, (o,), stride=s, padding=p, output_size=(i,))
    cover = T @ np.ones(o)
    axes[1, col].bar(np.arange(i), cover, color="tab:blue")
    axes[1, col].set_title(f"transposed, output_padding = {i - 7}: {o} → {i} (Cᵀ·1)", fontsize=10)
    axes[1, col].set_xlabel("input sample")
    axes[1, col].set_xlim(-0.5, 7.5)
fig.suptitle("k = 3, s = 2, p = 1: two input sizes share one output size")

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

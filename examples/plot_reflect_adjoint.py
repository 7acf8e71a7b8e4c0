"""
The exact adjoint of a reflect-padded convolution
=================================================

With ``padding_mode='reflect'`` the input is mirrored into the padding before
the kernel slides over it.  As matrices, ``C = K · P_reflect``: ``P_reflect``
maps the ``n × n`` input onto the padded grid (border pixels are copied into
the padding, so some columns of ``P`` hold several ones) and ``K`` is the
unpadded convolution.  The adjoint is ``Cᵀ = P_reflectᵀ · Kᵀ``: what ``Kᵀ``
scatters into the padding is *folded back* onto the pixels it was copied from.

PyTorch's ``ConvTranspose2d`` only knows zero padding, so it simply drops
what lands in the padding.  Using it as "the adjoint" of a reflect-padded
layer is wrong near the border — by how much is shown below.  convmat's
``C.T`` is the exact adjoint, and the dot-product test confirms it.
"""

# %%
# The layer and its matrices
# --------------------------
import numpy as np
import matplotlib.pyplot as plt

import convmat
from convmat import factors

n, k, p = 12, 5, 2
w = np.ones((1, 1, k, k)) / k**2  # a 5×5 box filter: every tap visible in the sums
C = convmat.conv_matrix(w, (n, n), padding=p, padding_mode="reflect")
P = factors.padding_matrix((n, n), p, mode="reflect")
K = convmat.conv_matrix(w, (n + 2 * p, n + 2 * p))
print(f"C: {C.shape}, nnz {C.nnz}  (reflect, padding {p})")
print(f"P_reflect: {P.shape}, max ones per column {int(P.sum(axis=0).max())}")
print("max |K·P_reflect − C| =", abs(K @ P - C).max())
assert abs(K @ P - C).max() < 1e-15

# %%
# The adjoint test
# ----------------
# ``⟨C x, y⟩ = ⟨x, Cᵀ y⟩`` for random ``x, y``, up to rounding.  For the
# zero-padded ``ConvTranspose`` in place of ``Cᵀ`` the two sides disagree.
rng = np.random.default_rng(0)
x, y = rng.standard_normal(n * n), rng.standard_normal(n * n)
T_zeros = convmat.conv_transpose_matrix(w, (n, n), padding=p)  # what ConvTranspose2d computes
lhs = (C @ x) @ y
print(f"<Cx, y>           = {lhs:+.15f}")
print(f"<x, C.T y>        = {x @ (C.T @ y):+.15f}")
print(f"<x, ConvT_zeros y> = {x @ (T_zeros @ y):+.15f}   (not the adjoint)")

# :func:`convmat.adjoint.adjoint_test` does this over several random pairs,
# with a tolerance from the rounding noise it measures on the products (see
# the adjoint-test page of the docs).
from convmat.checks import adjoint_test

for name, AT in [("C.T", C.T), ("ConvTranspose (zeros)", T_zeros)]:
    result = adjoint_test(C, AT, rng=1)
    print(f"adjoint_test(C, {name}): passed={result.passed}, "
          f"max_error={result.max_error:.2e}, tolerance={result.tolerance:.2e}")
    assert result.passed == (name == "C.T")

# %%
# The fold-back, in numbers
# -------------------------
# Apply both to an image of ones.  In the interior they agree (every pixel
# receives the 25 taps of 1/25); within ``p = 2`` pixels of the border the zero
# version loses what fell into the padding, while the reflect adjoint adds it
# back onto the mirrored pixels — the rows 1 and 2 receive *more* than 1.
ones = np.ones(n * n)
adj = (C.T @ ones).reshape(n, n)
zer = (T_zeros @ ones).reshape(n, n)
diff = adj - zer
print("middle column, rows 0..5:")
print("  reflect adjoint C.T·1 :", np.round(adj[:6, n // 2], 3))
print("  ConvTranspose (zeros) :", np.round(zer[:6, n // 2], 3))
inner = (slice(p + 1, n - p - 1),) * 2
print(f"max |difference| more than {p} px from the border: {np.abs(diff[inner]).max():.1e}")
print(f"max |difference| on the border band: {np.abs(diff).max():.3f}")
print(f"sums: C.T·1 = {adj.sum():.1f} (= {n * n} outputs, nothing lost), ConvT·1 = {zer.sum():.1f}")
assert np.abs(diff[inner]).max() < 1e-12
assert np.isclose(adj.sum(), n * n)

# %%
# The fold-back, in a picture
# ---------------------------
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
for ax, img, title, cmap, lim in [
    (axes[0], adj, "exact adjoint Cᵀ·1 (reflect)", "viridis", None),
    (axes[1], zer, "ConvTranspose·1 (zeros)", "viridis", None),
    (axes[2], diff, "difference: the folded-back border", "RdBu_r", np.abs(diff).max()),
]:
    kw = dict(vmin=0.3, vmax=1.7) if lim is None else dict(vmin=-lim, vmax=lim)
    im = ax.imshow(img, cmap=cmap, **kw)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"5×5 box filter, reflect padding {p}, {n}×{n} input: adjoint of an image of ones")

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

"""
Deconvolution by least squares, not by the transposed convolution
=================================================================

A "deconvolution" layer is a transposed convolution ``Cᵀ``, not an inverse:
applied to a blurred image ``y = C x`` it blurs once more (``CᵀC`` is a
wider blur).  With ``C`` as an explicit sparse matrix, undoing the blur is an
ordinary least-squares problem,

    min_x ‖C x − y‖² + λ²‖x‖²,

which :func:`scipy.sparse.linalg.lsqr` solves with products by ``C`` and
``Cᵀ`` only.  The errors below compare the two on a synthetic image blurred by
a 7×7 Gaussian with a little noise.
"""

# %%
# A test image and its blur
# -------------------------
import numpy as np
import matplotlib.pyplot as plt
from scipy.sparse.linalg import lsqr

import convmat

rng = np.random.default_rng(0)
n = 64
yy, xx = np.mgrid[0:n, 0:n] / n
x_true = (
    0.6 * ((xx - 0.35) ** 2 + (yy - 0.4) ** 2 < 0.04)  # a disc
    + 0.4 * ((np.abs(xx - 0.72) < 0.12) & (np.abs(yy - 0.65) < 0.2))  # a bar
    + 0.25 * (np.sin(18 * xx) > 0.6) * (yy > 0.8)  # a stripe pattern
)
t = np.arange(7) - 3
g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
w = (g / g.sum()).reshape(1, 1, 7, 7)
C = convmat.conv_matrix(w, (n, n), padding="same")  # zeros padding, 64² -> 64²
y = C @ x_true.ravel() + 0.002 * rng.standard_normal(n * n)
print(f"C: {C.shape}, nnz {C.nnz}")


def rel_error(x):
    return np.linalg.norm(x - x_true.ravel()) / np.linalg.norm(x_true)


# %%
# Transposed convolution vs least squares
# ---------------------------------------
# ``Cᵀ y`` keeps the blur and adds more: it is further from ``x`` than the
# data itself, even after the best rescaling.  LSQR with a small damping
# ``λ`` (which keeps the noise from being amplified) sharpens the image.
x_transposed = C.T @ y
scale = (x_transposed @ x_true.ravel()) / (x_transposed @ x_transposed)
result = lsqr(C, y, damp=0.02, iter_lim=300, atol=1e-8, btol=1e-8)
x_lsqr, iterations = result[0], result[2]
print(f"{'estimate':<32} {'relative error':>15}")
print(f"{'blurred data y':<32} {rel_error(y):>15.3f}")
print(f"{'transposed convolution C.T y':<32} {rel_error(x_transposed):>15.3f}")
print(f"{'best multiple of C.T y':<32} {rel_error(scale * x_transposed):>15.3f}")
print(f"{'lsqr, damp 0.02':<32} {rel_error(x_lsqr):>15.3f}   ({iterations} iterations)")
assert rel_error(x_lsqr) < rel_error(y) < rel_error(scale * x_transposed) <= rel_error(x_transposed)

# %%
# Pictures
# --------
fig, axes = plt.subplots(1, 4, figsize=(12, 3.9), layout="constrained")
for ax, img, title in [
    (axes[0], x_true.ravel(), "true image x"),
    (axes[1], y, f"blurred + noise y\nerror {rel_error(y):.2f}"),
    (axes[2], scale * x_transposed, f"transposed conv (scaled)\nerror {rel_error(scale * x_transposed):.2f}"),
    (axes[3], x_lsqr, f"lsqr\nerror {rel_error(x_lsqr):.2f}"),
]:
    ax.imshow(img.reshape(n, n), cmap="gray", vmin=-0.1, vmax=1.1)
    ax.set_title(title, fontsize=10)
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

"""
Operator norms: circular vs zero padding as the input grows
===========================================================

The spectral norm ``‖C‖₂`` (largest singular value) of a convolution layer
bounds how much it can amplify its input; it is what spectral normalisation
and Lipschitz bounds need.

With **circular** padding and stride 1 the singular values are known in closed
form (Sedghi, Gupta & Long, *The singular values of convolutional layers*,
ICLR 2019): take the FFT of the kernel zero-padded to the ``n × n`` input,
which gives one ``C_out × C_in`` matrix per frequency; the singular values of
``C`` are the union of theirs.

With **zero** padding there is no such formula, but ``C`` is a block of the
circular convolution on an ``(n + k − 1)``-sized grid, so the FFT value on that
grid is an upper bound — one that tightens as ``n`` grows.  Here both are
compared with :func:`scipy.sparse.linalg.svds` on the explicit matrices.
"""

# %%
# Sedghi's formula in three lines
# -------------------------------
import numpy as np
import matplotlib.pyplot as plt
from scipy.sparse.linalg import svds

import convmat

rng = np.random.default_rng(0)
c_out, c_in, k = 4, 4, 3
w = rng.standard_normal((c_out, c_in, k, k)) / 3


def fft_singular_values(weight, n):
    """All singular values of the circular convolution on n×n (Sedghi et al.)."""
    spectrum = np.fft.fft2(weight, s=(n, n))  # (C_out, C_in, n, n)
    per_frequency = np.moveaxis(spectrum, (0, 1), (-2, -1))  # (n, n, C_out, C_in)
    return np.linalg.svd(per_frequency, compute_uv=False).ravel()


def largest_singular_value(A):
    v0 = np.random.default_rng(1).standard_normal(A.shape[1])
    return svds(A, k=1, return_singular_vectors=False, v0=v0, tol=1e-10)[0]


# %%
# Every singular value, not only the largest: on an 8×8 input the FFT values
# and a dense SVD of the 256×256 matrix agree.
C8 = convmat.conv_matrix(w, (8, 8), padding=1, padding_mode="circular")
dense = np.sort(np.linalg.svd(C8.toarray(), compute_uv=False))
fft8 = np.sort(fft_singular_values(w, 8))
print(f"n = 8, circular: max |dense SVD − FFT| over all {dense.size} singular values = "
      f"{np.abs(dense - fft8).max():.1e}")
assert np.allclose(dense, fft8, atol=1e-10)
# :func:`convmat.spectrum.circular_singular_values` is the packaged version
# (any number of axes, groups and dilation).
from convmat.spectrum import circular_singular_values

packaged = np.sort(circular_singular_values(w, (8, 8)))
print(f"convmat.spectrum.circular_singular_values agrees: {np.allclose(packaged, fft8, atol=1e-10)}")
assert np.allclose(packaged, fft8, atol=1e-10)

# %%
# As n grows
# ----------
sizes = [4, 8, 12, 16, 24, 32, 48]
table = []
print(f"{'n':>3} | {'circular: FFT':>13} {'svds':>9} | {'zeros: svds':>11} {'FFT bound':>10} {'ratio':>6}")
for n in sizes:
    circ = largest_singular_value(convmat.conv_matrix(w, (n, n), padding=1, padding_mode="circular"))
    zero = largest_singular_value(convmat.conv_matrix(w, (n, n), padding=1))
    fft_circ = fft_singular_values(w, n).max()
    bound = fft_singular_values(w, n + k - 1).max()
    table.append((n, fft_circ, circ, zero, bound))
    print(f"{n:>3} | {fft_circ:>13.6f} {circ:>9.6f} | {zero:>11.6f} {bound:>10.6f} {zero / bound:>6.3f}")
    assert abs(circ - fft_circ) < 1e-6 * fft_circ
    assert zero <= bound * (1 + 1e-9)
table = np.array(table)
symbol_sup = fft_singular_values(w, 256).max()
print(f"sup of the kernel's symbol (FFT on 256×256): {symbol_sup:.6f}")

# %%
# Pictures
# --------
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
ax0.plot(table[:, 0], table[:, 1], "o-", label="circular: FFT (Sedghi)")
ax0.plot(table[:, 0], table[:, 2], "k+", markersize=12, label="circular: svds")
ax0.plot(table[:, 0], table[:, 3], "s-", label="zeros: svds")
ax0.plot(table[:, 0], table[:, 4], "--", label="zeros: FFT bound on n+k−1")
ax0.axhline(symbol_sup, color="0.6", lw=0.8, label="sup over all frequencies")
ax0.set_xlabel("input size n (n × n)")
ax0.set_ylabel("‖C‖₂")
ax0.set_title("largest singular value, 3×3 kernel, 4 → 4 channels", fontsize=10)
ax0.legend(fontsize=8)
ax1.plot(dense[::-1], ".", label="dense SVD of C (circular, 8×8)")
ax1.plot(fft8[::-1], "x", markersize=4, label="FFT of the kernel (Sedghi)")
ax1.set_xlabel("index")
ax1.set_ylabel("singular value")
ax1.set_title("all 256 singular values agree", fontsize=10)
ax1.legend(fontsize=8)

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

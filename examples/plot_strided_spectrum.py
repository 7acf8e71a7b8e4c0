"""
Singular values against stride: the polyphase blocks
====================================================

With circular padding and stride 1 the singular values of a convolution are
those of one ``C_out × C_in`` matrix per frequency (Sedghi, Gupta & Long,
ICLR 2019).  A stride ``s`` keeps every ``s``-th output, and keeping every
``s``-th sample of a length-``n`` signal *folds* its spectrum: output
frequency ``ω`` (of ``N = n/s``) receives the input frequencies
``ω, ω + N, …, ω + (s−1)N``.  So the strided layer is block diagonal in the
Fourier basis too, with one ``C_out × (s^D·C_in)`` block per output frequency:

    M(ω) = s^(−D/2) · [ Ŵ(ω + q·N) ]  for q ∈ {0, …, s−1}^D, side by side.

:func:`convmat.circular_singular_values` computes them (``stride=``, with
groups and dilation; ``s`` must divide ``n``).  Here they are checked against a
dense SVD of the explicit matrix, then drawn for strides 1 to 4.
"""

# %%
# Against a dense SVD
# -------------------
import numpy as np
import matplotlib.pyplot as plt

import convmat

rng = np.random.default_rng(0)
c_out, c_in, k = 4, 4, 3
w = rng.standard_normal((c_out, c_in, k, k)) / 3

for stride, n in [(1, 12), (2, 12), (3, 12), (4, 12)]:
    C = convmat.conv_matrix(w, (n, n), stride=stride, padding="same", padding_mode="circular")
    dense = np.linalg.svd(C.toarray(), compute_uv=False)
    fft = convmat.circular_singular_values(w, (n, n), stride=stride)
    print(f"stride {stride}: C is {C.shape[0]:>3} x {C.shape[1]}, {fft.size:>3} singular values, "
          f"max |dense SVD - polyphase FFT| = {np.abs(dense - fft).max():.1e}")
    assert np.allclose(dense, fft, atol=1e-10)

# %%
# Against stride
# --------------
# On a 48×48 input (every stride below divides 48).  The number of singular
# values is ``(n/s)² · min(C_out, s²·C_in)``: the strided matrix has fewer rows.
# Subsampling cannot raise the norm (``C_s = S_s C_1`` with ``‖S_s‖ = 1``), and
# the smallest singular values grow: with more input frequencies per block,
# ``M(ω)`` is a wide matrix whose rows rarely lose rank.
n = 48
strides = [1, 2, 3, 4]
spectra = {s: convmat.circular_singular_values(w, (n, n), stride=s) for s in strides}
print(f"{'stride':>6} {'count':>6} {'largest':>8} {'median':>8} {'smallest':>9}")
for s, sv in spectra.items():
    print(f"{s:>6} {sv.size:>6} {sv[0]:>8.4f} {np.median(sv):>8.4f} {sv[-1]:>9.2e}")
norms = [spectra[s][0] for s in strides]
assert all(a >= b * (1 - 1e-12) for a, b in zip(norms, norms[1:]))

# %%
# From ``s = k = 3`` on, the windows no longer overlap: every output pixel reads
# its own 3×3 patch, ``C`` is a block-diagonal copy of the ``C_out × 9·C_in``
# kernel matrix, and its singular values are that matrix's, each repeated once
# per output pixel -- strides 3 and 4 give the same values.
patch = np.linalg.svd(w.reshape(c_out, -1), compute_uv=False)
for s in (3, 4):
    assert np.allclose(np.unique(np.round(spectra[s], 10)), np.unique(np.round(patch, 10)))
print(f"stride >= k: the singular values of the {c_out} x {c_in * k * k} kernel matrix, "
      f"{np.round(patch, 4).tolist()}, each repeated (n/s)^2 times")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
styles = {1: dict(lw=1.6), 2: dict(lw=1.6), 3: dict(lw=4, alpha=0.5), 4: dict(lw=1.4, ls="--", color="k")}
for s, sv in spectra.items():
    ax0.plot(np.linspace(0, 1, sv.size), sv, label=f"stride {s}: {sv.size} values", **styles[s])
ax0.set_xlabel("rank / number of singular values")
ax0.set_ylabel("singular value")
ax0.set_title(f"all singular values, 3×3 kernel, 4 → 4 channels, circular, {n}×{n}", fontsize=10)
ax0.legend(fontsize=8, title="strides 3 and 4 coincide", title_fontsize=8)
ax1.plot(strides, norms, "o-", label="largest (operator norm)")
ax1.plot(strides, [np.median(spectra[s]) for s in strides], "s-", label="median")
ax1.plot(strides, [spectra[s][-1] for s in strides], "^-", label="smallest")
ax1.set_yscale("log")
ax1.set_xticks(strides)
ax1.set_xlabel("stride s (both axes)")
ax1.set_ylabel("singular value")
ax1.set_title("the spectrum narrows as the stride grows", fontsize=10)
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

"""
Adjoint tests of black boxes: a torch function pair and a PyLops operator
=========================================================================

:func:`convmat.adjoint_test` does not need a matrix.  It takes two plain
functions and the shapes they work on, draws the test vectors in the
functions' own library, device and dtype (``torch.float32`` stays float32), and
sets its tolerance from the rounding noise it measures on the products
themselves -- so it knows nothing about the operator's sparsity and still sees
a wrong adjoint off by a factor of ``1 + 1e-4`` in single precision.

Each result says what it could have seen: ``result.resolution`` is the
smallest relative (scale) error of the adjoint that this run would have
detected.
"""

# %%
# A strided convolution and its transpose, as torch functions
# ------------------------------------------------------------
# The adjoint of a stride-2 ``conv2d`` on a 64 x 64 image is
# ``conv_transpose2d`` with ``output_padding=1``: without it the transposed
# convolution returns 63 x 63 pixels, one row and one column short.
import numpy as np
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from convmat import adjoint_test

torch.manual_seed(0)
w = torch.randn(8, 3, 5, 5)  # float32 weights


def forward(x):
    return F.conv2d(x, w, stride=2, padding=2)


def adjoint(y):
    return F.conv_transpose2d(y, w, stride=2, padding=2, output_padding=1)


def adjoint_without_output_padding(y):  # 63 x 63, zero-padded to 64 x 64
    return F.pad(F.conv_transpose2d(y, w, stride=2, padding=2), (0, 1, 0, 1))


def adjoint_scaled(y):  # off by 1e-4: invisible to the eye, not to the test
    return adjoint(y) * 1.0001


shapes = dict(in_shape=(1, 3, 64, 64), out_shape=(1, 8, 32, 32), dtype=torch.float32)
for name, g in [("conv_transpose2d", adjoint), ("without output_padding", adjoint_without_output_padding),
                ("scaled by 1 + 1e-4", adjoint_scaled)]:
    r = adjoint_test(forward, g, **shapes)
    print(f"{name:>24}: passed={r.passed!s:5}  max error {r.max_error:.1e}  tolerance {r.tolerance:.1e}  "
          f"resolution {r.resolution:.1e}  ({r.dtype}, {r.library})")
    assert r.passed == (g is adjoint)

# %%
# The whole report of one run: both inner products per trial, the measured
# rounding noise of each product, the tolerance and the resolution.
print(adjoint_test(forward, adjoint, **shapes, trials=3).summary())

# %%
# A PyLops operator
# -----------------
# Anything with ``matvec``/``rmatvec`` and a ``shape`` is tested as it is.
# PyLops' own ``dottest`` compares the two inner products relative to each
# other in the operator's precision; on correct float32 operators it fails a
# good share of runs, while convmat's test passes every one.
import pylops

h = np.random.default_rng(1).standard_normal((5, 5)).astype(np.float32)
Op = pylops.signalprocessing.Convolve2D((64, 64), h=h, offset=(2, 2), dtype="float32")
seeds = range(30)
ours = [adjoint_test(Op, rng=s) for s in seeds]
theirs = []
for s in seeds:
    np.random.seed(s)  # dottest draws from NumPy's global generator
    theirs.append(pylops.utils.dottest(Op, raiseerror=False))
print(f"correct float32 Convolve2D, {len(seeds)} seeds: convmat passes {sum(r.passed for r in ours)}, "
      f"pylops.utils.dottest passes {sum(theirs)}")
assert all(r.passed for r in ours)

# A wrong adjoint for it: the flipped kernel's adjoint (a convolution instead of a correlation).
wrong = pylops.signalprocessing.Convolve2D((64, 64), h=h[::-1, ::-1].copy(), offset=(2, 2), dtype="float32")
r = adjoint_test(Op, wrong.H)
print(f"flipped kernel: passed={r.passed}, max error {r.max_error:.1e} > tolerance {r.tolerance:.1e}")
assert not r.passed

# %%
# Where the errors fall
# ---------------------
# The normalised error of every run (the largest over its trials) for the
# correct adjoint and for adjoints scaled by ``1 + d``, against each run's
# tolerance: rounding stays three orders of magnitude below the tolerance,
# a scale error of ``1e-4`` sits well above it.
scaled = {d: pylops.signalprocessing.Convolve2D((64, 64), h=h, offset=(2, 2), dtype="float32").H * (1 + d)
          for d in (1e-6, 1e-5, 1e-4)}
runs = {"correct": ours}
runs.update({f"scale 1 + {d:g}": [adjoint_test(Op, AT, rng=s) for s in range(10)] for d, AT in scaled.items()})
fig, ax = plt.subplots(figsize=(7, 3.2))
for i, (label, results) in enumerate(runs.items()):
    ax.semilogx([r.max_error for r in results], np.full(len(results), i), "o", alpha=0.5)
    ax.semilogx([r.tolerance for r in results], np.full(len(results), i), "|", color="k", markersize=14)
    print(f"{label:>16}: failed {sum(not r.passed for r in results)} of {len(results)}")
ax.set_yticks(range(len(runs)), list(runs))
ax.set_xlabel("normalised error |<Ax, y> - <x, A^H y>| / D   (| : tolerance)")
ax.set_title("float32 Convolve2D 64 x 64: errors against the measured tolerance")
fig.tight_layout()
plt.show()

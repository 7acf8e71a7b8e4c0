"""
Sparse matrix products on the GPU (CuPy / cuSPARSE, PyTorch)
============================================================

``backend='cupy'`` builds the matrix *on the CUDA device* (the same index
arithmetic as on the host, run by CuPy) as a
``cupyx.scipy.sparse.csr_matrix``; ``backend='torch'`` builds a
``torch.sparse_csr_tensor`` on any torch device.  Products then run in
cuSPARSE.  This example builds a 3×3, 16 → 16 channel layer on a 64×64
input on each backend present, applies it to a batch of 8 images, runs the
adjoint test on the device, and compares with the host.

Backends that are not present here (no CuPy, no CUDA device) are reported
and skipped; the torch CPU backend always runs, so the example always shows
one device backend at work.  convmat itself imports CuPy or torch only when
their backend is asked for.

.. note:: This example has not been run on a GPU yet: convmat's machines have none.
"""

# %%
# The layer on the host
# ---------------------
import importlib.util
import time

import numpy as np

import convmat

rng = np.random.default_rng(0)
weight = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
in_shape, batch = (64, 64), 8
A = convmat.ConvOperator(weight, in_shape, padding=1)
x = rng.standard_normal((batch, 16, *in_shape)).astype(np.float32)
t0 = time.perf_counter()
y_host = A(x)
t_host = time.perf_counter() - t0
print(convmat.conv_plan(weight, in_shape, padding=1))
print(f"host ('scipy') forward of {batch} images: {1e3 * t_host:.1f} ms")

# %%
# Which device backends are present
# ---------------------------------


def cupy_reason():
    """None if CuPy sees a CUDA device, else why not."""
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install 'convmat[gpu]')"
    import cupy

    try:
        return None if cupy.cuda.runtime.getDeviceCount() > 0 else "CuPy finds no CUDA device"
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"CuPy finds no CUDA device ({exc})"


def torch_devices():
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


runs = [("torch", dev) for dev in torch_devices()]
reason = cupy_reason()
if reason is None:
    runs.append(("cupy", None))
else:
    print(f"backend 'cupy' skipped: {reason}")
if "cuda" not in torch_devices():
    print("backend 'torch' on CUDA skipped: no torch with a CUDA device here")

# %%
# Build on the device, apply, and test the adjoint there
# ------------------------------------------------------
for name, device in runs:
    be = convmat.backends.get_backend(name, device)
    t0 = time.perf_counter()
    B = convmat.ConvOperator(weight, in_shape, padding=1, backend=name, device=device)
    B(be.asarray(x[:1]))  # warm-up (cuSPARSE handles, kernels)
    t_build = time.perf_counter() - t0
    xd = be.asarray(x)
    t0 = time.perf_counter()
    yd = B(xd)
    be.to_host(yd.reshape(-1)[:1])  # wait for the device
    t_dev = time.perf_counter() - t0
    err = np.abs(be.to_host(yd) - y_host).max() / np.abs(y_host).max()
    test = convmat.adjoint_test(B)  # random vectors moved to the device; only scalars come back
    print(
        f"{be!r}: built in {1e3 * t_build:.1f} ms; forward of {batch} images {1e3 * t_dev:.1f} ms "
        f"({t_host / t_dev:.1f}x the host); max relative difference {err:.1e}; adjoint test "
        f"{'passed' if test.passed else 'FAILED'} ({test.max_error:.1e} <= {test.tolerance:.1e})"
    )
    assert err < 1e-5 and test.passed

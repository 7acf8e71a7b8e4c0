"""
Sparse matrix products on the GPU (CuPy / cuSPARSE)
===================================================

The CSR matrix that convmat builds is a plain ``(data, indices, indptr)``
triple, so it moves to a CUDA device as a ``cupyx.scipy.sparse.csr_matrix``
and ``Y = C @ X`` runs in cuSPARSE.  This example builds a 3×3, 16 → 16
channel layer on a 64×64 input on the host, copies it to the GPU, multiplies
a batch of 8 images, and compares with the host product.

When no CUDA device (or no CuPy) is present, it says so, prints what it
would have run, and exits normally.  CuPy is imported only if it is
installed.  Note: cupyx.scipy.sparse takes int32 indices; convmat picks
int32 whenever nnz and both dimensions fit.
"""

# %%
# The layer, on the host
# ----------------------
import importlib.util
import time

import numpy as np

import convmat

rng = np.random.default_rng(0)
weight = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
in_shape, batch = (64, 64), 8
C = convmat.conv_matrix(weight, in_shape, padding=1)
X = rng.standard_normal((C.shape[1], batch)).astype(np.float32)
t0 = time.perf_counter()
Y_host = C @ X
t_host = time.perf_counter() - t0
print(convmat.conv_plan(weight, in_shape, padding=1))
print(f"host (scipy) C @ X with X of shape {X.shape}: {1e3 * t_host:.1f} ms")

# %%
# On the GPU, if there is one
# ---------------------------


def cuda_device_count():
    """Number of CUDA devices CuPy sees (0 without CuPy, a driver or a device)."""
    if importlib.util.find_spec("cupy") is None:
        return 0
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        return 0


if cuda_device_count() == 0:
    reason = "CuPy is not installed" if importlib.util.find_spec("cupy") is None else "CuPy finds no CUDA device"
    print(f"No GPU present ({reason}): the GPU part is skipped.")
    print("With a CUDA device and CuPy (pip install 'convmat[gpu]') this example would run:")
    print(f"  C_gpu = cupyx.scipy.sparse.csr_matrix(C)   # {C.shape[0]} x {C.shape[1]}, nnz {C.nnz:,}, "
          f"{C.indices.dtype} indices")
    print(f"  Y_gpu = C_gpu @ cupy.asarray(X)           # X: {X.shape}, float32, cuSPARSE SpMM")
    print("  and compare cupy.asnumpy(Y_gpu) with the host product (relative error ~1e-6 in float32).")
else:
    import cupy
    import cupyx.scipy.sparse as cusparse

    C_gpu = cusparse.csr_matrix(C)
    X_gpu = cupy.asarray(X)
    (C_gpu @ X_gpu).sum()  # warm-up: cuSPARSE handles and kernels
    cupy.cuda.Device().synchronize()
    t0 = time.perf_counter()
    Y_gpu = C_gpu @ X_gpu
    cupy.cuda.Device().synchronize()
    t_gpu = time.perf_counter() - t0
    err = np.abs(cupy.asnumpy(Y_gpu) - Y_host).max() / np.abs(Y_host).max()
    print(f"GPU ({cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}): C @ X in {1e3 * t_gpu:.2f} ms, "
          f"{t_host / t_gpu:.1f}× the host; max relative difference {err:.1e}")
    assert err < 1e-5

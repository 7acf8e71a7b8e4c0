"""The ``'cupy'`` backend: CuPy arrays on a CUDA device, ``cupyx.scipy.sparse`` CSR (cuSPARSE products).

CuPy is imported when the backend is first asked for, never at ``import convmat``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .base import Backend, array_library

__all__ = ["CupyBackend"]


class CupyBackend(Backend):
    """CuPy arrays on a CUDA device, ``cupyx.scipy.sparse.csr_matrix`` results (cuSPARSE products).

    cupyx's sparse matrices take int32 indices only (CuPy up to 14.2), so a
    matrix (or row block) needs fewer than 2**31 non-zeros and rows/columns;
    larger requests are refused before anything is allocated (build them in
    row blocks: :meth:`convmat.ConvPlan.row_blocks`).
    """

    name = "cupy"
    library = "cupy"
    index_dtypes = (np.dtype(np.int32),)

    def __init__(self, device=None):
        try:
            import cupy
            import cupyx.scipy.sparse  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "backend 'cupy' needs CuPy with a CUDA device: pip install 'convmat[gpu]' (cupy-cuda12x)"
            ) from exc
        self.xp = cupy
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDARuntimeError: no driver / no device
            raise RuntimeError(f"backend 'cupy' needs a CUDA device, and CuPy finds none: {exc}") from exc
        if n == 0:
            raise RuntimeError("backend 'cupy' needs a CUDA device, and CuPy finds none")
        if device is None:
            device = cupy.cuda.Device().id
        if isinstance(device, str) and device.startswith("cuda"):
            device = int(device.partition(":")[2] or 0)
        if isinstance(device, bool) or not isinstance(device, (int, np.integer)) or not 0 <= device < n:
            raise ParameterError("device", f"device must be a CUDA device number in [0, {n}) for backend 'cupy', got {device!r}")
        self.device = int(device)
        self._dev = cupy.cuda.Device(self.device)

    def empty(self, n, dtype):
        with self._dev:
            return self.xp.empty(n, dtype=dtype)

    def zeros(self, n, dtype):
        with self._dev:
            return self.xp.zeros(n, dtype=dtype)

    def arange(self, n, dtype=np.int64):
        with self._dev:
            return self.xp.arange(n, dtype=dtype)

    def asarray(self, a, dtype=None):
        with self._dev:
            return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a):
        return self.xp.asnumpy(a)

    def astype(self, a, dtype):
        return a.astype(dtype, copy=False)

    def take(self, src, idx, out):
        self.xp.take(src, idx, out=out)

    def add(self, a, b, out):
        self.xp.add(a, b, out=out)

    def csr(self, data, indices, indptr, shape):
        import cupyx.scipy.sparse as csp

        with self._dev:
            A = csp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
        try:  # sorted and duplicate-free by construction
            A.has_canonical_format = True
        except AttributeError:  # pragma: no cover - older CuPy
            pass
        return A

    def csr_arrays(self, A):
        return A.data, A.indices, A.indptr

    def is_sparse(self, A):
        import cupyx.scipy.sparse as csp

        return csp.issparse(A)

    def linear_operator(self, shape, dtype, matvec, rmatvec, matmat, rmatmat):
        from cupyx.scipy.sparse.linalg import LinearOperator

        return LinearOperator(shape, matvec=matvec, rmatvec=rmatvec, matmat=matmat, rmatmat=rmatmat, dtype=dtype)

    def memory_limit(self):
        with self._dev:
            free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free)

    def owns(self, a):
        return array_library(a) == "cupy" and getattr(getattr(a, "device", None), "id", self.device) == self.device

    def _move_hint(self, name):
        return f"pass cupy.asarray({name}), or move the operator with .to('scipy')"

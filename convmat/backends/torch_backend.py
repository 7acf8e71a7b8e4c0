"""The ``'torch'`` backend: PyTorch tensors on any torch device, ``torch.sparse_csr_tensor``.

PyTorch is imported when the backend is first asked for, never at ``import convmat``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ParameterError
from .base import Backend, array_library, available_memory

__all__ = ["TorchBackend", "requires_grad", "detached"]


_TORCH_DTYPES = {}


def _torch_dtype(dtype):
    import torch

    if not _TORCH_DTYPES:
        _TORCH_DTYPES.update(
            {
                np.dtype(np.bool_): torch.bool,
                np.dtype(np.int32): torch.int32,
                np.dtype(np.int64): torch.int64,
                np.dtype(np.float32): torch.float32,
                np.dtype(np.float64): torch.float64,
                np.dtype(np.complex64): torch.complex64,
                np.dtype(np.complex128): torch.complex128,
            }
        )
    if isinstance(dtype, torch.dtype):
        return dtype
    return _TORCH_DTYPES[np.dtype(dtype)]


def _numpy_dtype(tdtype) -> np.dtype:
    if not _TORCH_DTYPES:
        _torch_dtype(np.float64)
    for k, v in _TORCH_DTYPES.items():
        if v == tdtype:
            return k
    raise TypeError(f"torch dtype {tdtype} has no NumPy equivalent convmat uses")


class TorchBackend(Backend):
    """PyTorch tensors on any torch device, ``torch.sparse_csr_tensor`` results.

    On CUDA devices PyTorch's sparse products are cuSPARSE's; on the CPU they
    are PyTorch's own (MKL where PyTorch was built with it).  PyTorch
    parallelises its element-wise operations itself, so the builder runs one
    host thread here.
    """

    name = "torch"
    library = "torch"

    def __init__(self, device=None):
        try:
            import torch
        except ImportError as exc:
            raise ImportError("backend 'torch' needs PyTorch: pip install 'convmat[torch]'") from exc
        self.xp = torch
        try:
            self.device = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as exc:
            raise ParameterError("device", f"device must be a torch device (such as 'cpu' or 'cuda:0'), got {device!r}") from exc
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"device {device!r} needs CUDA, and this PyTorch finds no CUDA device")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())

    def empty(self, n, dtype):
        return self.xp.empty(n, dtype=_torch_dtype(dtype), device=self.device)

    def zeros(self, n, dtype):
        return self.xp.zeros(n, dtype=_torch_dtype(dtype), device=self.device)

    def arange(self, n, dtype=np.int64):
        return self.xp.arange(n, dtype=_torch_dtype(dtype), device=self.device)

    def asarray(self, a, dtype=None):
        torch = self.xp
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=None if dtype is None else _torch_dtype(dtype))
        a = np.asarray(a, dtype=dtype)
        if not a.flags.writeable or a.dtype.byteorder not in "=|":
            a = np.array(a, dtype=a.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def to_host(self, a):
        return a.detach().resolve_conj().cpu().numpy()

    def astype(self, a, dtype):
        return a.to(_torch_dtype(dtype))

    def dtype_of(self, a):
        return _numpy_dtype(a.dtype)

    def take(self, src, idx, out):
        self.xp.take(src, idx, out=out)

    def add(self, a, b, out):
        self.xp.add(a, b, out=out)

    def put(self, out, where, values):
        out[where] = values.to(out.dtype)

    def csr(self, data, indices, indptr, shape):
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return self.xp.sparse_csr_tensor(
                indptr, indices, data, size=tuple(shape), device=self.device, check_invariants=False
            )

    def csr_arrays(self, A):
        return A.values(), A.col_indices(), A.crow_indices()

    def is_sparse(self, A):
        return isinstance(A, self.xp.Tensor) and A.layout == self.xp.sparse_csr

    def matmul(self, A, X):
        dt = np.result_type(self.dtype_of(A), self.dtype_of(X))
        if self.dtype_of(X) != dt:
            X = X.to(_torch_dtype(dt))
        if self.dtype_of(A) != dt:  # pragma: no cover - operators hold float64/complex already
            A = A.to(_torch_dtype(dt))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if X.ndim == 1:
                return (A @ X[:, None])[:, 0]
            return A @ X

    def transpose(self, A):
        return A.t().conj() if self.dtype_of(A).kind == "c" else A.t()

    def memory_limit(self):
        if self.device.type == "cuda":
            free, _total = self.xp.cuda.mem_get_info(self.device)
            return int(free)
        return available_memory()

    def owns(self, a):
        return array_library(a) == "torch" and isinstance(a, self.xp.Tensor) and a.device == self.device

    def operand(self, x, name):
        x = super().operand(x, name)
        return x.detach() if x.requires_grad else x

    autograd = True

    def tracks_grad(self, *arrays):
        return self.xp.is_grad_enabled() and any(requires_grad(a) for a in arrays)

    def _move_hint(self, name):
        return f"pass torch.as_tensor({name}, device={str(self.device)!r}), or move the operator with .to(backend)"


def requires_grad(a) -> bool:
    """Whether ``a`` is a torch tensor that requires grad (never imports torch)."""
    return array_library(a) == "torch" and bool(getattr(a, "requires_grad", False))


def detached(a):
    """``a.detach()`` for a torch tensor that requires grad, ``a`` itself otherwise."""
    return a.detach() if requires_grad(a) else a

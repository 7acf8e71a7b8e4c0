"""Array backends: the only package that knows which array library is in use.

The builder (:mod:`convmat.build`), the factor matrices and the operator are
written once.  Their index arithmetic runs on the arrays of a
:class:`Backend` through the operations NumPy, CuPy and PyTorch spell alike
(slicing, ``reshape``, ``ravel``, broadcasting ``+``/``*``, integer-array
assignment, ``+=``).  The few operations spelled differently -- creating
arrays on a device, a gather or an add into a given buffer, making the
sparse matrix, a sparse-times-dense product -- are methods of the backend.

=========  ==================================  ======================================
backend    arrays                              sparse matrix
=========  ==================================  ======================================
'scipy'    NumPy, host                         ``scipy.sparse.csr_array``
'cupy'     CuPy, on a CUDA device              ``cupyx.scipy.sparse.csr_matrix``
'torch'    PyTorch tensors, any torch device   ``torch.sparse_csr_tensor``
=========  ==================================  ======================================

Nothing here imports CuPy or PyTorch until their backend is asked for, and
the type of an array is recognised by the name of its module
(:func:`array_library`), so that looking at an argument never imports the
library it comes from.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, ParameterTypeError
from .base import Backend, array_library, available_memory, default_threads
from .cupy_backend import CupyBackend
from .scipy_backend import ScipyBackend
from .torch_backend import TorchBackend, _numpy_dtype, detached, requires_grad

__all__ = [
    "Backend",
    "ScipyBackend",
    "CupyBackend",
    "TorchBackend",
    "BACKENDS",
    "get_backend",
    "backend_of",
    "array_library",
    "available_memory",
    "default_threads",
    "transfer",
    "requires_grad",
    "detached",
    "dtype_backend",
    "matrix_backend",
    "line_nnz",
    "matrix_vector",
    "to_host_weight",
    "device_memory_limit",
    "default_device",
]


def transfer(a, src: Backend, dst: Backend):
    """One array of backend ``src`` as an array of backend ``dst`` (no copy where they share memory).

    Between two CUDA libraries the array goes by DLPack, on the device;
    otherwise through the host.
    """
    if src == dst:
        return a
    if dst.name == "torch" and src.name == "torch":
        return a.to(dst.device)
    gpu = src.name == "cupy" or (src.name == "torch" and src.device.type == "cuda")
    dst_gpu = dst.name == "cupy" or (dst.name == "torch" and dst.device.type == "cuda")
    if gpu and dst_gpu:  # pragma: no cover - needs a CUDA device
        return dst.asarray(dst.xp.from_dlpack(a))
    return dst.asarray(src.to_host(a))


BACKENDS = {"scipy": ScipyBackend, "cupy": CupyBackend, "torch": TorchBackend}

_CACHE: dict = {}


def get_backend(backend="scipy", device=None) -> Backend:
    """The backend called ``backend`` on ``device`` (a name, or a Backend returned as it is).

    Parameters
    ----------
    backend : {'scipy', 'cupy', 'torch'} or Backend
    device : optional
        ``'scipy'``: None or ``'cpu'``.  ``'cupy'``: a CUDA device number
        (default: CuPy's current device).  ``'torch'``: a torch device or its
        name (default ``'cpu'``).

    Raises
    ------
    ValueError
        An unknown name or device.
    ImportError
        The library of the backend is not installed.
    RuntimeError
        The backend needs a CUDA device and there is none.
    """
    if isinstance(backend, Backend):
        if device is not None and str(device) != str(backend.device):
            raise ParameterError("device", f"device {device!r} contradicts the backend given, {backend!r}")
        return backend
    if not isinstance(backend, str):
        raise ParameterTypeError("backend", f"backend must be a string, one of {tuple(BACKENDS)}, got {backend!r}")
    if backend not in BACKENDS:
        raise ParameterError("backend", f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    key = (backend, str(device))
    if key not in _CACHE:
        _CACHE[key] = BACKENDS[backend](device)
    return _CACHE[key]


def backend_of(a) -> Backend | None:
    """The backend whose arrays (or sparse matrices) ``a`` is, on its device; None if not an array.

    Imports nothing that ``a``'s own library has not imported already.
    """
    lib = array_library(a)
    if lib in ("numpy", "scipy"):
        return get_backend("scipy")
    if lib == "cupy":
        dev = getattr(a, "device", None)
        return get_backend("cupy", getattr(dev, "id", None))
    if lib == "torch" and hasattr(a, "device"):
        return get_backend("torch", a.device)
    return None


def dtype_backend(dtype) -> tuple[np.dtype, str | None]:
    """``(NumPy dtype, backend name or None)`` of a dtype of any array library.

    A ``torch.dtype`` gives its NumPy twin and ``'torch'`` (PyTorch is already
    imported by whoever made it); NumPy's and CuPy's dtypes, type objects and
    strings give ``np.dtype(dtype)`` and None.  Raises TypeError for anything else.
    """
    if type(dtype).__module__.partition(".")[0] == "torch":
        return _numpy_dtype(dtype), "torch"
    if dtype is None:
        raise TypeError("None is not a dtype")
    return np.dtype(dtype), None


def matrix_backend(A) -> Backend | None:
    """The backend of a matrix -- sparse (SciPy, cupyx, torch CSR) or a dense array -- or None.

    None for everything else, SciPy's ``LinearOperator`` included (it has a
    shape but is not a matrix).
    """
    lib = array_library(A)
    if lib is None or not (hasattr(A, "ndim") and hasattr(A, "shape")):
        return None
    be = backend_of(A)
    if be is None or (lib == "scipy" and not be.is_sparse(A)):
        return None
    return be


def line_nnz(be: Backend, A) -> int:
    """The most non-zeros in one row or one column of a sparse matrix of backend ``be`` (structural), >= 1."""
    if hasattr(A, "tocsr"):
        A = A.tocsr()
    _, indices, indptr = be.csr_arrays(A)
    if indptr.shape[0] <= 1 or indices.shape[0] == 0:
        return 1
    rows = int((indptr[1:] - indptr[:-1]).max().item())
    cols = int(be.xp.bincount(be.astype(indices, np.int64)).max().item())
    return max(rows, cols, 1)


def matrix_vector(be: Backend, M, v):
    """``M @ v`` for a matrix of backend ``be`` (sparse or dense) and a 1-D ``v`` of the same backend."""
    if be.name == "torch":
        return be.matmul(M, v)
    return M @ v


def to_host_weight(weight, be: Backend | None = None, name: str = "weight") -> np.ndarray:
    """``weight`` as a NumPy array on the host (no copy for a NumPy array), for backend ``be``.

    Weights are small: they are checked and packed on the host and moved to the
    backend's device.  A weight on a device the backend does not use (a CuPy
    array for ``'scipy'``, a CUDA tensor for ``'cupy'``) is a TypeError that
    says what to pass; so is a dtype NumPy cannot hold (torch's bfloat16).
    Checking the dtype is the caller's (:mod:`convmat.weights`).
    """
    lib = array_library(weight)
    target = "the host" if be is None else f"backend {be.name!r}"
    if lib == "cupy":
        if be is None or be.name != "cupy":
            raise ParameterTypeError(
                name,
                f"{name} is a CuPy array (on a CUDA device), but the matrix is built for {target}; "
                f"pass backend='cupy', or {name}.get()",
            )
        return weight.get()
    if lib == "torch":
        if getattr(weight, "layout", None) is not None and str(weight.layout) != "torch.strided":
            raise ParameterTypeError(name, f"{name} must be a dense tensor, got layout {weight.layout}")
        if weight.device.type != "cpu" and (be is None or be.name != "torch"):
            raise ParameterTypeError(
                name,
                f"{name} is a torch tensor on device {weight.device}, but the matrix is built for {target}; "
                f"pass backend='torch', or {name}.cpu()",
            )
        if weight.requires_grad:
            raise ParameterTypeError(
                name,
                f"{name} requires grad, and a sparse matrix cannot carry PyTorch's autograd graph; use "
                f"ConvOperator({name}, ..., backend='torch') for products differentiable with respect to it, "
                f"or pass {name}.detach()",
            )
        try:
            return weight.detach().resolve_conj().cpu().numpy()
        except TypeError:
            raise ParameterTypeError(
                name,
                f"{name} must have dtype float32, float64, complex64, complex128 or an integer dtype, "
                f"got {weight.dtype}",
            ) from None
    if isinstance(weight, np.ndarray):
        return weight
    try:  # lists and other array-likes
        return np.asarray(weight)
    except (ValueError, TypeError, RuntimeError):
        raise ParameterTypeError(
            name, f"{name} must be an array of numbers, got {type(weight).__module__}.{type(weight).__name__}"
        ) from None


def device_memory_limit(be: Backend) -> int | None:
    """Free memory on the device of a GPU backend; None when the backend builds in host memory."""
    if be.name == "cupy" or (be.name == "torch" and be.device.type != "cpu"):
        return be.memory_limit()
    return None


def default_device(backend, weight):
    """The device a build on ``backend`` defaults to for this weight: a torch weight's own device, else None."""
    if backend == "torch" and array_library(weight) == "torch":
        return weight.device
    return None

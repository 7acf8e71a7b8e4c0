"""Array backends: the only module that knows which array library is in use.

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

import os
import warnings

import numpy as np

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
]


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    try:  # pragma: no cover - other POSIX
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def array_library(a) -> str | None:
    """``'numpy'``, ``'cupy'``, ``'torch'``, ``'scipy'`` (sparse) or None, from ``type(a)``'s module.

    Never imports anything: a CuPy array is recognised as one without
    importing CuPy (the user who passed it has already imported it).
    """
    root = type(a).__module__.partition(".")[0]
    if root in ("cupy", "cupyx"):
        return "cupy"
    if root == "torch":
        return "torch"
    if root == "scipy":
        return "scipy"
    if isinstance(a, (np.ndarray, np.generic)):
        return "numpy"
    return None


def _describe(a) -> str:
    t = type(a)
    where = ""
    if array_library(a) == "torch":
        where = f" on device {a.device}"
    elif array_library(a) == "cupy":
        where = " on a CUDA device"
    return f"{t.__module__}.{t.__qualname__}{where}"


class Backend:
    """An array library and a device: the arrays, sparse matrices and products convmat uses there.

    Subclasses set :attr:`name`, :attr:`xp` (the module whose functions the
    shared code may call: ``xp.add`` is never called with ``out=`` outside
    this module) and implement the methods below.  Dtypes are passed as NumPy
    dtypes everywhere; a backend translates them.
    """

    name = "?"
    #: The index dtypes the sparse library takes, narrowest first.
    index_dtypes = (np.dtype(np.int32), np.dtype(np.int64))
    #: The array library of this backend's dense arrays (see :func:`array_library`).
    library = "?"

    xp = None
    device = None

    # -- identity ---------------------------------------------------------- #
    @property
    def key(self) -> tuple:
        """Hashable: equal for backends whose arrays can be mixed."""
        return (self.name, str(self.device))

    def __eq__(self, other):
        return isinstance(other, Backend) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        dev = "" if self.device is None else f", device={self.device!s}"
        return f"<convmat backend {self.name!r}{dev}>"

    # -- array creation (on this backend's device) ----------------------- #
    def empty(self, n, dtype):
        raise NotImplementedError

    def zeros(self, n, dtype):
        raise NotImplementedError

    def arange(self, n, dtype=np.int64):
        raise NotImplementedError

    def asarray(self, a, dtype=None):
        """A host array (NumPy, list) or an array of this backend, as this backend's array."""
        raise NotImplementedError

    def to_host(self, a) -> np.ndarray:
        """A NumPy copy (or view, on the host) of one of this backend's arrays."""
        raise NotImplementedError

    def astype(self, a, dtype):
        raise NotImplementedError

    def dtype_of(self, a) -> np.dtype:
        """The NumPy dtype of one of this backend's arrays (or sparse matrices)."""
        return np.dtype(a.dtype)

    # -- operations into a given buffer ---------------------------------- #
    def take(self, src, idx, out):
        """``out[:] = src[idx]`` for 1-D ``src``; ``idx`` valid by construction."""
        raise NotImplementedError

    def add(self, a, b, out):
        """``out[...] = a + b`` (broadcast); ``out`` may be a view of a larger buffer."""
        raise NotImplementedError

    def put(self, out, where, values):
        """``out[where] = values`` for an integer index array ``where`` (values cast to ``out``'s dtype)."""
        out[where] = values

    # -- sparse ------------------------------------------------------------ #
    def csr(self, data, indices, indptr, shape):
        """The CSR matrix of this library on these arrays (no copy); canonical by construction."""
        raise NotImplementedError

    def csr_arrays(self, A):
        """``(data, indices, indptr)`` of one of this backend's CSR matrices."""
        raise NotImplementedError

    def is_sparse(self, A) -> bool:
        raise NotImplementedError

    #: True where ``A^H @ Y`` is best done with an explicitly built ``A^H`` (see :meth:`rmatmul`).
    builds_adjoint = True

    def matmul(self, A, X):
        """``A @ X`` for one of this backend's CSR matrices and a dense 1-D or 2-D array."""
        return A @ X

    def rmatmul(self, A, Y):
        """``A^H @ Y`` without building ``A^H`` (only where :attr:`builds_adjoint` is False)."""
        raise NotImplementedError

    def transpose(self, A):
        """``A.T`` (``A^H`` for complex) as a view, without copying, where the library has one."""
        return A.conj().T if self.dtype_of(A).kind == "c" else A.T

    #: True where :class:`convmat.ConvOperator` itself is this library's LinearOperator (SciPy's).
    scipy_linear_operator = False
    #: True where products can be part of an autograd graph (PyTorch).
    autograd = False

    def tracks_grad(self, *arrays) -> bool:
        """Whether a product with these arrays (None allowed) must be recorded for autograd."""
        return False

    def linear_operator(self, shape, dtype, matvec, rmatvec, matmat, rmatmat):
        """A LinearOperator of this library's ``scipy.sparse.linalg`` (scipy, cupyx)."""
        raise TypeError(
            f"backend {self.name!r} has no LinearOperator; move the operator with .to('scipy') (or 'cupy')"
        )

    # -- resources --------------------------------------------------------- #
    @property
    def threads(self) -> int:
        """Host threads the builder may use (1 where the library parallelises by itself)."""
        return 1

    def memory_limit(self) -> int | None:
        return available_memory()

    def max_index_dtype_for(self, nnz: int, shape) -> np.dtype | None:
        """The narrowest index dtype this library takes for the matrix, or None if none fits."""
        big = max(int(nnz), *(int(s) for s in shape))
        for dt in self.index_dtypes:
            if big <= np.iinfo(dt).max:
                return dt
        return None

    # -- inputs ------------------------------------------------------------ #
    def owns(self, a) -> bool:
        """Whether ``a`` is a dense array of this backend (and on its device)."""
        return array_library(a) == self.library

    def operand(self, x, name: str):
        """``x`` as a dense numeric array of this backend, or a TypeError that says what to do."""
        if not self.owns(x):
            raise TypeError(
                f"{name} is a {_describe(x)}, but this operator lives on backend {self.name!r}"
                f"{'' if self.device is None else f' (device {self.device})'}; {self._move_hint(name)}"
            )
        dt = self.dtype_of(x)
        if dt.kind not in "biufc":
            raise TypeError(f"{name} must be an array of numbers, got dtype {dt}")
        return x

    def _move_hint(self, name):
        return f"move {name} there first, or move the operator with .to(backend)"


# --------------------------------------------------------------------------- #
# NumPy / SciPy
# --------------------------------------------------------------------------- #
class ScipyBackend(Backend):
    """NumPy arrays on the host, ``scipy.sparse.csr_array`` results, host threads.

    Products use :func:`convmat.spmm.csr_matmul` (multi-threaded, Numba) when
    Numba is importable, and SciPy's own product otherwise.
    """

    name = "scipy"
    library = "numpy"

    def __init__(self, device=None):
        if device not in (None, "cpu"):
            raise ValueError(f"device must be None or 'cpu' for backend 'scipy', got {device!r}")
        self.xp = np
        self.device = None

    def empty(self, n, dtype):
        return np.empty(n, dtype=dtype)

    def zeros(self, n, dtype):
        return np.zeros(n, dtype=dtype)

    def arange(self, n, dtype=np.int64):
        return np.arange(n, dtype=dtype)

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_host(self, a):
        return np.asarray(a)

    def astype(self, a, dtype):
        return a.astype(dtype, copy=False)

    def take(self, src, idx, out):
        # Not mode='raise', which buffers ``out``; 'wrap' measured ~40% faster than 'clip'.
        np.take(src, idx, out=out, mode="wrap")

    def add(self, a, b, out):
        np.add(a, b, out=out)

    def csr(self, data, indices, indptr, shape):
        import scipy.sparse as sp

        A = sp.csr_array((data, indices, indptr), shape=shape, copy=False)
        # Sorted and duplicate-free by construction (see convmat.pattern).
        A.has_sorted_indices = True
        A.has_canonical_format = True
        return A

    def csr_arrays(self, A):
        return A.data, A.indices, A.indptr

    def is_sparse(self, A):
        import scipy.sparse as sp

        return sp.issparse(A)

    builds_adjoint = False
    scipy_linear_operator = True

    def matmul(self, A, X):
        return _spmm(A, X, transpose=False)

    def rmatmul(self, A, Y):
        return _spmm(A, Y, transpose=True)

    def linear_operator(self, shape, dtype, matvec, rmatvec, matmat, rmatmat):
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(shape, matvec=matvec, rmatvec=rmatvec, matmat=matmat, rmatmat=rmatmat, dtype=dtype)

    @property
    def threads(self) -> int:
        return default_threads()

    def owns(self, a):
        return array_library(a) not in ("cupy", "torch")

    def operand(self, x, name):
        lib = array_library(x)
        if lib in ("cupy", "torch"):
            hint = f"{name}.get()" if lib == "cupy" else f"{name}.numpy(force=True)"
            raise TypeError(
                f"{name} is a {_describe(x)}, but this operator lives on backend 'scipy' (NumPy); pass "
                f"{hint}, or move the operator with .to({lib!r})"
            )
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
        if arr.dtype == object or arr.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
        return arr


# --------------------------------------------------------------------------- #
# CuPy
# --------------------------------------------------------------------------- #
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
            raise ValueError(f"device must be a CUDA device number in [0, {n}) for backend 'cupy', got {device!r}")
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


# --------------------------------------------------------------------------- #
# PyTorch
# --------------------------------------------------------------------------- #
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
            raise ValueError(f"device must be a torch device (such as 'cpu' or 'cuda:0'), got {device!r}") from exc
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


def _spmm(A, X, *, transpose):
    """``A @ X`` or ``A^H @ X`` by convmat's threaded kernels (SciPy's product without Numba)."""
    from . import spmm

    return spmm.csr_matmul(A, X, transpose=transpose, conjugate=transpose)


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
            raise ValueError(f"device {device!r} contradicts the backend given, {backend!r}")
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, one of {tuple(BACKENDS)}, got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
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
    from .errors import ParameterTypeError

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

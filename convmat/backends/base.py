"""The :class:`Backend` interface, and what every backend shares: recognising arrays, threads, memory."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ParameterTypeError

__all__ = ["Backend", "array_library", "available_memory", "default_threads"]


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

    #: True where arrays are NumPy arrays on the host, which compiled CPU kernels may write into.
    host_arrays = False

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
            raise ParameterTypeError(
                name,
                f"{name} is a {_describe(x)}, but this operator lives on backend {self.name!r}"
                f"{'' if self.device is None else f' (device {self.device})'}; {self._move_hint(name)}"
            )
        dt = self.dtype_of(x)
        if dt.kind not in "biufc":
            raise ParameterTypeError(name, f"{name} must be an array of numbers, got dtype {dt}")
        return x

    def _move_hint(self, name):
        return f"move {name} there first, or move the operator with .to(backend)"

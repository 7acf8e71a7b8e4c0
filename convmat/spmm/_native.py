"""The exact one-vector kernels compiled ahead of time: the first product in a process without Numba's import.

``_native.c`` is ``fwd_vec``, ``tr_vec``, ``tr_vec4`` and ``reduce`` of
:mod:`convmat.spmm._kernels` written in C, operation for operation (the
same sums in the same order, no fused multiply-add), built when convmat is
installed (``setup.py``; optional: without a C compiler there is no
library).  :func:`kernels` returns them as a table with the Numba kernels'
names and call signatures, so :func:`convmat.spmm._products._product_vec`
runs them in the same blocks: the same bits as the Numba kernels
(``tests/test_spmm_native.py``), at their speed, in the first milliseconds
of a process (loading the library takes about a millisecond, importing
Numba about 0.3 s).

They serve one-vector products whose arrays they have functions for (data,
vector and result of one dtype of :data:`convmat.spmm.KERNEL_DTYPES`,
``indptr`` and ``indices`` both ``int32`` or both ``int64``, contiguous);
other one-vector products use the Numba kernels, or the NumPy twins until
those are loaded.  Set the environment variable ``CONVMAT_NATIVE=0`` (read
once, at the first product) to leave the library unused.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["kernels", "available"]

_SUFFIX = {np.dtype(np.float32): "f4", np.dtype(np.float64): "f8",
           np.dtype(np.complex64): "c8", np.dtype(np.complex128): "c16"}
_INDEX = {np.dtype(np.int32): "i4", np.dtype(np.int64): "i8"}
_STATE = {"lib": None, "tables": {}}
_LOCK = threading.Lock()


def _library():
    """The loaded library (ctypes), or False when it is not built or not wanted (once per process)."""
    lib = _STATE["lib"]
    if lib is None:
        with _LOCK:
            lib = _STATE["lib"]
            if lib is None:
                lib = _STATE["lib"] = _open()
    return lib


def _open():
    if os.environ.get("CONVMAT_NATIVE", "1") == "0":
        return False
    import importlib.util

    spec = importlib.util.find_spec(f"{__package__}._native_lib")  # found, never imported: it has no module
    if spec is None or not spec.has_location:  # not built (no C compiler when convmat was installed)
        return False
    import ctypes

    return ctypes.CDLL(spec.origin)  # ctypes releases the GIL during each call


def available() -> bool:
    """Whether the compiled kernels are there (and not switched off by ``CONVMAT_NATIVE=0``)."""
    return bool(_library())


def _ptr(a):
    return a.__array_interface__["data"][0]


def _table(lib, data_dtype, index_dtype):
    """The four kernels of one data and index dtype, with the Numba kernels' call signatures."""
    import ctypes

    s, i = _SUFFIX[data_dtype], _INDEX[index_dtype]
    P, L = ctypes.c_void_p, ctypes.c_int64
    fwd, tr, tr4 = (getattr(lib, f"{name}_{s}_{i}") for name in ("fwd_vec", "tr_vec", "tr_vec4"))
    red = getattr(lib, f"reduce_{s}")
    fwd.argtypes, fwd.restype = [P, P, P, P, P, L, L], None
    tr.argtypes, tr.restype = [P, P, P, P, P, L, L, L, ctypes.c_int], None
    tr4.argtypes, tr4.restype = [P, P, P, P, P, L, L, L, L, ctypes.c_int], None
    red.argtypes, red.restype = [P, P, L, L, L, L], None

    def fwd_vec(indptr, indices, data, x, y, r0, r1, zero):
        fwd(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(x), _ptr(y), r0, r1)

    def tr_vec(indptr, indices, data, y, acc, r0, r1, zero, clear):
        tr(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(y), _ptr(acc), acc.shape[0], r0, r1, bool(clear))

    def tr_vec4(indptr, indices, data, y, acc, P_, s0, s1, zero, clear):
        tr4(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(y), _ptr(acc), acc.shape[0], P_, s0, s1, bool(clear))

    def reduce(out, part, j0, j1):
        red(_ptr(out), _ptr(part), part.shape[0], part.shape[1], j0, j1)

    return {"fwd_vec": fwd_vec, "tr_vec": tr_vec, "tr_vec4": tr_vec4, "reduce": reduce}


def kernels(indptr, indices, data, x, y):
    """The compiled kernels for a one-vector product on these arrays, or None (not built, or no function for them).

    Parameters
    ----------
    indptr, indices, data : ndarray
        The CSR arrays (``indptr`` and ``indices`` of one index dtype).
    x, y : ndarray
        The vector and the result (``data``'s dtype, contiguous; ``y`` writeable).

    Returns
    -------
    dict or None
        ``{"fwd_vec", "tr_vec", "tr_vec4", "reduce"}`` called as the Numba kernels of those names.
    """
    dt, it = data.dtype, indptr.dtype
    if (dt not in _SUFFIX or it not in _INDEX or indices.dtype != it or x.dtype != dt or y.dtype != dt
            or not all(a.flags.c_contiguous for a in (indptr, indices, data, x, y)) or not y.flags.writeable):
        return None
    lib = _library()
    if not lib:
        return None
    key = (dt, it)
    table = _STATE["tables"].get(key)
    if table is None:
        table = _STATE["tables"][key] = _table(lib, dt, it)
    return table

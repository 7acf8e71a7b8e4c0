"""The exact kernels compiled ahead of time: the first product in a process without Numba's import.

``_native.c`` is ``fwd_vec``, ``tr_vec``, ``tr_vec4`` and ``reduce`` of
:mod:`convmat.spmm._kernels` written in C, operation for operation (the
same sums in the same order, no fused multiply-add), and ``fwd_mat`` and
``tr_mat`` of :mod:`convmat.spmm._mat_kernels` (the same chains of fused
multiply-adds in the same order, in the same runs of rows), built when
convmat is installed (``setup.py``; optional: without a C compiler there is
no library).  :func:`kernels` returns them as a table with the Numba
kernels' names and call signatures, so :mod:`convmat.spmm._products` runs
them in the same blocks: the same bits as the Numba kernels
(``tests/test_spmm_native.py``), in the first milliseconds of a process
(loading the library takes about a millisecond, importing Numba about
0.3 s, compiling the batch kernels seconds).  Against the Numba kernels'
time on this project's layers: one vector 1.05-1.2 times (float32 and
float64), several columns 0.8-1.1 times for float32 and float64 and
0.44-1.04 times for complex64 and complex128 (their column blocks are
written with AVX and FMA intrinsics).

``fwd_vec4`` (float32 and float64, :data:`VEC4_DTYPES`) has no Numba twin:
``fwd_vec`` for the four quarters of the rows at once where they share
their columns (the output channels of a convolution), ``x`` gathered once
for the four rows, each row's eight lanes in a vector register (AVX2), the
bits of ``fwd_vec``.  For those dtypes ``tr_vec4`` is ``tr_vec4v`` of
``_native.c``: ``tr_vec4`` in one pass (AVX2), its bits.  Both serve
one-vector products also once Numba's kernels are loaded
(:func:`convmat.spmm._vec_kernels`).

They serve products whose arrays they have functions for (data, operand and
result of one dtype of :data:`convmat.spmm.KERNEL_DTYPES`, ``indptr`` and
``indices`` both ``int32`` or both ``int64``, contiguous): one-vector
products until Numba's kernels of the product's signature are loaded,
products of several columns always (Numba is not loaded for them); other
products use the Numba kernels, or for one vector the NumPy twins until
those are loaded.  Set the environment variable ``CONVMAT_NATIVE=0`` (read
once, at the first product) to leave the library unused.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ._mat_kernels import RUN_ROWS, SEGMENT_BYTES

__all__ = ["kernels", "available", "VEC4_DTYPES"]

#: Dtypes with a kernel ``fwd_vec4`` (no Numba twin): ``A @ x`` for the slots of four rows a quarter
#: apart (the output channels of a convolution, as ``tr_vec4``), ``x`` gathered once for the four rows
#: where they have the same columns (AVX2), with ``fwd_vec``'s bits for every row; and whose ``tr_vec4``
#: runs in one pass (the rows' indices compared as the entries are added, the previous values kept
#: and put back if the rows differ after all: ``tr_vec4``'s bits).  0.5-0.75 and 0.74-0.95 times the
#: time of Numba's ``fwd_vec`` and ``tr_vec4`` on one thread on this project's layers: one-vector
#: products in them take these two from the library whenever it is there, also once Numba's kernels
#: are loaded.
VEC4_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

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
    """The kernels of one data and index dtype, with the Numba kernels' call signatures."""
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

    fmat, tmat, keys = getattr(lib, f"fwd_mat_{s}_{i}"), getattr(lib, f"tr_mat_{s}_{i}"), getattr(lib, f"row_keys_{i}")
    trans = getattr(lib, f"transpose_{data_dtype.itemsize}")
    fmat.argtypes, fmat.restype = [P, P, P, P, P, P, L, L, L, L, L], None
    tmat.argtypes, tmat.restype = [P, P, P, P, P, P, L, L, L, L, ctypes.c_int, L, L], None
    keys.argtypes, keys.restype = [P, P, L, P, L, L], None
    trans.argtypes, trans.restype = [P, P, L, L, L, L], None

    def fwd_mat(indptr, indices, data, X, Y, order, r0, r1, zero):
        fmat(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(X), _ptr(Y), _ptr(order), X.shape[1], r0, r1,
             SEGMENT_BYTES, RUN_ROWS)

    def tr_mat(indptr, indices, data, Y, acc, order, r0, r1, zero, clear):
        tmat(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(Y), _ptr(acc), _ptr(order), acc.shape[0], Y.shape[1],
             r0, r1, bool(clear), SEGMENT_BYTES, RUN_ROWS)

    def row_keys(indptr, indices, scale, key, r0, r1):
        keys(_ptr(indptr), _ptr(indices), int(scale), _ptr(key), r0, r1)

    def transpose_into(src, dst, i0, i1):
        trans(_ptr(src), _ptr(dst), src.shape[0], src.shape[1], i0, i1)

    table = {"fwd_vec": fwd_vec, "tr_vec": tr_vec, "tr_vec4": tr_vec4, "reduce": reduce, "fwd_mat": fwd_mat,
             "tr_mat": tr_mat, "row_keys": row_keys, "transpose_into": transpose_into}
    if data_dtype in VEC4_DTYPES:
        fwd4, tr4v = getattr(lib, f"fwd_vec4_{s}_{i}"), getattr(lib, f"tr_vec4v_{s}_{i}")
        fwd4.argtypes, fwd4.restype = [P, P, P, P, P, L, L, L], None
        tr4v.argtypes, tr4v.restype = tr4.argtypes, None

        def fwd_vec4(indptr, indices, data, x, y, P_, s0, s1, zero):
            fwd4(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(x), _ptr(y), P_, s0, s1)

        def tr_vec4_one_pass(indptr, indices, data, y, acc, P_, s0, s1, zero, clear):
            tr4v(_ptr(indptr), _ptr(indices), _ptr(data), _ptr(y), _ptr(acc), acc.shape[0], P_, s0, s1, bool(clear))

        table["fwd_vec4"], table["tr_vec4"] = fwd_vec4, tr_vec4_one_pass
    return table


def kernels(indptr, indices, data, x=None, y=None, dtype=None):
    """The compiled kernels for a product on these arrays, or None (not built, or no function for them).

    Parameters
    ----------
    indptr, indices, data : ndarray
        The CSR arrays (``indptr`` and ``indices`` of one index dtype).
    x, y : ndarray, optional
        The vector and the result of a one-vector product (``data``'s dtype, contiguous; ``y``
        writeable).  Without them, a product of several columns, whose operand and result the
        caller makes C-contiguous arrays of ``data``'s dtype (``Y`` writeable; ``order`` an
        ``int64`` array).
    dtype : numpy dtype, optional
        The result's dtype, which must be ``data``'s (default: ``y``'s or ``data``'s).

    Returns
    -------
    dict or None
        ``{"fwd_vec", "tr_vec", "tr_vec4", "reduce", "fwd_mat", "tr_mat", "row_keys",
        "transpose_into"}`` called as the Numba kernels of those names, and for
        :data:`VEC4_DTYPES` ``"fwd_vec4"``, called as
        ``fwd_vec4(indptr, indices, data, x, y, P, s0, s1, zero)`` (their
        ``"tr_vec4"`` is the one-pass kernel).
    """
    dt, it = data.dtype, indptr.dtype
    vectors = () if x is None else (x, y)
    if (dt not in _SUFFIX or (dtype is not None and np.dtype(dtype) != dt) or it not in _INDEX
            or indices.dtype != it or any(v.dtype != dt for v in vectors)
            or not all(a.flags.c_contiguous for a in (indptr, indices, data, *vectors))
            or (y is not None and not y.flags.writeable)):
        return None
    lib = _library()
    if not lib:
        return None
    key = (dt, it)
    table = _STATE["tables"].get(key)
    if table is None:
        table = _STATE["tables"][key] = _table(lib, dt, it)
    return table

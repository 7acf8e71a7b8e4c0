"""Selection matrices: Kronecker products of one-entry-per-row tables, block-diagonal over channels.

The factor matrices of :mod:`convmat.factors` (stride, zero insertion,
padding) are all of this form; this module assembles them straight into
canonical CSR by index arithmetic, on any backend.
"""

from __future__ import annotations

import math

import numpy as np

from .backends import get_backend
from .memory import MatrixTooLargeError, check_fits
from .weights import value_dtype
from .pattern import AxisPattern

__all__ = ["assemble_selection"]


def _check_size(shape, nnz: int, rows_per_channel: int, vdtype: np.dtype, what: str, be) -> np.dtype:
    """The index dtype (int32 when nnz and both dimensions fit); a MatrixTooLargeError if it cannot fit."""
    n_rows = shape[0]
    idt = be.max_index_dtype_for(nnz, shape)
    if idt is None:
        raise MatrixTooLargeError(
            f"the {what} of shape {shape} with {nnz:,} non-zeros needs int64 indices, and backend "
            f"{be.name!r} takes {', '.join(str(t) for t in be.index_dtypes)} only"
        )
    need = nnz * (vdtype.itemsize + idt.itemsize) + (n_rows + 1) * idt.itemsize + rows_per_channel * 17
    check_fits(need, None, be, lambda: f"the {what} with {n_rows:,} rows and {nnz:,} non-zeros",
               hint="use a smaller geometry")
    return idt


# --------------------------------------------------------------------------- #
# assembly: Kronecker product of one-entry-per-row tables, block-diagonal channels
# --------------------------------------------------------------------------- #
def _sources(p: AxisPattern) -> np.ndarray:
    """Column read by each row of a table with at most one entry per row (-1: none)."""
    lengths = p.row_lengths
    assert lengths.size == 0 or int(lengths.max()) <= 1, "factor tables hold at most one entry per row"
    src = np.full(p.n_rows, -1, dtype=np.int64)
    src[lengths.astype(bool)] = p.cols
    return src


def assemble_selection(tables, channels: int, dtype, what: str, backend="scipy", device=None):
    """``I_channels (x) T_0 (x) ... (x) T_{D-1}`` as canonical CSR, values 1.

    Rows and columns of the product are C-order ravels of the per-axis
    positions, so the source column of a row is ``ravel(src_0[i_0], ...)``;
    a row reads nothing when any axis reads nothing.  One channel's columns
    and row pointers are computed on the host (they are as long as one
    channel's image); the channel copies, the matrix itself, are written on
    the backend's device.
    """
    be = get_backend(backend, device)
    vdtype = value_dtype(np.dtype(np.float64), dtype)
    rows_c = math.prod(p.n_rows for p in tables)
    cols_c = math.prod(p.n_cols for p in tables)
    nnz_c = math.prod(int(p.nnz) for p in tables)
    idt = _check_size((channels * rows_c, channels * cols_c), channels * nnz_c, rows_c, vdtype, what, be)

    col = np.zeros(1, dtype=np.int64)
    for p in tables:
        src = _sources(p)
        # invalid (-1) sources poison the whole row: mark with a negative sentinel
        col = np.where(
            (col[:, None] >= 0) & (src[None, :] >= 0), col[:, None] * p.n_cols + src[None, :], -1
        ).ravel()
    keep = col >= 0
    cols = col[keep]
    ptr_c = np.cumsum(keep, dtype=np.int64)

    c = be.arange(channels, dtype=np.int64)[:, None]
    indices = be.empty(channels * nnz_c, dtype=idt)
    be.add(be.asarray(cols)[None, :], c * cols_c, out=indices.reshape(channels, nnz_c))
    indptr = be.zeros(channels * rows_c + 1, dtype=idt)
    be.add(be.asarray(ptr_c)[None, :], c * nnz_c, out=indptr[1:].reshape(channels, rows_c))
    data = be.empty(channels * nnz_c, dtype=vdtype)
    data[...] = 1
    return be.csr(data, indices, indptr, (channels * rows_c, channels * cols_c))

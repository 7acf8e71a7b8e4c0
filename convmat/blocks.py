"""Row blocks of a convolution matrix: sizes, what each block reads, and how partial sums combine.

The matrix ``C`` of a :class:`~convmat.ConvPlan` never needs to exist whole:
:mod:`convmat.streamed` and :mod:`convmat.dask` build it a block of rows at a
time.  This module holds the decisions they share, in NumPy and SciPy only:

* :func:`row_blocks` -- contiguous row ranges of at most ``block_bytes`` bytes
  each, counted exactly (values plus int32 indices whenever the block's
  non-zeros and shape fit in int32, whatever the whole matrix needs);
* :func:`build_block` -- one such block, with int32 indices when it fits;
* :func:`slabs` and :func:`build_slab` -- a *slab*: the rows of every output
  channel at the output positions ``[j0, j1)`` (flat, C order), with its
  columns renumbered onto its *column support*: every input channel at the
  flat input positions ``[f0, f1)`` it reads (:func:`slab_support`).  A slab
  multiplies a halo of the input, not all of it;
* :func:`combine` and :func:`tree_order` -- the fixed order in which the
  partial sums of the adjoint, ``C^H y = sum_b C_b^H y_b``, are added.

Every function here is a pure function of the plan, the weight and its
arguments: a block built twice (on two machines, or after a worker was lost)
has the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .memory import MatrixTooLargeError, human
from .weights import value_dtype
from .pattern import axis_pattern
from .spmm import csr_matmul

__all__ = [
    "block_index_dtype",
    "block_nbytes",
    "row_blocks",
    "slab_buffer",
    "slab_buffer_nbytes",
    "build_block",
    "slabs",
    "slab_support",
    "slab_nbytes",
    "build_slab",
    "combine",
    "tree_order",
    "slab_forward",
    "slab_adjoint",
    "embed",
    "reduce_partials",
]

_INT32_MAX = int(np.iinfo(np.int32).max)


def block_index_dtype(nnz: int, shape) -> np.dtype:
    """int32 when the block's non-zeros and both dimensions fit in int32, else int64."""
    return np.dtype(np.int32 if max(int(nnz), *(int(s) for s in shape)) <= _INT32_MAX else np.int64)


def block_nbytes(nnz: int, shape, dtype) -> int:
    """Bytes of a CSR block: ``nnz (value + index) + (rows + 1) index``, with :func:`block_index_dtype`."""
    idx = block_index_dtype(nnz, shape).itemsize
    return int(nnz) * (np.dtype(dtype).itemsize + idx) + (int(shape[0]) + 1) * idx


def _check_block_bytes(block_bytes) -> int:
    if isinstance(block_bytes, (bool, np.bool_)) or not isinstance(block_bytes, (int, np.integer)):
        raise TypeError(f"block_bytes must be an int (a number of bytes), got {block_bytes!r}")
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1 (a number of bytes), got {block_bytes!r}")
    return int(block_bytes)


def _largest_fit(lo: int, hi: int, fits) -> int:
    """The largest ``b`` in ``[lo, hi]`` with ``fits(b)``, ``fits`` monotone and ``fits(lo)`` true."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def row_blocks(plan, dtype, block_bytes) -> list[tuple[int, int]]:
    """Contiguous row ranges ``(start, stop)`` covering ``plan``'s matrix, each of at most ``block_bytes`` bytes.

    Parameters
    ----------
    plan : ConvPlan
    dtype : numpy dtype
        The values' dtype.
    block_bytes : int
        Bytes of one block as built by :func:`build_block` (:func:`block_nbytes`).

    Returns
    -------
    list of (int, int)

    Raises
    ------
    ValueError
        One row alone takes more than ``block_bytes``.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_plan
    >>> plan = conv_plan((4, 4, 3, 3), (16, 16), padding=1)
    >>> blocks = row_blocks(plan, np.float64, 40_000)
    >>> blocks[0], blocks[-1][1] == plan.shape[0], len(blocks)
    ((0, 101), True, 11)
    """
    block_bytes = _check_block_bytes(block_bytes)
    dtype = value_dtype(np.dtype(np.float64), dtype)
    m, n = plan.shape

    def size(a, b):
        return block_nbytes(plan.row_nnz(a, b), (b - a, n), dtype)

    out, a = [], 0
    while a < m:
        if size(a, a + 1) > block_bytes:
            raise ValueError(
                f"block_bytes={block_bytes!r} is too small: row {a} alone takes {size(a, a + 1):,} bytes as {dtype}"
            )
        b = _largest_fit(a + 1, m, lambda b: size(a, b) <= block_bytes)
        out.append((a, b))
        a = b
    return out


_ALIGN = 64


def slab_buffer_nbytes(plan, slab_list, dtype) -> int:
    """Bytes of :func:`slab_buffer`: the largest slab's, and room to align its three arrays."""
    return max(slab_nbytes(plan, dtype, j0, j1, (f0, f1)) for j0, j1, f0, f1 in slab_list) + 3 * _ALIGN


def slab_buffer(plan, slab_list, dtype) -> np.ndarray:
    """Raw bytes that hold any one of the slabs (:func:`build_slab` with ``buffer``)."""
    return np.empty(slab_buffer_nbytes(plan, slab_list, dtype), dtype=np.uint8)


def _views(buffer, nnz, rows, idt, dtype):
    """``(data, indices, indptr)`` of a CSR matrix of ``nnz`` entries and ``rows`` rows, as aligned views of ``buffer``."""
    out, pos = [], 0
    for n, dt in ((nnz, np.dtype(dtype)), (nnz, idt), (rows + 1, idt)):
        pos = -(-pos // _ALIGN) * _ALIGN
        out.append(buffer[pos : pos + n * dt.itemsize].view(dt))
        pos += n * dt.itemsize
    return tuple(out)


def build_block(plan, weight, rows, dtype, *, threads=None):
    """Rows ``[start, stop)`` of ``plan``'s matrix as a ``scipy.sparse.csr_array``, int32 indices when they fit.

    The same bits as the same rows of ``plan.build(weight, dtype=dtype)``.
    """
    C = plan.build(weight, rows=rows, dtype=dtype, threads=threads)
    idt = block_index_dtype(C.nnz, C.shape)
    if C.indices.dtype != idt:
        C = sp.csr_array((C.data, C.indices.astype(idt), C.indptr.astype(idt)), shape=C.shape, copy=False)
    return C


# --------------------------------------------------------------------------- #
# slabs: all output channels at a range of output positions
# --------------------------------------------------------------------------- #
def _spatial(shape) -> int:
    return math.prod(shape[1:])


def _axis_reach(plan):
    """Per spatial axis, the first and last column position each row position reads (-1: none)."""
    out = []
    for ax in plan.geometry.axes:
        p = axis_pattern(ax)
        if plan.transposed:
            p = p.transpose()
        nonempty = p.ptr[1:] > p.ptr[:-1]
        first = np.full(p.n_rows, -1, dtype=np.int64)
        last = np.full(p.n_rows, -1, dtype=np.int64)
        first[nonempty] = p.cols[p.ptr[:-1][nonempty]]
        last[nonempty] = p.cols[p.ptr[1:][nonempty] - 1]
        out.append((first, last))
    return out


def slab_support(plan, j0: int, j1: int, reach=None) -> tuple[int, int]:
    """The flat input positions ``[f0, f1)`` read by the output positions ``[j0, j1)`` (flat, C order).

    The rows of a slab read, on each axis ``a``, the inputs
    ``[min_j (j s - lo), max_j (j s - lo + (k-1) d)]`` over the slab's
    positions ``j`` on that axis (clipped, or mapped by the padding mode:
    taken from the per-axis tables of :func:`convmat.pattern.axis_pattern`);
    ``[f0, f1)`` is the flat range from the low corner of that box to its high
    corner.  An axis is taken whole when the slab spans more than one value
    of the axes before it.  Every input channel of the slab's rows is read
    (a slab holds every output channel).

    Examples
    --------
    >>> from convmat import conv_plan
    >>> plan = conv_plan((1, 1, 3, 3), (8, 8), padding=1)   # 8 x 8 outputs
    >>> slab_support(plan, 16, 24)                           # output row 2 reads input rows 1..3
    (8, 32)
    """
    reach = _axis_reach(plan) if reach is None else reach
    out_sp = plan.output_shape[1:]
    in_sp = plan.input_shape[1:]
    lo = np.unravel_index(j0, out_sp)
    hi = np.unravel_index(j1 - 1, out_sp)
    box_lo, box_hi = [], []
    same_prefix = True
    for a, ((first, last), o) in enumerate(zip(reach, out_sp)):
        r0, r1 = (int(lo[a]), int(hi[a])) if same_prefix else (0, o - 1)
        same_prefix = same_prefix and lo[a] == hi[a]
        f, l_ = first[r0 : r1 + 1], last[r0 : r1 + 1]
        have = l_ >= 0
        if not have.any():
            return (0, 0)
        box_lo.append(int(f[have].min()))
        box_hi.append(int(l_[have].max()))
    return int(np.ravel_multi_index(box_lo, in_sp)), int(np.ravel_multi_index(box_hi, in_sp)) + 1


def slab_nbytes(plan, dtype, j0: int, j1: int, support) -> int:
    """Bytes of :func:`build_slab`'s matrix for output positions ``[j0, j1)``."""
    R = plan.output_shape[0]
    nnz = R * plan.row_nnz(j0, j1)
    width = plan.input_shape[0] * (support[1] - support[0])
    return block_nbytes(nnz, (R * (j1 - j0), width), value_dtype(np.dtype(np.float64), dtype))


def slabs(plan, dtype, block_bytes) -> list[tuple[int, int, int, int]]:
    """Slabs ``(j0, j1, f0, f1)`` covering the output positions, each of at most ``block_bytes`` bytes.

    A slab holds the rows of every output channel at the flat output
    positions ``[j0, j1)`` and reads every input channel at the flat input
    positions ``[f0, f1)`` (:func:`slab_support`).

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_plan
    >>> plan = conv_plan((2, 2, 3, 3), (8, 8), padding=1)
    >>> slabs(plan, np.float64, 6_000)[:2]
    [(0, 17, 0, 32), (17, 31, 8, 40)]
    """
    block_bytes = _check_block_bytes(block_bytes)
    reach = _axis_reach(plan)
    O = _spatial(plan.output_shape)

    def size(a, b):
        return slab_nbytes(plan, dtype, a, b, slab_support(plan, a, b, reach))

    out, a = [], 0
    while a < O:
        if size(a, a + 1) > block_bytes:
            raise ValueError(
                f"block_bytes={block_bytes!r} is too small: the {plan.output_shape[0]} rows of output position {a} "
                f"take {size(a, a + 1):,} bytes as {np.dtype(dtype)}"
            )
        b = _largest_fit(a + 1, O, lambda b: size(a, b) <= block_bytes)
        out.append((a, b, *slab_support(plan, a, b, reach)))
        a = b
    return out


def build_slab(plan, weight, slab, dtype, *, threads=None, buffer=None):
    """The rows of slab ``(j0, j1, f0, f1)``, columns renumbered onto its support: a ``csr_array``.

    Shape ``(R (j1 - j0), C_in (f1 - f0))``: row ``c (j1 - j0) + (j - j0)`` is
    row ``c O + j`` of the matrix, column ``c' (f1 - f0) + (f - f0)`` is column
    ``c' F + f`` (``O``, ``F`` the output and input positions per channel).
    Rows keep their entries in the same order, so each row of
    ``build_slab(...) @ halo`` has the bits of the same row of ``C @ x``.
    Built by the assembler directly with the renumbered columns
    (:func:`convmat.assemble.build_slab_csr`); with ``buffer``
    (:func:`slab_buffer`), into it (the arrays are views of it, overwritten by
    the next slab built there).
    """
    from .assemble import build_slab_csr

    j0, j1, f0, f1 = (int(v) for v in slab)
    R, Cin = plan.output_shape[0], plan.input_shape[0]
    nnz, rows = R * plan.row_nnz(j0, j1), R * (j1 - j0)
    idt = block_index_dtype(nnz, (rows, Cin * (f1 - f0)))
    out = None
    if buffer is not None:
        out = _views(buffer, nnz, rows, idt, value_dtype(np.asarray(weight).dtype, dtype))
    return build_slab_csr(plan, weight, slab, idt, dtype=dtype, threads=threads, out=out)


def check_block_fits(need: int, limit: int, what: str, fits_bytes: int) -> None:
    """Refuse a block of ``need`` bytes where ``limit`` bytes are available, naming a ``block_bytes`` that fits."""
    if need > limit:
        raise MatrixTooLargeError(
            f"a block of {human(need)} ({need:,} bytes) is larger than {what} ({human(limit)}, {limit:,} bytes); "
            f"use block_bytes={fits_bytes:,} or less"
        )


# --------------------------------------------------------------------------- #
# the adjoint's partial sums, in a fixed order
# --------------------------------------------------------------------------- #
def combine(left, right):
    """``left + right`` of two partial sums ``(f0, f1, array (C, f1 - f0, N))`` on the union of their ranges.

    ``left`` is copied into zeros, ``right`` added: every entry is
    ``left + right`` (or ``0 + right`` where ``left`` does not reach), the same
    bits wherever it runs.
    """
    (a0, a1, A), (b0, b1, B) = left, right
    lo, hi = min(a0, b0), max(a1, b1)
    out = np.zeros((A.shape[0], hi - lo) + A.shape[2:], dtype=np.result_type(A, B))
    out[:, a0 - lo : a1 - lo] = A
    out[:, b0 - lo : b1 - lo] += B
    return lo, hi, out


def tree_order(n: int) -> list[list[tuple[int, int]]]:
    """The fixed reduction tree of ``n`` partial sums: levels of pairs ``(i, j)``, ``i`` absorbing ``j``.

    Level by level, neighbours are combined: ``(0, 1), (2, 3), ...``, then
    ``(0, 2), (4, 6), ...``.  The order depends on ``n`` only.

    Examples
    --------
    >>> tree_order(5)
    [[(0, 1), (2, 3)], [(0, 2)], [(0, 4)]]
    """
    levels, step = [], 1
    while step < n:
        levels.append([(i, i + step) for i in range(0, n - step, 2 * step)])
        step *= 2
    return levels


# --------------------------------------------------------------------------- #
# one slab's products (run where the slab is: a worker, or this process)
# --------------------------------------------------------------------------- #
def slab_forward(B, halo, R, threads=1):
    """``B @ halo`` for images: ``halo`` ``(N, C_in, f1 - f0)`` -> ``(N, R, j1 - j0)``."""
    N, C, L = halo.shape
    H = np.ascontiguousarray(np.transpose(halo, (1, 2, 0))).reshape(C * L, N)
    Y = csr_matmul(B, H, threads=threads)  # (R (j1 - j0), N)
    return np.ascontiguousarray(Y.T).reshape(N, R, B.shape[0] // R)


def slab_adjoint(B, slab, y_part, threads=1):
    """The partial sum ``(f0, f1, B^H y_part)``: ``y_part`` ``(N, R, j1 - j0)`` -> array ``(C_in, f1 - f0, N)``."""
    N = y_part.shape[0]
    Y = np.ascontiguousarray(np.transpose(y_part, (1, 2, 0))).reshape(B.shape[0], N)
    X = csr_matmul(B, Y, transpose=True, conjugate=True, threads=threads)
    f0, f1 = int(slab[2]), int(slab[3])
    return f0, f1, X.reshape(B.shape[1] // (f1 - f0), f1 - f0, N)


def embed(part, F):
    """A partial sum ``(f0, f1, (C, f1 - f0, N))`` as images ``(N, C, F)`` (zeros elsewhere)."""
    f0, f1, A = part
    out = np.zeros((A.shape[2], A.shape[0], F), dtype=A.dtype)
    out[:, :, f0:f1] = np.transpose(A, (2, 0, 1))
    return out


def reduce_partials(parts):
    """The partial sums added along :func:`tree_order`: what :mod:`convmat.dask` computes, in this process."""
    parts = list(parts)
    for level in tree_order(len(parts)):
        for i, j in level:
            parts[i] = combine(parts[i], parts[j])
    return parts[0]

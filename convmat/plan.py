"""What a convolution matrix is, before it is built: :class:`ConvPlan`.

A plan holds the geometry and answers, in closed form (:mod:`convmat.sizes`),
the matrix's shape, nnz, bytes, the non-zeros of any block of rows and a
partition into row blocks; :meth:`ConvPlan.build` hands the work to
:func:`convmat.assemble.build_csr`.  Creating a plan allocates nothing
row-sized, whatever the geometry.
"""

from __future__ import annotations

import math

import numpy as np

from . import geometry as G
from .errors import ParameterError, ParameterTypeError
from .memory import human
from .sizes import axis_max_row, axis_nnz, axis_nnz_before

__all__ = ["ConvPlan", "normalize_rows"]

_INT32_MAX = np.iinfo(np.int32).max


def normalize_rows(rows, n_rows: int) -> tuple[int, int]:
    """``rows`` (None, a step-1 slice or a ``(start, stop)`` pair) as ``0 <= start <= stop <= n_rows``."""
    if rows is None:
        return 0, n_rows
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ParameterError("rows", f"rows must be a contiguous range (step 1), got {rows!r}")
        start, stop, _ = rows.indices(n_rows)
    elif isinstance(rows, (tuple, list)) and len(rows) == 2:
        start, stop = (G.as_int(v, "rows") for v in rows)
    else:
        raise ParameterTypeError("rows", f"rows must be a slice or a (start, stop) pair, got {rows!r}")
    if not (0 <= start <= stop <= n_rows):
        raise ParameterError(
            "rows", f"rows must satisfy 0 <= start <= stop <= {n_rows} (the matrix's rows), got {rows!r}"
        )
    return start, stop


def _unravel(r: int, grid) -> list[int]:
    """``np.unravel_index`` in Python ints (sizes beyond int64 products stay exact)."""
    out = []
    for n in reversed(grid):
        r, j = divmod(r, n)
        out.append(j)
    return out[::-1]


class ConvPlan:
    """The sparsity pattern of a convolution matrix: build it many times, with any weights.

    Create plans with :func:`conv_plan` and :func:`conv_transpose_plan`.
    A plan knows the matrix's shape, nnz and bytes before anything is built.

    Attributes
    ----------
    geometry : ConvGeometry
        The forward convolution.  For a transposed plan the matrix is the
        transpose of this geometry's matrix.
    transposed : bool
    input_shape, output_shape : tuple of int
        ``(C, *spatial)`` of the operation the matrix applies: ``y = A @ x``
        maps ``x.ravel()`` of shape ``input_shape`` to ``output_shape``.
    shape : (int, int)
        ``(prod(output_shape), prod(input_shape))``.
    nnz : int
    index_dtype : numpy.dtype
        int32 when nnz and both dimensions fit, int64 otherwise.
    """

    def __init__(self, geometry: G.ConvGeometry, *, transposed: bool = False):
        g = self.geometry = geometry
        self.transposed = bool(transposed)
        self.groups = g.groups
        fwd_in, fwd_out = (g.in_channels, *g.in_shape), (g.out_channels, *g.out_shape)
        self.input_shape, self.output_shape = (fwd_out, fwd_in) if self.transposed else (fwd_in, fwd_out)
        self.row_channels, self.col_channels = self.output_shape[0], self.input_shape[0]
        self.cols_per_group = self.col_channels // self.groups
        self.shape = (math.prod(self.output_shape), math.prod(self.input_shape))
        per_axis = [axis_nnz(ax) for ax in g.axes]
        self._tails = tuple(math.prod(per_axis[a + 1 :]) for a in range(len(per_axis)))
        #: non-zeros of one row channel (all in-group column channels)
        self.channel_nnz = self.cols_per_group * math.prod(per_axis)
        self.nnz = self.row_channels * self.channel_nnz
        big = max(self.nnz, *self.shape)
        self.index_dtype = np.dtype(np.int32 if big <= _INT32_MAX else np.int64)
        self._transpose = None

    # ------------------------------------------------------------------ #
    @property
    def ndim(self) -> int:
        return self.geometry.ndim

    @property
    def grid(self) -> tuple[int, ...]:
        """Rows of each axis: the spatial shape of the output (spatial rows ravel it)."""
        return self.output_shape[1:]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``(C_out, C_in/groups, *k)`` forward, ``(C_in, C_out/groups, *k)`` transposed.

        Both are ``(geometry.out_channels, geometry.in_channels/groups, *k)``:
        a transposed plan's geometry is the forward convolution it transposes.
        """
        g = self.geometry
        return (g.out_channels, g.in_channels // g.groups, *g.kernel_size)

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """``(lo, hi)`` per axis, as the convolution was called."""
        return self.geometry.padding

    @property
    def output_padding(self) -> tuple[int, ...]:
        """Per axis ``a`` of a transposed plan (zeros for a forward plan)."""
        return self.geometry.output_padding

    def nbytes(self, dtype=np.float64, rows=None) -> int:
        """Bytes of the CSR matrix (or of a block of its rows) with values of ``dtype``."""
        from .weights import value_dtype

        start, stop = normalize_rows(rows, self.shape[0])
        nnz = self.nnz if (start, stop) == (0, self.shape[0]) else self.row_nnz(start, stop)
        item = value_dtype(np.dtype(np.float64), dtype).itemsize
        idx = self.index_dtype.itemsize
        return nnz * (item + idx) + (stop - start + 1) * idx

    def max_row_nnz(self) -> int:
        """The largest number of non-zeros in a row (``plan.transpose().max_row_nnz()``: in a column)."""
        return self.cols_per_group * math.prod(axis_max_row(ax, self.transposed) for ax in self.geometry.axes)

    def row_nnz(self, start: int, stop: int) -> int:
        """Non-zeros in rows ``[start, stop)``, without building them (nor any row-sized array)."""
        start, stop = normalize_rows((start, stop), self.shape[0])
        return self.nnz_before(stop) - self.nnz_before(start)

    def spatial_nnz_before(self, r: int) -> int:
        """Non-zeros in spatial rows ``[0, r)`` of one row channel, in closed form.

        Spatial rows before ``(j_1, ..., j_D)`` in C order first differ on some
        axis ``a``, where they are smaller: they hold
        ``sum_a prod_{b<a} len_b(j_b) * before_a(j_a) * prod_{b>a} nnz_b``
        entries per in-group column channel.
        """
        axes, grid = self.geometry.axes, self.grid
        if r >= math.prod(grid):
            return self.channel_nnz
        total, head = 0, 1
        for a, (ax, j) in enumerate(zip(axes, _unravel(r, grid))):
            before = axis_nnz_before(ax, j, self.transposed)
            total += head * before * self._tails[a]
            head *= axis_nnz_before(ax, j + 1, self.transposed) - before
            if head == 0:
                break
        return self.cols_per_group * total

    def nnz_before(self, r: int) -> int:
        """Non-zeros in rows ``[0, r)`` of the matrix."""
        c, rem = divmod(r, math.prod(self.grid))
        return c * self.channel_nnz + self.spatial_nnz_before(rem)

    def transpose(self) -> "ConvPlan":
        """The plan of this matrix's transpose, built directly in CSR by the same builder.

        It takes the same weight.  For a forward plan it is the plan of ``C.T``
        for every padding mode (for ``'zeros'``, a transposed convolution);
        ``plan.transpose().transpose()`` has the pattern of ``plan``.

        Examples
        --------
        >>> import numpy as np
        >>> from convmat import conv_plan
        >>> w = np.arange(1.0, 4.0).reshape(1, 1, 3)
        >>> plan = conv_plan(w, (5,), padding=1, padding_mode="reflect")
        >>> C, CT = plan.build(w), plan.transpose().build(w)
        >>> bool((C.T != CT).nnz == 0)
        True
        """
        if self._transpose is None:
            self._transpose = ConvPlan(self.geometry, transposed=not self.transposed)
            self._transpose._transpose = self
        return self._transpose

    def density(self) -> float:
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    def __repr__(self) -> str:
        g = self.geometry
        kind = f"conv_transpose{self.ndim}d" if self.transposed else f"conv{self.ndim}d"
        extra = f", output_padding={self.output_padding}" if self.transposed else ""
        return "\n".join([
            f"ConvPlan({kind}: input {self.input_shape} -> output {self.output_shape}",
            f"  kernel_size={g.kernel_size}, stride={g.stride}, padding={self.padding}{extra}, "
            f"dilation={g.dilation}, groups={g.groups}, padding_mode={g.padding_mode!r}",
            f"  matrix {self.shape[0]} x {self.shape[1]}, nnz {self.nnz:,} ({100 * self.density():.3g}% dense), "
            f"{self.index_dtype} indices, {human(self.nbytes(np.float32))} as float32, "
            f"{human(self.nbytes(np.float64))} as float64)",
        ])

    def row_blocks(self, max_nnz=None, *, max_rows=None):
        """Contiguous row ranges ``(start, stop)`` covering the matrix, each with at most ``max_nnz`` non-zeros.

        Pass each to :meth:`build` as ``rows=(start, stop)``.  Computed in
        closed form (:meth:`row_nnz`), without building anything.  A single
        row with more than ``max_nnz`` non-zeros is an error.

        Examples
        --------
        >>> from convmat import conv_plan
        >>> plan = conv_plan((64, 64, 3, 3), (56, 56), padding=1)
        >>> blocks = list(plan.row_blocks(max_nnz=30_000_000))
        >>> len(blocks), blocks[0], blocks[-1][1] == plan.shape[0]
        (4, (0, 53362), True)
        >>> max(plan.row_nnz(a, b) for a, b in blocks) <= 30_000_000
        True
        """
        n = self.shape[0]
        max_nnz = max(self.nnz, 1) if max_nnz is None else G.as_int(max_nnz, "max_nnz")
        max_rows = n if max_rows is None else G.as_int(max_rows, "max_rows")
        if max_nnz < 1 or max_rows < 1:
            raise ParameterError(
                "max_nnz" if max_nnz < 1 else "max_rows",
                f"max_nnz and max_rows must be >= 1, got max_nnz={max_nnz!r}, max_rows={max_rows!r}",
            )
        start = 0
        while start < n:
            base = self.nnz_before(start)
            lo, hi = start + 1, min(n, start + max_rows)  # the largest stop in [lo, hi] that fits
            if self.nnz_before(lo) - base > max_nnz:
                raise ParameterError(
                    "max_nnz",
                    f"row {start} alone has {self.nnz_before(lo) - base:,} non-zeros, more than max_nnz={max_nnz:,}",
                )
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.nnz_before(mid) - base <= max_nnz:
                    lo = mid
                else:
                    hi = mid - 1
            yield start, lo
            start = lo

    def build(
        self, weight, *, dtype=None, flip=False, rows=None, backend="scipy", device=None, max_bytes=None, threads=None
    ):
        """Fill the pattern with ``weight``: the CSR matrix, or rows ``[start, stop)`` of it.

        Parameters
        ----------
        weight : array, shape :attr:`weight_shape`
        dtype : {float32, float64, complex64, complex128}, optional
            Defaults to the weight's dtype (float64 for integer weights).
        flip : bool
            Use the spatially flipped kernel (true convolution, as ``scipy.signal.convolve``).
        rows : slice or (start, stop), optional
            Build only this contiguous block of rows (same code path).
        backend : {'scipy', 'cupy', 'torch'}
            ``'scipy'``: NumPy arrays, ``scipy.sparse.csr_array``.  ``'cupy'``:
            built on the CUDA device, ``cupyx.scipy.sparse.csr_matrix``.
            ``'torch'``: built on the torch device, ``torch.sparse_csr_tensor``.
        device : optional
            The device of backend ``'cupy'`` (a device number) or ``'torch'``
            (``'cpu'``, ``'cuda:0'``...); default: CuPy's current device,
            the device of a torch weight, else the CPU.
        max_bytes : int, optional
            Refuse (MatrixTooLargeError) when the build's peak memory (result,
            tables and temporaries) would pass it; default: the smallest of the
            available memory, the cgroup limit and ``RLIMIT_AS`` headroom (on a
            GPU backend, the device's free memory).
        threads : int, optional
            Host threads (default: the usable cores for ``'scipy'``, 1 for
            libraries that parallelise by themselves).
        """
        from .assemble import build_csr

        return build_csr(self, weight, dtype=dtype, flip=flip, rows=rows, backend=backend, device=device,
                         max_bytes=max_bytes, threads=threads)

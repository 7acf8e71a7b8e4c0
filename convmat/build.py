"""Sparse convolution matrices: pattern + weights -> CSR.

A :class:`ConvPlan` holds everything that depends on geometry only (the
per-axis tables of :mod:`convmat.pattern`, shapes, nnz, bytes).  Its
:meth:`ConvPlan.build` fills in the weights and returns the CSR matrix, or
any contiguous block of its rows, through one code path.

How the matrix is assembled
---------------------------
Row ``r = c * O + ravel(j)`` (``O`` output positions per channel) holds the
entries ``(ci, p_1, ..., p_D)`` in that order: the in-group input channel,
then one entry of each axis table.  Its columns,
``(group*Cg + ci) * N + sum_a col_a[p_a] * N_a``, are therefore sorted,
because each axis table is.  The columns of a row depend on the output
channel only through its group, so they are computed once per (group,
spatial row range) straight into the final index array, and every other
output channel copies them with an offset.  Values come from one gather per
output channel (per tap slot), from the kernel padded with a zero that the
sentinel tap points at.  Temporaries are ``nnz / C_out`` long, so building
costs about what writing the final arrays costs, in time and in memory.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import geometry as G
from .backends import array_library, get_backend
from .pattern import AxisPattern, axis_pattern

__all__ = [
    "ConvPlan",
    "MatrixTooLargeError",
    "conv_plan",
    "conv_transpose_plan",
    "conv_matrix",
    "conv_transpose_matrix",
]

#: dtypes a matrix may hold.
VALUE_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))
_INT32_MAX = np.iinfo(np.int32).max
#: Below this many non-zeros a thread pool costs more than it saves.
_THREADED_NNZ = 1 << 20
#: Spatial rows are built in chunks of about this many entries per channel (bounds temporaries).
_CHUNK_NNZ = 1 << 20


class MatrixTooLargeError(MemoryError):
    """A matrix (or row block) would not fit in the memory limit; raised before allocating."""


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"  # pragma: no cover


def _value_dtype(weight_dtype, dtype) -> np.dtype:
    """The dtype of the matrix values, or a TypeError that lists what is allowed."""
    allowed = ", ".join(str(t) for t in VALUE_DTYPES)
    if dtype is not None:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be one of {allowed}, got {dtype!r}") from None
        if dt not in VALUE_DTYPES:
            raise TypeError(f"dtype must be one of {allowed}, got {dtype!r}")
        if weight_dtype.kind == "c" and dt.kind != "c":
            raise TypeError(f"dtype {dt} would drop the imaginary part of a {weight_dtype} weight")
        return dt
    if weight_dtype in VALUE_DTYPES:
        return weight_dtype
    if weight_dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"weight dtype must be one of {allowed} (or integer), got {weight_dtype}")


def _weight_shape(weight):
    shape = getattr(weight, "shape", None)
    if shape is None:
        raise TypeError(f"weight must be an array, got {type(weight).__name__}")
    return tuple(int(v) for v in shape)


def _as_host_weight(weight, be=None, name="weight"):
    """The weight as a NumPy array whose dtype and shape can be checked (no copy for NumPy arrays).

    Weights are small: they are prepared on the host and moved to the
    backend's device.  A weight on a device the backend ``be`` does not use
    (a CuPy array for ``'scipy'``, a CUDA tensor for ``'cupy'``) is a TypeError.
    """
    lib = array_library(weight)
    target = "the host" if be is None else f"backend {be.name!r}"
    if lib == "cupy":
        if be is None or be.name != "cupy":
            raise TypeError(
                f"{name} is a CuPy array (on a CUDA device), but the matrix is built for {target}; "
                f"pass backend='cupy', or {name}.get()"
            )
        arr = weight.get()
    elif lib == "torch":
        if getattr(weight, "layout", None) is not None and str(weight.layout) != "torch.strided":
            raise TypeError(f"{name} must be a dense tensor, got layout {weight.layout}")
        if weight.device.type != "cpu" and (be is None or be.name != "torch"):
            raise TypeError(
                f"{name} is a torch tensor on device {weight.device}, but the matrix is built for {target}; "
                f"pass backend='torch', or {name}.cpu()"
            )
        arr = weight.detach().resolve_conj().cpu().numpy()
    elif isinstance(weight, np.ndarray):
        arr = weight
    else:
        try:  # lists and other array-likes
            arr = np.asarray(weight)
        except (ValueError, TypeError, RuntimeError):
            raise TypeError(
                f"{name} must be an array of numbers, got {type(weight).__module__}.{type(weight).__name__}"
            ) from None
    if arr.dtype == object or arr.dtype.kind not in "biufc":
        got = f"dtype {arr.dtype}" if hasattr(weight, "dtype") else f"{weight!r:.80}"
        raise TypeError(f"{name} must be an array of numbers, got {got}")
    return arr


def _normalize_rows(rows, n_rows: int) -> tuple[int, int]:
    if rows is None:
        return 0, n_rows
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ValueError(f"rows must be a contiguous range (step 1), got {rows!r}")
        start, stop, _ = rows.indices(n_rows)
    elif isinstance(rows, (tuple, list)) and len(rows) == 2:
        start, stop = (G.as_int(v, "rows") for v in rows)
    else:
        raise TypeError(f"rows must be a slice or a (start, stop) pair, got {rows!r}")
    if not (0 <= start <= stop <= n_rows):
        raise ValueError(f"rows must satisfy 0 <= start <= stop <= {n_rows} (the matrix's rows), got {rows!r}")
    return start, stop


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
        self.geometry = geometry
        self.transposed = bool(transposed)
        fwd = tuple(axis_pattern(ax) for ax in geometry.axes)
        g = geometry
        if self.transposed:
            self._axes: tuple[AxisPattern, ...] = tuple(p.transpose() for p in fwd)
            self._row_channels, self._col_channels = g.in_channels, g.out_channels
            self.input_shape = (g.out_channels, *g.out_shape)
            self.output_shape = (g.in_channels, *g.in_shape)
        else:
            self._axes = fwd
            self._row_channels, self._col_channels = g.out_channels, g.in_channels
            self.input_shape = (g.in_channels, *g.in_shape)
            self.output_shape = (g.out_channels, *g.out_shape)
        self.groups = g.groups
        self.shape = (math.prod(self.output_shape), math.prod(self.input_shape))
        # Per output position: entries per row = (col channels per group) * prod(axis lengths).
        self._cols_per_group = self._col_channels // self.groups
        self.nnz = self._row_channels * self._cols_per_group * math.prod(p.nnz for p in self._axes)
        big = max(self.nnz, *self.shape)
        self.index_dtype = np.dtype(np.int32 if big <= _INT32_MAX else np.int64)
        self._slots = tuple(p.slots for p in self._axes)
        self._xp_tables = {}
        self._transpose = None

    # ------------------------------------------------------------------ #
    # sizes
    # ------------------------------------------------------------------ #
    @property
    def ndim(self) -> int:
        return len(self._axes)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``(C_out, C_in/groups, *k)`` forward, ``(C_in, C_out/groups, *k)`` transposed.

        Both are ``(geometry.out_channels, geometry.in_channels/groups, *k)``:
        a transposed plan's geometry is the forward convolution it transposes.
        """
        g = self.geometry
        return (g.out_channels, g.in_channels // g.groups, *g.kernel_size)

    def nbytes(self, dtype=np.float64, rows=None) -> int:
        """Bytes of the CSR matrix (or of a block of its rows) with values of ``dtype``."""
        start, stop = _normalize_rows(rows, self.shape[0])
        nnz = self.nnz if (start, stop) == (0, self.shape[0]) else self.row_nnz(start, stop)
        item = _value_dtype(np.dtype(np.float64), dtype).itemsize
        idx = self.index_dtype.itemsize
        return nnz * (item + idx) + (stop - start + 1) * idx

    def _spatial_row_lengths(self) -> np.ndarray:
        lengths = np.ones(1, dtype=np.int64)
        for p in self._axes:
            lengths = np.multiply.outer(lengths, p.row_lengths).ravel()
        return lengths * self._cols_per_group

    def max_row_nnz(self) -> int:
        """The largest number of non-zeros in a row (``plan.transpose().max_row_nnz()``: in a column)."""
        lengths = self._spatial_row_lengths()
        return int(lengths.max()) if lengths.size else 0

    def row_nnz(self, start: int, stop: int) -> int:
        """Non-zeros in rows ``[start, stop)``, without building them (nor any row-sized array)."""
        start, stop = _normalize_rows((start, stop), self.shape[0])
        return self._nnz_before(stop) - self._nnz_before(start)

    def _nnz_before(self, r: int) -> int:
        """Non-zeros in rows ``[0, r)``, from the per-axis tables only.

        Spatial rows before ``(j_1, ..., j_D)`` in C order first differ on some
        axis ``a``, where they are smaller: they hold
        ``sum_a prod_{b<a} len_b(j_b) * ptr_a[j_a] * prod_{b>a} nnz_b`` entries
        per in-group input channel.
        """
        O = self.shape[0] // self._row_channels
        per_channel = self.nnz // self._row_channels
        c, rem = divmod(r, O)
        j = np.unravel_index(rem, tuple(p.n_rows for p in self._axes)) if rem < O else None
        total = 0
        if j is not None:
            head = 1
            for a, p in enumerate(self._axes):
                tail = math.prod(q.nnz for q in self._axes[a + 1 :])
                total += head * int(p.ptr[j[a]]) * tail
                head *= int(p.ptr[j[a] + 1] - p.ptr[j[a]])
        else:
            total = per_channel // self._cols_per_group
        return c * per_channel + self._cols_per_group * total

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """``(lo, hi)`` per axis, as the convolution was called."""
        return self.geometry.padding

    @property
    def output_padding(self) -> tuple[int, ...]:
        """Per axis ``a`` of a transposed plan (zeros for a forward plan)."""
        return self.geometry.output_padding

    def transpose(self) -> "ConvPlan":
        """The plan of this matrix's transpose, built directly in CSR by the same builder.

        It takes the same weight.  For a forward plan it is the plan of ``C.T``
        for every padding mode (for ``'zeros'``, a transposed convolution);
        ``plan.transpose().transpose()`` has the pattern of ``plan``.

        Examples
        --------
        >>> import numpy as np
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
        lines = [
            f"ConvPlan({kind}: input {self.input_shape} -> output {self.output_shape}",
            f"  kernel_size={g.kernel_size}, stride={g.stride}, padding={self.padding}{extra}, "
            f"dilation={g.dilation}, groups={g.groups}, padding_mode={g.padding_mode!r}",
            f"  matrix {self.shape[0]} x {self.shape[1]}, nnz {self.nnz:,} ({100 * self.density():.3g}% dense), "
            f"{self.index_dtype} indices, {_human(self.nbytes(np.float32))} as float32, "
            f"{_human(self.nbytes(np.float64))} as float64)",
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------ #
    # weights
    # ------------------------------------------------------------------ #
    def _check_weight(self, weight):
        shape = _weight_shape(weight)
        if shape != self.weight_shape:
            layout = "(C_in, C_out/groups, *kernel_size)" if self.transposed else "(C_out, C_in/groups, *kernel_size)"
            raise ValueError(f"weight must have shape {self.weight_shape} {layout} for this plan, got {shape}")

    def _matrix_weight(self, weight, dtype, flip):
        """Weight as ``(row channels, col channels per group * prod(k + 1))``, zero-padded.

        On the host, in NumPy: the weight is tiny next to the matrix.
        """
        w = np.asarray(weight)
        if flip:
            w = w[(Ellipsis,) + (slice(None, None, -1),) * self.ndim]
        g = self.groups
        if self.transposed:
            # (C_in, C_out/g, *k) -> (C_out, C_in/g, *k): swap the channel axes within each group.
            cin, cog = w.shape[:2]
            w = w.reshape((g, cin // g, cog) + w.shape[2:])
            w = np.swapaxes(w, 1, 2).reshape((g * cog, cin // g) + w.shape[3:])
        padded = np.zeros(w.shape[:2] + tuple(k + 1 for k in w.shape[2:]), dtype=dtype)
        padded[(slice(None), slice(None)) + tuple(slice(0, k) for k in w.shape[2:])] = w
        return padded.reshape(w.shape[0], -1)

    # ------------------------------------------------------------------ #
    # building
    # ------------------------------------------------------------------ #
    def _tables(self, backend):
        key = backend.key
        if key not in self._xp_tables:
            self._xp_tables[key] = [
                (backend.asarray(p.cols), [backend.asarray(np.ascontiguousarray(p.taps[:, s])) for s in range(p.slots)])
                for p in self._axes
            ]
        return self._xp_tables[key]

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
            Refuse (MatrixTooLargeError) to build more than this; default: the
            memory available (on the device, for a GPU backend).
        threads : int, optional
            Host threads (default: the usable cores for ``'scipy'``, 1 for
            libraries that parallelise by themselves).
        """
        be, weight = _backend_and_weight(backend, device, weight)
        self._check_weight(weight)
        vdtype = _value_dtype(np.dtype(weight.dtype), dtype)
        start, stop = _normalize_rows(rows, self.shape[0])
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"flip must be a bool, got {flip!r}")
        threads = be.threads if threads is None else G.as_int(threads, "threads")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        idt = self._block_index_dtype(start, stop, be)
        self._check_memory(vdtype, start, stop, be, max_bytes)
        return self._assemble(weight, vdtype, bool(flip), start, stop, be, threads, idt)

    def _block_index_dtype(self, start, stop, be):
        """The plan's index dtype if the backend takes it, else the narrowest it takes that fits."""
        if self.index_dtype in be.index_dtypes:
            return self.index_dtype
        nnz = self.row_nnz(start, stop)
        idt = be.max_index_dtype_for(nnz, (stop - start, self.shape[1]))
        if idt is None:
            limit = max(int(np.iinfo(t).max) for t in be.index_dtypes)
            raise MatrixTooLargeError(
                f"backend {be.name!r} takes {', '.join(str(t) for t in be.index_dtypes)} indices only, and the "
                f"matrix {'block ' if (start, stop) != (0, self.shape[0]) else ''}of shape ({stop - start}, "
                f"{self.shape[1]}) has {nnz:,} non-zeros, more than {limit:,}; build it in row blocks of at "
                f"most {limit:,} non-zeros: for start, stop in plan.row_blocks(max_nnz={limit}): "
                f"plan.build(weight, rows=(start, stop), backend={be.name!r})"
            )
        return idt

    def row_blocks(self, max_nnz=None, *, max_rows=None):
        """Contiguous row ranges ``(start, stop)`` covering the matrix, each with at most ``max_nnz`` non-zeros.

        Pass each to :meth:`build` as ``rows=(start, stop)``.  Computed from the
        per-axis tables (closed form of :meth:`row_nnz`), without building
        anything.  A single row with more than ``max_nnz`` non-zeros is an error.

        Examples
        --------
        >>> plan = conv_plan((64, 64, 3, 3), (56, 56), padding=1)
        >>> blocks = list(plan.row_blocks(max_nnz=30_000_000))
        >>> len(blocks), blocks[0], blocks[-1][1] == plan.shape[0]
        (4, (0, 53362), True)
        >>> max(plan.row_nnz(a, b) for a, b in blocks) <= 30_000_000
        True
        """
        n = self.shape[0]
        max_nnz = self.nnz if max_nnz is None else G.as_int(max_nnz, "max_nnz")
        max_rows = n if max_rows is None else G.as_int(max_rows, "max_rows")
        if max_nnz < 1 or max_rows < 1:
            raise ValueError(f"max_nnz and max_rows must be >= 1, got max_nnz={max_nnz!r}, max_rows={max_rows!r}")
        start = 0
        while start < n:
            base = self._nnz_before(start)
            lo, hi = start + 1, min(n, start + max_rows)  # the largest stop in [lo, hi] that fits
            if self._nnz_before(lo) - base > max_nnz:
                raise ValueError(
                    f"row {start} alone has {self._nnz_before(lo) - base:,} non-zeros, more than max_nnz={max_nnz:,}"
                )
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._nnz_before(mid) - base <= max_nnz:
                    lo = mid
                else:
                    hi = mid - 1
            yield start, lo
            start = lo

    def _check_memory(self, vdtype, start, stop, be, max_bytes):
        need = self.nbytes(vdtype, rows=(start, stop))
        # temporaries: the tap indices of one chunk, per slot combination (see _assemble)
        per_channel = self.nnz // max(1, self._row_channels)
        need_tmp = min(per_channel, 2 * _CHUNK_NNZ) * 8 * math.prod(self._slots)
        if max_bytes is None:
            limit = be.memory_limit()
            what = "available memory"
        else:
            limit = G.as_int(max_bytes, "max_bytes")
            if limit < 0:
                raise ValueError(f"max_bytes must be >= 0 (a number of bytes), got {max_bytes!r}")
            what = "limit max_bytes"
        if limit is not None and need + need_tmp > limit:
            raise MatrixTooLargeError(
                f"the matrix {'block ' if (start, stop) != (0, self.shape[0]) else ''}of shape "
                f"({stop - start}, {self.shape[1]}) with {self.row_nnz(start, stop):,} non-zeros would take "
                f"{_human(need)} ({need:,} bytes as {vdtype}, plus {_human(need_tmp)} while building), more than "
                f"the {what} ({_human(limit)}); build it in row blocks (rows=...) or raise max_bytes"
            )

    def _assemble(self, weight, vdtype, flip, start, stop, be, threads, idt):
        # Only ``be``'s methods create arrays or write into a given buffer; the rest is
        # slicing, reshape and broadcasting arithmetic, spelled alike by NumPy, CuPy and torch.
        R = self._row_channels
        O = self.shape[0] // R
        N = self.shape[1] // self._col_channels
        Cg = self._cols_per_group
        Rg = R // self.groups

        cum = np.zeros(O + 1, dtype=np.int64)  # entries in spatial rows [0, r) of one channel
        np.cumsum(self._spatial_row_lengths(), out=cum[1:])
        per_channel = int(cum[-1])

        # Pieces (channel, a, b, dst): spatial rows [a, b) of one output channel, written at
        # dst.  Spatial rows are cut into chunks of about _CHUNK_NNZ entries, so temporaries
        # (the tap indices of one chunk) stay small whatever the geometry.
        targets = np.arange(_CHUNK_NNZ, per_channel, _CHUNK_NNZ, dtype=np.int64)
        bounds = np.unique(np.searchsorted(cum, targets, side="left"))
        pieces = []
        first = None
        for c in range(start // O, -(-stop // O) if stop > start else start // O):
            a_c, b_c = max(start - c * O, 0), min(stop - c * O, O)
            edges = [a_c, *bounds[(bounds > a_c) & (bounds < b_c)].tolist(), b_c]
            for a, b in zip(edges[:-1], edges[1:]):
                if a < b:
                    here = c * per_channel + int(cum[a])
                    first = here if first is None else first
                    pieces.append((c, a, b, here - first))
        nnz = sum(int(cum[b] - cum[a]) for _, a, b, _ in pieces)

        # indptr: row (c, r) starts at c * per_channel + cum[r], less the block's first entry
        cum_x = be.asarray(cum)
        indptr = be.zeros(stop - start + 1, dtype=idt)
        pos = 0
        for c, a, b, dst in pieces:  # in row order
            be.add(cum_x[a + 1 : b + 1], dst - int(cum[a]), out=indptr[pos + 1 : pos + 1 + b - a])
            pos += b - a
        del cum_x

        indices = be.empty(nnz, dtype=idt)
        data = be.empty(nnz, dtype=vdtype)
        if nnz == 0:
            return be.csr(data, indices, indptr, (stop - start, self.shape[1]))

        W = be.asarray(self._matrix_weight(weight, vdtype, flip))
        tables = self._tables(be)
        combos = list(itertools.product(*(range(m) for m in self._slots)))
        by_range = {}
        for piece in pieces:
            by_range.setdefault(piece[1:3], []).append(piece)

        def channel(piece, template):
            c, a, b, dst = piece
            grp_t, src, taps = template
            length = int(cum[b] - cum[a])
            out_i = indices[dst : dst + length]
            if src != dst:
                shift = (c // Rg - grp_t) * Cg * N
                if shift:
                    be.add(indices[src : src + length], shift, out=out_i)
                else:
                    out_i[...] = indices[src : src + length]
            out_v = data[dst : dst + length]
            be.take(W[c], taps[0], out_v)
            if len(taps) > 1:
                tmp = be.empty(length, dtype=vdtype)
                for t in taps[1:]:
                    be.take(W[c], t, tmp)
                    out_v += tmp

        pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and nnz >= _THREADED_NNZ else None
        try:
            for (a, b), group in by_range.items():
                # The template: indices straight into the final array (for the first channel
                # of this range), tap indices into temporaries; then every channel of the range.
                c, _, _, dst = group[0]
                length = int(cum[b] - cum[a])
                taps = [be.empty(length, dtype=np.int64) for _ in combos]
                self._fill_range(a, b, (c // Rg) * Cg * N, indices[dst : dst + length], taps, combos, tables, be, N)
                template = (c // Rg, dst, taps)
                if pool is not None and len(group) > 1:
                    list(pool.map(channel, group, itertools.repeat(template)))
                else:
                    for piece in group:
                        channel(piece, template)
                del taps, template
        finally:
            if pool is not None:
                pool.shutdown()
        return be.csr(data, indices, indptr, (stop - start, self.shape[1]))

    def _fill_range(self, a, b, col_offset, out_idx, out_taps, combos, tables, be, N):
        """Columns and tap indices of spatial rows ``[a, b)`` of one output channel."""
        axes = self._axes
        D = len(axes)
        Cg = self._cols_per_group
        n_cols = [p.n_cols for p in axes]
        kp = [p.k + 1 for p in axes]
        col_stride = [math.prod(n_cols[i + 1 :]) for i in range(D)]
        tap_stride = [math.prod(kp[i + 1 :]) for i in range(D)]
        ktot = math.prod(kp)
        last = axes[-1]
        oL = last.n_rows
        prefix_shape = tuple(p.n_rows for p in axes[:-1])
        ch = be.arange(Cg, dtype=np.int64)
        ch_cols = ch * N + col_offset
        ch_taps = ch * ktot
        last_cols, last_taps = tables[-1]
        prefix_combos = sorted({cmb[:-1] for cmb in combos})

        layouts = {}
        pos = 0
        for prefix in range(a // oL, (b - 1) // oL + 1):
            c0 = max(a - prefix * oL, 0)
            c1 = min(b - prefix * oL, oL)
            j = np.unravel_index(prefix, prefix_shape) if prefix_shape else ()
            # prefix part: (channel, p_0, ..., p_{D-2}) flattened
            q_cols = ch_cols
            q_taps = {pc: ch_taps for pc in prefix_combos}
            for axis in range(D - 1):
                p = axes[axis]
                lo, hi = int(p.ptr[j[axis]]), int(p.ptr[j[axis] + 1])
                cols_a, taps_a = tables[axis]
                q_cols = (q_cols[:, None] + cols_a[lo:hi][None, :] * col_stride[axis]).ravel()
                q_taps = {
                    pc: (q_taps[pc][:, None] + taps_a[pc[axis]][lo:hi][None, :] * tap_stride[axis]).ravel()
                    for pc in prefix_combos
                }
            q = q_cols.shape[0]
            if q == 0:
                continue
            plan_c = layouts.get((c0, c1))
            if plan_c is None:
                plan_c = layouts[(c0, c1)] = self._last_axis_layout(c0, c1, be)
            for kind, nr, L, first, sel in plan_c:
                size = nr * q * L
                if kind == "run":  # rows [first, first + nr) are consecutive: contiguous writes
                    e0 = int(last.ptr[first])
                    r_cols = last_cols[e0 : e0 + nr * L].reshape(nr, 1, L)
                    dst = out_idx[pos : pos + size].reshape(nr, q, L)
                    be.add(q_cols[None, :, None], r_cols, out=dst)
                    for t_out, cmb in zip(out_taps, combos):
                        r_taps = last_taps[cmb[-1]][e0 : e0 + nr * L].reshape(nr, 1, L)
                        dst_t = t_out[pos : pos + size].reshape(nr, q, L)
                        be.add(q_taps[cmb[:-1]][None, :, None], r_taps, out=dst_t)
                    pos += size
                else:  # rows of one length scattered through the slab: one gather + one scatter
                    entries, starts = sel  # (nr, L) entry numbers; (nr,) row starts in units of q
                    where = (pos + starts * q)[:, None, None] + be.arange(q * L, dtype=np.int64).reshape(1, q, L)
                    be.put(out_idx, where, q_cols[None, :, None] + last_cols[entries][:, None, :])
                    for t_out, cmb in zip(out_taps, combos):
                        be.put(t_out, where, q_taps[cmb[:-1]][None, :, None] + last_taps[cmb[-1]][entries][:, None, :])
            if plan_c and plan_c[0][0] == "class":
                pos += q * int(last.ptr[c1] - last.ptr[c0])
        assert pos == out_idx.shape[0], (pos, out_idx.shape)


    def _last_axis_layout(self, c0, c1, be):
        """How to write last-axis rows ``[c0, c1)`` of a slab: runs or length classes.

        Consecutive rows of equal length ("runs") are written as one contiguous
        block each.  When runs are short (a transposed convolution with stride s
        has rows whose lengths cycle with period s), rows are grouped by length
        instead, and each group is written by one scatter.
        """
        last = self._axes[-1]
        runs = [(r0, r1) for r0, r1 in last.runs(c0, c1) if last.ptr[r0 + 1] > last.ptr[r0]]
        lengths = last.row_lengths[c0:c1]
        classes = np.unique(lengths[lengths > 0])
        if len(runs) <= 2 * len(classes) + 2:
            return [("run", r1 - r0, int(last.ptr[r0 + 1] - last.ptr[r0]), r0, None) for r0, r1 in runs]
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))  # row starts, in units of q
        layout = []
        for L in classes.tolist():
            rows = np.flatnonzero(lengths == L)
            entries = last.ptr[c0 + rows][:, None] + np.arange(L)
            layout.append(("class", rows.size, L, None, (be.asarray(entries), be.asarray(starts[rows]))))
        return layout


# --------------------------------------------------------------------------- #
# public constructors
# --------------------------------------------------------------------------- #
def _backend_and_weight(backend, device, weight):
    """The backend (on the torch weight's device by default) and the weight on the host."""
    if device is None and backend == "torch" and array_library(weight) == "torch":
        device = weight.device
    be = get_backend(backend, device)
    return be, _as_host_weight(weight, be)


def _plan_arguments(weight_shape, in_shape, groups, layout):
    """Validated ``(weight_shape, in_shape, groups)``; ``weight_shape`` may be an array."""
    if hasattr(weight_shape, "shape"):
        weight_shape = weight_shape.shape
    weight_shape = G.normalize_shape(weight_shape, "weight_shape")
    in_shape = G.normalize_shape(in_shape, "in_shape")
    _spatial_ndim_check(weight_shape, in_shape, layout)
    groups = G.as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups!r}")
    return weight_shape, in_shape, groups


def _spatial_ndim_check(weight_shape, in_shape, layout):
    if len(weight_shape) < 3:
        raise ValueError(
            f"weight must have shape {layout} with at least one spatial axis, got shape {tuple(weight_shape)}"
        )
    ndim = len(weight_shape) - 2
    if len(in_shape) != ndim:
        raise ValueError(
            f"weight of shape {tuple(weight_shape)} has {ndim} spatial axes but in_shape {in_shape!r} has "
            f"{len(in_shape)}; weight must be {layout}"
        )


def conv_plan(weight_shape, in_shape, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros") -> ConvPlan:
    """Plan the matrix of a forward convolution without building it.

    Parameters
    ----------
    weight_shape : tuple of int, or an array (its ``.shape`` is used)
        ``(C_out, C_in/groups, *kernel_size)``.
    in_shape : tuple of int
        Spatial input shape.
    stride, padding, dilation, groups, padding_mode
        As :func:`conv_matrix`.

    Returns
    -------
    ConvPlan
        With ``.shape``, ``.nnz``, ``.nbytes(dtype)`` and ``.build(weight)``.

    Examples
    --------
    >>> plan = conv_plan((64, 64, 3, 3), (56, 56), padding=1)
    >>> plan.nnz, plan.shape
    (112869376, (200704, 200704))
    >>> plan.nbytes("float32")
    903757828
    """
    weight_shape, in_shape, groups = _plan_arguments(weight_shape, in_shape, groups, "(C_out, C_in/groups, *kernel_size)")
    c_out, c_in_g = weight_shape[:2]
    geom = G.ConvGeometry.forward(
        in_shape,
        weight_shape[2:],
        in_channels=c_in_g * groups,
        out_channels=c_out,
        groups=groups,
        stride=stride,
        padding=padding,
        dilation=dilation,
        padding_mode=padding_mode,
    )
    return ConvPlan(geom)


def conv_transpose_plan(
    weight_shape, in_shape, *, stride=1, padding=0, output_padding=0, output_size=None, dilation=1, groups=1
) -> ConvPlan:
    """Plan the matrix of a transposed convolution without building it.

    ``weight_shape`` is ``(C_in, C_out/groups, *kernel_size)`` (ConvTranspose
    layout); ``in_shape`` the spatial shape of the transposed convolution's input.

    Examples
    --------
    >>> conv_transpose_plan((1, 1, 3, 3), (2, 2), stride=2).output_shape
    (1, 5, 5)
    """
    weight_shape, in_shape, groups = _plan_arguments(weight_shape, in_shape, groups, "(C_in, C_out/groups, *kernel_size)")
    c_in, c_out_g = weight_shape[:2]
    geom = G.ConvGeometry.for_transpose(
        in_shape,
        weight_shape[2:],
        in_channels=c_in,
        out_channels=c_out_g * groups,
        groups=groups,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        output_size=output_size,
        dilation=dilation,
    )
    return ConvPlan(geom, transposed=True)


def conv_matrix(
    weight,
    in_shape,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
    dtype=None,
    flip=False,
    rows=None,
    backend="scipy",
    device=None,
    max_bytes=None,
    threads=None,
):
    """The sparse matrix C of a convolution: ``Y = C @ X`` is ``torch.nn.functional.convNd``.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size)
        PyTorch's layout.  The number of spatial axes (1, 2, 3 or more) is
        ``weight.ndim - 2``.
    in_shape : tuple of int
        Spatial input shape ``(n_1, ..., n_D)``.
    stride, dilation : int or tuple of int
    padding : int, tuple of int, tuple of (lo, hi), or {'valid', 'same', 'full'}
        ``'same'`` puts the odd sample on the high side (PyTorch, TensorFlow;
        ``scipy.signal`` puts it on the low side) and, for stride > 1, gives
        ``ceil(n / stride)`` outputs (TensorFlow).
    groups : int
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    dtype : {float32, float64, complex64, complex128}, optional
    flip : bool
        True convolution (flipped kernel), as ``scipy.signal.convolve``.
    rows : slice or (start, stop), optional
        Build only this block of rows.
    backend : {'scipy', 'cupy', 'torch'}
        Where the matrix is built and what it is: ``'scipy'`` (default) a
        ``scipy.sparse.csr_array``; ``'cupy'`` a ``cupyx.scipy.sparse.csr_matrix``
        built on the CUDA device (int32 indices only: at most 2**31 - 1
        non-zeros per matrix or row block); ``'torch'`` a
        ``torch.sparse_csr_tensor`` built on the torch device.
    device : optional
        The CuPy device number or torch device (default: CuPy's current
        device; for torch the weight's device if it is a tensor, else the CPU).
    max_bytes : int, optional
        Size limit (default: memory available on the device); larger requests
        raise :class:`MatrixTooLargeError` before allocating.
    threads : int, optional
        Host threads of the ``'scipy'`` builder (default: the usable cores).

    Returns
    -------
    scipy.sparse.csr_array, cupyx.scipy.sparse.csr_matrix or torch.Tensor (sparse CSR)
        Shape (C_out * prod(out_shape), C_in * prod(in_shape)).  Canonical CSR
        (sorted indices, no duplicates); int32 indices when they fit.

    Notes
    -----
    Row ``c_out * prod(out) + ravel(j)``, column ``c_in * prod(in) + ravel(u)``;
    per axis, output ``j`` and tap ``t`` read ``u = j*s - lo + t*d``.  The
    pattern is structural: a zero weight gives a stored zero.

    Examples
    --------
    >>> import numpy as np
    >>> C = conv_matrix(np.arange(1.0, 10.0).reshape(1, 1, 3, 3), (4, 4))
    >>> C.shape, C.nnz
    ((4, 16), 36)
    >>> C.toarray()[0].reshape(4, 4)
    array([[1., 2., 3., 0.],
           [4., 5., 6., 0.],
           [7., 8., 9., 0.],
           [0., 0., 0., 0.]])
    """
    be, weight = _backend_and_weight(backend, device, weight)
    plan = conv_plan(
        _weight_shape(weight), in_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode,
    )
    return plan.build(weight, dtype=dtype, flip=flip, rows=rows, backend=be, max_bytes=max_bytes, threads=threads)


def conv_transpose_matrix(
    weight,
    in_shape,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    output_size=None,
    dilation=1,
    groups=1,
    dtype=None,
    flip=False,
    rows=None,
    backend="scipy",
    device=None,
    max_bytes=None,
    threads=None,
):
    """The sparse matrix of a transposed convolution (``torch.nn.functional.conv_transposeNd``).

    Parameters
    ----------
    weight : array, shape (C_in, C_out/groups, *kernel_size)
        ConvTranspose layout (the same tensor as the forward convolution it transposes).
    in_shape : tuple of int
        Spatial shape of the transposed convolution's input.
    stride, padding, dilation, groups
        As the forward convolution; padding is symmetric (an int per axis) or a
        ``(lo, hi)`` pair per axis.
    output_padding : int or tuple of int
        Extra samples at the high end, ``0 <= a < max(stride, dilation)``.
    output_size : tuple of int, optional
        Spatial output size; derives ``output_padding`` (error with the valid range).
    dtype, flip, rows, backend, device, max_bytes, threads
        As :func:`conv_matrix`.

    Returns
    -------
    scipy.sparse.csr_array (or the backend's CSR matrix), shape (C_out * prod(m), C_in * prod(in_shape))

    Notes
    -----
    Per axis ``m = (n-1)s - 2p + d(k-1) + a + 1``.  The matrix is the transpose
    of the forward convolution on ``m`` with the same weight, keeping its first
    ``n`` rows per axis — exactly ``conv_matrix(...).T`` when ``a < s``.  It is
    built directly in CSR, not by transposing.

    Examples
    --------
    >>> import numpy as np
    >>> T = conv_transpose_matrix(np.ones((1, 1, 3, 3)), (2, 2), stride=2)
    >>> (T @ np.ones(4)).reshape(5, 5)
    array([[1., 1., 2., 1., 1.],
           [1., 1., 2., 1., 1.],
           [2., 2., 4., 2., 2.],
           [1., 1., 2., 1., 1.],
           [1., 1., 2., 1., 1.]])
    """
    be, weight = _backend_and_weight(backend, device, weight)
    plan = conv_transpose_plan(
        _weight_shape(weight), in_shape, stride=stride, padding=padding, output_padding=output_padding,
        output_size=output_size, dilation=dilation, groups=groups,
    )
    return plan.build(weight, dtype=dtype, flip=flip, rows=rows, backend=be, max_bytes=max_bytes, threads=threads)

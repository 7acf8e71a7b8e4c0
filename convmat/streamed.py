"""StreamedConvOperator: a convolution layer whose matrix is built slab by slab at every product.

A :class:`~convmat.ConvOperator` holds the whole CSR matrix ``C``.  A
:class:`StreamedConvOperator` holds only the plan and the weight: each
product builds ``C`` in slabs of at most ``block_bytes`` bytes
(:func:`convmat.blocks.slabs`: the rows of every output channel at a range
of output positions, their columns renumbered onto the input positions they
read), multiplies each by those input positions of ``X`` and builds the next
into the same bytes.  It therefore works for matrices larger than memory,
and past 2**31 non-zeros with int32 indices in every slab.  A slab reads a
small part of ``X`` (a band of every input channel), so a batch ``X`` much
larger than the caches is read about once per product, not once per slab;
building into the same bytes costs no page faults after the first slab, so
a streamed product costs a stored product plus a warm write of the matrix.
Once the compiled fill is loaded, products do not go through slabs: rows
are built a few dozen at a time into a scratch that stays in the caches and
multiplied there by the row kernels of :mod:`convmat.spmm` -- a vector's
(:func:`convmat.assemble.fused_matvec`), a batch's four output channels at a
time (:func:`convmat.assemble.fused_matmat`), the adjoint's in the stored
scatter's order -- so the matrix never reaches memory and a product costs
about what the stored one does.

Same bits as the stored operator
--------------------------------
``C @ X`` computes each row by one row kernel of :func:`convmat.spmm.csr_matmul`,
whose result does not depend on the other rows in the product, and a slab's
rows keep their entries in order: a slab partition gives the bits of the
stored product.  The adjoint ``C^H @ Y`` is a sum across rows: the stored
``'scipy'`` operator scatters ``C``'s rows into per-block partial sums
(``csr_matmul(C, Y, transpose=True, conjugate=True)``), and the streamed one
builds ``C``'s rows again and feeds them to the same kernels in the same
blocks and order (``convmat._stream_adjoint``): the same bits.  Without
Numba (the stored product is then SciPy's) it builds slabs of ``C^H`` from
the transposed plan (:meth:`convmat.ConvPlan.transpose`, with the conjugated
weight) instead, which agrees to rounding.
"""

from __future__ import annotations

import numpy as np

from . import _operator_parts as parts
from . import fill
from ._stream_adjoint import AdjointStream
from ._linear_image import LinearImageOperator
from .assemble import fused_matmat, fused_matvec
from .backends import default_threads, get_backend
from .blocks import build_slab, slab_buffer, slab_nbytes, slabs
from .geometry import positive_int
from .memory import human
from .spmm import csr_matmul
from .weights import as_host_weight, value_dtype

__all__ = ["StreamedConvOperator"]


def host_weight(weight, dtype, name="weight"):
    """``weight`` as a read-only NumPy array of the matrix's value dtype (float64 for integers)."""
    w = as_host_weight(weight, name=name)
    w = np.array(w, dtype=value_dtype(w.dtype, dtype))
    w.setflags(write=False)
    return w


class StreamedConvOperator(LinearImageOperator):
    """A convolution layer applied block by block: never more than ``block_bytes`` of its matrix in memory.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size) or (C_in, C_out/groups, *kernel_size)
        As :class:`~convmat.ConvOperator` (the second layout with ``transposed=True``); NumPy or array-like.
    in_shape : tuple of int
        Spatial shape of the operation's input.
    block_bytes : int
        The most bytes of the matrix held at once: each slab (values plus
        int32 or int64 indices, :func:`convmat.blocks.slab_nbytes`) fits.
        Building a slab needs a few temporaries besides (see
        :meth:`convmat.ConvPlan.build`), and a product copies the input
        positions each slab reads.  The adjoint keeps the stored product's
        partial sums (one result per block of rows but the first) and a
        profile of one output channel (24 bytes per output position); for a
        batch of layers with 32 or more entries per row it sorts the rows as
        the stored product does (about 40 bytes per row of ``C`` at the peak).
    stride, padding, dilation, groups, padding_mode, transposed, output_padding, output_size, dtype, bias
        As :class:`~convmat.ConvOperator`.
    threads : int, optional
        Threads of the builds and products (default: the usable cores).

    Attributes
    ----------
    plan : ConvPlan
    slabs : list of (int, int, int, int)
        The slabs ``(j0, j1, f0, f1)`` a product builds while the compiled
        fill is not loaded (of ``C^H`` for the adjoint view ``A.H``): output
        positions ``[j0, j1)`` of every output channel, reading input
        positions ``[f0, f1)``.  Once it is loaded, products build rows into
        a cache-sized scratch instead (module docstring).
    in_shape, out_shape : tuple of int
    shape : (int, int)
    dtype : numpy.dtype
    bias : ndarray or None
    is_adjoint : bool

    Notes
    -----
    ``A @ v``, ``matvec``, ``matmat`` take columns ``v = x.ravel()``;
    :meth:`apply` (also ``A(x)``) takes images ``(N, *in_shape)`` or
    ``in_shape`` and adds the bias; :meth:`apply_adjoint` applies ``C^H``.
    ``A.H`` (and ``A.T`` for real weights) is the streamed operator of
    ``C^H``: ``plan.transpose()`` with the conjugated weight.  Each product
    builds all ``plan.nnz`` entries once.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import ConvOperator
    >>> w = np.random.default_rng(0).standard_normal((4, 4, 3, 3))
    >>> A = StreamedConvOperator(w, (16, 16), padding=1, block_bytes=20_000)
    >>> len(A.slabs), A.max_block_nbytes <= 20_000
    (21, True)
    >>> x = np.random.default_rng(1).standard_normal((2, 4, 16, 16))
    >>> bool(np.array_equal(A(x), ConvOperator(w, (16, 16), padding=1)(x)))
    True
    """

    def __init__(self, weight, in_shape, *, block_bytes, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", transposed=False, output_padding=0, output_size=None, dtype=None,
                 bias=None, threads=None):
        w = host_weight(weight, dtype)
        plan = parts.plan_from_keywords(w, in_shape, transposed=transposed, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups, padding_mode=padding_mode,
                                        output_padding=output_padding, output_size=output_size)
        self._init_pair(plan, w, block_bytes, bias, threads)

    @classmethod
    def from_plan(cls, plan, weight, *, block_bytes, dtype=None, bias=None, threads=None):
        """The streamed operator of ``plan`` filled with ``weight`` (shape ``plan.weight_shape``)."""
        out = object.__new__(cls)
        out._init_pair(plan, host_weight(weight, dtype), block_bytes, bias, threads)
        return out

    def _init_pair(self, plan, w, block_bytes, bias, threads):
        """This operator and its adjoint view (the transposed plan, the conjugated weight)."""
        self._setup(plan, w, block_bytes, bias, threads, False)
        H = object.__new__(type(self))
        H._setup(plan.transpose(), w.conj() if w.dtype.kind == "c" else w, block_bytes, None, threads, True)
        self._H, H._H = H, self

    def _setup(self, plan, w, block_bytes, bias, threads, is_adjoint):
        if tuple(w.shape) != tuple(plan.weight_shape):
            raise ValueError(f"weight must have shape {plan.weight_shape} for this plan, got {tuple(w.shape)}")
        threads = None if threads is None else positive_int(threads, "threads")
        self.plan, self._w, self.threads, self.is_adjoint = plan, w, threads, is_adjoint
        self._be = get_backend("scipy")
        self.in_shape, self.out_shape = tuple(plan.input_shape), tuple(plan.output_shape)
        self.slabs = slabs(plan, w.dtype, block_bytes)
        self.block_bytes = int(block_bytes)
        bias = parts.host_bias(bias, plan, self._be, w.dtype)
        self.bias = bias
        self._adjoint_stream = None if is_adjoint else AdjointStream(plan, w, block_bytes, threads or default_threads())
        super().__init__(w.dtype, plan.shape)

    # ------------------------------------------------------------------ #
    @property
    def nnz(self) -> int:
        return int(self.plan.nnz)

    @property
    def max_block_nbytes(self) -> int:
        """Bytes of the largest slab: the most of the matrix held at once."""
        return max(slab_nbytes(self.plan, self.dtype, j0, j1, (f0, f1)) for j0, j1, f0, f1 in self.slabs)

    def build_slab(self, i: int):
        """Slab ``i`` (``slabs[i]``) of the matrix, a ``csr_array`` with int32 indices when they fit
        (:func:`convmat.blocks.build_slab`)."""
        return build_slab(self.plan, self._w, self.slabs[i], self.dtype, threads=self.threads)

    def _own_product(self, X):
        """This operator's matrix times columns ``X`` (``(n,)`` or ``(n, k)``), one slab at a time."""
        X = np.asarray(X)
        dtype = np.result_type(self.dtype, X.dtype)
        k = X.shape[1:]
        Cin, R = self.plan.input_shape[0], self.plan.output_shape[0]
        F, O = self.shape[1] // Cin, self.shape[0] // R
        X3 = np.ascontiguousarray(X, dtype=dtype).reshape((Cin, F) + k)  # (input channel, position, k)
        fill.kernel(self.dtype, np.int32)  # start loading the compiled fill: slabs of any size run it once ready
        if k in ((), (1,)):  # a vector: rows built into a cache-sized scratch and multiplied, when compiled
            y = fused_matvec(self.plan, self._w, X3.reshape(-1), self.threads or default_threads(), self.block_bytes)
            if y is not None:
                return y.reshape((self.shape[0],) + k)
        elif k[0] > 0:  # a batch: rows of four channels built into a cache-sized scratch and multiplied there
            Y = fused_matmat(self.plan, self._w, X3.reshape(-1, k[0]), self.threads or default_threads(),
                             self.block_bytes)
            if Y is not None:
                return Y
        Y = np.empty((self.shape[0],) + k, dtype=dtype)
        Y3 = Y.reshape((R, O) + k)
        buffer = slab_buffer(self.plan, self.slabs, self.dtype)  # every slab built into the same bytes
        for slab in self.slabs:
            j0, j1, f0, f1 = slab
            B = build_slab(self.plan, self._w, slab, self.dtype, threads=self.threads, buffer=buffer)
            halo = np.ascontiguousarray(X3[:, f0:f1]).reshape((Cin * (f1 - f0),) + k)
            Y3[:, j0:j1] = csr_matmul(B, halo, threads=self.threads).reshape((R, j1 - j0) + k)
        return Y

    def _product(self, X, adjoint: bool):
        """``C @ X`` (``adjoint=False``) or ``C^H @ X`` of the pair's forward matrix ``C`` (LinearImageOperator's hook).

        ``C @ X`` builds ``C`` from the plan; ``C^H @ X`` builds ``C``'s rows again and adds them up as
        the stored operator does (:class:`~convmat._stream_adjoint.AdjointStream`), or, without Numba,
        builds ``C^H`` from the transposed plan.
        """
        fwd = self._H if self.is_adjoint else self
        if adjoint:
            Y = fwd._adjoint_stream.product(np.asarray(X))
            if Y is not None:
                return Y
        return (self if adjoint == self.is_adjoint else self._H)._own_product(X)

    def __repr__(self) -> str:
        head = repr(self.plan).splitlines()[0].replace("ConvPlan(", "", 1)
        kind = "adjoint of " if self.is_adjoint else ""
        return (
            f"StreamedConvOperator({kind}{head}\n  matrix {self.shape[0]} x {self.shape[1]}, nnz {self.nnz:,}, "
            f"{self.dtype}, {human(self.plan.nbytes(self.dtype))} if stored; built in {len(self.slabs)} slabs "
            f"of at most {human(self.block_bytes)} per product)"
        )

"""ConvOperator: a convolution layer as a linear operator on images.

A :class:`ConvOperator` holds the explicit sparse matrix ``C`` of one
convolution (or transposed convolution) and applies it to images of shape
``(N, C, *spatial)``: ``forward`` is ``C @ x`` plus the bias, ``adjoint`` is
``C^H @ y`` (``C.T`` for real weights), for every padding mode.  The adjoint
of a reflect-, replicate- or circular-padded convolution folds the border
back onto the image, which PyTorch's ``ConvTranspose`` (zeros only) cannot
express.

The operator is immutable: applying it never changes its result.  Its
adjoint :attr:`ConvOperator.T` shares the matrix and ``A.T.T is A``.  On the
``'scipy'`` backend the adjoint runs the threaded transposed product of
:mod:`convmat.spmm` on ``C`` itself; on ``'cupy'`` and ``'torch'`` it uses
``C^H`` built directly in CSR the first time it is needed (then kept).
Operands and results are arrays of the operator's backend, on its device;
:meth:`ConvOperator.to` moves an operator.
"""

from __future__ import annotations

import math

import numpy as np

from .backends import get_backend, transfer
from .build import _as_host_weight, _backend_and_weight, _human, conv_plan, conv_transpose_plan

__all__ = ["ConvOperator"]


def _nbytes(be, A) -> int:
    return int(sum(a.nbytes if hasattr(a, "nbytes") else a.numel() * a.element_size() for a in be.csr_arrays(A)))


class ConvOperator:
    """A convolution layer as an explicit sparse matrix, applied to images.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size) or (C_in, C_out/groups, *kernel_size)
        PyTorch's layout: the first for a convolution, the second (ConvTranspose
        layout) when ``transposed=True``.  NumPy arrays, array-likes, CPU
        torch tensors, or arrays of the backend's own library.
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)`` of the operation's input.
    stride, padding, dilation, groups, padding_mode
        As :func:`convmat.conv_matrix`.  A transposed convolution takes an int
        or a ``(lo, hi)`` pair per axis as padding and only ``padding_mode='zeros'``.
    bias : array, shape (C_out,), optional
        Added to every sample of output channel ``c`` by :meth:`forward`; the
        linear part (``@``, :meth:`adjoint`, :meth:`as_linear_operator`) ignores it.
    transposed : bool
        If True the operator *is* the transposed convolution
        (``torch.nn.functional.conv_transposeNd``), built with
        :func:`convmat.conv_transpose_matrix`.
    output_padding : int or tuple of int
        Transposed convolution only: extra samples at the high end,
        ``0 <= a < max(stride, dilation)``.
    output_size : tuple of int, optional
        Transposed convolution only: the spatial output size (derives ``output_padding``).
    dtype : {float32, float64, complex64, complex128}, optional
        Dtype of the matrix; defaults to the weight's (float64 for integer weights).
    backend : {'scipy', 'cupy', 'torch'}
        Where the matrix lives and the products run (see
        :func:`convmat.conv_matrix`); :meth:`to` moves an operator.  The
        operator takes and returns arrays of that library on that device
        only: NumPy for ``'scipy'``, CuPy for ``'cupy'``, torch tensors for
        ``'torch'``.  Anything else is a TypeError (no silent transfers).
    device : optional
        As :func:`convmat.conv_matrix`.

    Attributes
    ----------
    matrix : sparse matrix, shape (prod(out_shape), prod(in_shape))
        ``C``, in the backend's CSR type.  For the adjoint view ``A.T`` it is
        ``C^H``: a transposed view of ``C`` with ``'scipy'``; with ``'cupy'``
        and ``'torch'``, whose libraries multiply by a transposed matrix
        slowly (PyTorch's CPU product by a transposed CSR took 13 s where the
        CSR product took 0.07 s), ``C^H`` built in CSR by the same builder
        (:meth:`convmat.ConvPlan.transpose`) the first time it is needed,
        then kept (twice the memory).
    backend : Backend
        ``.name`` and ``.device``.
    in_shape, out_shape : tuple of int
        ``(C, *spatial)`` of one input and one output image.
    shape : (int, int)
        The matrix shape ``(prod(out_shape), prod(in_shape))``.
    dtype : numpy.dtype
    plan : ConvPlan
        The geometry and sparsity pattern (shared by ``A`` and ``A.T``).
    bias : array of the backend, shape (C_out,), or None
    is_adjoint : bool
        True for the view returned by :attr:`T`.

    Notes
    -----
    Shape: ``forward`` maps ``(N, *in_shape)`` to ``(N, *out_shape)`` (or one
    unbatched image ``in_shape`` to ``out_shape``) by
    ``y[i] = (C @ x[i].ravel()).reshape(out_shape) + bias[:, None, ...]``.
    ``adjoint`` maps ``(N, *out_shape)`` to ``(N, *in_shape)`` by ``C^H``,
    the exact adjoint of the linear part: ``<C x, y> = <x, C^H y>``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.ones((1, 1, 3))
    >>> A = ConvOperator(w, (5,), padding=1, padding_mode="reflect")
    >>> x = np.arange(5.0).reshape(1, 5)       # one unbatched image, (C, n)
    >>> A(x)
    array([[ 2.,  3.,  6.,  9., 10.]])
    >>> A.adjoint(np.ones((1, 5)))             # reflect folds the border back
    array([[2., 4., 3., 4., 2.]])
    >>> A.T.T is A
    True
    """

    def __init__(
        self,
        weight,
        in_shape,
        *,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        padding_mode="zeros",
        bias=None,
        transposed=False,
        output_padding=0,
        output_size=None,
        dtype=None,
        backend="scipy",
        device=None,
    ):
        if not isinstance(transposed, (bool, np.bool_)):
            raise TypeError(f"transposed must be a bool, got {transposed!r}")
        be, weight = _backend_and_weight(backend, device, weight)
        if transposed:
            if padding_mode != "zeros":
                raise ValueError(
                    f"a transposed convolution takes padding_mode='zeros' only (as PyTorch's ConvTranspose), "
                    f"got padding_mode={padding_mode!r}; for the adjoint of a {padding_mode!r}-padded "
                    f"convolution use ConvOperator(..., padding_mode={padding_mode!r}).T"
                )
            plan = conv_transpose_plan(
                weight.shape, in_shape, stride=stride, padding=padding, output_padding=output_padding,
                output_size=output_size, dilation=dilation, groups=groups,
            )
        else:
            if output_size is not None or np.any(np.asarray(output_padding) != 0):
                raise ValueError(
                    f"output_padding and output_size apply to a transposed convolution only (transposed=True), "
                    f"got output_padding={output_padding!r}, output_size={output_size!r}"
                )
            plan = conv_plan(
                weight.shape, in_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=padding_mode,
            )
        if bias is not None:
            bias = _as_host_weight(bias, be, "bias")
            c_out = plan.output_shape[0]
            if bias.shape != (c_out,):
                raise ValueError(
                    f"bias must have shape ({c_out},) (one value per output channel), got {bias.shape}"
                )
        matrix = plan.build(weight, dtype=dtype, backend=be)
        vdtype = be.dtype_of(matrix)
        if bias is not None:
            if bias.dtype.kind == "c" and vdtype.kind != "c":
                raise TypeError(f"a complex bias needs a complex matrix (dtype=complex128), got dtype {vdtype}")
            bias = bias.astype(vdtype, copy=True)
            bias.setflags(write=False)
        # ConvPlan's repr shows the forward geometry, in which output_padding is part of the high padding.
        called_as = (
            f"as called: padding={padding!r}, output_padding={output_padding!r}, output_size={output_size!r}"
            if transposed
            else None
        )
        weight = np.array(weight, dtype=vdtype)  # kept (small) to build C^H where the backend needs it
        weight.setflags(write=False)
        self._init_pair(plan, be, matrix, weight, bias, called_as)

    def _init_pair(self, plan, be, matrix, weight, bias, called_as, adjoint_matrix=None):
        """Set up this operator and its adjoint view, sharing one matrix."""
        shared = {"C": matrix, "CH": adjoint_matrix}
        self._setup(plan, be, shared, weight, plan.input_shape, plan.output_shape, bias, False)
        view = object.__new__(ConvOperator)
        view._setup(plan, be, shared, weight, plan.output_shape, plan.input_shape, None, True)
        self._called_as = view._called_as = called_as
        view._T = self
        self._T = view

    def _setup(self, plan, be, shared, weight, in_shape, out_shape, bias, is_adjoint):
        self.plan = plan
        self._be = be
        self._shared = shared
        self._weight = weight
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self._bias_host = bias
        self.bias = None if bias is None else be.asarray(bias)
        self.is_adjoint = is_adjoint

    # ------------------------------------------------------------------ #
    # the matrices
    # ------------------------------------------------------------------ #
    def _adjoint_csr(self):
        """``C^H`` in CSR, built by the plan's transpose (and kept) the first time it is needed."""
        shared = self._shared
        if shared["CH"] is None:
            w = self._weight.conj() if self._weight.dtype.kind == "c" else self._weight
            shared["CH"] = self.plan.transpose().build(w, dtype=self._weight.dtype, backend=self._be)
        return shared["CH"]

    def _product(self, X, adjoint: bool):
        """``C @ X`` or ``C^H @ X`` (``X`` of this backend, 1-D or 2-D)."""
        be = self._be
        C = self._shared["C"]
        if not adjoint:
            return be.matmul(C, X)
        if be.builds_adjoint:
            return be.matmul(self._adjoint_csr(), X)
        return be.rmatmul(C, X)

    # ------------------------------------------------------------------ #
    # properties
    # ------------------------------------------------------------------ #
    @property
    def matrix(self):
        """The sparse matrix of the linear part (``C``; ``C^H`` for an adjoint view)."""
        if not self.is_adjoint:
            return self._shared["C"]
        if self._be.builds_adjoint:
            return self._adjoint_csr()
        return self._be.transpose(self._shared["C"])

    @property
    def backend(self):
        """The :class:`convmat.backends.Backend` (``.name``, ``.device``) holding the matrix."""
        return self._be

    @property
    def shape(self) -> tuple[int, int]:
        m, n = self.plan.shape
        return (n, m) if self.is_adjoint else (m, n)

    @property
    def dtype(self) -> np.dtype:
        return self._weight.dtype

    @property
    def nnz(self) -> int:
        return int(self.plan.nnz)

    @property
    def T(self) -> "ConvOperator":
        """The adjoint operator: its ``forward`` is this operator's :meth:`adjoint`.

        It shares the matrix, has no bias, and its ``.T`` is this operator.
        """
        return self._T

    @property
    def H(self) -> "ConvOperator":
        """Alias of :attr:`T` (the conjugate transpose for complex weights)."""
        return self.T

    def to(self, backend, device=None) -> "ConvOperator":
        """The same operator on another backend or device (the matrix moved, not rebuilt).

        Parameters
        ----------
        backend : {'scipy', 'cupy', 'torch'}
        device : optional
            As :func:`convmat.conv_matrix`.

        Returns
        -------
        ConvOperator
            ``self`` when nothing would change.  The arrays move by DLPack
            between CUDA libraries and through the host otherwise; where the
            libraries share host memory (NumPy and CPU torch tensors) the new
            operator shares the matrix's arrays (operators never write to them).

        Raises
        ------
        MatrixTooLargeError
            The target library cannot index the matrix (cupyx takes int32
            indices only), or it does not fit in the target's memory.

        Examples
        --------
        >>> import numpy as np
        >>> A = ConvOperator(np.ones((1, 1, 3)), (5,), padding=1)
        >>> A.to("scipy") is A
        True
        """
        from .build import MatrixTooLargeError

        if self.is_adjoint:
            return self.T.to(backend, device).T
        dst = get_backend(backend, device)
        src = self._be
        if dst == src:
            return self
        C = self._shared["C"]
        data, indices, indptr = src.csr_arrays(C)
        idt = src.dtype_of(indices)
        if idt not in dst.index_dtypes:
            idt = dst.max_index_dtype_for(self.plan.nnz, self.plan.shape)
            if idt is None:
                raise MatrixTooLargeError(
                    f"backend {dst.name!r} takes {', '.join(map(str, dst.index_dtypes))} indices only, and this "
                    f"matrix of shape {self.plan.shape} has {self.plan.nnz:,} non-zeros; build it in row blocks "
                    f"(ConvPlan.row_blocks)"
                )
        need = self.plan.nbytes(self.dtype)
        limit = dst.memory_limit()
        if limit is not None and need > limit:
            raise MatrixTooLargeError(
                f"moving the matrix ({_human(need)}) to {dst!r} needs more than the memory available there "
                f"({_human(limit)})"
            )

        def move(a, dtype=None):
            b = transfer(a, src, dst)
            return b if dtype is None or dst.dtype_of(b) == dtype else dst.astype(b, dtype)

        matrix = dst.csr(move(data), move(indices, idt), move(indptr, idt), self.plan.shape)
        out = object.__new__(ConvOperator)
        out._init_pair(self.plan, dst, matrix, self._weight, self._bias_host, self._called_as)
        return out

    # ------------------------------------------------------------------ #
    # applying
    # ------------------------------------------------------------------ #
    def _columns(self, x, shape, name):
        """``x`` of shape ``shape`` or ``(N, *shape)`` -> (columns (F, N), batched?)."""
        x = self._be.operand(x, name)
        if tuple(x.shape) == shape:
            return x.reshape(1, -1).T, False
        if x.ndim == len(shape) + 1 and tuple(x.shape[1:]) == shape:
            return x.reshape(x.shape[0], math.prod(shape)).T, True
        raise ValueError(
            f"{name} must have shape {shape} (one image) or (N, {', '.join(map(str, shape))}) (a batch), "
            f"got {tuple(x.shape)}"
        )

    @staticmethod
    def _images(Y, shape, batched):
        out = Y.T.reshape((Y.shape[1],) + shape)
        return out if batched else out[0]

    def forward(self, x):
        """Apply the layer: ``C @ x`` plus the bias, image by image.

        Parameters
        ----------
        x : array, shape (N, *in_shape) or in_shape
            A batch ``(N, C_in, *spatial)`` or one unbatched image ``(C_in, *spatial)``,
            of the operator's backend (NumPy for ``'scipy'``).

        Returns
        -------
        array, shape (N, *out_shape) or out_shape
            Batched exactly when ``x`` is; on the operator's backend and device.

        Examples
        --------
        >>> import numpy as np
        >>> A = ConvOperator(np.ones((2, 1, 2)), (3,), bias=np.array([0.0, 10.0]))
        >>> A.forward(np.ones((4, 1, 3))).shape
        (4, 2, 2)
        >>> A(np.ones((1, 3)))
        array([[ 2.,  2.],
               [12., 12.]])
        """
        X, batched = self._columns(x, self.in_shape, "x")
        y = self._images(self._product(X, self.is_adjoint), self.out_shape, batched)
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * (len(self.out_shape) - 1))
        return y

    __call__ = forward

    def adjoint(self, y):
        """Apply the adjoint of the linear part, ``C^H @ y`` (``C.T @ y`` for real weights).

        The bias is not involved.  For ``padding_mode='zeros'`` this is the
        transposed convolution; for the other modes it also folds the padded
        border back onto the image.

        Parameters
        ----------
        y : array, shape (N, *out_shape) or out_shape

        Returns
        -------
        array, shape (N, *in_shape) or in_shape

        Examples
        --------
        >>> import numpy as np
        >>> A = ConvOperator(np.ones((1, 1, 2)), (3,), padding=1, padding_mode="circular")
        >>> A.adjoint(np.array([[1.0, 0.0, 0.0, 0.0]]))
        array([[1., 0., 1.]])
        """
        Y, batched = self._columns(y, self.out_shape, "y")
        return self._images(self._product(Y, not self.is_adjoint), self.in_shape, batched)

    def __matmul__(self, X):
        """The linear part on columns: ``C @ X`` for ``X`` of shape ``(n,)`` or ``(n, N)``."""
        n = self.shape[1]
        shape = getattr(X, "shape", None)
        if shape is None:
            return NotImplemented
        if len(shape) not in (1, 2) or shape[0] != n:
            raise ValueError(
                f"the operand of @ must have shape ({n},) or ({n}, N) (columns of images {self.in_shape}), "
                f"got {tuple(shape)}"
            )
        return self._product(self._be.operand(X, "X"), self.is_adjoint)

    def as_linear_operator(self):
        """The linear part as a :class:`scipy.sparse.linalg.LinearOperator`.

        ``matvec``/``matmat`` apply ``C``, ``rmatvec``/``rmatmat`` apply ``C^H``,
        so ``lsqr``, ``cg`` on the normal equations and ``svds`` work on it.
        With backend ``'cupy'`` it is a ``cupyx.scipy.sparse.linalg.LinearOperator``
        (for cupyx's solvers); PyTorch has none (a TypeError says so).

        Examples
        --------
        >>> import numpy as np
        >>> from scipy.sparse.linalg import lsqr
        >>> A = ConvOperator(np.array([[[1.0, 2.0]]]), (4,), padding=[(0, 1)])
        >>> L = A.as_linear_operator()
        >>> L.shape
        (4, 4)
        >>> x = lsqr(L, L @ np.arange(4.0), atol=1e-12, btol=1e-12)[0]
        >>> np.allclose(x, np.arange(4.0))
        True
        """
        fwd, adj = self.is_adjoint, not self.is_adjoint
        return self._be.linear_operator(
            self.shape,
            self.dtype,
            matvec=lambda v: self._product(v, fwd),
            rmatvec=lambda v: self._product(v, adj),
            matmat=lambda V: self._product(V, fwd),
            rmatmat=lambda V: self._product(V, adj),
        )

    def to_pylops(self):
        """The linear part as a PyLops operator (``pylops.MatrixMult`` on the sparse matrix).

        Needs PyLops (``pip install pylops``); raises ImportError otherwise.
        Backends ``'scipy'`` and ``'cupy'`` (PyLops runs on CuPy arrays).
        """
        if self._be.name == "torch":
            raise TypeError("to_pylops takes backends 'scipy' and 'cupy'; move the operator with .to('scipy')")
        try:
            import pylops
        except ImportError as exc:
            raise ImportError("to_pylops needs PyLops: pip install pylops") from exc
        return pylops.MatrixMult(self.matrix, dtype=self.dtype)

    # ------------------------------------------------------------------ #
    def __repr__(self) -> str:
        lines = repr(self.plan).splitlines()
        head = lines[0].replace("ConvPlan(", "", 1)
        if self.is_adjoint:
            head = f"adjoint of [{head}]: input {self.in_shape} -> output {self.out_shape}"
        bias = "none" if self.bias is None else f"shape {tuple(self.bias.shape)}"
        body = [f"  {line.strip()}" for line in lines[1:-1]]
        if self._called_as:
            body.append(f"  ({self._called_as}; the padding above is the forward geometry's)")
        be = self._be
        where = be.name if be.device is None else f"{be.name}, device {be.device}"
        held = _nbytes(be, self._shared["C"]) + (
            0 if self._shared["CH"] is None else _nbytes(be, self._shared["CH"])
        )
        return "\n".join(
            [f"ConvOperator({head}"]
            + body
            + [
                f"  matrix {self.shape[0]} x {self.shape[1]}, nnz {self.nnz:,}, {self.dtype}, "
                f"{_human(held)} in memory ({where}), bias {bias})"
            ]
        )

"""ConvOperator: a convolution layer as a linear operator on images.

A :class:`ConvOperator` holds the explicit sparse matrix ``C`` of one
convolution (or transposed convolution) and applies it to images of shape
``(N, C, *spatial)``: ``forward`` is ``C @ x`` plus the bias, ``adjoint`` is
``C^H @ y`` (``C.T`` for real weights), for every padding mode.  The adjoint
of a reflect-, replicate- or circular-padded convolution folds the border
back onto the image, which PyTorch's ``ConvTranspose`` (zeros only) cannot
express.

The operator is immutable: applying it never changes its state.  Its
adjoint :attr:`ConvOperator.T` shares the matrix (no copy) and ``A.T.T is A``.
"""

from __future__ import annotations

import math

import numpy as np

from .build import _human, conv_plan, conv_transpose_plan

__all__ = ["ConvOperator"]


def _as_numpy(a, name: str) -> np.ndarray:
    """``a`` as a NumPy array (torch tensors are detached and moved to the host)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor, recognised without importing torch
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}") from None
    if arr.dtype == object or arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    return arr


def _nbytes(A) -> int:
    return int(A.data.nbytes + A.indices.nbytes + A.indptr.nbytes)


class ConvOperator:
    """A convolution layer as an explicit sparse matrix, applied to images.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size) or (C_in, C_out/groups, *kernel_size)
        PyTorch's layout: the first for a convolution, the second (ConvTranspose
        layout) when ``transposed=True``.  NumPy arrays, array-likes or CPU
        torch tensors.
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

    Attributes
    ----------
    matrix : scipy.sparse.csr_array, shape (prod(out_shape), prod(in_shape))
        ``C``.  For the adjoint view ``A.T`` this is ``C.T`` (a CSC view, no copy).
    in_shape, out_shape : tuple of int
        ``(C, *spatial)`` of one input and one output image.
    shape : (int, int)
        The matrix shape ``(prod(out_shape), prod(in_shape))``.
    dtype : numpy.dtype
    plan : ConvPlan
        The geometry and sparsity pattern (shared by ``A`` and ``A.T``).
    bias : ndarray, shape (C_out,), or None
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
    ):
        if not isinstance(transposed, (bool, np.bool_)):
            raise TypeError(f"transposed must be a bool, got {transposed!r}")
        weight = _as_numpy(weight, "weight")
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
        matrix = plan.build(weight, dtype=dtype)
        if bias is not None:
            bias = _as_numpy(bias, "bias")
            c_out = plan.output_shape[0]
            if bias.shape != (c_out,):
                raise ValueError(
                    f"bias must have shape ({c_out},) (one value per output channel), got {bias.shape}"
                )
            if bias.dtype.kind == "c" and matrix.dtype.kind != "c":
                raise TypeError(f"a complex bias needs a complex matrix (dtype=complex128), got dtype {matrix.dtype}")
            bias = bias.astype(matrix.dtype, copy=True)
            bias.setflags(write=False)
        # ConvPlan's repr shows the forward geometry, in which output_padding is part of the high padding.
        self._called_as = (
            f"as called: padding={padding!r}, output_padding={output_padding!r}, output_size={output_size!r}"
            if transposed
            else None
        )
        adjoint = _adjoint_matrix(matrix)
        self._setup(plan, matrix, adjoint, plan.input_shape, plan.output_shape, bias, False)
        # The adjoint view shares the matrix; both are built here, so nothing changes after __init__.
        view = object.__new__(ConvOperator)
        view._setup(plan, adjoint, matrix, plan.output_shape, plan.input_shape, None, True)
        view._called_as = self._called_as
        view._T = self
        self._T = view

    def _setup(self, plan, A, AH, in_shape, out_shape, bias, is_adjoint):
        self.plan = plan
        self._A = A
        self._AH = AH
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.bias = bias
        self.is_adjoint = is_adjoint

    # ------------------------------------------------------------------ #
    # properties
    # ------------------------------------------------------------------ #
    @property
    def matrix(self):
        """The sparse matrix of the linear part (``C``; ``C.T`` for an adjoint view)."""
        return self._A

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._A.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._A.dtype

    @property
    def nnz(self) -> int:
        return int(self._A.nnz)

    @property
    def T(self) -> "ConvOperator":
        """The adjoint operator: its ``forward`` is this operator's :meth:`adjoint`.

        It shares the matrix (no copy), has no bias, and its ``.T`` is this operator.
        """
        return self._T

    @property
    def H(self) -> "ConvOperator":
        """Alias of :attr:`T` (the conjugate transpose for complex weights)."""
        return self.T

    # ------------------------------------------------------------------ #
    # applying
    # ------------------------------------------------------------------ #
    def _columns(self, x, shape, name):
        """``x`` of shape ``shape`` or ``(N, *shape)`` -> (columns (F, N), batched?)."""
        x = _as_numpy(x, name)
        if x.shape == shape:
            return x.reshape(1, -1).T, False
        if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
            return x.reshape(x.shape[0], math.prod(shape)).T, True
        raise ValueError(
            f"{name} must have shape {shape} (one image) or (N, {', '.join(map(str, shape))}) (a batch), "
            f"got {x.shape}"
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
            A batch ``(N, C_in, *spatial)`` or one unbatched image ``(C_in, *spatial)``.

        Returns
        -------
        ndarray, shape (N, *out_shape) or out_shape
            Batched exactly when ``x`` is.

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
        y = self._images(self._A @ X, self.out_shape, batched)
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
        ndarray, shape (N, *in_shape) or in_shape

        Examples
        --------
        >>> import numpy as np
        >>> A = ConvOperator(np.ones((1, 1, 2)), (3,), padding=1, padding_mode="circular")
        >>> A.adjoint(np.array([[1.0, 0.0, 0.0, 0.0]]))
        array([[1., 0., 1.]])
        """
        Y, batched = self._columns(y, self.out_shape, "y")
        return self._images(self._AH @ Y, self.in_shape, batched)

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
        return self._A @ X

    def as_linear_operator(self):
        """The linear part as a :class:`scipy.sparse.linalg.LinearOperator`.

        ``matvec``/``matmat`` apply ``C``, ``rmatvec``/``rmatmat`` apply ``C^H``,
        so ``lsqr``, ``cg`` on the normal equations and ``svds`` work on it.

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
        from scipy.sparse.linalg import LinearOperator

        A, AH = self._A, self._AH
        return LinearOperator(
            self.shape,
            matvec=lambda v: A @ v,
            rmatvec=lambda v: AH @ v,
            matmat=lambda V: A @ V,
            rmatmat=lambda V: AH @ V,
            dtype=self.dtype,
        )

    def to_pylops(self):
        """The linear part as a PyLops operator (``pylops.MatrixMult`` on the sparse matrix).

        Needs PyLops (``pip install pylops``); raises ImportError otherwise.
        """
        try:
            import pylops
        except ImportError as exc:
            raise ImportError("to_pylops needs PyLops: pip install pylops") from exc
        return pylops.MatrixMult(self._A, dtype=self.dtype)

    # ------------------------------------------------------------------ #
    def __repr__(self) -> str:
        lines = repr(self.plan).splitlines()
        head = lines[0].replace("ConvPlan(", "", 1)
        if self.is_adjoint:
            head = f"adjoint of [{head}]: input {self.in_shape} -> output {self.out_shape}"
        bias = "none" if self.bias is None else f"shape {self.bias.shape}"
        body = [f"  {line.strip()}" for line in lines[1:-1]]
        if self._called_as:
            body.append(f"  ({self._called_as}; the padding above is the forward geometry's)")
        return "\n".join(
            [f"ConvOperator({head}"]
            + body
            + [
                f"  matrix {self.shape[0]} x {self.shape[1]}, nnz {self.nnz:,}, {self.dtype}, "
                f"{_human(_nbytes(self._csr))} in memory, bias {bias})"
            ]
        )

    @property
    def _csr(self):
        """The CSR matrix built from the plan (``C``, for both ``A`` and ``A.T``)."""
        return self._AH if self.is_adjoint else self._A


def _adjoint_matrix(A):
    """``A^H`` without copying for real matrices (a CSC view of the transpose)."""
    return A.conj().T if A.dtype.kind == "c" else A.T

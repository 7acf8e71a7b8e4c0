"""ConvOperator: a convolution layer as a SciPy ``LinearOperator`` that also applies to images.

A :class:`ConvOperator` holds the explicit sparse matrix ``C`` of one
convolution (or transposed convolution).  It speaks two languages:

* **Flat vectors, SciPy's convention.**  It *is* a
  :class:`scipy.sparse.linalg.LinearOperator`: ``A @ v``, ``A.matvec(v)``,
  ``A.rmatvec(y)``, ``A.matmat(V)``, ``A.rmatmat(Y)`` take columns
  ``v = x.ravel()`` (one column per sample) and run convmat's products;
  ``A.H``, ``A.T``, ``A.adjoint()``, ``A.transpose()`` return operators;
  sums, products and scalings with other LinearOperators, ``lsqr``,
  ``lsmr``, ``cg`` on ``A.H @ A``, ``svds`` and ``aslinearoperator`` take
  ``A`` directly.  These are the linear part: the bias is not involved.
* **Images.**  ``A.apply(x)`` (also ``A(x)``) maps images
  ``(N, *in_shape)`` or one image ``in_shape`` to ``(N, *out_shape)`` or
  ``out_shape``, adding the bias; ``A.apply_adjoint(y)`` applies ``C^H`` to
  images.  A layer with one input channel also takes one channel-less image
  ``spatial`` (``(H, W)`` in 2-D); with one output channel it then returns
  ``(H', W')``.

The operator is immutable: applying it never changes its result.  Its
adjoint ``A.H`` shares the matrix and ``A.H.H is A``.  On the ``'scipy'``
backend the adjoint runs the threaded transposed product of
:mod:`convmat.spmm` on ``C`` itself; on ``'cupy'`` and ``'torch'`` it uses
``C^H`` built directly in CSR the first time it is needed (then kept).
Operands and results are arrays of the operator's backend, on its device;
:meth:`ConvOperator.to` moves an operator.  On the ``'torch'`` backend the
products are differentiable with respect to the input and, for an operator
built from a weight that requires grad, the weight
(:mod:`convmat.torch_autograd`).
"""

from __future__ import annotations

import numpy as np

from . import _operator_parts as parts
from ._linear_image import LinearImageOperator
from .backends import detached, requires_grad
from .plan import ConvPlan
from .weights import backend_and_weight

__all__ = ["ConvOperator"]


class ConvOperator(LinearImageOperator):
    """A convolution layer as an explicit sparse matrix: a LinearOperator on columns, a layer on images.

    Parameters
    ----------
    weight : array, shape (C_out, C_in/groups, *kernel_size) or (C_in, C_out/groups, *kernel_size)
        PyTorch's layout: the first for a convolution, the second (ConvTranspose
        layout) when ``transposed=True``.  NumPy arrays, array-likes, torch
        tensors, or arrays of the backend's own library.  A torch tensor that
        requires grad needs ``backend='torch'``: the operator then keeps the
        graph (products are differentiable with respect to it); any other
        backend refuses it (TypeError) rather than silently detach it.
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)`` of the operation's input.
    stride, padding, dilation, groups, padding_mode
        As :func:`convmat.conv_matrix`.  A transposed convolution takes an int
        or a ``(lo, hi)`` pair per axis as padding and only ``padding_mode='zeros'``.
    bias : array, shape (C_out,), optional
        Added to every sample of output channel ``c`` by :meth:`apply`; the
        linear part (``@``, ``matvec``, :meth:`apply_adjoint`) ignores it.
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
        Where the matrix lives and the products run; :meth:`to` moves an
        operator.  The operator takes and returns arrays of that library on
        that device only (NumPy for ``'scipy'``); anything else is a TypeError.
    device : optional
        As :func:`convmat.conv_matrix`.

    Attributes
    ----------
    matrix : sparse matrix, shape (prod(out_shape), prod(in_shape))
        ``C`` in the backend's CSR type; ``C^H`` for the adjoint view ``A.H``
        (a transposed view of ``C`` with ``'scipy'``; built in CSR by
        :meth:`convmat.ConvPlan.transpose` and kept with ``'cupy'`` and
        ``'torch'``, whose products with a transposed matrix are slow).
    backend : Backend
    in_shape, out_shape : tuple of int
        ``(C, *spatial)`` of one input and one output image.
    shape : (int, int)
        ``(prod(out_shape), prod(in_shape))``.
    dtype : numpy.dtype
    plan : ConvPlan
        The geometry and sparsity pattern (shared by ``A`` and ``A.H``).
    bias : array of the backend, shape (C_out,), or None
    is_adjoint : bool
        True for the view returned by ``A.H``.

    Notes
    -----
    Shape: :meth:`apply` maps ``(N, *in_shape)`` to ``(N, *out_shape)`` by
    ``y[i] = (C @ x[i].ravel()).reshape(out_shape) + bias[:, None, ...]``;
    :meth:`apply_adjoint` maps ``(N, *out_shape)`` to ``(N, *in_shape)`` by
    ``C^H``, the exact adjoint of the linear part: ``<C x, y> = <x, C^H y>``.
    ``A @ v`` and ``A.matvec(v)`` are ``C @ v`` on flat vectors (SciPy's
    convention; ``A(x)`` is :meth:`apply`, not SciPy's ``A * x``).

    ``A.H`` and ``A.adjoint()`` are the adjoint view (a ConvOperator).  For
    real weights ``A.T`` and ``A.transpose()`` are that view too; for complex
    weights they are SciPy's (unconjugated) transpose of ``A``, a plain
    LinearOperator.

    Examples
    --------
    >>> import numpy as np
    >>> A = ConvOperator(np.ones((1, 1, 3)), (5,), padding=1, padding_mode="reflect")
    >>> x = np.arange(5.0).reshape(1, 5)       # one image, (C, n)
    >>> A(x)
    array([[ 2.,  3.,  6.,  9., 10.]])
    >>> A.apply_adjoint(np.ones((1, 5)))       # reflect folds the border back
    array([[2., 4., 3., 4., 2.]])
    >>> A @ np.arange(5.0)                     # a flat vector: C @ v
    array([ 2.,  3.,  6.,  9., 10.])
    >>> A.H.H is A, A.T is A.H
    (True, True)
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
        plan = parts.plan_from_keywords(
            weight, in_shape, stride=stride, padding=padding, dilation=dilation,
            groups=groups, padding_mode=padding_mode, transposed=transposed, output_padding=output_padding,
            output_size=output_size,
        )
        self._from_plan(plan, weight, bias, dtype, backend, device)

    @classmethod
    def from_plan(cls, plan, weight, *, bias=None, dtype=None, backend="scipy", device=None) -> "ConvOperator":
        """The operator of a plan (:func:`convmat.conv_plan`, :func:`convmat.conv_transpose_plan`) and a weight.

        Parameters
        ----------
        plan : ConvPlan
            The geometry: no keyword is declared twice.
        weight : array, shape plan.weight_shape
        bias, dtype, backend, device
            As :class:`ConvOperator`.

        Examples
        --------
        >>> import numpy as np
        >>> from convmat import conv_plan
        >>> plan = conv_plan((2, 1, 3, 3), (8, 8), stride=2, padding=1)
        >>> ConvOperator.from_plan(plan, np.ones((2, 1, 3, 3))).out_shape
        (2, 4, 4)
        """
        if not isinstance(plan, ConvPlan):
            raise TypeError(f"plan must be a ConvPlan (from conv_plan or conv_transpose_plan), got {type(plan).__name__}")
        op = object.__new__(cls)
        op._from_plan(plan, weight, bias, dtype, backend, device)
        return op

    @classmethod
    def from_matrix(cls, matrix, plan, *, weight=None, bias=None) -> "ConvOperator":
        """The operator of an already built matrix (as read by ``scipy.sparse.load_npz``).

        Parameters
        ----------
        matrix : CSR matrix, shape plan.shape
            ``scipy.sparse`` CSR (array or matrix), a ``cupyx`` CSR matrix or a
            ``torch.sparse_csr_tensor``: the operator lives on that backend and
            shares the matrix's arrays.  Its shape and nnz must be the plan's.
        plan : ConvPlan
            The geometry the matrix was built for (``conv_plan(...)`` with the
            arguments of ``conv_matrix``).
        weight : array, shape plan.weight_shape, optional
            Only used to build ``C^H`` on ``'cupy'`` and ``'torch'`` (without
            it, ``C^H`` is made by transposing ``C`` on the host) and for
            gradients with respect to the weight.
        bias : array, shape (C_out,), optional

        Examples
        --------
        >>> import io
        >>> import numpy as np, scipy.sparse as sp
        >>> from convmat import conv_matrix, conv_plan
        >>> w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
        >>> buf = io.BytesIO()
        >>> sp.save_npz(buf, conv_matrix(w, (6, 6), padding=1)); _ = buf.seek(0)
        >>> A = ConvOperator.from_matrix(sp.load_npz(buf), conv_plan(w.shape, (6, 6), padding=1))
        >>> np.array_equal(A(np.ones((6, 6))), ConvOperator(w, (6, 6), padding=1)(np.ones((6, 6))))
        True
        """
        op = object.__new__(cls)
        be, matrix, host_w, host_bias = parts.from_matrix_parts(matrix, plan, weight, bias)
        op._init_pair(plan, be, matrix, host_w, host_bias)
        return op

    def _from_plan(self, plan, weight, bias, dtype, backend, device):
        grad = requires_grad(weight)
        be, host = backend_and_weight(backend, device, detached(weight))
        if grad and not be.autograd:
            raise TypeError(
                f"weight requires grad, and backend {be.name!r} cannot carry PyTorch's autograd graph; use "
                f"backend='torch' for products differentiable with respect to the weight, or pass weight.detach()"
            )
        parts.check_weight_shape(host, plan)
        matrix = plan.build(host, dtype=dtype, backend=be)
        vdtype = be.dtype_of(matrix)
        grad_weight = parts.grad_weight_for(weight, be, vdtype) if grad else None
        grad_bias = parts.grad_weight_for(bias, be, vdtype, "bias") if requires_grad(bias) else None
        host_bias = parts.host_bias(detached(bias), plan, be, vdtype)
        host_w = np.array(host, dtype=vdtype)  # kept (small) to build C^H where the backend needs it
        host_w.setflags(write=False)
        self._init_pair(plan, be, matrix, host_w, host_bias, grad_weight, grad_bias)

    def _init_pair(self, plan, be, matrix, weight, bias, grad_weight=None, grad_bias=None, CH=None):
        """Set up this operator and its adjoint view, sharing one matrix."""
        shared = {"C": matrix, "CH": CH, "weight": weight, "grad_weight": grad_weight}
        if grad_weight is not None:
            from .torch_autograd import version_of

            shared["weight_version"] = version_of(grad_weight)
        view = object.__new__(type(self))
        self._setup(plan, be, shared, plan.input_shape, plan.output_shape, bias, grad_bias, False)
        view._setup(plan, be, shared, plan.output_shape, plan.input_shape, None, None, True)
        view._H, self._H = self, view

    def _setup(self, plan, be, shared, in_shape, out_shape, bias, grad_bias, is_adjoint):
        self.plan, self._be, self._shared = plan, be, shared
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.shape = (int(np.prod(out_shape)), int(np.prod(in_shape)))
        self.dtype = be.dtype_of(shared["C"])
        self._bias_host = bias
        self.bias = grad_bias if grad_bias is not None else (None if bias is None else be.asarray(bias))
        self.is_adjoint = is_adjoint

    # ------------------------------------------------------------------ #
    # the products: every public product ends here
    # ------------------------------------------------------------------ #
    def _raw_product(self, X, adjoint: bool):
        """``C @ X`` or ``C^H @ X`` (``X`` of this backend, 1-D or 2-D), outside autograd."""
        be, C = self._be, self._shared["C"]
        if not adjoint:
            return be.matmul(C, X)
        if be.builds_adjoint:
            return be.matmul(parts.adjoint_csr(self.plan, be, self._shared), X)
        return be.rmatmul(C, X)

    def _product(self, X, adjoint: bool):
        """The product on this backend's ``X``; through autograd where a gradient is tracked."""
        if self._be.tracks_grad(X, self._shared["grad_weight"]):
            from .torch_autograd import differentiable_product

            return differentiable_product(self, X, adjoint)
        return self._raw_product(X, adjoint)

    # ------------------------------------------------------------------ #
    # properties, moving, other libraries
    # ------------------------------------------------------------------ #
    @property
    def matrix(self):
        """The sparse matrix of the linear part (``C``; ``C^H`` for an adjoint view)."""
        if not self.is_adjoint:
            return self._shared["C"]
        if self._be.builds_adjoint:
            return parts.adjoint_csr(self.plan, self._be, self._shared)
        return self._be.transpose(self._shared["C"])

    @property
    def backend(self):
        """The :class:`convmat.backends.Backend` (``.name``, ``.device``) holding the matrix."""
        return self._be

    @property
    def nnz(self) -> int:
        return int(self.plan.nnz)

    def to(self, backend, device=None) -> "ConvOperator":
        """The same operator on another backend or device (the matrix moved, not rebuilt).

        Returns ``self`` when nothing would change.  Arrays move by DLPack between
        CUDA libraries and through the host otherwise; NumPy and CPU torch
        tensors share memory.  A target library that cannot index the matrix,
        or whose memory it does not fit, raises MatrixTooLargeError.  A weight
        that requires grad keeps its graph when the target is a torch device.

        Examples
        --------
        >>> import numpy as np
        >>> A = ConvOperator(np.ones((1, 1, 3)), (5,), padding=1)
        >>> A.to("scipy") is A
        True
        """
        if self.is_adjoint:
            return self._H.to(backend, device).H
        dst, matrix = parts.moved_matrix(self, backend, device)
        if matrix is None:
            return self
        gw = parts.moved_grad_weight(self._shared["grad_weight"], self._be, dst)
        out = object.__new__(type(self))
        out._init_pair(self.plan, dst, matrix, self._shared["weight"], self._bias_host, gw)
        return out

    def as_linear_operator(self):
        """The linear part as a LinearOperator of the backend's library.

        On ``'scipy'`` this is ``self`` (a ConvOperator is a SciPy
        LinearOperator); on ``'cupy'`` a ``cupyx.scipy.sparse.linalg.LinearOperator``
        for cupyx's solvers; PyTorch has none (a TypeError says so).
        """
        if self._be.scipy_linear_operator:
            return self
        fwd, adj = self.is_adjoint, not self.is_adjoint
        return self._be.linear_operator(
            self.shape, self.dtype, matvec=lambda v: self._raw_product(v, fwd), rmatvec=lambda v: self._raw_product(v, adj),
            matmat=lambda V: self._raw_product(V, fwd), rmatmat=lambda V: self._raw_product(V, adj),
        )

    def to_pylops(self):
        """An image-shaped PyLops operator whose products are this operator's (see :doc:`/pylops`).

        ``dims`` is the input image shape and ``dimsd`` the output image
        shape, without the channel axis when there is one channel.  Needs
        PyLops; backends ``'scipy'`` and ``'cupy'``.
        """
        from .pylops_operator import ConvPylops

        return ConvPylops(self)

    def __repr__(self) -> str:
        return parts.describe(self)

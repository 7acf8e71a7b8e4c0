"""The public constructors: parameters -> :class:`ConvPlan` -> CSR matrix.

``conv_plan`` and ``conv_transpose_plan`` validate the parameters
(:mod:`convmat.geometry`) and return a :class:`~convmat.plan.ConvPlan` (what
the matrix is: shape, nnz, bytes, row blocks, in closed form);
``conv_matrix`` and ``conv_transpose_matrix`` build it
(:mod:`convmat.assemble`: how).  Read the modules in that order to follow
one geometry from the call to the CSR arrays: geometry -> sizes -> plan ->
pattern -> weights -> memory -> assemble.
"""

from __future__ import annotations

from . import geometry as G
from .memory import MatrixTooLargeError
from .plan import ConvPlan
from .weights import backend_and_weight, weight_shape_of

__all__ = [
    "ConvPlan",
    "MatrixTooLargeError",
    "conv_plan",
    "conv_transpose_plan",
    "conv_matrix",
    "conv_transpose_matrix",
]



def _plan_arguments(weight_shape, in_shape, groups, layout):
    """Validated ``(weight_shape, in_shape, groups)``; ``weight_shape`` may be an array."""
    if hasattr(weight_shape, "shape"):
        weight_shape = weight_shape.shape
    weight_shape = G.normalize_shape(weight_shape, "weight_shape")
    in_shape = G.normalize_shape(in_shape, "in_shape")
    _spatial_ndim_check(weight_shape, in_shape, layout)
    return weight_shape, in_shape, G.positive_int(groups, "groups")


def _spatial_ndim_check(weight_shape, in_shape, layout):
    if len(weight_shape) < 3:
        raise G.ParameterError(
            "weight",
            f"weight must have shape {layout} with at least one spatial axis, got shape {tuple(weight_shape)}"
        )
    ndim = len(weight_shape) - 2
    if len(in_shape) != ndim:
        raise G.ParameterError(
            "in_shape",
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

    NaN and inf weights: a tap that lands on zero padding has no entry (there
    is no column for the padding), so its weight never meets the image.  A
    NaN or inf weight on such a tap leaves those outputs finite, where
    ``torch.nn.functional.conv1d`` computes ``0 * nan = nan``:

    >>> import numpy as np
    >>> w = np.array([[[np.nan, 1.0, 1.0]]])
    >>> conv_matrix(w, (3,), padding=1) @ np.ones(3)  # torch: [nan, nan, nan]
    array([ 2., nan, nan])

    Check ``np.isfinite(weight).all()`` first if that difference matters.

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
    be, weight = backend_and_weight(backend, device, weight)
    plan = conv_plan(
        weight_shape_of(weight), in_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
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
    be, weight = backend_and_weight(backend, device, weight)
    plan = conv_transpose_plan(
        weight_shape_of(weight), in_shape, stride=stride, padding=padding, output_padding=output_padding,
        output_size=output_size, dilation=dilation, groups=groups,
    )
    return plan.build(weight, dtype=dtype, flip=flip, rows=rows, backend=be, max_bytes=max_bytes, threads=threads)

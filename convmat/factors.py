"""The transposed-convolution recipe as matrices: stride, zero insertion, padding, flips.

Each factor is a 0/1 sparse matrix whose rows hold at most one entry: a row
of the result *reads* one sample of the input (or none, for a zero).  Per
spatial axis it is a small table -- the table of a 1-tap convolution from
:mod:`convmat.pattern`, so the padding modes are mapped by the same code as
in :func:`convmat.conv_matrix` -- and the multi-axis matrix is the Kronecker
product of the per-axis tables in C order, block-diagonal over channels:

    F = I_channels (x) F_0 (x) F_1 (x) ... (x) F_{D-1},

which is convmat's flattening ``index = c * prod(spatial) + ravel(position)``.
It is assembled straight into canonical CSR by index arithmetic.

With these factors the identities of the design notes become executable:

* stride is subsampling, ``C_s = S_s @ C_1`` (:func:`stride_matrix`);
* zero insertion is its transpose, ``Z = S_s.T`` (:func:`zero_insertion_matrix`);
* a padding mode is a matrix, ``C = K @ P_mode`` (:func:`padding_matrix`);
* dilation is the zero-inserted kernel (:func:`kernel_zero_insertion`);
* the transposed convolution is ``K_flip @ P @ Z`` (:func:`recipe_factors` gives
  the three, :func:`transpose_by_recipe` their product; :func:`flip_kernel`).
"""

from __future__ import annotations

import numpy as np

from . import geometry as G
from .backends import get_backend
from .build import conv_matrix, conv_transpose_plan
from .weights import as_host_weight, value_dtype
from .pattern import axis_pattern
from .selection import assemble_selection

__all__ = [
    "flip_kernel",
    "kernel_zero_insertion",
    "padding_matrix",
    "recipe_factors",
    "stride_matrix",
    "transpose_by_recipe",
    "zero_insertion_matrix",
]


#: The ConvTranspose weight layout, as messages spell it.
_T_LAYOUT = "(C_in, C_out/groups, *kernel_size)"


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _channels(channels) -> int:
    channels = G.as_int(channels, "channels")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels!r}")
    return channels


def _signed_padding(padding, ndim: int, *, allow_negative: bool) -> tuple[tuple[int, int], ...]:
    """One ``(lo, hi)`` pair per axis; negative values (cropping) only if ``allow_negative``.

    Parsing and wording are :func:`convmat.geometry.normalize_padding`'s; a
    padding matrix has no kernel, so the kernel-dependent strings are refused.
    """
    if isinstance(padding, str):
        raise ValueError(
            f"padding must be an int, {ndim} ints or {ndim} (lo, hi) pairs for a padding matrix "
            f"(the strings 'same'/'full' depend on a kernel), got {padding!r}"
        )
    ones = (1,) * ndim
    try:
        return G.normalize_padding(
            padding, ndim, in_shape=ones, kernel_size=ones, stride=ones, dilation=ones,
            allow_strings=False, allow_negative=allow_negative,
        )
    except ValueError as exc:
        if allow_negative or not str(exc).startswith("padding must be >= 0"):
            raise
        raise ValueError(
            f"padding must be >= 0 on every side unless mode='zeros' (negative padding crops), got {padding!r}"
        ) from None


# --------------------------------------------------------------------------- #
# public factors
# --------------------------------------------------------------------------- #
def stride_matrix(shape, stride, *, channels=1, dtype=np.float64, backend="scipy", device=None):
    """The subsampling matrix ``S_s``: keep every ``s``-th sample on every axis.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape ``(o_1, ..., o_D)`` of the signal to subsample -- in the
        identity ``C_s = S_s @ C_1``, the output shape of the stride-1 convolution.
    stride : int or tuple of int
        ``s >= 1`` per axis.
    channels : int
        Number of channels; the matrix is block diagonal over them.
    dtype : {float32, float64, complex64, complex128}
    backend, device
        As :func:`convmat.conv_matrix`: ``'scipy'``, ``'cupy'`` or ``'torch'``.

    Returns
    -------
    scipy.sparse.csr_array (or the backend's CSR), shape (channels * prod(ceil(o / s)), channels * prod(o))
        One entry (a 1) per row, canonical CSR.

    Notes
    -----
    Per axis ``S[j, u] = 1`` iff ``u = j*s``, for ``0 <= j < ceil(o/s)``: the
    1-tap convolution with stride ``s``.  On several axes
    ``S = I_channels (x) S_1 (x) ... (x) S_D`` (C order).  Stride is
    subsampling: ``conv_matrix(w, n, stride=s) == S_s @ conv_matrix(w, n, stride=1)``
    for the same padding, dilation and padding mode.

    Examples
    --------
    >>> S = stride_matrix((5,), 2)
    >>> S.shape
    (3, 5)
    >>> S.toarray()
    array([[1., 0., 0., 0., 0.],
           [0., 0., 1., 0., 0.],
           [0., 0., 0., 0., 1.]])
    """
    shape = G.normalize_shape(shape, "shape")
    ndim = len(shape)
    stride = G.normalize_per_axis(stride, "stride", ndim, minimum=1)
    channels = _channels(channels)
    value_dtype(np.dtype(np.float64), dtype)
    geom = G.ConvGeometry.forward(shape, (1,) * ndim, stride=stride)
    return assemble_selection([axis_pattern(ax) for ax in geom.axes], channels, dtype, "stride matrix", backend, device)


def zero_insertion_matrix(in_shape, stride, *, out_shape=None, channels=1, dtype=np.float64, backend="scipy", device=None):
    """The zero-insertion matrix ``Z``: ``s - 1`` zeros between samples on every axis.

    Parameters
    ----------
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)`` of the input.
    stride : int or tuple of int
        ``s >= 1`` per axis.
    out_shape : tuple of int, optional
        Spatial output shape ``m``, at least ``(n-1)s + 1`` per axis (the
        default); longer outputs end in zeros.
    channels : int
        Number of channels; the matrix is block diagonal over them.
    dtype : {float32, float64, complex64, complex128}
    backend, device
        As :func:`convmat.conv_matrix`: ``'scipy'``, ``'cupy'`` or ``'torch'``.

    Returns
    -------
    scipy.sparse.csr_array (or the backend's CSR), shape (channels * prod(m), channels * prod(n))
        One entry (a 1) in every column, canonical CSR.

    Notes
    -----
    Per axis ``Z[u, i] = 1`` iff ``u = i*s``.  It is the transpose of
    subsampling: ``zero_insertion_matrix(ceil(o/s), s, out_shape=o) ==
    stride_matrix(o, s).T``; it is also the zero insertion of the
    transposed-convolution recipe (see :func:`transpose_by_recipe`).

    Examples
    --------
    >>> Z = zero_insertion_matrix((3,), 2)
    >>> (Z @ [1.0, 2.0, 3.0]).tolist()
    [1.0, 0.0, 2.0, 0.0, 3.0]
    >>> zero_insertion_matrix((3,), 2, out_shape=(6,)).shape
    (6, 3)
    """
    in_shape = G.normalize_shape(in_shape, "in_shape")
    ndim = len(in_shape)
    stride = G.normalize_per_axis(stride, "stride", ndim, minimum=1)
    channels = _channels(channels)
    value_dtype(np.dtype(np.float64), dtype)
    shortest = G.conv_transpose_output_shape(in_shape, (1,) * ndim, stride=stride)
    if out_shape is None:
        out_shape = shortest
    else:
        out_shape = G.normalize_per_axis(out_shape, "out_shape", ndim, minimum=1)
        if any(m < m0 for m, m0 in zip(out_shape, shortest)):
            raise ValueError(
                f"out_shape must be at least (n-1)*stride+1 = {shortest!r} on every axis (for in_shape "
                f"{in_shape!r} and stride {stride!r}), got {out_shape!r}"
            )
    # Zero insertion on an axis = the transposed table of subsampling length m down to n.
    tables = [
        axis_pattern(G.AxisGeometry(m, 1, s, 1, 0, 0, n)).transpose()
        for n, s, m in zip(in_shape, stride, out_shape)
    ]
    return assemble_selection(tables, channels, dtype, "zero-insertion matrix", backend, device)


def padding_matrix(in_shape, padding, *, mode="zeros", channels=1, dtype=np.float64, backend="scipy", device=None):
    """The padding matrix ``P_mode``: maps an input onto its padded grid.

    Parameters
    ----------
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)`` of the input.
    padding : int, tuple of int, or tuple of (lo, hi) pairs
        Samples added before (``lo``) and after (``hi``) each axis.  With
        ``mode='zeros'`` negative values crop; the other modes need
        ``lo, hi >= 0`` (and ``< n`` for ``'reflect'``, ``<= n`` for ``'circular'``,
        as :func:`convmat.conv_matrix`).
    mode : {'zeros', 'reflect', 'replicate', 'circular'}
        As ``padding_mode`` of :func:`convmat.conv_matrix` and ``torch.nn.functional.pad``.
    channels : int
        Number of channels; the matrix is block diagonal over them.
    dtype : {float32, float64, complex64, complex128}
    backend, device
        As :func:`convmat.conv_matrix`: ``'scipy'``, ``'cupy'`` or ``'torch'``.

    Returns
    -------
    scipy.sparse.csr_array (or the backend's CSR), shape (channels * prod(n + lo + hi), channels * prod(n))
        At most one entry (a 1) per row; for reflect, replicate and circular a
        column can hold several.  Canonical CSR.

    Notes
    -----
    Per axis, padded sample ``i`` reads the virtual input ``u = i - lo``, which
    the mode maps onto ``[0, n)`` (``'zeros'``: no entry outside; ``'reflect'``:
    ``-u`` and ``2(n-1) - u``; ``'replicate'``: clamp; ``'circular'``: ``u mod n``)
    -- the 1-tap convolution with padding ``(lo, hi)``.  A padding mode is a
    matrix: ``conv_matrix(w, n, padding=(lo, hi), padding_mode=mode) ==
    conv_matrix(w, n + lo + hi) @ P_mode`` (with the same stride, dilation
    and groups), so the adjoint of a padded convolution folds the border back
    through ``P_mode.T``.

    Examples
    --------
    >>> import numpy as np
    >>> P = padding_matrix((3,), 2, mode="reflect")
    >>> (P @ [1.0, 2.0, 3.0]).tolist()
    [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]
    >>> (P.T @ np.ones(7)).tolist()   # the adjoint folds the border back
    [2.0, 3.0, 2.0]
    >>> (padding_matrix((4,), ((-1, 1),)) @ [1.0, 2.0, 3.0, 4.0]).tolist()
    [2.0, 3.0, 4.0, 0.0]
    """
    in_shape = G.normalize_shape(in_shape, "in_shape")
    ndim = len(in_shape)
    if not isinstance(mode, str) or mode not in G.PADDING_MODES:
        exc = TypeError if not isinstance(mode, str) else ValueError
        raise exc(f"mode must be one of {G.PADDING_MODES}, got {mode!r}")
    pads = _signed_padding(padding, ndim, allow_negative=(mode == "zeros"))
    G._check_mode(mode, in_shape, pads)
    for axis, (n, (lo, hi)) in enumerate(zip(in_shape, pads)):
        if n + lo + hi < 1:
            raise ValueError(
                f"padding {padding!r} crops everything: the padded size would be {n} + {lo} + {hi} = "
                f"{n + lo + hi} on axis {axis}; it must be >= 1"
            )
    channels = _channels(channels)
    value_dtype(np.dtype(np.float64), dtype)
    tables = [
        axis_pattern(G.AxisGeometry(n, 1, 1, 1, lo, hi, G._forward_length(n, 1, 1, 1, lo, hi), mode))
        for n, (lo, hi) in zip(in_shape, pads)
    ]
    return assemble_selection(tables, channels, dtype, "padding matrix", backend, device)


def _weight_array(weight, layout: str, be=None) -> np.ndarray:
    w = as_host_weight(weight, be)
    if w.ndim < 3:
        raise G.ParameterError(
            "weight", f"weight must have shape {layout} with at least one spatial axis, got shape {w.shape}"
        )
    return w


def flip_kernel(weight, groups=1):
    """The forward-layout kernel of the transposed-convolution recipe.

    Parameters
    ----------
    weight : array_like, shape (C_in, C_out/groups, *kernel_size)
        A ConvTranspose weight (PyTorch's layout).
    groups : int

    Returns
    -------
    numpy.ndarray, shape (C_out, C_in/groups, *kernel_size)
        Forward (Conv) layout, spatially flipped, same dtype.

    Notes
    -----
    ``flipped[g*Og + o, i, *t] = weight[g*Ig + i, o, *(k - 1 - t)]`` with
    ``Ig = C_in/groups`` and ``Og = C_out/groups``: within each group the
    two channel axes are swapped, and every spatial axis is reversed.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.arange(6.0).reshape(2, 1, 3)       # C_in=2, C_out=1
    >>> flip_kernel(w)                            # (C_out, C_in, k)
    array([[[2., 1., 0.],
            [5., 4., 3.]]])
    >>> flip_kernel(w, groups=2).shape            # C_out=2, one channel per group
    (2, 1, 3)
    """
    w = _weight_array(weight, _T_LAYOUT)
    groups = G.as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups!r}")
    c_in, c_out_g, *k = w.shape
    if c_in % groups:
        raise ValueError(
            f"the weight's first axis (C_in = {c_in}) must be divisible by groups ({groups}); weight has "
            f"shape {w.shape}, layout (C_in, C_out/groups, *kernel_size)"
        )
    spatial = tuple(range(2, w.ndim))
    v = w.reshape(groups, c_in // groups, c_out_g, *k).swapaxes(1, 2)
    v = v.reshape(groups * c_out_g, c_in // groups, *k)
    return np.ascontiguousarray(np.flip(v, axis=spatial))


def kernel_zero_insertion(weight, dilation):
    """The zero-inserted kernel: ``d - 1`` zeros between taps, size ``e = d(k-1) + 1``.

    Parameters
    ----------
    weight : array_like, shape (A, B, *kernel_size)
        Any layout with two leading channel axes.
    dilation : int or tuple of int

    Returns
    -------
    numpy.ndarray, shape (A, B, *e)
        ``e = d(k-1) + 1`` per axis, same dtype.

    Notes
    -----
    ``out[..., *(t*d)] = weight[..., *t]`` and zero elsewhere.  Dilation is
    a convolution with the zero-inserted kernel:
    ``conv_matrix(w, n, dilation=d) == conv_matrix(kernel_zero_insertion(w, d), n)``
    (values; the right side also stores the inserted zeros).

    Examples
    --------
    >>> import numpy as np
    >>> kernel_zero_insertion(np.array([[[1.0, 2.0, 3.0]]]), 2)
    array([[[1., 0., 2., 0., 3.]]])
    """
    w = _weight_array(weight, "(A, B, *kernel_size)")
    ndim = w.ndim - 2
    dilation = G.normalize_per_axis(dilation, "dilation", ndim, minimum=1)
    extent = tuple(G.extent(k, d) for k, d in zip(w.shape[2:], dilation))
    out = np.zeros(w.shape[:2] + extent, dtype=w.dtype)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dilation))] = w
    return out


def recipe_factors(
    weight, in_shape, *, stride=1, padding=0, output_padding=0, output_size=None, dilation=1, groups=1,
    dtype=None, backend="scipy", device=None,
):
    """The three factors of the transposed-convolution recipe, ``T = K_flip @ P @ Z``, in one call.

    Parameters
    ----------
    weight : array_like, shape (C_in, C_out/groups, *kernel_size)
        ConvTranspose layout (the same tensor as the forward convolution).
    in_shape : tuple of int
        Spatial shape ``(n_1, ..., n_D)`` of the transposed convolution's input.
    stride, padding, output_padding, output_size, dilation, groups
        As :func:`convmat.conv_transpose_matrix` (same validation, same
        messages); ``padding`` may exceed ``e - 1``.
    dtype : {float32, float64, complex64, complex128}, optional
        Default: the weight's (float64 for integer weights).
    backend, device
        As :func:`convmat.conv_matrix`; all three factors are built there.

    Returns
    -------
    K_flip : CSR, shape (C_out * prod(m), C_in * prod(L))
        The stride-1 convolution, no padding, same dilation and groups, of
        :func:`flip_kernel` ``(weight, groups)`` on the padded length ``L``.
    P : CSR, shape (C_in * prod(L), C_in * prod(z))
        Zero padding by ``(e-1-lo, e-1-hi+a)`` per axis (negative crops),
        :func:`padding_matrix`.
    Z : CSR, shape (C_in * prod(z), C_in * prod(n))
        ``s - 1`` zeros inserted between samples, ``z = (n-1)s + 1``,
        :func:`zero_insertion_matrix`.

    Notes
    -----
    Per axis, with extent ``e = d(k-1) + 1`` and output padding ``a``
    (given, or derived from ``output_size``): ``z = (n-1)s + 1``,
    ``L = z + 2(e-1) - lo - hi + a`` and the output
    ``m = L - e + 1 = (n-1)s - lo - hi + e + a``, the transposed
    convolution's.  The padding is ``ConvGeometry.recipe_padding`` (JAX's
    ``_conv_transpose_padding``).  ``K_flip @ (P @ Z)`` equals
    :func:`convmat.conv_transpose_matrix` exactly (it is
    :func:`transpose_by_recipe`); every factor holds small integers when the
    weight does, so the equality can be checked entry by entry.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_transpose_matrix
    >>> w = np.arange(1.0, 19.0).reshape(2, 1, 3, 3)           # C_in=2, C_out=1
    >>> K, P, Z = recipe_factors(w, (3, 3), stride=2, padding=1, output_size=(6, 6))
    >>> K.shape, P.shape, Z.shape                              # (1*6*6, 2*8*8), (2*8*8, 2*5*5), (2*5*5, 2*3*3)
    ((36, 128), (128, 50), (50, 18))
    >>> T = conv_transpose_matrix(w, (3, 3), stride=2, padding=1, output_padding=1)
    >>> int((K @ (P @ Z) - T).count_nonzero())
    0
    """
    be = get_backend(backend, device)
    w = _weight_array(weight, _T_LAYOUT, be)
    # All geometric validation (and its wording) is the transposed convolution's own.
    geom = conv_transpose_plan(
        w.shape, in_shape, stride=stride, padding=padding, output_padding=output_padding,
        output_size=output_size, dilation=dilation, groups=groups,
    ).geometry
    c_in = w.shape[0]  # channels of the transposed convolution's input
    K_flip_weight = flip_kernel(w, groups)
    vdtype = value_dtype(K_flip_weight.dtype, dtype)
    Z = zero_insertion_matrix(geom.out_shape, geom.stride, channels=c_in, dtype=vdtype, backend=be)
    inserted = G.conv_transpose_output_shape(geom.out_shape, (1,) * geom.ndim, stride=geom.stride)
    P = padding_matrix(inserted, geom.recipe_padding, channels=c_in, dtype=vdtype, backend=be)
    padded = tuple(L + lo + hi for L, (lo, hi) in zip(inserted, geom.recipe_padding))
    K = conv_matrix(K_flip_weight, padded, dilation=geom.dilation, groups=groups, dtype=vdtype, backend=be)
    return K, P, Z


def transpose_by_recipe(
    weight, in_shape, *, stride=1, padding=0, output_padding=0, output_size=None, dilation=1, groups=1,
    dtype=None, backend="scipy", device=None,
):
    """The transposed convolution built by the classic recipe, ``T = K_flip @ (P @ Z)``.

    An oracle and a teaching tool, not the fast path: it multiplies the three
    sparse matrices of :func:`recipe_factors` (same parameters) with the
    backend's sparse library (scipy, cupyx or torch).  Use
    :func:`convmat.conv_transpose_matrix` to build the matrix.

    Returns
    -------
    scipy.sparse.csr_array (or the backend's CSR), shape (C_out * prod(m), C_in * prod(n))
        Canonical CSR for ``'scipy'`` and ``'cupy'``; as the library's product
        leaves it for ``'torch'``.  Equal to ``conv_transpose_matrix`` with the
        same arguments; exact zeros that the products produce are not stored.

    Notes
    -----
    Per axis, with extent ``e = d(k-1) + 1``: ``Z`` inserts ``s - 1`` zeros
    between the ``n`` input samples, ``P`` pads ``e - 1 - lo`` before and
    ``e - 1 - hi + a`` after (a negative amount crops), and ``K_flip`` is the
    stride-1 convolution of :func:`flip_kernel` ``(weight, groups)``; the
    output length is ``m = (n-1)s - lo - hi + e + a``.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_transpose_matrix
    >>> w = np.arange(1.0, 19.0).reshape(2, 1, 3, 3)
    >>> T = transpose_by_recipe(w, (3, 3), stride=2, padding=1, output_padding=1)
    >>> T.shape
    (36, 18)
    >>> int((T - conv_transpose_matrix(w, (3, 3), stride=2, padding=1, output_padding=1)).count_nonzero())
    0
    """
    be = get_backend(backend, device)
    K, P, Z = recipe_factors(
        weight, in_shape, stride=stride, padding=padding, output_padding=output_padding, output_size=output_size,
        dilation=dilation, groups=groups, dtype=dtype, backend=be,
    )
    T = K @ (P @ Z)  # the library's own sparse product: a CSR matrix of the backend's kind
    if hasattr(T, "sum_duplicates"):
        T.sum_duplicates()  # canonical: sorted indices (the product leaves no duplicates)
    return T
